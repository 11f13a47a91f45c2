// tokenwire client for browsers and Node 20+: one ES module, no dependencies, no build step.
// The twin of the Python client (clients/client.py): the same calls, options and errors.
//
//   import { Client } from "./tokenwire.js";
//   const client = new Client("http://127.0.0.1:8080");
//   const stream = client.stream("hello", { transport: "ws", max_tokens: 50 });
//   for await (const event of stream) if (event.type === "token") show(event.text);
//   console.log(stream.summary()); // ttft, gaps, transport latency, bytes, requests, reconnects
//
// The four transports carry the same events (docs/protocol.md):
//
//   sse      EventSource on GET /api/streams/{id}/sse after POST /api/streams; EventSource
//            reconnects by itself with Last-Event-ID, after the server's `retry:` time.
//            Without an EventSource (Node without --experimental-eventsource, or
//            `new Client(url, {EventSource: null})`), or with a token, SSE is read over
//            fetch with SSEDecoder,
//            as the Python client does: POST /api/sse, on a cut GET .../sse with Last-Event-ID.
//   ws       WebSocket on /api/ws: {"op":"generate",...}, and on a cut a new socket with
//            {"op":"subscribe","stream":id,"after":lastSeq}. A subscribe at the end of a
//            finished stream is answered {"type":"end"} (HTTP answers 204): the iteration
//            ends.
//   chunked  fetch POST /api/chunked (first line {"type":"created","stream":id}), and on a
//            cut GET /api/streams/{id}/chunked?after=lastSeq; NDJSONDecoder on a reader.
//   poll     a fetch loop on GET /api/streams/{id}/poll?after=&timeout= after POST /api/streams.
//
// With `new Client(url, { token })` (a server started with --auth-token) every HTTP request
// carries `Authorization: Bearer <token>`, SSE is read over fetch (EventSource cannot send
// headers, and a token in the URL would end up in logs), and a WebSocket sends
// {"op":"auth","token":...} as its first message (a browser cannot set headers on it). A
// wrong token throws ServerError with code "unauthorized" (status 401 over HTTP, null over
// a WebSocket), as the Python client does.
//
// Resume is on by default: a connection that drops before the terminal event is
// re-established over the same transport from the last seq received, with bounded
// exponential backoff (from the SSE `retry:` time when the server sent one, plus up to 25%
// jitter), and every event is yielded exactly once, in order (seq <= the last one is
// dropped, a gap throws ProtocolError). After `maxReconnects` failed attempts in a row, or
// at the first drop with `resume: false`, ConnectionLost is thrown. A drop before the
// stream id is known creates the stream again, like the Python client (the first one has
// no reader and the server cancels it after its grace period).
//
// The iteration ends after the terminal event. At `done` the SHA-256 of the UTF-8 text of
// all tokens is compared with its `sha256` before `done` is yielded: DigestMismatch if they
// differ (checked only when the stream was read from the start: `digestOk` is true, or null
// when not checked). An `error` event is yielded and then thrown as StreamFailed. Stop early
// with `break`, `stream.close()` or the `signal` option: the connection closes, the
// generation goes on (`client.cancel(id)` ends it).
//
// Measurements, on the stream object (times in milliseconds):
//   ttft           from the start of the first request to the first token's arrival
//   gaps           between consecutive tokens' arrivals
//   latencies      per token, arrival wall-clock time minus the event's `t` (the server's
//                  time.time_ns() when it logged the event): the transport-added latency.
//                  Arrival time is performance.timeOrigin + performance.now() (sub-ms; JSON
//                  numbers keep `t` to 0.25 us). Meaningful when both clocks agree.
//   bytesReceived  what came on the wire, as the Python client counts it: every HTTP
//                  response's status line and headers (rebuilt from Response.headers, an
//                  estimate) plus its body bytes; WebSocket message bytes plus frame headers
//                  (2 or 4 bytes). EventSource hides both, so there it is the size of each
//                  event's `id:`/`event:`/`data:` frame, rebuilt from the event. The create
//                  request of sse and poll (POST /api/streams) is not counted.
//   requests       HTTP requests and WebSocket connections made, the create included
//   reconnects     connections re-established after a drop
//   duplicates     events received again after a resume (dropped, never yielded)

