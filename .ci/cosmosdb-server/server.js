#!/usr/bin/env node
// @vercel/cosmosdb-server 1.0.1, loaded unchanged from node_modules, made
// usable by the azure_data_cosmos 1.0 SDK over plain HTTP on 127.0.0.1.
//
//   node server.js [PORT]     (0 or nothing: any free port)
//
// Prints `LISTENING 127.0.0.1:PORT` on stdout once it accepts connections.
// COSMOSDB_SERVER_TRACE=1 logs each request and its status to stderr.
//
// The package's server (lib/index.js) asks `routes.default(req)` for
// `[params, handler]` on every request and renders whatever the handler
// returns. We replace that one export with a router that hands a few routes
// to the fixes below, which call the package's own handlers, operations and
// query engine. No file in node_modules is modified.
"use strict";

const lib = "@vercel/cosmosdb-server/lib";
const routes = require(`${lib}/routes`);
const json = require(`${lib}/json`).default;
const readItems = require(`${lib}/handler/_read-items`).default;
const operations = require(`${lib}/handler/_document-operations`);
const partitionHeader = require(`${lib}/utils/get-partition-from-header`);
const { createHttpServer } = require("@vercel/cosmosdb-server");

const handler = name => require(`${lib}/handler/${name}`).default;
const notFound = res => {
  res.statusCode = 404;
  return { code: "NotFound", message: "Entity with the specified id does not exist in the system." };
};

// (1) Partition key range ids are numbers (lib/account/collection.js creates
// range `id: 0`); the SDK expects strings, else resolving the container fails
// with 503/20305.
async function readPartitionKeyRanges(original, ...args) {
  const body = await original(...args);
  if (body && Array.isArray(body.PartitionKeyRanges)) {
    body.PartitionKeyRanges = body.PartitionKeyRanges.map(r => ({ ...r, id: String(r.id) }));
  }
  return body;
}

// (2) The account document (lib/account/index.js) advertises
// `https://host:port/` regions even without TLS; the SDK would then route
// every request there.
async function readMeta(original, ...args) {
  const body = await original(...args);
  const http = locations => (locations || []).map(l => ({
    ...l,
    databaseAccountEndpoint: l.databaseAccountEndpoint.replace(/^https:/, "http:")
  }));
  return { ...body, writableLocations: http(body.writableLocations), readableLocations: http(body.readableLocations) };
}

// (3) Reading a missing document throws a TypeError in
// lib/handler/read-document.js (`data[path]` with `data` undefined), which
// the server answers 500. Answer 404 as Cosmos does.
async function readDocument(original, account, req, res, params) {
  const collection = account.database(params.dbId).collection(params.collId);
  const header = partitionHeader.default(req);
  if (collection.read() && header !== undefined) {
    const pk = partitionHeader.parsePartitionKey(header, params.docId);
    if (!collection.document(params.docId, pk).read()) return notFound(res);
  }
  return original(account, req, res, params);
}

// (4) Queries run over every document of the container
// (lib/handler/query-documents.js, lib/account/items.js `query`): the
// partition key header is ignored. And a query without
// `x-ms-documentdb-query-enablecrosspartition` must name the key in its
// WHERE clause or it is refused (400 "missing partition keys"), which also
// refuses the SDK's cross-partition queries (they carry
// `x-ms-documentdb-partitionkeyrangeid: 0` instead). This replaces the
// handler: a query runs over the header's partition, or the whole container
// when there is no partition key header.
// Also: `x [NOT] LIKE p [ESCAPE 'c']` is not in @zeit/cosmosdb-query's
// grammar (a parse error, 400); it is rewritten into a call of `like` below
// (`x` a property path, or a function of one, such as `LOWER(c.type)`).
async function queryDocuments(_original, account, req, res, { dbId, collId }) {
  return readItems(req, res, "Documents", async options => {
    const body = await json(req);
    if (!body.query) {
      res.statusCode = 400;
      return { message: "missing query" };
    }
    const { documents } = account.database(dbId).collection(collId);
    const header = partitionHeader.default(req);
    let data = documents._data;
    if (header !== undefined) {
      const pk = partitionHeader.parsePartitionKey(header);
      data = new Map([...data].filter(([, item]) => documents._getPartition(item.read()) === pk));
    }
    // A view of the documents with only the data in scope, and `like`.
    const scope = Object.create(documents, {
      _data: { value: data },
      _userDefinedFunctions: { value: () => ({ ...documents._userDefinedFunctions(), __like: like }) }
    });
    try {
      return scope.query({ ...body, query: rewriteLike(body.query) }, options);
    } catch (err) {
      if (!err.badRequest) throw err;
      res.statusCode = 400;
      return { code: "BadRequest", message: err.message };
    }
  });
}

