// The connections view: many streams in one page, and how many connections they need.
//
// Start creates N streams (POST /api/streams, before anything else holds a connection),
// then reads each of them twice at once:
// - with its own EventSource (GET /api/streams/{id}/sse): one HTTP request per stream.
//   Over HTTP/1.1 the browser keeps at most six connections per origin, and a streaming
//   response holds its connection until it ends, so the seventh EventSource waits; over
//   HTTP/2 and HTTP/3 all of them are streams of one connection and flow at once;
// - over one WebSocket (GET /api/ws) with a {"op":"subscribe"} per stream: one connection,
//   every stream flows, whatever the path.
//
// The protocol each EventSource really used is its Resource Timing entry's
// nextHopProtocol. Chromium lists a request when its response ends, so a panel shows its
// protocol when its stream is done or stopped; a stream that never got a connection has
// none. A WebSocket has no entry: it is an HTTP/1.1 Upgrade (no path of the lab offers
// WebSocket over HTTP/2, RFC 8441).
//
// On a server started with --auth-token (/api/info says "auth": true) a Token field
// appears and the page sends it: as `Authorization: Bearer` on every HTTP request, so each
// stream is read with fetch (text/event-stream, decoded by the JS client's SSEDecoder)
// instead of an EventSource, which cannot send a header (the connection limit is the
// same: one request per stream); and as {"op":"auth"} first on the WebSocket. The token
// stays in the page.
//
// Every URL is relative to the page, so the page works through any proxy in front of the
// server. Model output goes into the page as text, never as HTML. Each panel and group
// carries its state in data-* attributes (tests/test_net_paths.py reads them).

import { SSEDecoder } from "/js/tokenwire.js";

const $ = (selector, root = document) => root.querySelector(selector);
const TAIL_CHARS = 48;

async function sha256(text) {
  const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
  return [...hash].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** One stream read one way: a small card with its state, tokens, protocol and last text. */
class Conn {
  constructor(group, index, id) {
    this.group = group;
    this.id = id;
    this.text = "";
    this.tokens = 0;
    this.el = $("#conn-template").content.firstElementChild.cloneNode(true);
    $('[data-role="num"]', this.el).textContent = `#${index + 1}`;
    this.el.title = `stream ${id}`;
    this.el.dataset.stream = id;
    group.conns.push(this);
    group.container.append(this.el);
    this.setState("waiting");
  }

  get state() {
    return this.el.dataset.state;
  }

  setState(state, detail = state) {
    this.el.dataset.state = state;
    $('[data-role="state"]', this.el).textContent = detail;
    this.group.render();
  }

  setProtocol(protocol) {
    this.el.dataset.protocol = protocol;
    $('[data-role="protocol"]', this.el).textContent = protocol || "no connection";
    this.group.render();
  }

  token(text) {
    this.tokens += 1;
    this.text += text;
    $('[data-role="tokens"]', this.el).textContent = String(this.tokens);
    $('[data-role="tail"]', this.el).textContent = this.text.slice(-TAIL_CHARS);
    if (this.state !== "flowing") this.setState("flowing");
  }

  async done(ev) {
    if (!this.live()) return;
    this.setState("checking");
    const ok = (await sha256(this.text)) === ev.sha256;
    this.setState(ok ? "done" : "error", ok ? "exact" : "sha256 mismatch");
    finished();
  }

  fail(why) {
    if (!this.live()) return;
    this.setState("error", why);
    finished();
  }

  stop() {
    if (this.live()) this.setState("stopped");
  }

  live() {
    return ["waiting", "connected", "flowing"].includes(this.state);
  }
}

/** A section of the page: the panels read one way, and their counts. */
class Group {
  constructor(section) {
    this.section = section;
    this.container = $('[data-role="conns"]', section);
    this.summary = $('[data-role="summary"]', section);
    this.conns = [];
    this.connections = "";
  }

  reset() {
    this.conns = [];
    this.container.replaceChildren();
    this.render();
  }

  render() {
    const count = (s) => this.conns.filter((c) => c.state === s).length;
    const counts = {
      flowing: count("flowing"),
      connected: count("connected"),
      waiting: count("waiting"),
      done: count("done"),
      error: count("error"),
      stopped: count("stopped"),
    };
    for (const [k, v] of Object.entries(counts)) this.section.dataset[k] = String(v);
    const protocols = [...new Set(this.conns.map((c) => c.el.dataset.protocol).filter(Boolean))];
    this.section.dataset.protocols = protocols.join(",");
    if (!this.conns.length) {
      this.summary.textContent = "–";
      return;
    }
    const parts = Object.entries(counts)
      .filter(([k, v]) => v || k === "flowing" || k === "waiting")
      .map(([k, v]) => `${v} ${k}`);
    if (this.connections) parts.push(this.connections);
    if (protocols.length) parts.push(`protocol ${protocols.join(", ")}`);
    this.summary.textContent = `${parts.join(" · ")} (of ${this.conns.length})`;
  }
}

const groups = { sse: new Group($("#sse-group")), ws: new Group($("#ws-group")) };
const form = $("#controls");
let run = null;

function setStatus(text, { error = false } = {}) {
  const el = $("#status");
  el.textContent = text;
  el.classList.toggle("error", error);
}

/** Each EventSource's protocol, when Chromium lists its request (its response ended). */
const bySSEPath = new Map();
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    const conn = bySSEPath.get(new URL(entry.name).pathname);
    if (conn) conn.setProtocol(entry.nextHopProtocol);
  }
}).observe({ type: "resource", buffered: true });

