// The Express peer of the race (docs/bench.md, "The peer race"): the contract subset of
// bench/peers/__init__.py written the way an Express + ws app would be, serving the
// synthetic source's exact text in tokenwire's event shape, byte for byte.
//
//   node bench/peers/express/server.js --host 127.0.0.1 --port 8091 --pieces pieces.json
//
// pieces.json is {"pieces": [...], "starts": [...]}, a synthetic corpus's ring as
// bench.peers.write_pieces() writes it. Per token: one
// sha256 update, one JSON encode, one write per reader. A create-and-stream response (SSE,
// NDJSON, WebSocket) is written by its own generation loop, which waits for 'drain' when the
// socket is full; a stream made with POST /api/streams is a Generation (an EventEmitter with
// its events kept) that every reader replays from the start and then follows.

import { createHash, randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import { readFileSync } from "node:fs";
import http from "node:http";
import { setImmediate as yieldToLoop, setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";

import express from "express";
import { WebSocketServer } from "ws";

const { values: args } = parseArgs({
  options: {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: "8091" },
    pieces: { type: "string" },
    "retention-s": { type: "string", default: "5" },
  },
});
if (!args.pieces) {
  console.error("usage: server.js --host H --port P --pieces FILE [--retention-s S]");
  process.exit(2);
}
const { pieces: PIECES, starts: STARTS } = JSON.parse(readFileSync(args.pieces, "utf8"));
const RETENTION_MS = 1000 * Number(args["retention-s"]);
const DEFAULTS = { max_tokens: 256, tokens_per_s: 30, ttft_ms: 200, seed: 0 };
const MAX_TOKENS = 4096;
const POLL_BATCH = 512;
const POLL_TIMEOUT_S = 25;
const MAX_POLL_TIMEOUT_S = 60;

// ---------------------------------------------------------------------------------------
// Events

// `t` is wall-clock nanoseconds like Python's time.time_ns(). process.hrtime is monotonic but
// not wall clock, and Date.now() has only milliseconds: read the wall clock once (with
// performance.timeOrigin's sub-millisecond part) and add the monotonic time elapsed since.
const WALL_ORIGIN_NS = BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));
const MONO_ORIGIN_NS = process.hrtime.bigint();
const wallNs = () => WALL_ORIGIN_NS + (process.hrtime.bigint() - MONO_ORIGIN_NS);

const newId = () => randomBytes(12).toString("base64url"); // 16 URL-safe characters

// The events as tokenwire's server/events.py encodes them: the same keys in the same order,
// no spaces; JSON.stringify escapes a string as msgspec does (tests/test_peer_express.py
// compares every corpus piece).
const tokenJson = (id, seq, text) =>
  `{"stream":"${id}","seq":${seq},"type":"token","text":${JSON.stringify(text)},"t":${wallNs()}}`;
const doneJson = (id, seq, reason, tokens, sha256) =>
  `{"stream":"${id}","seq":${seq},"type":"done","finish_reason":"${reason}",` +
  `"tokens":${tokens},"sha256":"${sha256}","t":${wallNs()}}`;
const createdJson = (id) => `{"type":"created","stream":"${id}"}`;

const sseFrame = (seq, type, json) => `id: ${seq}\nevent: ${type}\ndata: ${json}\n\n`;
const sseCreated = (id) => `event: created\ndata: ${createdJson(id)}\n\n`;

// ---------------------------------------------------------------------------------------
// The synthetic source: server.sources.synthetic.synthetic_text(), paced like it (no jitter)

class BadRequest extends Error {}

function parseCreate(body) {
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new BadRequest("the body must be a JSON object");
  }
  const { prompt, max_tokens: maxTokens = DEFAULTS.max_tokens, params = {} } = body;
  if (typeof prompt !== "string") throw new BadRequest("prompt: must be a string");
  if (!Number.isInteger(maxTokens) || maxTokens < 1 || maxTokens > MAX_TOKENS) {
    throw new BadRequest(`max_tokens: must be an integer from 1 to ${MAX_TOKENS}`);
  }
  if (params === null || typeof params !== "object") {
    throw new BadRequest("params: must be an object");
  }
  const p = { ...DEFAULTS, ...params };
  for (const k of ["tokens_per_s", "ttft_ms"]) {
    if (typeof p[k] !== "number" || p[k] < 0) throw new BadRequest(`${k}: must be a number >= 0`);
  }
  if (!Number.isInteger(p.seed) || p.seed < 0) throw new BadRequest("seed: must be an integer");
  return { prompt, maxTokens, rate: p.tokens_per_s, ttftMs: p.ttft_ms, seed: p.seed };
}

function startIndex(prompt, seed) {
  const digest = createHash("sha256").update(`${seed}\0${prompt}`, "utf8").digest();
  return STARTS[Number(digest.readBigUInt64BE(0) % BigInt(STARTS.length))];
}

let liveStreams = 0;

