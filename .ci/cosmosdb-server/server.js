#!/usr/bin/env node
// @vercel/cosmosdb-server 1.0.1, loaded unchanged from node_modules, made
// usable by the azure_data_cosmos 1.0 SDK over plain HTTP on 127.0.0.1.
//
//   node server.js [PORT]     (0 or nothing: any free port)
//
// Prints `LISTENING 127.0.0.1:PORT` on stdout once it accepts connections.
//
// Environment (all optional):
//
//   COSMOSDB_SERVER_TRACE=1       log each request and its status to stderr.
//   COSMOSDB_SERVER_DELAY_MS=D    wait D ms before serving each request.
//   COSMOSDB_SERVER_PARTITIONS=N  physical partitions to simulate (default 1).
//                                 Partition key values are hashed (FNV-1a)
//                                 onto them. Only the accounting is
//                                 partitioned: the server still stores one
//                                 container and reports ONE partition key
//                                 range to the SDK, so the SDK sends one
//                                 change-feed or cross-partition request
//                                 where on Azure it would send N.
//   COSMOSDB_SERVER_RU_PER_PARTITION=R
//                                 throttle as Cosmos DB does (default 0: never):
//                                 each physical partition has R RU/s, a token
//                                 bucket holding at most one second's budget.
//
// Every document request is charged an estimate of Azure's RU (section 8
// below: `x-ms-request-charge` on every response), and counted per
// physical partition and per operation whether or not throttling is on.
// `GET /_sim/stats` answers the counters as JSON (section 9).
//
// The package's server (lib/index.js) asks `routes.default(req)` for
// `[params, handler]` on every request and renders whatever the handler
// returns. We replace that one export with a router that hands a few routes
// to the fixes below, which call the package's own handlers, operations and
// query engine. No file in node_modules is modified.
"use strict";

const lib = "@vercel/cosmosdb-server/lib";
const routes = require(`${lib}/routes`);
const jsonModule = require(`${lib}/json`);
// A body read before its handler ran (section 8) is kept on the request;
// the package's handlers ask `json.default` for it at each call.
const BODY = Symbol("body");
const readJson = jsonModule.default;
jsonModule.default = req => (req[BODY] !== undefined ? Promise.resolve(JSON.parse(req[BODY].toString())) : readJson(req));
const json = req => jsonModule.default(req);
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
// Each container keeps its writes in order (`{lsn, rid}`), so that a read
// from a position finds its start by binary search and looks only at what
// came after (a version replaced since is passed over: it no longer has
// that number); copying and sorting every document on each read made a
// page cost the whole container.
let lsn = 0;
const Items = require(`${lib}/account/items`).default;
const storeItem = Items.prototype._set;
const writeLogs = new WeakMap();
Items.prototype._set = function _set(data) {
  lsn += 1;
  const stored = storeItem.call(this, { ...data, _lsn: lsn });
  if (!writeLogs.has(this)) writeLogs.set(this, []);
  writeLogs.get(this).push({ lsn, rid: data._rid });
  return stored;
};

// The documents of `items` written after `after`, in write order, at most
// `max` (all when not positive), each in its current version.
function changedAfter(items, after, max) {
  const log = writeLogs.get(items) || [];
  let lo = 0;
  let hi = log.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (log[mid].lsn <= after) lo = mid + 1;
    else hi = mid;
  }
  const page = [];
  for (let i = lo; i < log.length && (max <= 0 || page.length < max); i += 1) {
    const item = items._data.get(log[i].rid);
    const doc = item && item.read();
    if (doc && doc._lsn === log[i].lsn) page.push(doc);
  }
  return page;
}

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
  const page = changedAfter(collection.documents, after, max);
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

