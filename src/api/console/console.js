// The webhook console: plain DOM, no framework, no eval, no inline code
// (the page's Content-Security-Policy forbids both). It calls the public
// API with the bearer token the user gave, kept in this closure only.
"use strict";

(() => {
  const API = "/events/api/v1";
  const dev = document.body.dataset.dev === "true";
  let token = null;
  let subscriptions = [];
  let current = null;

  const $ = (id) => document.getElementById(id);

  /** An element with properties (`text`, `class`, `on<event>`, attributes) and children. */
  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null) continue;
      if (k === "text") e.textContent = v;
      else if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const c of children) if (c !== undefined && c !== null) e.append(c);
    return e;
  }

  /** An answer of the API that is not 2xx, with its problem+json. */
  class Problem extends Error {
    constructor(status, body) {
      const detail = (body && (body.detail || body.title)) || `HTTP ${status}`;
      super(status ? `${detail} (${status})` : detail);
      this.status = status;
      this.body = body || {};
      this.detail = detail;
    }
  }

  async function call(method, path, body) {
    if (!token) throw new Problem(0, { detail: "Give a token first (Who you are, above)." });
    const headers = { Authorization: `Bearer ${token}`, Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await resp.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_) {
      data = { detail: text };
    }
    if (!resp.ok) throw new Problem(resp.status, data);
    return data;
  }

  function say(text) {
    const m = $("message");
    m.textContent = text || "";
    m.hidden = !text;
  }

  function fail(e) {
    say(e instanceof Problem ? e.message : `Something went wrong: ${e}`);
  }

  /** A short confirmation of what an action did. */
  function note(text) {
    $("notice").textContent = text;
  }

  // --- who you are -------------------------------------------------------

  /** What a JWT says of its holder, for display only (the API checks it). */
  function describe(jwt) {
    try {
      const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const claims = JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
      const who =
        (claims["urn:altinn:org"] && `service owner ${claims["urn:altinn:org"]}`) ||
        (claims["urn:altinn:userid"] && `user ${claims["urn:altinn:userid"]}`) ||
        (claims.authorization_details && "a system user") ||
        (claims["urn:altinn:orgNumber"] && `organisation ${claims["urn:altinn:orgNumber"]}`) ||
        "an identity";
      const exp = claims.exp ? `, valid until ${new Date(claims.exp * 1000).toLocaleTimeString()}` : "";
      return `Using a token of ${who}${exp}.`;
    } catch (_) {
      return "Using the token given (it does not read as a JWT; the API will say whether it is one).";
    }
  }

  function useToken(value) {
    token = value.trim() || null;
    // Nothing the last identity was shown stays for the next.
    subscriptions = [];
    $("created").hidden = true;
    $("created-secret").textContent = "";
    clearSubscription();
    $("who").textContent = token ? describe(token) : "No token yet: lists and actions need one.";
    say("");
    route();
  }

  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    useToken($("token-input").value);
    $("token-input").value = "";
  });

  if (dev) {
    $("dev-form").hidden = false;
    $("nav-inbox").hidden = false;
    $("dev-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        const resp = await fetch($("identity").value);
        if (!resp.ok) throw new Problem(resp.status, { detail: "the local issuer refused" });
        useToken(await resp.text());
      } catch (e) {
        fail(e);
      }
    });
  }

  // --- views -------------------------------------------------------------

  const views = ["subscriptions", "subscription", "verify", "inbox"];

  function show(name) {
    for (const v of views) $(`view-${v}`).hidden = v !== name;
    const tab = name === "subscription" ? "subscriptions" : name;
    for (const a of document.querySelectorAll(".tabs a")) {
      if (a.id === `nav-${tab}`) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
  }

  let pendingNote = "";

  function route() {
    // Only the views' own hashes (#/...): the skip link's #main stays put.
    if (location.hash && !location.hash.startsWith("#/")) return;
    const hash = location.hash || "#/subscriptions";
    const one = hash.match(/^#\/subscriptions\/(\d+)$/);
    say("");
    note(pendingNote);
    pendingNote = "";
    if (one) {
      show("subscription");
      loadSubscription(Number(one[1]));
    } else if (hash === "#/verify") {
      show("verify");
    } else if (hash === "#/inbox" && dev) {
      show("inbox");
      $("inbox-url").textContent = `${location.origin}/localtest/webhooks/${$("inbox-name").value}`;
      loadInbox();
    } else {
      show("subscriptions");
      loadSubscriptions();
    }
  }
  window.addEventListener("hashchange", () => {
    if (location.hash && !location.hash.startsWith("#/")) return;
    route();
    $("main").focus();
  });

  // --- subscriptions -----------------------------------------------------

  function ago(time) {
    if (!time) return "up to date";
    const ms = Date.now() - Date.parse(time);
    if (!Number.isFinite(ms)) return time;
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 90) return `${s} s`;
    if (s < 5400) return `${Math.round(s / 60)} min`;
    if (s < 172800) return `${Math.round(s / 3600)} h`;
    return `${Math.round(s / 86400)} days`;
  }

  function filtersOf(s) {
    return ["resourceFilter", "sourceFilter", "subjectFilter", "alternativeSubjectFilter", "typeFilter"]
      .filter((k) => s[k])
      .map((k) => s[k])
      .join(" · ");
  }

  function renderSubscriptions() {
    const text = $("filter-text").value.trim().toLowerCase();
    const status = $("filter-status").value;
    const shown = subscriptions.filter(
      (s) =>
        (!status || s.status === status) &&
        (!text || `${s.id} ${s.endPoint} ${filtersOf(s)}`.toLowerCase().includes(text)),
    );
    const body = $("subs-table").tBodies[0];
    body.replaceChildren(
      ...shown.map((s) =>
        el(
          "tr",
          { "data-id": String(s.id) },
          el("td", {}, el("a", { href: `#/subscriptions/${s.id}`, text: String(s.id) })),
          el("td", { class: "endpoint", text: s.endPoint }),
          el("td", { text: filtersOf(s) }),
          el("td", {}, el("span", { class: `badge ${s.status}`, text: s.status })),
          el("td", { text: s.delivery ? ago(s.delivery.oldestPending) : "–" }),
          el("td", { class: "error-text", text: s.lastError || "" }),
          el(
            "td",
            {},
            el("button", {
              type: "button",
              class: "danger",
              text: "Delete",
              "aria-label": `Delete subscription ${s.id}`,
              onclick: () => remove(s.id),
            }),
          ),
        ),
      ),
    );
    $("subs-empty").hidden = shown.length > 0;
  }

  async function loadSubscriptions() {
    if (!token) {
      subscriptions = [];
      renderSubscriptions();
      return;
    }
    try {
      const list = await call("GET", `${API}/subscriptions`);
      subscriptions = list.subscriptions || [];
      renderSubscriptions();
    } catch (e) {
      subscriptions = [];
      renderSubscriptions();
      fail(e);
    }
  }

  $("filter-text").addEventListener("input", renderSubscriptions);
  $("filter-status").addEventListener("change", renderSubscriptions);
  $("refresh").addEventListener("click", loadSubscriptions);

  const fields = ["endPoint", "resourceFilter", "sourceFilter", "subjectFilter", "typeFilter"];

  /** The field a 400's detail is about: a field named in it, else by the
   * words Altinn's texts use ("resource" before "source", which it contains). */
  function fieldOf(problem) {
    if (!(problem instanceof Problem) || problem.status !== 400) return null;
    const d = (problem.detail || "").toLowerCase();
    const named = fields.find((f) => d.includes(f.toLowerCase()));
    if (named) return named;
    if (d.includes("endpoint") || d.includes("end point")) return "endPoint";
    if (d.includes("resource")) return "resourceFilter";
    if (d.includes("source")) return "sourceFilter";
    if (d.includes("subject")) return "subjectFilter";
    if (d.includes("type")) return "typeFilter";
    return null;
  }

  function clearErrors() {
    for (const f of fields) {
      $(`e-${f}`).textContent = "";
      $(`f-${f}`).removeAttribute("aria-invalid");
    }
    $("e-form").textContent = "";
  }

  $("create-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors();
    $("created").hidden = true;
    const body = {};
    for (const f of fields) {
      const v = $(`f-${f}`).value.trim();
      if (v) body[f] = v;
    }
    try {
      const made = await call("POST", `${API}/subscriptions`, body);
      $("created-id").textContent = String(made.id);
      $("created-secret").textContent = made.secret || "";
      $("created").hidden = false;
      $("created").querySelector("button.copy").focus();
      ev.target.reset();
      await loadSubscriptions();
    } catch (e) {
      const field = fieldOf(e);
      if (field) {
        $(`e-${field}`).textContent = e.detail;
        $(`f-${field}`).setAttribute("aria-invalid", "true");
        $(`f-${field}`).focus();
      } else {
        $("e-form").textContent = e.message;
      }
    }
  });

  function confirmDialog(text) {
    return new Promise((resolve) => {
      const dialog = $("confirm");
      $("confirm-text").textContent = text;
      // Escape closes it without a value: the last one must not count.
      dialog.returnValue = "";
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.showModal();
    });
  }

  async function remove(id) {
    if (!(await confirmDialog(`Delete subscription ${id}? Its pushes stop and its id is not given out again.`))) return;
    try {
      await call("DELETE", `${API}/subscriptions/${id}`);
      if (location.hash !== "#/subscriptions") {
        pendingNote = `Subscription ${id} deleted.`;
        location.hash = "#/subscriptions";
      } else {
        await loadSubscriptions();
        note(`Subscription ${id} deleted.`);
        $("subs-title").focus();
      }
    } catch (e) {
      fail(e);
    }
  }

  // --- one subscription --------------------------------------------------

  function fact(list, name, value) {
    list.append(el("dt", { text: name }), el("dd", { text: value === undefined || value === null ? "–" : String(value) }));
  }

  /** Forgets what is shown of a subscription (another one, or none). */
  function clearSubscription() {
    $("rotated").hidden = true;
    $("sub-facts").replaceChildren();
    $("deliveries").tBodies[0].replaceChildren();
    $("chart").replaceChildren();
    $("next-retry").textContent = "";
  }

  async function loadSubscription(id) {
    // A secret just shown stays while its subscription is reloaded.
    if (current !== id) clearSubscription();
    current = id;
    $("sub-title").textContent = `Subscription ${id}`;
    if (!token) {
      clearSubscription();
      return;
    }
    try {
      const [s, list] = await Promise.all([
        call("GET", `${API}/subscriptions/${id}`),
        call("GET", `${API}/subscriptions/${id}/deliveries`),
      ]);
      if (current !== id) return;
      const facts = $("sub-facts");
      facts.replaceChildren();
      fact(facts, "Status", s.status);
      fact(facts, "Endpoint", s.endPoint);
      fact(facts, "Filters", filtersOf(s));
      fact(facts, "Consumer", s.consumer);
      fact(facts, "Created", s.created);
      fact(facts, "Last error", s.lastError);
      fact(facts, "Behind", s.delivery ? ago(s.delivery.oldestPending) : "–");
      renderDeliveries(list.deliveries || []);
      const d = s.delivery;
      $("next-retry").textContent =
        d && d.nextRetry ? `Next retry ${new Date(d.nextRetry).toLocaleString()} (${d.failures} failed so far).` : "";
    } catch (e) {
      if (current === id) clearSubscription();
      fail(e);
    }
  }

  function renderDeliveries(deliveries) {
    $("deliveries").tBodies[0].replaceChildren(
      ...deliveries.map((a) =>
        el(
          "tr",
          { class: a.status >= 200 && a.status < 300 ? "ok-row" : "failed-row" },
          el("td", { text: new Date(a.time).toLocaleString() }),
          el("td", { class: "endpoint", text: a.eventId }),
          el("td", { text: a.type || "" }),
          el("td", { class: a.status >= 200 && a.status < 300 ? "ok" : "error", text: a.status ? String(a.status) : "no answer" }),
          el("td", { text: `${a.latencyMs} ms` }),
          el("td", { text: String(a.attempt || 1) }),
          el("td", { class: "error-text", text: a.error || "" }),
        ),
      ),
    );
    renderChart(deliveries.slice().reverse());
  }

  /** Latency bars of the attempts, oldest first; failures red. */
  function renderChart(attempts) {
    const svg = $("chart");
    const ns = "http://www.w3.org/2000/svg";
    const W = 600;
    const H = 160;
    svg.replaceChildren();
    const shown = attempts.slice(-60);
    if (!shown.length) {
      const t = document.createElementNS(ns, "text");
      t.setAttribute("x", "12");
      t.setAttribute("y", "84");
      t.setAttribute("fill", "#4a5460");
      t.textContent = "No attempts yet";
      svg.append(t);
      return;
    }
    const max = Math.max(50, ...shown.map((a) => a.latencyMs));
    const width = Math.min(24, W / shown.length);
    shown.forEach((a, i) => {
      const ok = a.status >= 200 && a.status < 300;
      const h = Math.max(3, ((H - 20) * a.latencyMs) / max);
      const r = document.createElementNS(ns, "rect");
      r.setAttribute("x", String(i * width + 1));
      r.setAttribute("y", String(H - h));
      r.setAttribute("width", String(Math.max(1, width - 2)));
      r.setAttribute("height", String(h));
      r.setAttribute("fill", ok ? "#1d6b34" : "#a4161a");
      const title = document.createElementNS(ns, "title");
      title.textContent = `${a.time}: ${a.status || "no answer"}, ${a.latencyMs} ms`;
      r.append(title);
      svg.append(r);
    });
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", "6");
    label.setAttribute("y", "14");
    label.setAttribute("font-size", "12");
    label.setAttribute("fill", "#1b1f24");
    label.textContent = `max ${max} ms`;
    svg.append(label);
  }

  async function act(path, done, body, failed) {
    say("");
    try {
      const result = await call("POST", `${API}/subscriptions/${current}/${path}`, body);
      if (done) done(result);
      await loadSubscription(current);
    } catch (e) {
      if (failed && e instanceof Problem && e.status === 400) failed(e);
      else fail(e);
    }
  }

  $("act-validate").addEventListener("click", () =>
    act("validate", () => note(`Subscription ${current}: validation started.`)),
  );
  $("act-enable").addEventListener("click", () =>
    act("enable", () => note(`Subscription ${current} enabled: delivery resumes from its checkpoint.`)),
  );
  $("act-rotate").addEventListener("click", () =>
    act("secret/rotate", (r) => {
      $("rotated-secret").textContent = r.secret;
      $("rotated").hidden = false;
      $("rotated").querySelector("button.copy").focus();
    }),
  );
  $("act-delete").addEventListener("click", () => remove(current));
  $("act-refresh").addEventListener("click", () => loadSubscription(current));

  $("replay-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    $("e-replay").textContent = "";
    const value = $("replay-value").value.trim();
    const body = $("replay-kind").value === "from" ? { from: value } : { after: value || "0" };
    act(
      "replay",
      () => note(`Subscription ${current}: replaying ${JSON.stringify(body)}.`),
      body,
      (e) => {
        $("e-replay").textContent = e.detail;
        $("replay-value").focus();
      },
    );
  });

  for (const button of document.querySelectorAll("button.copy")) {
    button.addEventListener("click", async () => {
      const text = $(button.dataset.copy).textContent;
      try {
        await navigator.clipboard.writeText(text);
        button.textContent = "Copied";
      } catch (_) {
        const range = document.createRange();
        range.selectNodeContents($(button.dataset.copy));
        getSelection().removeAllRanges();
        getSelection().addRange(range);
        button.textContent = "Selected: copy it";
      }
    });
  }

  // --- verify a signature (Standard Webhooks) ----------------------------

  function bytesOfBase64(text) {
    const raw = atob(text);
    return Uint8Array.from(raw, (c) => c.charCodeAt(0));
  }

  function base64OfBytes(bytes) {
    let raw = "";
    for (const b of new Uint8Array(bytes)) raw += String.fromCharCode(b);
    return btoa(raw);
  }

  /** Whether `signature` (space-separated `v1,<base64>`) signs id.timestamp.body with `secret`. */
  async function verifies(secret, id, timestamp, body, signature) {
    const key = await crypto.subtle.importKey(
      "raw",
      bytesOfBase64(secret.trim().replace(/^whsec_/, "")),
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["sign"],
    );
    const mac = await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(`${id}.${timestamp}.${body}`));
    const expected = base64OfBytes(mac);
    return signature
      .split(" ")
      .filter((s) => s.startsWith("v1,"))
      .some((s) => s.slice(3) === expected);
  }

  $("verify-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const result = $("verify-result");
    result.className = "status";
    try {
      const ok = await verifies(
        $("v-secret").value,
        $("v-id").value.trim(),
        $("v-timestamp").value.trim(),
        $("v-body").value,
        $("v-signature").value.trim(),
      );
      const age = Math.round(Date.now() / 1000 - Number($("v-timestamp").value));
      result.classList.add(ok ? "ok" : "bad");
      result.textContent = ok
        ? `Verifies: signed with this secret${Number.isFinite(age) ? ` ${age} s ago` : ""}.`
        : "Does not verify: another secret, or the body, id or timestamp is not exactly what was signed.";
    } catch (e) {
      result.classList.add("bad");
      result.textContent = `Cannot check: ${e.message || e} (is the secret whsec_ followed by base64?)`;
    }
  });

  // --- dev inbox ---------------------------------------------------------

  async function loadInbox() {
    const name = $("inbox-name").value.trim() || "console";
    $("inbox-url").textContent = `${location.origin}/localtest/webhooks/${name}`;
    try {
      const resp = await fetch(`/localtest/webhooks/${encodeURIComponent(name)}`);
      const log = await resp.json();
      $("inbox-list").replaceChildren(
        ...(log.received || []).map((r) =>
          el(
            "li",
            {},
            el("p", {}, el("strong", { text: r.receivedAt }), ` ${r.body && r.body.type ? r.body.type : ""}`),
            el(
              "pre",
              { class: "headers" },
              `webhook-id: ${r.webhookId}\nwebhook-timestamp: ${r.webhookTimestamp}\nwebhook-signature: ${r.webhookSignature}\ncontent-type: ${r.contentType}`,
            ),
            el("pre", { class: "body" }, r.rawBody !== undefined ? r.rawBody : JSON.stringify(r.body)),
            el("button", {
              type: "button",
              class: "secondary",
              text: "Verify this push",
              onclick: () => {
                $("v-body").value = r.rawBody !== undefined ? r.rawBody : JSON.stringify(r.body);
                $("v-id").value = r.webhookId || "";
                $("v-timestamp").value = r.webhookTimestamp || "";
                $("v-signature").value = r.webhookSignature || "";
                location.hash = "#/verify";
              },
            }),
          ),
        ),
      );
    } catch (e) {
      fail(e);
    }
  }
  $("inbox-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    loadInbox();
  });

  route();
})();