const LIKE = /((?:\w+\()?[\w.]+\)?)\s+(NOT\s+)?LIKE\s+(@\w+|'[^']*')(?:\s+ESCAPE\s+'([^'])')?/gi;
function rewriteLike(sql) {
  return sql.replace(LIKE, (_, value, not, pattern, escape) =>
    `${not ? "NOT " : ""}udf.__like(${value}, ${pattern}, '${escape || ""}')`);
}

// Cosmos LIKE: `%` any run, `_` any one character, `[...]`/`[^...]` sets,
// `escape` makes the next character literal. Case-sensitive.
function like(value, pattern, escape) {
  if (typeof value !== "string" || typeof pattern !== "string") return undefined;
  const literal = c => c.replace(/[\\^$.*+?()[\]{}|/-]/g, "\\$&");
  let re = "";
  for (let i = 0; i < pattern.length; i += 1) {
    const c = pattern[i];
    const close = c === "[" ? pattern.indexOf("]", i + 2) : -1;
    if (escape && c === escape && i + 1 < pattern.length) re += literal(pattern[(i += 1)]);
    else if (c === "%") re += "[\\s\\S]*";
    else if (c === "_") re += "[\\s\\S]";
    else if (close > 0) {
      const set = pattern.slice(i + 1, close);
      const negated = set.startsWith("^");
      re += `[${negated ? "^" : ""}${(negated ? set.slice(1) : set).replace(/[\\\]^]/g, "\\$&")}]`;
      i = close;
    } else re += literal(c);
  }
  return new RegExp(`^${re}$`).test(value);
}

// (5) Transactional batches (lib/handler/batch-documents.js) are not
// atomic: operations before a failing one stay applied. And the SDK sends
// the partition key only in the header, so the per-operation
// `input.partitionKey` that replace/read/delete parse is undefined and they
// throw (500). Apply the operations in order with the package's own
// operations (If-Match → 412, existing id → 409, missing → 404), and on the
// first failure restore the container's documents as they were, answering
// 207 with that status and 424 for the others, as Cosmos does.
async function batch(_original, account, req, res, { dbId, collId }) {
  const body = await json(req);
  const collection = account.database(dbId).collection(collId);
  if (!collection.read()) return notFound(res);
  if (!Array.isArray(body)) {
    res.statusCode = 400;
    return { message: "Invalid request body" };
  }
  const header = partitionHeader.default(req);
  const pk = partitionHeader.parsePartitionKey(header);
  const run = {
    Create: operations.createOperation,
    Upsert: operations.upsertOperation,
    Replace: operations.replaceOperation,
    Read: operations.readOperation,
    Delete: operations.deleteOperation
  };
  const { documents } = collection;
  const saved = { data: new Map(documents._data), index: new Map(documents._index) };
  const results = [];
  let failed = false;
  try {
    for (const op of body) {
      if (failed) {
        results.push({ statusCode: 424, requestCharge: 0 });
        continue;
      }
      if (!op || !run[op.operationType]) {
        failed = true;
        res.statusCode = 400;
        return { message: `Operation type '${op && op.operationType}' is not supported in Batch.` };
      }
      const outsidePartition = op.resourceBody && documents._getPartition(op.resourceBody) !== pk;
      const result = outsidePartition
        ? { statusCode: 400, body: { message: "partition key of the document differs from the batch's" } }
        : run[op.operationType](collection, { ...op, partitionKey: header });
      failed = result.statusCode >= 400;
      const { statusCode, body: doc } = result;
      results.push(failed
        ? { statusCode, requestCharge: 0 }
        : { statusCode, requestCharge: 1, eTag: doc && doc._etag, resourceBody: doc });
    }
  } catch (err) {
    failed = true;
    throw err;
  } finally {
    if (failed) {
      documents._data = saved.data;
      documents._index = saved.index;
    }
  }
  if (!failed) return results;
  res.statusCode = 207;
  return results.map(r => (r.statusCode < 400 ? { statusCode: 424, requestCharge: 0 } : r));
}

// (7) The change feed (LatestVersion) is a stub in the package: lib/index.js
// answers any `A-IM` read with every document and ETag "1", then 304 for
// ever. Give every stored version a log sequence number (`_lsn`, counted
// over the whole server, as each write of Items passes through `_set`) and
// answer the SDK's change-feed read: the documents written after the
// If-None-Match position (none: from the beginning; `*`: from now), in
// write order, at most x-ms-max-item-count, with the last one's number as
// the new ETag; 304 with the same position when nothing is new. With the
// 2021-09-15 wire format each item is `{current, metadata}`. Deletes are not
// shown, as in Cosmos DB's LatestVersion mode. A point-in-time start
// (If-Modified-Since) is refused.
let lsn = 0;
const Items = require(`${lib}/account/items`).default;
const storeItem = Items.prototype._set;
Items.prototype._set = function _set(data) {
  lsn += 1;
  return storeItem.call(this, { ...data, _lsn: lsn });
};

async function readDocuments(original, account, req, res, params) {
  if (!req.headers["a-im"]) return original(account, req, res, params);
  // Keep lib/index.js's stub from rewriting this answer.
  delete req.headers["a-im"];
  const collection = account.database(params.dbId).collection(params.collId);
  if (!collection.read()) return notFound(res);
  const since = req.headers["if-none-match"];
  if (req.headers["if-modified-since"]) {
    res.statusCode = 400;
    return { code: "BadRequest", message: "a point-in-time change feed start is not supported here" };
  }
  const after = since === undefined ? 0 : since === "*" ? lsn : Number(String(since).replace(/"/g, ""));
  if (!Number.isSafeInteger(after) || after < 0) {
    res.statusCode = 400;
    return { code: "BadRequest", message: `invalid change feed position ${since}` };
  }
  const max = Number.parseInt(req.headers["x-ms-max-item-count"] || "-1", 10);
  const changed = [...collection.documents._data.values()]
    .map(item => item.read())
    .filter(doc => doc._lsn > after)
    .sort((x, y) => x._lsn - y._lsn);
  const page = max > 0 ? changed.slice(0, max) : changed;
  const position = page.length ? page[page.length - 1]._lsn : after;
  res.setHeader("etag", `"${position}"`);
  res.setHeader("x-ms-item-count", String(page.length));
  if (!page.length) {
    res.statusCode = 304;
    return {};
  }
  const envelopes = req.headers["x-ms-cosmos-changefeed-wire-format-version"];
  const items = envelopes ? page.map(doc => ({ current: doc, metadata: { lsn: doc._lsn, crts: doc._ts } })) : page;
  return { _rid: collection.read()._rid, Documents: items, _count: items.length };
}

const fixes = new Map([
  [handler("read-documents"), readDocuments],
  [handler("read-partition-key-ranges"), readPartitionKeyRanges],
  [handler("read-meta"), readMeta],
  [handler("read-document"), readDocument],
  [handler("query-documents"), queryDocuments],
  [handler("batch-documents"), batch]
]);
const route = routes.default;
routes.default = req => {
  const found = route(req);
  const fix = found && fixes.get(found[1]);
  if (!fix) return found;
  const [params, original] = found;
  return [params, (account, ...rest) => fix(original, account, ...rest)];
};

const port = Number.parseInt(process.argv[2] || "0", 10);
const server = createHttpServer({ keepAlive: true });

// (6) Not the package's doing: the SDK opens with an HTTP/2 probe (prior
// knowledge, `PRI * HTTP/2.0`) and falls back to HTTP/1.1 only on an HTTP/2
// answer (h2 HTTP_1_1_REQUIRED or PROTOCOL_ERROR). Node answers the probe
// with an HTTP/1.1 400 and destroys the socket while the client is still
// writing; when the client sees the reset first (broken pipe), building the
// client fails with 503/20011 (2 of our first 5 runs). Answer in HTTP/2: an
// empty SETTINGS frame and a GOAWAY(HTTP_1_1_REQUIRED), then half-close and
// drain, so nothing resets. Other malformed requests: 400, as Node does.
const SETTINGS = [0, 0, 0, 0x4, 0, 0, 0, 0, 0];
const GOAWAY_HTTP_1_1_REQUIRED = [0, 0, 8, 0x7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xd];
server.on("clientError", (err, socket) => {
  if (!socket.writable) {
    socket.destroy();
  } else if (err.code !== "HPE_PAUSED_H2_UPGRADE") {
    socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
  } else {
    socket.end(Buffer.from([...SETTINGS, ...GOAWAY_HTTP_1_1_REQUIRED]));
    socket.resume();
  }
});
if (process.env.COSMOSDB_SERVER_TRACE) {
  server.prependListener("request", (req, res) => {
    res.on("finish", () => console.error(`${req.method} ${req.url} -> ${res.statusCode}`));
  });
}
// A fixed delay before every request is served (the pod benchmark's
// latency scenario: examples/pod_cpu.rs). The body is not read until then.
const delayMs = Number.parseInt(process.env.COSMOSDB_SERVER_DELAY_MS || "0", 10);
if (delayMs > 0) {
  const handlers = server.listeners("request");
  server.removeAllListeners("request");
  server.on("request", (req, res) => {
    setTimeout(() => handlers.forEach(h => h.call(server, req, res)), delayMs);
  });
}
server.listen(port, "127.0.0.1", () => {
  const { address, port: chosen } = server.address();
  console.log(`LISTENING ${address}:${chosen}`);
});
