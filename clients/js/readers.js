// One reader per transport: it opens a connection, reads it, and yields what arrived.
//
// The twin of clients/readers.py. A reader only reads. It is told where to start
// ({streamId, after, body}: a create body, or a stream id and the last seq had) and yields
// SENT before each request and a Received for each read: the bytes, the decoded messages,
// the receive times. The resume loop (Stream._run in client.js) does all the bookkeeping.
// readEventSource also yields {retrying}: EventSource reconnects by itself, and the loop
// decides whether it may.
//
// A reader also tells the client's `tap` (if it has one) each Frame it sends and reads, as
// it reads it: the text the decoders split, never a second parse of the bytes.

import { NDJSONDecoder, SSEDecoder, wsFrameHeader } from "./decoders.js";
import { ClosedByServer, ConnectionLost, serverError } from "./errors.js";
import { EVENT_TYPES, TERMINAL } from "./names.js";

/**
 * @typedef {object} Received What one read brought.
 * @property {number} nbytes its bytes on the wire: status line and headers, body bytes, or
 *   a message and its frame header (EventSource hides them: the event's frame, rebuilt)
 * @property {object[]} messages decoded from it: log events and the control messages
 *   `created` and `end`
 * @property {number} perfNs when it arrived: performance.now(), in nanoseconds
 * @property {number} wallNs when it arrived: the wall clock, in nanoseconds
 * @property {number|null} [retryMs] the SSE `retry:` in force
 */

/**
 * @typedef {object} Frame One thing a reader sent or read, as it went over the wire (the
 *   client's `tap`; the twin of the Python `Frame`).
 * @property {"sse"|"ws"|"poll"|"chunked"} transport
 * @property {"in"|"out"} direction
 * @property {"request"|"response"|"body"|"line"|"message"|"close"|"rebuilt"} kind
 *   `request` (out: `METHOD path`), `response` (in: the status line; `nbytes` is the size
 *   of the status line and headers, rebuilt from Response.headers), `body` (a request's
 *   JSON body out; a poll's answer, POST /api/streams' answer or an HTTP error answer in),
 *   `line` (an SSE or NDJSON line as the decoder split it, without its line end; SSE's
 *   blank line ends an event), `message` (a WebSocket text message, in or out), `close`
 *   (in: the WebSocket's close code), `rebuilt` (JS only: an
 *   SSE line rebuilt from an EventSource event, since EventSource hides the wire; no
 *   comments or `retry:` lines)
 * @property {string} text
 * @property {number} nbytes the UTF-8 size of `text`, except for a `response`
 */

/** Tell the client's tap one frame (no transport: no tap). */
function tap(client, transport, direction, kind, text, nbytes = null) {
  if (!client.tap || !transport) return;
  const size = nbytes ?? utf8Length(text);
  client.tap(Object.freeze({ transport, direction, kind, text, nbytes: size }));
}

/** What taps an error answer's body (null without a tap). */
function tapBody(client, transport) {
  if (!client.tap || !transport) return null;
  return (text) => tap(client, transport, "in", "body", text);
}

function tapResponse(client, transport, resp) {
  const status = `HTTP/1.1 ${resp.status} ${resp.statusText}`.trimEnd();
  tap(client, transport, "in", "response", status, headerBytes(resp));
}

/** Tap a request going out; its JSON body, encoded once for the wire and the tap. */
function tapRequest(client, transport, method, path, body = null) {
  tap(client, transport, "out", "request", `${method} ${path}`);
  if (body === null) return undefined;
  const data = JSON.stringify(body);
  tap(client, transport, "out", "body", data);
  return data;
}

/** A request (or WebSocket handshake, or EventSource connection) is about to go out. */
export const SENT = Object.freeze({ sent: true });

/** What a finished stream with nothing after the position answers: the WebSocket's control
 * message, which the HTTP readers also yield for a 204 or a poll that says `done`. */
export const END = Object.freeze({ type: "end" });

const JSON_HEADERS = { "Content-Type": "application/json" };
const SSE_ACCEPT = { Accept: "text/event-stream" };

/** The receive times of what arrives now, in nanoseconds: [performance, wall clock]. */
function now() {
  const at = performance.now();
  return [at * 1e6, (performance.timeOrigin + at) * 1e6];
}