// (8) Request units and throttling, as Cosmos DB meters a container with
// provisioned throughput: the RU/s are split evenly over the physical
// partitions, each request is charged to the partition of its partition key
// (a request without one, a cross-partition query or the change feed, to
// every partition, as the SDK would fan it out on Azure), and a partition
// whose budget is spent answers 429 with sub-status 3200,
// `x-ms-retry-after-ms` (the time until its bucket holds the request's
// estimated charge) and Azure's error body, before the request does
// anything. The SDK's own throttle retry (azure_data_cosmos_driver's
// transport pipeline: up to 18 retries of a document request, each after
// `x-ms-retry-after-ms`, capped at 15 s) then waits and sends it again.
//
// Charges, Azure's published orders of magnitude (not its exact model):
//   write (create, upsert, replace, patch; also when refused, 409/412):
//     5 RU per started KB of the request body (at least 5), plus 0.2 RU per
//     top-level property the container's indexing policy indexes;
//   delete: 5 RU;
//   point read: 1 RU per started KB of the document (1 RU when missing);
//   query: 2.5 RU per partition it runs on, plus 0.05 RU per KB returned;
//   change feed: 2 RU per partition, plus 0.3 RU per document returned;
//   transactional batch: the sum of its operations (a read 1 RU).
// Admission takes the estimate (the write charge from the body; 1, 2.5 or
// 2 RU for reads, queries and the change feed); after the handler the
// partition is charged the actual amount, which may take it below zero (a
// large page overdraws, as on Azure, and the next requests wait).
// Metadata (databases, containers, partition key ranges) is neither charged
// nor throttled. The budgets are one container's,
// COSMOSDB_SERVER_METERED_CONTAINER (default `events`): on Azure every
// container has its own throughput and partitions, so requests to the
// others (the subscriptions container) pass here unmetered instead of
// spending the events container's partitions.
const METERED_CONTAINER = process.env.COSMOSDB_SERVER_METERED_CONTAINER || "events";
const PARTITIONS = Math.max(1, Number.parseInt(process.env.COSMOSDB_SERVER_PARTITIONS || "1", 10) || 1);
const RU_PER_PARTITION = Math.max(0, Number(process.env.COSMOSDB_SERVER_RU_PER_PARTITION || "0") || 0);
const buckets = Array.from({ length: PARTITIONS }, () => ({
  tokens: RU_PER_PARTITION,
  at: process.hrtime.bigint(),
  requests: 0,
  charge: 0,
  throttled: 0
}));
const byOperation = new Map();
const byKey = new Map();
const started = Date.now();

// FNV-1a over the key's JSON text: stable, and spreads similar keys.
function partitionOf(key) {
  const text = JSON.stringify(key === undefined ? null : key);
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i += 1) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h % PARTITIONS;
}

function refill(bucket) {
  const now = process.hrtime.bigint();
  const seconds = Number(now - bucket.at) / 1e9;
  bucket.at = now;
  bucket.tokens = Math.min(RU_PER_PARTITION, bucket.tokens + seconds * RU_PER_PARTITION);
}

const round = ru => Math.round(ru * 100) / 100;
const kb = bytes => Math.max(1, Math.ceil(bytes / 1024));

// How many of `doc`'s top-level properties the policy indexes.
function indexedProperties(doc, policy) {
  if (!doc || typeof doc !== "object") return 0;
  const paths = list => ((policy && policy[list]) || []).map(p => p.path);
  const included = paths("includedPaths");
  const excluded = paths("excludedPaths");
  const covers = (list, name) =>
    list.some(p => p === "/*" || p === `/${name}/?` || p === `/${name}/*` || p.startsWith(`/${name}/`));
  const everything = !policy || !policy.includedPaths || included.includes("/*");
  return Object.keys(doc).filter(name => {
    if (name.startsWith("_")) return false;
    const exact = excluded.some(p => p === `/${name}/?` || p === `/${name}/*`);
    if (exact) return false;
    if (covers(included.filter(p => p !== "/*"), name)) return true;
    return everything && !excluded.includes("/*");
  }).length;
}

function writeCharge(doc, bytes, policy) {
  return 5 * kb(bytes) + 0.2 * indexedProperties(doc, policy);
}

function batchCharge(ops, policy) {
  if (!Array.isArray(ops)) return 5;
  return ops.reduce((sum, op) => {
    const type = op && op.operationType;
    if (type === "Read") return sum + 1;
    if (type === "Delete") return sum + 5;
    const doc = op && op.resourceBody;
    return sum + writeCharge(doc, Buffer.byteLength(JSON.stringify(doc || {})), policy);
  }, 0);
}