// One generation: emit(seq, type, json) for every event, awaited (a writer waits for 'drain'
// there); stops early when alive() turns false (the reader left).
async function generate(id, req, emit, alive = () => true) {
  liveStreams++;
  try {
    const start = performance.now() + req.ttftMs;
    if (req.ttftMs > 0) await sleep(req.ttftMs);
    const first = startIndex(req.prompt, req.seed);
    const sha = createHash("sha256");
    for (let i = 0; i < req.maxTokens; i++) {
      if (i && req.rate > 0) {
        const wait = start + (1000 * i) / req.rate - performance.now();
        if (wait > 0) await sleep(wait);
      } else if (i) {
        await yieldToLoop(); // unpaced: let every other stream and socket run
      }
      if (!alive()) return;
      const text = PIECES[(first + i) % PIECES.length];
      sha.update(text, "utf8");
      await emit(i, "token", tokenJson(id, i, text));
    }
    if (!alive()) return;
    const n = req.maxTokens;
    await emit(n, "done", doneJson(id, n, "length", n, sha.digest("hex")));
  } finally {
    liveStreams--;
  }
}

// A stream made by POST /api/streams: its events kept for late readers and polls until
// RETENTION_MS after the end, and broadcast to its followers as they happen.
class Generation extends EventEmitter {
  constructor(id) {
    super();
    this.setMaxListeners(0); // a fan-out has as many listeners as readers
    this.id = id;
    this.events = []; // [seq, type, json]
    this.done = false;
  }

  push(seq, type, json) {
    const event = [seq, type, json];
    this.events.push(event);
    if (type !== "token") this.done = true;
    this.emit("event", event);
  }
}

const generations = new Map();

// ---------------------------------------------------------------------------------------
// HTTP helpers

const apiError = (res, status, code, message) =>
  res.status(status).json({ error: { code, message } });

const STREAM_HEADERS = { "Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no" };
const SSE_TYPE = "text/event-stream; charset=utf-8";
const NDJSON_TYPE = "application/x-ndjson; charset=utf-8";

// Write one piece; when the socket's buffer is full, wait until it drains (or closes).
function writeOrDrain(res, data) {
  if (res.write(data) || res.destroyed) return undefined;
  return new Promise((resolve) => {
    const go = () => {
      res.off("drain", go);
      res.off("close", go);
      resolve();
    };
    res.on("drain", go);
    res.on("close", go);
  });
}

// POST /api/sse and /api/chunked: create a generation and stream it in the response.
function createAndStream(contentType, created, frame) {
  return async (req, res) => {
    let request;
    try {
      request = parseCreate(req.body);
    } catch (e) {
      if (e instanceof BadRequest) return apiError(res, 400, "invalid_field", e.message);
      throw e;
    }
    const id = newId();
    let open = true;
    res.on("close", () => {
      open = false;
    });
    res.writeHead(200, {
      "Content-Type": contentType,
      ...STREAM_HEADERS,
      "Tokenwire-Stream": id,
      Location: `/api/streams/${id}`,
    });
    res.write(created(id));
    const write = (seq, type, json) => writeOrDrain(res, frame(seq, type, json));
    await generate(id, request, write, () => open);
    res.end();
  };
}

// GET /api/streams/:id/sse and /chunked: every event from the start (or after ?after=),
// then each new one as the generation broadcasts it.
function follow(contentType, frame) {
  return (req, res) => {
    const gen = generations.get(req.params.id);
    if (!gen) return apiError(res, 404, "unknown_stream", `no stream '${req.params.id}'`);
    const after = req.query.after === undefined ? -1 : Number(req.query.after);
    if (!Number.isInteger(after)) return apiError(res, 400, "invalid_field", "after: an integer");
    res.writeHead(200, { "Content-Type": contentType, ...STREAM_HEADERS });
    const past = gen.events.filter(([seq]) => seq > after);
    if (past.length) res.write(past.map((e) => frame(...e)).join(""));
    if (gen.done) return res.end();
    const onEvent = ([seq, type, json]) => {
      if (seq <= after) return;
      res.write(frame(seq, type, json));
      if (type !== "token") {
        gen.off("event", onEvent);
        res.end();
      }
    };
    gen.on("event", onEvent);
    res.on("close", () => gen.off("event", onEvent));
  };
}

const ndjsonLine = (_seq, _type, json) => `${json}\n`;

// ---------------------------------------------------------------------------------------
// The app

const app = express();
app.disable("x-powered-by");
app.disable("etag");
app.use(express.json({ limit: "64kb" }));

app.get("/healthz", (_req, res) => res.json({ status: "ok", live_streams: liveStreams }));

app.post("/api/sse", createAndStream(SSE_TYPE, sseCreated, sseFrame));
app.post("/api/chunked", createAndStream(NDJSON_TYPE, (id) => `${createdJson(id)}\n`, ndjsonLine));