/** The token the page sends (null: none asked for, or the field left empty). */
function authToken() {
  return $("#token-field").hidden ? null : $("#token").value.trim() || null;
}

function authHeaders(token) {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function createStreams(n, body, token) {
  const create = async () => {
    const r = await fetch("/api/streams", {
      method: "POST",
      headers: { "Content-Type": "application/json", ...authHeaders(token) },
      body: JSON.stringify(body),
    });
    const answer = await r.json().catch(() => null);
    if (!r.ok) throw new Error(`POST /api/streams: HTTP ${r.status} ${answer?.error?.message ?? ""}`);
    return answer.id;
  };
  return Promise.all(Array.from({ length: n }, create));
}

/** One stream's SSE over fetch, with the token in the header (the same request an
 * EventSource makes, plus Authorization). */
async function fetchSSE(current, conn, path, token) {
  const abort = new AbortController();
  current.closers.push(() => abort.abort());
  let resp;
  try {
    resp = await fetch(path, {
      headers: { Accept: "text/event-stream", ...authHeaders(token) },
      signal: abort.signal,
    });
  } catch (error) {
    if (!abort.signal.aborted) conn.fail("network error");
    return;
  }
  if (!resp.ok) {
    const answer = await resp.json().catch(() => null);
    conn.fail(`HTTP ${resp.status} ${answer?.error?.code ?? ""}`.trim());
    return;
  }
  if (conn.state === "waiting") conn.setState("connected", "connected, no token");
  const decoder = new SSEDecoder();
  const reader = resp.body.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      for (const m of decoder.feed(value)) {
        const ev = JSON.parse(m.data);
        if (ev.type === "token") conn.token(ev.text);
        else if (ev.type === "done") await conn.done(ev);
        else if (ev.type === "error") conn.fail(ev.code ?? "error");
      }
    }
    conn.fail("ended before");
  } catch (error) {
    if (!abort.signal.aborted) conn.fail("network error");
  } finally {
    reader.cancel().catch(() => {});
  }
}

function readSSE(current, ids, token) {
  ids.forEach((id, i) => {
    const conn = new Conn(groups.sse, i, id);
    const path = `/api/streams/${id}/sse`;
    bySSEPath.set(path, conn);
    if (token) {
      fetchSSE(current, conn, path, token);
      return;
    }
    const es = new EventSource(path);
    current.closers.push(() => es.close());
    // The response began (it has a connection) but no token came yet: a buffering proxy.
    es.addEventListener("open", () => {
      if (conn.state === "waiting") conn.setState("connected", "connected, no token");
    });
    es.addEventListener("token", (e) => conn.token(JSON.parse(e.data).text));
    es.addEventListener("done", (e) => {
      es.close();
      conn.done(JSON.parse(e.data));
    });
    // The browser's own `error` (connection trouble) has no data; the server's has.
    es.addEventListener("error", (e) => {
      if (e.data) {
        es.close();
        conn.fail(JSON.parse(e.data).code ?? "error");
      } else if (es.readyState === EventSource.CLOSED) {
        conn.fail("closed");
      }
    });
  });
}

