// The JS client: `Client` (create, read, resume, cancel) and `Stream`, the resume loop over
// one reader per transport (readers.js). The twin of clients/client.py; README.md tells how
// each transport is read, resumed and measured.

import { CONTENT, PartsDigest, TextDigest, place } from "./check.js";
import {
  ConnectionLost,
  DigestMismatch,
  InvalidToolCall,
  ProtocolError,
  StreamFailed,
} from "./errors.js";
import { TRANSPORTS } from "./names.js";
import { PartReader } from "./parts.js";
import { READERS, SENT, createStream, httpError, readEventSource } from "./readers.js";

const ENDED = "the response ended before the stream's last event";

/** What one stream measured, on the client side (the twin of the Python StreamStats). */
export class StreamStats {
  constructor(transport) {
    this.transport = transport;
    /** performance.now() in ns when the stream started reading. */
    this.startedNs = performance.now() * 1e6;
    this.firstTokenNs = null;
    this.lastTokenNs = null;
    /** Between consecutive tokens' arrivals, ns. */
    this.gapsNs = [];
    /** Per token: arrival wall-clock time minus the event's `t` (the transport's latency), ns. */
    this.latenciesNs = [];
    this.tokens = 0;
    this.bytesReceived = 0;
    this.requests = 0;
    this.reconnects = 0;
    /** Events received again after a resume (dropped, never yielded). */
    this.duplicates = 0;
  }

  token(perfNs, wallNs, t) {
    if (this.firstTokenNs === null) this.firstTokenNs = perfNs;
    else if (this.lastTokenNs !== null) this.gapsNs.push(perfNs - this.lastTokenNs);
    this.lastTokenNs = perfNs;
    this.latenciesNs.push(wallNs - t);
    this.tokens += 1;
  }

  /** Time to first token in seconds: reading started to first token received. */
  get ttftS() {
    return this.firstTokenNs === null ? null : (this.firstTokenNs - this.startedNs) / 1e9;
  }

  /** Medians and p95s in milliseconds, counts as they are (the Python summary's keys). */
  summary() {
    const sorted = (values) => [...values].sort((a, b) => a - b);
    const median = (values) => {
      if (!values.length) return null;
      const s = sorted(values);
      const mid = s.length >> 1;
      return (s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2) / 1e6;
    };
    const p95 = (values) => {
      if (!values.length) return null;
      const s = sorted(values);
      return s[Math.min(s.length - 1, Math.floor(0.95 * s.length))] / 1e6;
    };
    const ttftS = this.ttftS;
    return {
      transport: this.transport,
      tokens: this.tokens,
      ttft_ms: ttftS === null ? null : ttftS * 1e3,
      gap_p50_ms: median(this.gapsNs),
      gap_p95_ms: p95(this.gapsNs),
      latency_p50_ms: median(this.latenciesNs),
      latency_p95_ms: p95(this.latenciesNs),
      bytes_received: this.bytesReceived,
      requests: this.requests,
      reconnects: this.reconnects,
    };
  }
}

/**
 * The wait before reconnect `attempt` (0, 1, ...), in seconds: doubling from `firstS` up to
 * `maxS`, plus up to 25% jitter so that clients cut at once do not come back at once.
 */