// Which handlers are document operations, and how each is metered.
const METERED = new Map([
  [handler("create-document"), "create"],
  [handler("upsert-document"), "upsert"],
  [handler("replace-document"), "replace"],
  [handler("patch-document"), "patch"],
  [handler("delete-document"), "delete"],
  [handler("read-document"), "read"],
  [handler("read-documents"), "feed"],
  [handler("query-documents"), "query"],
  [handler("batch-documents"), "batch"]
]);

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on("data", chunk => chunks.push(chunk));
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

function keyOf(req) {
  const header = partitionHeader.default(req);
  if (header === undefined) return undefined;
  try {
    return { key: partitionHeader.parsePartitionKey(header) };
  } catch (_err) {
    return { key: header };
  }
}

const everyPartition = () => buckets.map((_, i) => i);

// The estimate charged at admission, per partition.
function estimate(kind, req, policy, partitions) {
  let each;
  if (kind === "read") each = 1;
  else if (kind === "delete") each = 5;
  else if (kind === "query") each = 2.5;
  else if (kind === "feed") each = 2;
  else {
    let body = null;
    try {
      body = JSON.parse(req[BODY].toString());
    } catch (_err) {
      body = null;
    }
    each = kind === "batch" ? batchCharge(body, policy) : writeCharge(body, req[BODY].length, policy);
  }
  return new Map(partitions.map(p => [p, each]));
}

// The actual charge, per partition, once the handler has answered.
function actual(kind, res, result, admitted) {
  if (kind === "read") {
    const found = res.statusCode < 300 && result;
    return mapEach(admitted, () => (found ? kb(Buffer.byteLength(JSON.stringify(result))) : 1));
  }
  if (kind === "query" || kind === "feed") {
    const items = (result && (result.Documents || result.Items)) || [];
    const bytes = items.length ? Buffer.byteLength(JSON.stringify(items)) : 0;
    const share = admitted.size;
    if (kind === "query") return mapEach(admitted, () => 2.5 + (0.05 * bytes) / 1024 / share);
    // The change feed: each document to its own partition.
    const charges = mapEach(admitted, () => 2);
    for (const item of items) {
      const doc = item && item.current ? item.current : item;
      const p = partitionOf(doc && doc.pk !== undefined ? doc.pk : undefined);
      if (charges.has(p)) charges.set(p, charges.get(p) + 0.3);
    }
    return charges;
  }
  return admitted;
}

const mapEach = (m, f) => new Map([...m.keys()].map(k => [k, f(k)]));

function count(operation, field, n) {
  const entry = byOperation.get(operation) || { requests: 0, charge: 0, throttled: 0 };
  entry[field] += n;
  byOperation.set(operation, entry);
}

// The seconds until every partition of `charges` holds its charge (0: now).
function waitFor(charges) {
  if (RU_PER_PARTITION <= 0) return { wait: 0, short: [] };
  let wait = 0;
  const short = [];
  for (const [p, ru] of charges) {
    const bucket = buckets[p];
    refill(bucket);
    // A request costlier than a second's budget waits for a full bucket.
    const need = Math.min(ru, RU_PER_PARTITION);
    if (bucket.tokens < need) {
      short.push(p);
      wait = Math.max(wait, (need - bucket.tokens) / RU_PER_PARTITION);
    }
  }
  return { wait, short };
}

function throttle(req, res, kind, short, wait) {
  for (const p of short) buckets[p].throttled += 1;
  count(kind, "throttled", 1);
  const activity = require("crypto").randomUUID();
  res.statusCode = 429;
  res.setHeader("x-ms-retry-after-ms", String(Math.max(1, Math.ceil(wait * 1000))));
  res.setHeader("x-ms-substatus", "3200");
  res[CHARGE] = "0";
  return {
    code: "TooManyRequests",
    message:
      'Message: {"Errors":["Request rate is large. More Request Units may be needed, so no changes were made. ' +
      'Please retry this request later. Learn more: http://aka.ms/cosmosdb-error-429"]}\r\n' +
      `ActivityId: ${activity}, Request URI: ${req.url}, RequestStats: , SDK: cosmosdb-server (simulated partition ${short.join(",")})`
  };
}

const CHARGE = Symbol("charge");