function readWS(current, ids, token) {
  const byId = new Map(ids.map((id, i) => [id, new Conn(groups.ws, i, id)]));
  const url = new URL("/api/ws", location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(url);
  current.closers.push(() => ws.close(1000));
  groups.ws.connections = "1 WebSocket connecting";
  groups.ws.render();
  ws.onopen = () => {
    groups.ws.connections = `1 WebSocket connection (${url.protocol.slice(0, -1)}, HTTP/1.1 Upgrade)`;
    for (const conn of byId.values()) conn.setProtocol("websocket");
    // A browser cannot set headers on a WebSocket: the token is the first message.
    if (token) ws.send(JSON.stringify({ op: "auth", token }));
    for (const id of ids) ws.send(JSON.stringify({ op: "subscribe", stream: id }));
  };
  ws.onmessage = (m) => {
    const ev = JSON.parse(m.data);
    const conn = byId.get(ev.stream);
    if (!conn) {
      if (ev.type === "error") setStatus(`WebSocket: ${ev.code}: ${ev.message}`, { error: true });
      return;
    }
    if (ev.type === "token") conn.token(ev.text);
    else if (ev.type === "done") conn.done(ev);
    else if (ev.type === "error") conn.fail(ev.code);
    else if (ev.type === "end") conn.fail("ended before");
  };
  ws.onclose = (e) => {
    groups.ws.connections = `WebSocket closed (${e.code})`;
    for (const conn of byId.values()) conn.fail(`closed ${e.code}`);
  };
}

async function start() {
  stop();
  const n = Number($("#count").value);
  const body = {
    prompt: "Explain why a browser waits for a free connection.",
    max_tokens: Number($("#max-tokens").value),
    params: { tokens_per_s: Number($("#tps").value), jitter: 0 },
  };
  const token = authToken();
  const current = { closers: [] };
  run = current;
  for (const g of Object.values(groups)) {
    g.connections = "";
    g.reset();
  }
  bySSEPath.clear();
  $("#stop").disabled = false;
  document.body.dataset.run = "starting";
  setStatus(`Creating ${n} streams…`);
  let ids;
  try {
    ids = await createStreams(n, body, token);
  } catch (error) {
    setStatus(String(error.message || error), { error: true });
    document.body.dataset.run = "error";
    return;
  }
  if (run !== current) return;
  for (const el of document.querySelectorAll('[data-role="sse-api"]')) {
    el.textContent = token ? "fetch (text/event-stream)" : "EventSource";
  }
  if ($("#use-sse").checked) readSSE(current, ids, token);
  if ($("#use-ws").checked) readWS(current, ids, token);
  document.body.dataset.run = "running";
  setStatus(`Reading ${n} streams.`);
}

/** When no panel is live any more, the run is over. */
function finished() {
  if (!run) return;
  const all = Object.values(groups).flatMap((g) => g.conns);
  if (all.some((c) => c.live() || c.state === "checking")) return;
  const failed = all.filter((c) => c.state === "error").length;
  for (const close of run.closers) close(); // the WebSocket: nothing more to read on it
  run = null;
  $("#stop").disabled = true;
  document.body.dataset.run = "done";
  setStatus(failed ? `Every stream ended; ${failed} with an error.` : "Every stream ended, exact.");
}

function stop() {
  if (!run) return;
  for (const close of run.closers) close();
  for (const g of Object.values(groups)) for (const c of g.conns) c.stop();
  run = null;
  $("#stop").disabled = true;
  document.body.dataset.run = "stopped";
  setStatus("Stopped.");
}

form.addEventListener("submit", (e) => {
  e.preventDefault();
  start();
});
$("#stop").addEventListener("click", stop);

const nav = performance.getEntriesByType("navigation")[0];
$("#page-protocol").textContent = nav?.nextHopProtocol || "?";
$("#origin").textContent = location.origin;
document.body.dataset.pageProtocol = nav?.nextHopProtocol ?? "";
try {
  const info = await (await fetch("/api/info")).json();
  $("#token-field").hidden = !info.auth;
  if (info.auth) setStatus("This server needs its token (--auth-token): enter it, then Start.");
  $("#max-tokens").max = String(info.limits.max_tokens);
} catch (error) {
  setStatus(`Could not read /api/info: ${error.message}`, { error: true });
}
document.body.dataset.run = "idle";