import { NDJSONDecoder, SSEDecoder } from "./decoders.js";
import {
  ClosedByServer,
  ConnectionLost,
  DigestMismatch,
  ProtocolError,
  StreamFailed,
  serverError,
} from "./errors.js";

export { NDJSONDecoder, SSEDecoder } from "./decoders.js";
export * from "./errors.js";

export const TRANSPORTS = Object.freeze(["sse", "ws", "poll", "chunked"]);

const TERMINAL = new Set(["done", "error"]);
const JSON_HEADERS = { "Content-Type": "application/json" };

/** Wall-clock time in milliseconds with sub-millisecond precision. */
export function nowMs() {
  return performance.timeOrigin + performance.now();
}

function utf8Length(text) {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff) {
      n += 4; // a surrogate pair is one 4-byte character
      i++;
    } else n += 3;
  }
  return n;
}

/** The size of a response's status line and headers, as they came on the wire. */
function headerBytes(resp) {
  let n = utf8Length(`HTTP/1.1 ${resp.status} ${resp.statusText}\r\n\r\n`);
  for (const [name, value] of resp.headers) n += utf8Length(`${name}: ${value}\r\n`);
  return n;
}

/** WebSocket frame header size for a server-to-client (unmasked) payload. */
function wsFrameHeader(payload) {
  return payload < 126 ? 2 : payload < 65536 ? 4 : 10;
}

async function sha256Hex(text) {
  const digest = await globalThis.crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The error an HTTP error response stands for (`{"error":{"code","message"}}`). */
async function httpError(resp) {
  const text = await resp.text().catch(() => "");
  const retryAfter = resp.headers.has("Retry-After")
    ? Number(resp.headers.get("Retry-After"))
    : null;
  let code = "http_error";
  let message = text.slice(0, 300) || resp.statusText;
  try {
    const body = JSON.parse(text);
    if (body && body.error && typeof body.error.code === "string") {
      code = body.error.code;
      message = String(body.error.message);
    }
  } catch {
    // not a tokenwire error body: keep the status and the text
  }
  return serverError(code, message, resp.status, { retryAfter });
}

class Closed extends Error {} // the consumer closed the stream: end quietly

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new Closed());
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(new Closed());
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/** Callbacks in, promises out: bridges EventSource and WebSocket to async iteration. */
class Inbox {
  constructor(signal) {
    this._items = [];
    this._wake = null;
    signal.addEventListener("abort", () => this.push({ closedByUser: true }), { once: true });
  }

  push(item) {
    if (this._wake) {
      const wake = this._wake;
      this._wake = null;
      wake(item);
    } else {
      this._items.push(item);
    }
  }

  next() {
    if (this._items.length) return Promise.resolve(this._items.shift());
    return new Promise((resolve) => {
      this._wake = resolve;
    });
  }
}

/**
 * One stream read over one transport: an async iterable of its events, with measurements.
 * Get one from `Client.stream()` or `Client.subscribe()`; it can be iterated once.
 */
export class Stream {
  constructor(
    client,
    { id = null, body = null, transport = "sse", after = -1, resume = true, signal } = {},
  ) {
    if (!TRANSPORTS.includes(transport)) {
      throw new TypeError(`transport must be one of ${TRANSPORTS.join(", ")}, not ${transport}`);
    }
    this.client = client;
    /** The stream id (null until the server tells it). */
    this.id = id;
    this.transport = transport;
    this.resume = resume;
    /** The position this reader started from (-1: the beginning). */
    this.after = after;
    /** The seq of the last event yielded. */
    this.lastSeq = after;
    /** The text of the tokens yielded, concatenated. */
    this.text = "";
    /** How many tokens were yielded. */
    this.tokens = 0;
    /** The `done` event, once it arrived. */
    this.done = null;
    /** true once the `done` sha256 matched; null if not checked (read from `after`). */
    this.digestOk = null;
    this.ttft = null;
    this.gaps = [];
    this.latencies = [];
    this.bytesReceived = 0;
    this.requests = 0;
    this.reconnects = 0;
    this.duplicates = 0;
    this._body = body;
    this._position = after; // the last seq received by the transport (may be ahead of lastSeq)
    this._failures = 0;
    this._t0 = null;
    this._lastTokenAt = null;
    this._started = false;
    this._abort = new AbortController();
    if (signal) {
      if (signal.aborted) this._abort.abort();
      else signal.addEventListener("abort", () => this.close(), { once: true });
    }
  }