/** @returns {Received} */
function received(nbytes, messages = [], [perfNs, wallNs] = [0, 0], retryMs = null) {
  return { nbytes, messages, perfNs, wallNs, retryMs };
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

/** The size of a response's status line and headers, as they came on the wire (rebuilt
 * from Response.headers: an estimate). */
export function headerBytes(resp) {
  let n = utf8Length(`HTTP/1.1 ${resp.status} ${resp.statusText}\r\n\r\n`);
  for (const [name, value] of resp.headers) n += utf8Length(`${name}: ${value}\r\n`);
  return n;
}

/** The error an HTTP error response stands for (`{"error":{"code","message"}}`); `onBody`
 * is called with the response's body first (a reader's tap). */
export async function httpError(resp, onBody = null) {
  const text = await resp.text().catch(() => "");
  onBody?.(text);
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

/** POST /api/streams; the new stream's id. `transport`: whose tap sees it. */
export async function createStream(client, body, signal, transport = null) {
  const path = "/api/streams";
  const data = tapRequest(client, transport, "POST", path, body);
  const resp = await client.request(path, {
    method: "POST",
    headers: JSON_HEADERS,
    body: data,
    signal,
  });
  tapResponse(client, transport, resp);
  if (resp.status !== 201) throw await httpError(resp, tapBody(client, transport));
  const text = await resp.text();
  tap(client, transport, "in", "body", text);
  return JSON.parse(text).id;
}

/** Callbacks in, promises out: bridges EventSource and WebSocket to async iteration. An
 * abort of `signal` arrives as `{closedByUser: true}`. */
class Inbox {
  constructor(signal) {
    this._items = [];
    this._wake = null;
    if (signal.aborted) this.push({ closedByUser: true });
    else signal.addEventListener("abort", () => this.push({ closedByUser: true }), { once: true });
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

/** An SSE or NDJSON response, read as it arrives: POST `path` with a create `body` (the
 * response's `Tokenwire-Stream` header tells the new stream's id before any body byte),
 * else GET `path`. */
async function* readResponse(client, transport, path, { body = null, headers = {}, signal }) {
  const onLine = client.tap ? (line) => tap(client, transport, "in", "line", line) : null;
  const decoder = transport === "sse" ? new SSEDecoder({ onLine }) : new NDJSONDecoder({ onLine });
  const decode =
    transport === "sse"
      ? (bytes) => [decoder.feed(bytes).map((m) => JSON.parse(m.data)), decoder.retry]
      : (bytes) => [decoder.feed(bytes), null];
  const method = body === null ? "GET" : "POST";
  const data = tapRequest(client, transport, method, path, body);
  const sent = body === null ? headers : { ...JSON_HEADERS, ...headers };
  yield SENT;
  const resp = await client.request(path, { method, headers: sent, body: data, signal });
  tapResponse(client, transport, resp);
  yield received(headerBytes(resp));
  if (!resp.ok) throw await httpError(resp, tapBody(client, transport));
  if (resp.status === 204) {
    yield received(0, [END]); // finished, nothing after the position
    return;
  }
  const id = body !== null ? resp.headers.get("Tokenwire-Stream") : null;
  if (id) yield received(0, [{ type: "created", stream: id }]);
  const reader = resp.body.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      const at = now();
      const [messages, retryMs] = decode(value);
      yield received(value.length, messages, at, retryMs);
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/** POST /api/sse, or GET /api/streams/{id}/sse with Last-Event-ID; read over fetch. */
export function readSSE(client, { streamId, after, body, signal }) {
  if (streamId === null) {
    const options = { body: body ?? {}, headers: SSE_ACCEPT, signal };
    return readResponse(client, "sse", "/api/sse", options);
  }
  const headers = after >= 0 ? { ...SSE_ACCEPT, "Last-Event-ID": String(after) } : SSE_ACCEPT;
  return readResponse(client, "sse", `/api/streams/${streamId}/sse`, { headers, signal });
}

/** POST /api/chunked, or GET /api/streams/{id}/chunked?after=: NDJSON lines. */
export function readChunked(client, { streamId, after, body, signal }) {
  if (streamId === null) {
    return readResponse(client, "chunked", "/api/chunked", { body: body ?? {}, signal });
  }
  return readResponse(client, "chunked", `/api/streams/${streamId}/chunked?after=${after}`, {
    signal,
  });
}

/** POST /api/streams if there is no id yet, then GET .../poll?after=&timeout= until an
 * answer says `done`. */
export async function* readPoll(client, { streamId, after, body, signal }) {
  if (streamId === null) {
    yield SENT;
    streamId = await createStream(client, body, signal, "poll");
    yield received(0, [{ type: "created", stream: streamId }]);
  }
  const timeoutS = client.pollTimeoutS;
  for (;;) {
    // A poll answers within `timeout` seconds; a request hanging much longer is a dead link.
    const guard = AbortSignal.any([signal, AbortSignal.timeout((timeoutS + 15) * 1000)]);
    const path = `/api/streams/${streamId}/poll?after=${after}&timeout=${timeoutS}`;
    tapRequest(client, "poll", "GET", path);
    yield SENT;
    const resp = await client.request(path, { signal: guard });
    tapResponse(client, "poll", resp);
    yield received(headerBytes(resp));
    if (!resp.ok) throw await httpError(resp, tapBody(client, "poll"));
    const bytes = new Uint8Array(await resp.arrayBuffer());
    const at = now();
    // Chromium can hand over a body cut short by a dropped connection without an error:
    // fewer bytes than Content-Length is a lost connection, not a bad frame.
    const length = Number(resp.headers.get("Content-Length") ?? Number.NaN);
    if (bytes.length < length) {
      yield received(bytes.length);
      throw new ConnectionLost(`the poll answer was cut after ${bytes.length} of ${length} bytes`);
    }
    const text = new TextDecoder().decode(bytes);
    tap(client, "poll", "in", "body", text, bytes.length);
    const answer = JSON.parse(text);
    const messages = answer.done ? [...answer.events, END] : answer.events;
    yield received(bytes.length, messages, at);
    if (answer.done) return;
    after = answer.next;
  }
}

/** EventSource on GET /api/streams/{id}/sse?after= (after POST /api/streams if there is no
 * id yet). EventSource reconnects by itself (with Last-Event-ID, after the server's
 * `retry:`): each time, this yields {retrying: ConnectionLost} and SENT. */
export async function* readEventSource(client, { streamId, after, body, signal }) {
  const { EventSource } = client;
  if (streamId === null) {
    yield SENT;
    streamId = await createStream(client, body, signal, "sse");
    yield received(0, [{ type: "created", stream: streamId }]);
  }
  const inbox = new Inbox(signal);
  let lastId = after; // what EventSource sends as Last-Event-ID when it reconnects
  const path = `/api/streams/${streamId}/sse?after=${after}`;
  tapRequest(client, "sse", "GET", path);
  yield SENT;
  const es = new EventSource(client.url(path));
  let gaveUp = false;
  const giveUp = () => {
    if (gaveUp) return;
    gaveUp = true;
    inbox.push({ gaveUp: true });
  };
  const onEvent = (e) => {
    const at = now();
    if (TERMINAL.includes(e.type)) es.close(); // or it reconnects when the response ends
    // EventSource hides the bytes: count (and tap) the frame the event came in.
    const lines = [`id: ${e.lastEventId}`, `event: ${e.type}`, `data: ${e.data}`, ""];
    for (const line of lines) tap(client, "sse", "in", "rebuilt", line);
    const nbytes = utf8Length(lines.map((line) => `${line}\n`).join(""));
    inbox.push({ data: e.data, nbytes, at });
  };
  // Every event type of the log but `error`, which shares its name with EventSource's own.
  for (const type of EVENT_TYPES) if (type !== "error") es.addEventListener(type, onEvent);
  es.addEventListener("error", (e) => {
    if (typeof e.data === "string") return onEvent(e); // the stream's `error` event
    // A connection error (no data). CONNECTING: EventSource reconnects by itself after
    // the server's retry time, sending Last-Event-ID. CLOSED: it gave up (a non-200).
    if (es.readyState === EventSource.CLOSED) return giveUp();
    inbox.push({ retrying: new ConnectionLost("the EventSource connection was lost") });
    // Node 20's EventSource can go from CONNECTING to CLOSED with no further event
    // (when the connection is cut before the response headers): look again after it.
    setTimeout(() => es.readyState === EventSource.CLOSED && giveUp(), 0);
  });
  try {
    for (;;) {
      const item = await inbox.next();
      if (item.closedByUser) return;
      if (item.retrying) {
        yield { retrying: item.retrying };
        tapRequest(client, "sse", "GET", `${path} (EventSource again, Last-Event-ID: ${lastId})`);
        yield SENT;
      } else if (item.data !== undefined) {
        const event = JSON.parse(item.data);
        if (typeof event.seq === "number") lastId = event.seq;
        yield received(item.nbytes, [event], item.at);
      } else if (item.gaveUp) {
        // EventSource hides why: ask with a request whose answer we can read. An HTTP
        // error (404, 410 gone, ...) is thrown; a finished stream ends; else reconnect.
        const poll = `/api/streams/${streamId}/poll?after=${lastId}&timeout=0`;
        tapRequest(client, "sse", "GET", poll);
        yield SENT;
        const resp = await client.request(poll, { signal });
        tapResponse(client, "sse", resp);
        if (!resp.ok) throw await httpError(resp, tapBody(client, "sse"));
        const text = await resp.text();
        tap(client, "sse", "in", "body", text);
        const answer = JSON.parse(text);
        if (answer.done && answer.events.length === 0) {
          yield received(0, [END]); // nothing after us
          return;
        }
        throw new ConnectionLost("EventSource closed the connection");
      }
    }
  } finally {
    es.close();
  }
}

/** /api/ws: {"op":"generate",...}, or {"op":"subscribe","stream","after"} (after
 * {"op":"auth"} when the client has a token); ends with the socket. */
export async function* readWS(client, { streamId, after, body, signal }) {
  const { WebSocket } = client;
  if (!WebSocket) throw new TypeError("no WebSocket here (Node 20: --experimental-websocket)");
  const inbox = new Inbox(signal);
  tapRequest(client, "ws", "GET", "/api/ws");
  yield SENT;
  const ws = new WebSocket(client.wsUrl("/api/ws"));
  const send = (message) => {
    const text = JSON.stringify(message);
    tap(client, "ws", "out", "message", text);
    ws.send(text);
  };
  ws.addEventListener("open", () => {
    if (client.token !== null) send({ op: "auth", token: client.token });
    const first =
      streamId === null
        ? { op: "generate", ...body }
        : { op: "subscribe", stream: streamId, after };
    send(first);
  });
  ws.addEventListener("message", (m) => {
    const at = now();
    if (typeof m.data !== "string") return;
    tap(client, "ws", "in", "message", m.data);
    inbox.push({ data: m.data, at });
  });
  // Node 20's WebSocket fires only `error` (no `close`) when it cannot connect.
  let ended = false;
  const end = (code, reason) => {
    if (ended) return;
    ended = true;
    inbox.push({ close: { code, reason } });
  };
  ws.addEventListener("error", () => {
    if (ended) return;
    end(1006, "");
    ws.close(); // (it may fire `error` again: `ended` stops the recursion)
  });
  ws.addEventListener("close", (e) => end(e.code, e.reason));
  try {
    for (;;) {
      const item = await inbox.next();
      if (item.closedByUser) return;
      if (item.close) {
        tap(client, "ws", "in", "close", String(item.close.code));
        throw new ClosedByServer(item.close.code, item.close.reason);
      }
      const size = utf8Length(item.data);
      const nbytes = size + wsFrameHeader(size);
      const msg = JSON.parse(item.data);
      let messages = [];
      if (msg.type === "created" && streamId === null) {
        streamId = msg.stream;
        messages = [msg];
      } else if (msg.type === "end" && msg.stream === streamId) {
        ws.close(1000); // nothing after our position: the stream is over
        messages = [msg];
      } else if (typeof msg.seq !== "number") {
        if (msg.type === "error") {
          yield received(nbytes, [], item.at);
          throw serverError(msg.code, msg.message); // an answer to our request, not the log
        }
      } else if (msg.stream === streamId) {
        if (TERMINAL.includes(msg.type)) ws.close(1000);
        messages = [msg];
      }
      yield received(nbytes, messages, item.at);
    }
  } finally {
    if (ws.readyState <= 1) ws.close(1000);
  }
}

/** The reader of each transport (SSE where EventSource is used: readEventSource). */
export const READERS = Object.freeze({
  sse: readSSE,
  ws: readWS,
  poll: readPoll,
  chunked: readChunked,
});