app.post("/api/streams", (req, res) => {
  let request;
  try {
    request = parseCreate(req.body);
  } catch (e) {
    if (e instanceof BadRequest) return apiError(res, 400, "invalid_field", e.message);
    throw e;
  }
  const gen = new Generation(newId());
  generations.set(gen.id, gen);
  generate(gen.id, request, (seq, type, json) => gen.push(seq, type, json))
    .catch((e) => console.error(e))
    .finally(() => setTimeout(() => generations.delete(gen.id), RETENTION_MS).unref());
  res.status(201).location(`/api/streams/${gen.id}`).json({ id: gen.id });
});

app.get("/api/streams/:id/sse", follow(SSE_TYPE, sseFrame));
app.get("/api/streams/:id/chunked", follow(NDJSON_TYPE, ndjsonLine));

// GET /api/streams/:id/poll?after=&timeout=: what is there after `after` (up to 512 events),
// else the next event as soon as it is broadcast, else an empty answer after `timeout` s.
app.get("/api/streams/:id/poll", (req, res) => {
  const gen = generations.get(req.params.id);
  if (!gen) return apiError(res, 404, "unknown_stream", `no stream '${req.params.id}'`);
  const after = req.query.after === undefined ? -1 : Number(req.query.after);
  const timeout = req.query.timeout === undefined ? POLL_TIMEOUT_S : Number(req.query.timeout);
  if (!Number.isInteger(after) || after < -1) {
    return apiError(res, 400, "invalid_field", "after: an integer from -1");
  }
  if (!(timeout >= 0 && timeout <= MAX_POLL_TIMEOUT_S)) {
    return apiError(res, 400, "invalid_field", `timeout: a number from 0 to ${MAX_POLL_TIMEOUT_S}`);
  }
  const answer = (events) => {
    const last = events.at(-1);
    const done = last ? last[1] !== "token" : gen.done && after >= gen.events.length - 1;
    const body =
      `{"events":[${events.map((e) => e[2]).join(",")}],` +
      `"next":${last ? last[0] : after},"done":${done}}`;
    res.set("Cache-Control", "no-store").type("application/json").send(body);
  };
  // Seqs are the array's indices: the events after `after` start at after + 1.
  const ready = gen.events.slice(after + 1, after + 1 + POLL_BATCH);
  if (ready.length || gen.done) return answer(ready);
  const onEvent = (event) => {
    if (event[0] <= after) return; // `after` is ahead of the generation: wait on
    gen.off("event", onEvent);
    clearTimeout(timer);
    answer([event]);
  };
  const timer = setTimeout(() => {
    gen.off("event", onEvent);
    answer([]);
  }, 1000 * timeout);
  gen.on("event", onEvent);
  res.on("close", () => {
    clearTimeout(timer);
    gen.off("event", onEvent);
  });
});

app.get("/api/ws", (_req, res) =>
  res.status(426).set("Upgrade", "websocket").json({
    error: { code: "upgrade_required", message: "GET /api/ws is a WebSocket handshake" },
  }),
);

app.use((_req, res) => apiError(res, 404, "not_found", "no such route"));
app.use((err, _req, res, _next) => {
  const status = err.status ?? err.statusCode ?? 500;
  const code =
    err.type === "entity.parse.failed"
      ? "bad_json"
      : status === 413
        ? "body_too_large"
        : "server_error";
  apiError(res, status, code, err.message);
});

// ---------------------------------------------------------------------------------------
// WebSocket: {"op":"generate",...} -> {"type":"created"} then each event as a text message

const server = http.createServer({ noDelay: true, keepAlive: true }, app);
const wss = new WebSocketServer({ server, path: "/api/ws", maxPayload: 64 * 1024 });
const WS_HIGH_WATER = 64 * 1024;

wss.on("connection", (ws) => {
  const open = () => ws.readyState === ws.OPEN;
  ws.on("message", (data, isBinary) => {
    let msg;
    try {
      msg = JSON.parse(data.toString());
    } catch {
      msg = null;
    }
    const fail = (code, message) => ws.send(JSON.stringify({ type: "error", code, message }));
    if (isBinary || msg === null || typeof msg !== "object") {
      return fail("bad_json", "a JSON object");
    }
    const { op, ...body } = msg;
    if (op !== "generate") return fail("unknown_op", `op ${JSON.stringify(op)}: only generate`);
    let request;
    try {
      request = parseCreate(body);
    } catch (e) {
      if (e instanceof BadRequest) return fail("invalid_field", e.message);
      throw e;
    }
    const id = newId();
    ws.send(createdJson(id));
    // Past the high-water mark, wait until the socket took that message.
    const send = (_seq, _type, json) => {
      if (ws.bufferedAmount < WS_HIGH_WATER) return void ws.send(json);
      return new Promise((resolve) => ws.send(json, () => resolve()));
    };
    generate(id, request, send, open).catch((e) => console.error(e));
  });
});

server.listen({ host: args.host, port: Number(args.port), backlog: 4096 }, () => {
  console.log(`express peer on http://${args.host}:${args.port} (${PIECES.length} pieces)`);
});

const stop = () => {
  wss.clients.forEach((ws) => ws.terminate());
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