  /** Stop reading: the iteration ends quietly and the connection is closed. */
  close() {
    this._abort.abort();
  }

  /** Read the whole stream; returns its events. */
  async collect() {
    const events = [];
    for await (const event of this) events.push(event);
    return events;
  }

  /** Medians and p95s in milliseconds, counts as they are (the Python summary's keys). */
  summary() {
    const median = (values) => {
      if (!values.length) return null;
      const s = [...values].sort((a, b) => a - b);
      const mid = s.length >> 1;
      return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
    };
    const p95 = (values) => {
      if (!values.length) return null;
      const s = [...values].sort((a, b) => a - b);
      return s[Math.min(s.length - 1, Math.floor(0.95 * s.length))];
    };
    return {
      transport: this.transport,
      tokens: this.tokens,
      ttft_ms: this.ttft,
      gap_p50_ms: median(this.gaps),
      gap_p95_ms: p95(this.gaps),
      latency_p50_ms: median(this.latencies),
      latency_p95_ms: p95(this.latencies),
      bytes_received: this.bytesReceived,
      requests: this.requests,
      reconnects: this.reconnects,
    };
  }

  [Symbol.asyncIterator]() {
    if (this._started) throw new TypeError("a Stream can be iterated only once");
    this._started = true;
    return this._run();
  }

  async *_run() {
    this._t0 = performance.now();
    const read = {
      sse: this.client.EventSource && this.client.token === null ? sseEventSource : sseFetch,
      ws: websocket,
      chunked,
      poll,
    }[this.transport];
    try {
      for await (const { event, at } of read(this)) {
        if (event.seq <= this.lastSeq) continue; // a resume overlapped what we have
        if (event.seq !== this.lastSeq + 1) {
          throw new ProtocolError(`expected seq ${this.lastSeq + 1}, got ${event.seq}`);
        }
        this.lastSeq = event.seq;
        if (event.type === "token") {
          if (this.ttft === null) this.ttft = at - this._t0;
          else this.gaps.push(at - this._lastTokenAt);
          this._lastTokenAt = at;
          this.latencies.push(performance.timeOrigin + at - event.t / 1e6);
          this.text += event.text;
          this.tokens += 1;
          yield event;
        } else if (event.type === "done") {
          this.done = event;
          await this._checkDigest(event);
          yield event;
          return;
        } else {
          yield event;
          throw new StreamFailed(String(event.code), String(event.message), event);
        }
      }
    } catch (e) {
      if (e instanceof Closed) return;
      if (this._abort.signal.aborted && e?.name === "AbortError") return;
      throw e;
    } finally {
      this._abort.abort(); // whatever is still open closes
    }
  }

  async _checkDigest(event) {
    if (this.after !== -1 || !globalThis.crypto?.subtle) return; // not every token was seen
    const actual = await sha256Hex(this.text);
    if (actual !== event.sha256) {
      this.digestOk = false;
      throw new DigestMismatch(event.sha256, actual, event);
    }
    this.digestOk = true;
  }

  get _signal() {
    return this._abort.signal;
  }

  /** Record a received event; false if it is one we already have. */
  _accept(event) {
    if (event.seq <= this._position) {
      this.duplicates += 1;
      return false;
    }
    this._position = event.seq;
    this._failures = 0;
    return true;
  }

  async _fetch(path, init = {}) {
    this.requests += 1;
    return this.client.request(path, { ...init, signal: init.signal ?? this._signal });
  }