async function metered(kind, run, account, req, res, params) {
  // The package sets `x-ms-request-charge: 1` after every handler: keep ours.
  const setHeader = res.setHeader;
  res.setHeader = function keepCharge(name, value) {
    const ours = String(name).toLowerCase() === "x-ms-request-charge" && res[CHARGE] !== undefined;
    return setHeader.call(this, name, ours ? res[CHARGE] : value);
  };
  if (req.method === "POST" || req.method === "PUT" || req.method === "PATCH") req[BODY] = await readBody(req);
  // (The handlers parse the body read here, req[BODY], through json.default.)
  if (params.collId !== METERED_CONTAINER) return run(account, req, res, params);
  const collection = account.database(params.dbId).collection(params.collId);
  const policy = (collection.read() || {}).indexingPolicy;
  const key = keyOf(req);
  // A change feed or cross-partition query runs on every partition.
  const partitions = key === undefined ? everyPartition() : [partitionOf(key.key)];
  const operation = kind === "feed" && req.headers["a-im"] ? "changefeed" : kind;
  const admitted = estimate(kind, req, policy, partitions);
  const { wait, short } = waitFor(admitted);
  if (wait > 0) return throttle(req, res, operation, short, wait);
  for (const [p, ru] of admitted) buckets[p].tokens -= ru;
  let result;
  try {
    result = await run(account, req, res, params);
  } finally {
    const charges = actual(operation === "changefeed" ? "feed" : kind, res, result, admitted);
    let total = 0;
    for (const [p, ru] of charges) {
      const bucket = buckets[p];
      bucket.tokens -= ru - (admitted.get(p) || 0);
      bucket.requests += 1;
      bucket.charge += ru;
      total += ru;
    }
    count(operation, "requests", 1);
    count(operation, "charge", total);
    const name = key === undefined ? "(every partition)" : String(key.key);
    byKey.set(name, (byKey.get(name) || 0) + total);
    res[CHARGE] = String(round(total));
  }
  return result;
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
  if (!found) return found;
  const [params, original] = found;
  const fix = fixes.get(original);
  const run = fix ? (account, ...rest) => fix(original, account, ...rest) : original;
  const kind = METERED.get(original);
  if (!kind) return [params, run];
  return [params, (account, ...rest) => metered(kind, run, account, ...rest)];
};

// (9) The counters of section 8, for tests and benchmarks:
// `GET /_sim/stats` answers
//   {partitions, ruPerPartition, seconds, requests, charge, throttled,
//    perPartition: [{partition, requests, charge, throttled}],
//    byOperation: {create|upsert|replace|patch|delete|read|feed|changefeed|query|batch:
//                  {requests, charge, throttled}},
//    hotKeys: [{key, partition, charge}]}  (the ten costliest partition keys)
// (`charge` in RU, `throttled` the 429s answered; a cross-partition request
// counts once per partition in perPartition, once in byOperation).
function stats() {
  const perPartition = buckets.map((b, partition) => ({
    partition,
    requests: b.requests,
    charge: round(b.charge),
    throttled: b.throttled
  }));
  const operations = {};
  for (const [name, e] of byOperation) operations[name] = { ...e, charge: round(e.charge) };
  const sum = field => [...byOperation.values()].reduce((n, e) => n + e[field], 0);
  return {
    partitions: PARTITIONS,
    ruPerPartition: RU_PER_PARTITION,
    seconds: (Date.now() - started) / 1000,
    requests: sum("requests"),
    charge: round(sum("charge")),
    throttled: sum("throttled"),
    perPartition,
    byOperation: operations,
    hotKeys: [...byKey]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 10)
      .map(([key, charge]) => ({ key, partition: key === "(every partition)" ? null : partitionOf(key), charge: round(charge) }))
  };
}

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
{
  const handlers = server.listeners("request");
  server.removeAllListeners("request");
  server.on("request", (req, res) => {
    if (req.method === "GET" && req.url === "/_sim/stats") {
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify(stats()));
      return;
    }
    handlers.forEach(h => h.call(server, req, res));
  });
}
server.listen(port, "127.0.0.1", () => {
  const { address, port: chosen } = server.address();
  console.log(`LISTENING ${address}:${chosen}`);
});