export function backoffS(attempt, firstS, maxS) {
  return Math.min(maxS, firstS * 2 ** attempt) * (1 + 0.25 * Math.random());
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

/**
 * One stream read over one transport: an async iterable of its events (the log's events as
 * they are: `token`, `reasoning`, `tool_call`, then `done`), or, through `parts()`, of its
 * parts (`Text`, `Reasoning`, `ToolCall`, `ToolCallDone`), with measurements. Either way it
 * resumes after a cut, drops repeats, refuses gaps and checks `done`'s digests (the answer
 * text's and `parts`). Get one from `Client.stream()` or `Client.subscribe()`; it can be
 * read once.
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
    this.transport = transport;
    /** The stream id (null until the server tells it). */
    this.id = id;
    /** The position this reader started from (-1: the beginning). */
    this.after = after;
    /** The seq of the last event yielded. */
    this.lastSeq = after;
    this.resume = resume;
    this.stats = new StreamStats(transport);
    /** The `done` event, once it arrived. */
    this.done = null;
    /** true once the `done` sha256 matched; null if not checked (read from `after`). */
    this.digestOk = null;
    this._body = body;
    this._digest = new PartsDigest();
    this._parts = new PartReader();
    /** The parts the last event yielded made, and a call's bad arguments, for parts(). */
    this._fresh = [];
    this._invalid = null;
    this._retryMs = null;
    this._started = false;
    this._abort = new AbortController();
    if (signal) {
      if (signal.aborted) this._abort.abort();
      else signal.addEventListener("abort", () => this.close(), { once: true });
    }
  }

  /** The answer text: the text of the `token` events yielded, concatenated. */
  get text() {
    return this._digest.text.text;
  }

  /** The text of the `reasoning` events yielded, concatenated. */
  get reasoning() {
    return this._parts.reasoning;
  }

  /** The tool calls yielded so far (ToolCall), in index order, each with its argument text
   * so far (whole once the stream is done). */
  get toolCalls() {
    return this._parts.toolCalls;
  }

  /**
   * Read the stream as parts: `Text`, `Reasoning`, `ToolCall` (each piece of a call's
   * arguments) and `ToolCallDone` (a call's whole arguments, parsed), in the log's order.
   * Throws `InvalidToolCall` when a complete call's arguments are not JSON. Like iterating
   * the stream, this reads it once.
   */
  async *parts() {
    for await (const _ of this) {
      if (this._invalid !== null) throw this._invalid;
      yield* this._fresh;
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

  [Symbol.asyncIterator]() {
    if (this._started) throw new TypeError("a Stream can be iterated only once");
    this._started = true;
    return this._run();
  }

  /** The reader of this stream's transport. */
  _reader() {
    const { client } = this;
    // EventSource cannot send headers: with a token, SSE is read over fetch.
    const eventSource = client.EventSource && client.token === null;
    return this.transport === "sse" && eventSource ? readEventSource : READERS[this.transport];
  }

  /** The resume loop: read, drop repeats, refuse gaps, measure, check the digest. */
  async *_run() {
    const { client, stats } = this;
    const signal = this._abort.signal;
    const read = this._reader();
    let failures = 0; // failed connections in a row
    const mayReconnect = () => this.resume && failures < client.maxReconnects;
    stats.startedNs = performance.now() * 1e6;
    try {
      for (;;) {
        // Without an id nothing was delivered yet: the reader creates again (the
        // half-created stream is abandoned and the server cancels it after its grace).
        const where = { streamId: this.id, after: this.lastSeq, body: this._body, signal };
        let lost = new ConnectionLost(ENDED);
        try {
          for await (const got of read(client, where)) {
            if (got === SENT) {
              stats.requests += 1;
              continue;
            }
            if (got.retrying) {
              // EventSource is reconnecting by itself: one more attempt, if it may.
              if (!mayReconnect()) throw got.retrying;
              failures += 1;
              stats.reconnects += 1;
              continue;
            }
            stats.bytesReceived += got.nbytes;
            this._retryMs = got.retryMs ?? this._retryMs;
            for (const ev of got.messages) {
              if (ev.type === "created") {
                this.id = ev.stream;
                continue;
              }
              if (ev.type === "end") return; // the stream ended at or before our position
              if (typeof ev.seq !== "number") continue; // a control message we do not know
              const at = place(ev.seq, this.lastSeq);
              if (at === "repeat") {
                stats.duplicates += 1; // a resume overlapped what we have
                continue;
              }
              if (at === "gap") {
                throw new ProtocolError(`expected seq ${this.lastSeq + 1}, got ${ev.seq}`);
              }
              this.lastSeq = ev.seq;
              failures = 0;
              this._takeParts(ev);
              if (CONTENT.includes(ev.type)) {
                this._digest.update(ev);
                stats.token(got.perfNs, got.wallNs, ev.t);
                yield ev;
                continue;
              }
              if (ev.type === "done") {
                this.done = ev;
                await this._checkDigest(ev);
                yield ev;
                return;
              }
              yield ev;
              throw new StreamFailed(String(ev.code), String(ev.message), ev);
            }
          }
        } catch (e) {
          lost = this._lost(e);
        }
        if (signal.aborted) return;
        if (!mayReconnect()) throw lost;
        const firstS = this._retryMs === null ? client.backoffS : this._retryMs / 1000;
        await sleep(backoffS(failures, firstS, client.maxBackoffS) * 1000, signal);
        failures += 1;
        stats.reconnects += 1;
      }
    } catch (e) {
      if (e instanceof Closed || signal.aborted) return;
      throw e;
    } finally {
      this._abort.abort(); // whatever is still open closes
    }
  }

  /** The parts an event makes, kept for parts() (a call's bad arguments too: they fail
   * parts(), not a reader of events). */
  _takeParts(ev) {
    try {
      this._fresh = this._parts.feed(ev);
    } catch (e) {
      if (!(e instanceof InvalidToolCall)) throw e;
      this._fresh = [];
      this._invalid = e;
    }
  }

  /** Before `done` is yielded: its `sha256`, `tokens` and `parts` against what arrived,
   * when every event was seen. */
  async _checkDigest(done) {
    if (this.after !== -1 || !TextDigest.available) return;
    const mismatch = await this._digest.mismatch(done);
    if (mismatch !== null) {
      this.digestOk = false;
      const [field, expected, actual] = mismatch;
      throw new DigestMismatch(expected, actual, done, field);
    }
    this.digestOk = true;
  }

  /**
   * A failure of the connection (`e` thrown by fetch, a body read or a reader) as
   * ConnectionLost; anything else (an error answer, a bad frame, a close by the consumer,
   * a digest mismatch) is rethrown.
   */
  _lost(e) {
    if (this._abort.signal.aborted) throw new Closed();
    if (e instanceof ConnectionLost) return e;
    if (e instanceof SyntaxError) throw new ProtocolError(`bad frame: ${e.message}`, { cause: e });
    if (e instanceof Error && ["TypeError", "AbortError", "TimeoutError"].includes(e.name)) {
      return new ConnectionLost(`the connection failed: ${e.message}`, { cause: e });
    }
    throw e;
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
   * @param {number} [options.backoffS=0.1] first reconnect delay (SSE: the server's retry)
   * @param {number} [options.maxBackoffS=5] the longest reconnect delay
   * @param {number} [options.pollTimeoutS=25] long-poll `timeout`
   * @param {string|null} [options.token] the server's --auth-token, sent with every request
   * @param {((frame: import("./readers.js").Frame) => void)|null} [options.tap] called with
   *   each frame the readers send and read, as they read it (it must be quick and must not
   *   throw)
   */
  constructor(baseUrl, options = {}) {
    this.baseUrl = new URL(baseUrl, globalThis.location?.href);
    const f = options.fetch ?? globalThis.fetch;
    this.fetch = (...args) => f.apply(globalThis, args);
    this.WebSocket = "WebSocket" in options ? options.WebSocket : globalThis.WebSocket;
    this.EventSource = "EventSource" in options ? options.EventSource : globalThis.EventSource;
    this.maxReconnects = options.maxReconnects ?? 10;
    this.backoffS = options.backoffS ?? 0.1;
    this.maxBackoffS = options.maxBackoffS ?? 5;
    this.pollTimeoutS = options.pollTimeoutS ?? 25;
    this.token = options.token ?? null;
    /** Called with each frame the readers send and read (the `tap` option). */
    this.tap = options.tap ?? null;
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
   * @param {"low"|"medium"|"high"} [options.reasoning_effort] ask for reasoning
   * @param {object[]} [options.tools] the tools offered, [{name, description?, parameters?}]
   * @param {*} [options.tool_choice] the tool the model must call (its name)
   * @returns {Stream}
   */
  stream(prompt, options = {}) {
    const { transport = "sse", resume = true, signal } = options;
    return new Stream(this, { body: createBody(prompt, options), transport, resume, signal });
  }

  /**
   * Read an existing stream from `after` (events with a greater seq).
   * @returns {Stream}
   */
  subscribe(id, { after = -1, transport = "sse", resume = true, signal } = {}) {
    return new Stream(this, { id, after, transport, resume, signal });
  }

  /** Create a stream without reading it; returns its id (the options as `stream()`'s). */
  async create(prompt, options = {}) {
    return createStream(this, createBody(prompt, options), options.signal);
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

/** The create body: only the fields given (null or absent: the server's default); the
 * typed-part options (`reasoning_effort`, `tools`, `tool_choice`) as top-level fields. */
function createBody(prompt, { max_tokens, source, params, reasoning_effort, tools, tool_choice }) {
  const body = { prompt };
  if (max_tokens != null) body.max_tokens = max_tokens;
  if (source != null) body.source = source;
  if (params) body.params = params;
  if (reasoning_effort != null) body.reasoning_effort = reasoning_effort;
  if (tools != null) body.tools = tools;
  if (tool_choice != null) body.tool_choice = tool_choice;
  return body;
}