  /** POST /api/streams if this stream has no id yet (retried like a dropped connection). */
  async _ensureCreated() {
    while (this.id === null) {
      try {
        const resp = await this._fetch("/api/streams", {
          method: "POST",
          headers: JSON_HEADERS,
          body: JSON.stringify(this._body),
        });
        if (resp.status !== 201) throw await httpError(resp);
        // The answer's body can be cut too: that is a lost connection like any other.
        this.id = (await resp.json()).id;
      } catch (e) {
        await this._reconnectAfter(this._lost(e));
      }
    }
    return this.id;
  }

  /**
   * A failure of the connection (`e` thrown by fetch or a body read) as ConnectionLost;
   * anything else (an error answer, a bad frame, a close by the consumer) is rethrown.
   */
  _lost(e) {
    if (this._signal.aborted) throw new Closed();
    if (e instanceof ConnectionLost) return e;
    if (e instanceof SyntaxError) throw new ProtocolError(`bad frame: ${e.message}`, { cause: e });
    if (e instanceof Error && (e.name === "TypeError" || e.name === "AbortError")) {
      return new ConnectionLost(`the connection failed: ${e.message}`, { cause: e });
    }
    throw e;
  }

  /**
   * Wait before reconnecting, or throw `lost` if we should not: resume is off, or
   * `maxReconnects` attempts in a row failed. `baseMs` is the first delay (SSE `retry:`).
   */
  async _reconnectAfter(lost, baseMs = this.client.backoffMs) {
    if (this._signal.aborted) throw new Closed();
    if (!this.resume || this._failures >= this.client.maxReconnects) throw lost;
    const delay = Math.min(this.client.maxBackoffMs, baseMs * 2 ** this._failures);
    this._failures += 1;
    await sleep(delay * (1 + 0.25 * Math.random()), this._signal);
    this.reconnects += 1;
  }
}

// --- transports: async generators of {event, at} (at = performance.now() on arrival) ---

async function* readBody(stream, resp) {
  const reader = resp.body.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      stream.bytesReceived += value.length;
      yield value;
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

const ENDED = "the response ended before the stream's last event";

async function* chunked(stream) {
  for (;;) {
    let lost = new ConnectionLost(ENDED);
    try {
      const resp =
        stream.id === null
          ? await stream._fetch("/api/chunked", {
              method: "POST",
              headers: JSON_HEADERS,
              body: JSON.stringify(stream._body),
            })
          : await stream._fetch(`/api/streams/${stream.id}/chunked?after=${stream._position}`);
      stream.bytesReceived += headerBytes(resp);
      if (resp.status === 204) return; // finished, nothing after our position
      if (!resp.ok) throw await httpError(resp);
      const dec = new NDJSONDecoder();
      for await (const bytes of readBody(stream, resp)) {
        const at = performance.now();
        for (const obj of dec.feed(bytes)) {
          if (obj.type === "created") stream.id = obj.stream;
          else if (typeof obj.seq === "number" && stream._accept(obj)) yield { event: obj, at };
        }
      }
    } catch (e) {
      lost = stream._lost(e);
    }
    await stream._reconnectAfter(lost);
  }
}

async function* poll(stream) {
  const id = await stream._ensureCreated();
  const { pollTimeout } = stream.client;
  for (;;) {
    let body;
    let at;
    // A poll answers within `timeout` seconds; a request hanging much longer is a dead link.
    const guard = new AbortController();
    const onAbort = () => guard.abort();
    stream._signal.addEventListener("abort", onAbort, { once: true });
    const timer = setTimeout(() => guard.abort(), (pollTimeout + 15) * 1000);
    try {
      const path = `/api/streams/${id}/poll?after=${stream._position}&timeout=${pollTimeout}`;
      const resp = await stream._fetch(path, { signal: guard.signal });
      stream.bytesReceived += headerBytes(resp);
      if (!resp.ok) throw await httpError(resp);
      const bytes = new Uint8Array(await resp.arrayBuffer());
      at = performance.now();
      stream.bytesReceived += bytes.length;
      // Chromium can hand over a body cut short by a dropped connection without an error:
      // fewer bytes than Content-Length is a lost connection, not a bad frame.
      const length = Number(resp.headers.get("Content-Length") ?? Number.NaN);
      if (bytes.length < length) {
        throw new ConnectionLost(`the poll answer was cut after ${bytes.length} of ${length} bytes`);
      }
      body = JSON.parse(new TextDecoder().decode(bytes));
    } catch (e) {
      await stream._reconnectAfter(stream._lost(e));
      continue;
    } finally {
      clearTimeout(timer);
      stream._signal.removeEventListener("abort", onAbort);
    }
    for (const event of body.events) if (stream._accept(event)) yield { event, at };
    if (body.done) return;
  }
}

async function* sseFetch(stream) {
  let retryMs; // the server's `retry:`, kept across connections
  for (;;) {
    let lost = new ConnectionLost(ENDED);
    const dec = new SSEDecoder();
    try {
      let resp;
      if (stream.id === null) {
        resp = await stream._fetch("/api/sse", {
          method: "POST",
          headers: { ...JSON_HEADERS, Accept: "text/event-stream" },
          body: JSON.stringify(stream._body),
        });
      } else {
        // Like EventSource: the URL's position at first, Last-Event-ID (which wins) on resume.
        const headers = { Accept: "text/event-stream" };
        if (stream._position > stream.after) headers["Last-Event-ID"] = String(stream._position);
        const path = `/api/streams/${stream.id}/sse?after=${stream.after}`;
        resp = await stream._fetch(path, { headers });
      }
      stream.bytesReceived += headerBytes(resp);
      if (resp.status === 204) return;
      if (!resp.ok) throw await httpError(resp);
      for await (const bytes of readBody(stream, resp)) {
        const at = performance.now();
        for (const msg of dec.feed(bytes)) {
          const obj = JSON.parse(msg.data);
          if (msg.event === "created") stream.id = obj.stream;
          else if (typeof obj.seq === "number" && stream._accept(obj)) yield { event: obj, at };
        }
        retryMs = dec.retry ?? retryMs;
      }
    } catch (e) {
      lost = stream._lost(e);
    }
    await stream._reconnectAfter(lost, retryMs);
  }
}

async function* sseEventSource(stream) {
  const { EventSource } = stream.client;
  const id = await stream._ensureCreated();
  const inbox = new Inbox(stream._signal);
  let source = null;

  const open = (after) => {
    stream.requests += 1;
    const es = new EventSource(stream.client.url(`/api/streams/${id}/sse?after=${after}`));
    source = es;
    let gaveUp = false;
    const giveUp = () => {
      if (gaveUp || source !== es) return;
      gaveUp = true;
      inbox.push({ gaveUp: true });
    };
    const onEvent = (e) => {
      const at = performance.now();
      // EventSource hides the bytes: count the frame the event came in.
      stream.bytesReceived += utf8Length(
        `id: ${e.lastEventId}\nevent: ${e.type}\ndata: ${e.data}\n\n`,
      );
      const event = JSON.parse(e.data);
      if (TERMINAL.has(event.type)) es.close(); // or it reconnects when the response ends
      if (stream._accept(event)) inbox.push({ event, at });
    };
    es.addEventListener("token", onEvent);
    es.addEventListener("done", onEvent);
    es.addEventListener("error", (e) => {
      if (typeof e.data === "string") return onEvent(e); // the stream's `error` event
      // A connection error (no data). CONNECTING: EventSource reconnects by itself after
      // the server's retry time, sending Last-Event-ID. CLOSED: it gave up (a non-200).
      if (es.readyState === EventSource.CLOSED) {
        giveUp();
      } else if (!stream.resume || stream._failures >= stream.client.maxReconnects) {
        es.close();
        inbox.push({ lost: new ConnectionLost("the EventSource connection was lost") });
      } else {
        stream._failures += 1;
        stream.reconnects += 1;
        stream.requests += 1;
        // Node 20's EventSource can go from CONNECTING to CLOSED with no further event
        // (when the connection is cut before the response headers): look again after it.
        setTimeout(() => es.readyState === EventSource.CLOSED && giveUp(), 0);
      }
    });
  };

  open(stream.after);
  try {
    for (;;) {
      const item = await inbox.next();
      if (item.event) {
        yield item;
      } else if (item.closedByUser || item.end) {
        return;
      } else if (item.lost) {
        throw item.lost;
      } else if (item.gaveUp) {
        // EventSource hides why: ask with a request whose answer we can read. An HTTP
        // error (404, 410 gone, ...) is thrown; a finished stream ends; else reconnect.
        let answer = null;
        try {
          const path = `/api/streams/${id}/poll?after=${stream._position}&timeout=0`;
          const resp = await stream._fetch(path);
          if (!resp.ok) throw await httpError(resp);
          answer = await resp.json();
        } catch (e) {
          stream._lost(e); // rethrows all but a connection failure
        }
        if (answer?.done && answer.events.length === 0) return; // nothing after us
        await stream._reconnectAfter(new ConnectionLost("EventSource closed the connection"));
        open(stream._position);
      }
    }
  } finally {
    source?.close();
  }
}

async function* websocket(stream) {
  const { WebSocket } = stream.client;
  if (!WebSocket) throw new TypeError("no WebSocket here (Node 20: --experimental-websocket)");
  const inbox = new Inbox(stream._signal);
  let socket = null;

  const connect = () => {
    stream.requests += 1;
    const ws = new WebSocket(stream.client.wsUrl("/api/ws"));
    socket = ws;
    ws.addEventListener("open", () => {
      const { token } = stream.client;
      if (token !== null) ws.send(JSON.stringify({ op: "auth", token }));
      const msg =
        stream.id === null
          ? { op: "generate", ...stream._body }
          : { op: "subscribe", stream: stream.id, after: stream._position };
      ws.send(JSON.stringify(msg));
    });
    ws.addEventListener("message", (m) => {
      const at = performance.now();
      if (typeof m.data !== "string") return;
      const size = utf8Length(m.data);
      stream.bytesReceived += size + wsFrameHeader(size);
      const msg = JSON.parse(m.data);
      if (msg.type === "created" && stream.id === null) {
        stream.id = msg.stream;
      } else if (msg.type === "end" && msg.stream === stream.id) {
        ws.close(1000);
        inbox.push({ end: true }); // nothing after our position: the stream is over
      } else if (typeof msg.seq !== "number") {
        if (msg.type === "error") inbox.push({ error: serverError(msg.code, msg.message) });
      } else if (msg.stream === stream.id) {
        if (TERMINAL.has(msg.type)) ws.close(1000);
        if (stream._accept(msg)) inbox.push({ event: msg, at });
      }
    });
    // Node 20's WebSocket fires only `error` (no `close`) when it cannot connect.
    let ended = false;
    const end = (code, reason) => {
      if (ended) return;
      ended = true;
      inbox.push({ close: { code, reason }, ws });
    };
    ws.addEventListener("error", () => {
      if (ended) return;
      end(1006, "");
      ws.close(); // (it may fire `error` again: `ended` stops the recursion)
    });
    ws.addEventListener("close", (e) => end(e.code, e.reason));
  };

  connect();
  try {
    for (;;) {
      const item = await inbox.next();
      if (item.event) {
        yield item;
      } else if (item.closedByUser || item.end) {
        return;
      } else if (item.error) {
        throw item.error;
      } else if (item.close && item.ws === socket) {
        await stream._reconnectAfter(new ClosedByServer(item.close.code, item.close.reason));
        connect();
      }
    }
  } finally {
    if (socket && socket.readyState <= 1) socket.close(1000);
  }
}

/** A tokenwire server: create, read, resume and cancel streams. */
export class Client {
  /**
   * @param {string} baseUrl e.g. "http://127.0.0.1:8080" (relative to the page in a browser)
   * @param {object} [options]
   * @param {typeof fetch} [options.fetch] defaults to the global fetch
   * @param {typeof WebSocket} [options.WebSocket] defaults to the global WebSocket
   * @param {typeof EventSource|null} [options.EventSource] defaults to the global
   *   EventSource; null (or none available) reads SSE over fetch instead
   * @param {number} [options.maxReconnects=10] failed reconnects in a row before giving up
   * @param {number} [options.backoffMs=100] first reconnect delay (SSE: the server's retry)
   * @param {number} [options.maxBackoffMs=5000] the longest reconnect delay
   * @param {number} [options.pollTimeout=25] long-poll `timeout` in seconds
   * @param {string|null} [options.token] the server's --auth-token, sent with every request
   */
  constructor(baseUrl, options = {}) {
    this.baseUrl = new URL(baseUrl, globalThis.location?.href);
    const f = options.fetch ?? globalThis.fetch;
    this.fetch = (...args) => f.apply(globalThis, args);
    this.WebSocket = "WebSocket" in options ? options.WebSocket : globalThis.WebSocket;
    this.EventSource = "EventSource" in options ? options.EventSource : globalThis.EventSource;
    this.maxReconnects = options.maxReconnects ?? 10;
    this.backoffMs = options.backoffMs ?? 100;
    this.maxBackoffMs = options.maxBackoffMs ?? 5000;
    this.pollTimeout = options.pollTimeout ?? 25;
    this.token = options.token ?? null;
  }

  /** fetch() a path of the server, with `Authorization: Bearer <token>` when a token is set. */
  request(path, init = {}) {
    if (this.token === null) return this.fetch(this.url(path), init);
    const headers = { ...init.headers, Authorization: `Bearer ${this.token}` };
    return this.fetch(this.url(path), { ...init, headers });
  }

  /** An absolute http(s) URL for a path. */
  url(path) {
    return new URL(path, this.baseUrl).href;
  }

  /** An absolute ws(s) URL for a path. */
  wsUrl(path) {
    const u = new URL(path, this.baseUrl);
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    return u.href;
  }

  /**
   * Start one generation and read it over `transport`.
   * @param {string} prompt
   * @param {object} [options]
   * @param {"sse"|"ws"|"poll"|"chunked"} [options.transport="sse"]
   * @param {number} [options.max_tokens]
   * @param {string} [options.source]
   * @param {object} [options.params] source params, e.g. {tokens_per_s: 50}
   * @param {boolean} [options.resume=true] reconnect and resume after a drop
   * @param {AbortSignal} [options.signal] stops reading (the generation goes on)
   * @returns {Stream}
   */
  stream(prompt, { transport = "sse", max_tokens, source, params, resume = true, signal } = {}) {
    const body = createBody(prompt, { max_tokens, source, params });
    return new Stream(this, { body, transport, resume, signal });
  }

  /**
   * Read an existing stream from `after` (events with a greater seq).
   * @returns {Stream}
   */
  subscribe(id, { after = -1, transport = "sse", resume = true, signal } = {}) {
    return new Stream(this, { id, after, transport, resume, signal });
  }

  /** Create a stream without reading it; returns its id. */
  async create(prompt, { max_tokens, source, params } = {}) {
    const resp = await this.request("/api/streams", {
      method: "POST",
      headers: JSON_HEADERS,
      body: JSON.stringify(createBody(prompt, { max_tokens, source, params })),
    });
    if (resp.status !== 201) throw await httpError(resp);
    return (await resp.json()).id;
  }

  /** GET /api/streams/{id}: state, tokens, finish_reason, subscribers, ... */
  async status(id) {
    const resp = await this.request(`/api/streams/${encodeURIComponent(id)}`);
    if (!resp.ok) throw await httpError(resp);
    return resp.json();
  }

  /** Cancel a stream; it ends with `done` / `cancelled` (idempotent). */
  async cancel(id) {
    const resp = await this.request(`/api/streams/${encodeURIComponent(id)}`, {
      method: "DELETE",
    });
    if (!resp.ok) throw await httpError(resp);
    await resp.arrayBuffer().catch(() => {});
  }
}

function createBody(prompt, { max_tokens, source, params }) {
  const body = { prompt };
  if (max_tokens != null) body.max_tokens = max_tokens;
  if (source != null) body.source = source;
  if (params) body.params = params;
  return body;
}
