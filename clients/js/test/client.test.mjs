// The JS client against a real tokenwire server, on every transport.
//
//   node --test --experimental-websocket --experimental-eventsource clients/js/test/
//
// The server is TOKENWIRE_URL if set, else one this file starts (`.venv/bin/python -m
// tokenwire serve` on a free port) and stops. Without the two flags (plain `node --test`),
// Node 20 has no WebSocket or EventSource: the file then re-runs itself in a child with them.
// The shutdown and expiry tests always start servers of their own.
// Resume is tested through a TCP proxy on loopback that cuts a connection on command.

import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import net from "node:net";
import { fileURLToPath } from "node:url";
import { after, before, describe, test } from "node:test";

import {
  Client,
  ClosedByServer,
  ConnectionLost,
  DigestMismatch,
  ProtocolError,
  ServerError,
  StreamFailed,
  StreamGone,
  TokenwireError,
  serverError,
} from "../tokenwire.js";
import { headerBytes } from "../readers.js";
import { startProxy } from "./proxy.mjs";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const FLAGS = ["--experimental-websocket", "--experimental-eventsource"];

// --- a server and a proxy ---

async function freePort() {
  const srv = net.createServer();
  srv.listen(0, "127.0.0.1");
  await once(srv, "listening");
  const { port } = srv.address();
  srv.close();
  await once(srv, "close");
  return port;
}

/** Start `python -m tokenwire serve` with extra flags; resolves once /healthz answers. */
async function startServer(args = []) {
  const port = await freePort();
  const python = `${ROOT}.venv/bin/python`;
  const proc = spawn(python, ["-m", "tokenwire", "serve", "--port", String(port), ...args], {
    cwd: ROOT,
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  proc.stderr.on("data", (d) => {
    stderr += d;
  });
  proc.on("error", (e) => {
    stderr += `${e}`; // e.g. no .venv: reported below as the server not answering
  });
  // Never leave a server behind, also when the runner stops this file with a signal.
  const killOnExit = () => proc.kill("SIGKILL");
  const killOnSignal = () => {
    proc.kill("SIGKILL");
    process.exit(1);
  };
  process.once("exit", killOnExit);
  process.once("SIGTERM", killOnSignal);
  process.once("SIGINT", killOnSignal);
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (proc.pid === undefined || proc.exitCode !== null) {
      throw new Error(`could not start ${python} -m tokenwire serve (${proc.exitCode}): ${stderr}`);
    }
    try {
      const resp = await fetch(`${url}/healthz`);
      if (resp.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      proc.kill("SIGKILL");
      throw new Error(`server did not answer /healthz within 30 s: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    proc,
    async stop() {
      process.removeListener("exit", killOnExit);
      process.removeListener("SIGTERM", killOnSignal);
      process.removeListener("SIGINT", killOnSignal);
      if (proc.exitCode !== null) return;
      proc.kill("SIGTERM");
      const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
      await once(proc, "exit");
      clearTimeout(timer);
    },
  };
}

// --- helpers ---

/** Every way to read: the four transports, SSE both through EventSource and over fetch. */
const VARIANTS = [
  { name: "sse (EventSource)", transport: "sse", options: {}, overFetch: false },
  { name: "sse (fetch)", transport: "sse", options: { EventSource: null }, overFetch: true },
  { name: "ws", transport: "ws", options: {}, overFetch: false },
  { name: "chunked", transport: "chunked", options: {}, overFetch: true },
  { name: "poll", transport: "poll", options: {}, overFetch: true },
];

const FAST = { tokens_per_s: 500, ttft_ms: 0 };

/** A test that fails rather than hangs. */
function it(name, fn) {
  return test(name, { timeout: 30_000 }, fn);
}

function seqs(events) {
  return events.map((e) => e.seq);
}

function range(from, to) {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

function tokenText(events) {
  return events
    .filter((e) => e.type === "token")
    .map((e) => e.text)
    .join("");
}

async function waitFor(check, ms = 5000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 50));
  }
}

function defineTests() {
  let server = null;
  let baseUrl = process.env.TOKENWIRE_URL;

  before(async () => {
    if (!baseUrl) {
      server = await startServer(["--sse-retry-ms", "100"]);
      baseUrl = server.url;
    }
  });

  after(async () => {
    await server?.stop();
  });

  const client = (options = {}) => new Client(baseUrl, { backoffS: 0.05, ...options });

  describe("a full stream on every transport", () => {
    const texts = new Map();

    for (const v of VARIANTS) {
      it(v.name, async () => {
        const stream = client(v.options).stream("the shared vectors", {
          transport: v.transport,
          max_tokens: 40,
          params: FAST,
        });
        const events = await stream.collect();
        assert.deepEqual(seqs(events), range(0, 40));
        const done = events.at(-1);
        assert.equal(done.type, "done");
        assert.equal(done.finish_reason, "length");
        assert.equal(done.tokens, 40);
        assert.ok(events.slice(0, -1).every((e) => e.type === "token" && e.stream === stream.id));
        assert.equal(stream.text, tokenText(events));
        assert.equal(stream.digestOk, true);
        assert.equal(stream.done, done);
        assert.equal(stream.lastSeq, 40);
        // measurements (nanoseconds, as the Python StreamStats keeps them)
        const s = stream.stats;
        assert.equal(s.tokens, 40);
        assert.ok(s.ttftS > 0 && s.ttftS < 5, `ttft ${s.ttftS} s`);
        assert.equal(s.gapsNs.length, 39);
        assert.ok(s.gapsNs.every((g) => g >= 0 && g < 5e9));
        assert.equal(s.latenciesNs.length, 40);
        assert.ok(
          s.latenciesNs.every((l) => l > -50e6 && l < 5e9),
          `${s.latenciesNs}`,
        );
        const payload = events.reduce((n, e) => n + Buffer.byteLength(JSON.stringify(e)), 0);
        assert.ok(s.bytesReceived >= payload, `${s.bytesReceived} < ${payload}`);
        const expectedRequests = { "sse (EventSource)": 2, "sse (fetch)": 1, ws: 1, chunked: 1 };
        if (v.name in expectedRequests) assert.equal(s.requests, expectedRequests[v.name]);
        else assert.ok(s.requests >= 2);
        assert.equal(s.reconnects, 0);
        assert.equal(s.duplicates, 0);
        const summary = s.summary();
        assert.equal(summary.tokens, 40);
        assert.equal(summary.ttft_ms, s.ttftS * 1e3);
        assert.ok(summary.gap_p50_ms >= 0 && summary.gap_p50_ms <= summary.gap_p95_ms);
        assert.equal(summary.bytes_received, s.bytesReceived);
        texts.set(v.name, stream.text);
      });
    }

    it("every transport carried the same text", () => {
      assert.equal(texts.size, VARIANTS.length);
      assert.equal(new Set(texts.values()).size, 1);
    });
  });

  describe("the tap: each frame as the reader read it", () => {
    const OK = "HTTP/1.1 200 OK";
    let id = null;
    const raw = async (path) => {
      const resp = await fetch(`${baseUrl}${path}`);
      assert.equal(resp.status, 200);
      return { text: await resp.text(), head: headerBytes(resp) };
    };
    const linesOf = (text) => text.split("\n").slice(0, -1);
    const tapped = async (options, transport) => {
      const frames = [];
      const stream = client({ ...options, tap: (f) => frames.push(f) }).subscribe(id, {
        transport,
      });
      assert.deepEqual(seqs(await stream.collect()), range(0, 6));
      const seen = frames.map((f) => [f.transport, f.direction, f.kind, f.text]);
      for (const f of frames) {
        assert.ok(Object.isFrozen(f));
        if (f.kind !== "response") assert.equal(f.nbytes, Buffer.byteLength(f.text));
      }
      return { frames, seen, stream };
    };

    before(async () => {
      id = await client().create("tap the wire", { max_tokens: 6, params: FAST });
      await client().subscribe(id, { transport: "chunked" }).collect();
    });

    for (const transport of ["sse", "chunked"]) {
      it(`${transport} over fetch: the request, the response, each line`, async () => {
        let path = `/api/streams/${id}/${transport}`;
        if (transport === "chunked") path += "?after=-1";
        const { text, head } = await raw(path);
        const { frames, seen, stream } = await tapped({ EventSource: null }, transport);
        assert.deepEqual(seen, [
          [transport, "out", "request", `GET ${path}`],
          [transport, "in", "response", OK],
          ...linesOf(text).map((line) => [transport, "in", "line", line]),
        ]);
        assert.equal(frames[1].nbytes, head);
        const lines = frames.slice(2).reduce((n, f) => n + f.nbytes + 1, 0);
        assert.equal(stream.stats.bytesReceived, head + lines);
        assert.equal(lines, Buffer.byteLength(text));
      });
    }

    it("sse (EventSource): its events' lines, rebuilt", async () => {
      const { text } = await raw(`/api/streams/${id}/sse`);
      const { seen } = await tapped({}, "sse");
      const fields = linesOf(text).filter((l) => /^(id|event|data):/.test(l));
      assert.deepEqual(seen, [
        ["sse", "out", "request", `GET /api/streams/${id}/sse?after=-1`],
        ...fields.flatMap((line, i) => {
          const frame = [["sse", "in", "rebuilt", line]];
          return i % 3 === 2 ? [...frame, ["sse", "in", "rebuilt", ""]] : frame;
        }),
      ]);
    });

    it("ws: the handshake, the messages out and in", async () => {
      const { text } = await raw(`/api/streams/${id}/chunked?after=-1`);
      const { seen } = await tapped({}, "ws");
      const subscribe = JSON.stringify({ op: "subscribe", stream: id, after: -1 });
      assert.deepEqual(seen, [
        ["ws", "out", "request", "GET /api/ws"],
        ["ws", "out", "message", subscribe],
        ...linesOf(text).map((line) => ["ws", "in", "message", line]),
      ]);
    });

    it("poll: each request, its response and its body", async () => {
      const path = `/api/streams/${id}/poll?after=-1&timeout=25`;
      const { text, head } = await raw(path);
      const { frames, seen } = await tapped({}, "poll");
      assert.deepEqual(seen, [
        ["poll", "out", "request", `GET ${path}`],
        ["poll", "in", "response", OK],
        ["poll", "in", "body", text],
      ]);
      assert.deepEqual([frames[1].nbytes, frames[2].nbytes], [head, Buffer.byteLength(text)]);
    });

    for (const v of VARIANTS.filter((x) => x.name !== "sse (EventSource)")) {
      it(`${v.name}: an error answer's body is a frame too`, async () => {
        const frames = [];
        const c = client({ ...v.options, tap: (f) => frames.push(f) });
        const stream = c.subscribe("nope", { transport: v.transport, resume: false });
        await assert.rejects(stream.collect(), ServerError);
        const seen = frames.map((f) => [f.direction, f.kind, f.text]);
        if (v.transport === "ws") {
          assert.deepEqual(seen.slice(0, 2), [
            ["out", "request", "GET /api/ws"],
            ["out", "message", '{"op":"subscribe","stream":"nope","after":-1}'],
          ]);
          assert.equal(seen.length, 3);
          assert.deepEqual(seen[2].slice(0, 2), ["in", "message"]);
          assert.deepEqual(JSON.parse(seen[2][2]), {
            type: "error",
            code: "unknown_stream",
            message: "no stream 'nope'",
            stream: "nope",
            op: "subscribe",
          });
          return;
        }
        const paths = {
          sse: "/api/streams/nope/sse",
          chunked: "/api/streams/nope/chunked?after=-1",
          poll: "/api/streams/nope/poll?after=-1&timeout=25",
        };
        assert.deepEqual(seen, [
          ["out", "request", `GET ${paths[v.transport]}`],
          ["in", "response", "HTTP/1.1 404 Not Found"],
          ["in", "body", '{"error":{"code":"unknown_stream","message":"no stream \'nope\'"}}'],
        ]);
      });
    }

    it("a read that creates: the request's body, and polling's POST and 201", async () => {
      const frames = [];
      const c = client({ tap: (f) => frames.push(f) });
      const body = { prompt: "made here", max_tokens: 2, params: FAST };
      const chunked = c.stream(body.prompt, { transport: "chunked", ...body });
      await chunked.collect();
      const created = JSON.stringify({ type: "created", stream: chunked.id });
      assert.deepEqual(
        frames.slice(0, 4).map((f) => [f.direction, f.kind, f.text]),
        [
          ["out", "request", "POST /api/chunked"],
          ["out", "body", JSON.stringify(body)],
          ["in", "response", OK],
          ["in", "line", created],
        ],
      );
      frames.length = 0;
      const poll = c.stream(body.prompt, { transport: "poll", ...body });
      await poll.collect();
      const at = `/api/streams/${poll.id}`;
      const links = { sse: `${at}/sse`, ws: "/api/ws", poll: `${at}/poll` };
      Object.assign(links, { chunked: `${at}/chunked`, self: at });
      assert.deepEqual(
        frames.slice(0, 5).map((f) => [f.direction, f.kind, f.text]),
        [
          ["out", "request", "POST /api/streams"],
          ["out", "body", JSON.stringify(body)],
          ["in", "response", "HTTP/1.1 201 Created"],
          ["in", "body", JSON.stringify({ id: poll.id, links })],
          ["out", "request", `GET ${at}/poll?after=-1&timeout=25`],
        ],
      );
      assert.deepEqual(new Set(frames.map((f) => f.transport)), new Set(["poll"]));
    });
  });

  describe("subscribe from a position", () => {
    let id;
    let full;

    before(async () => {
      const c = client();
      id = await c.create("join late", { max_tokens: 20, params: FAST });
      full = await c.subscribe(id, { transport: "poll" }).collect();
      assert.deepEqual(seqs(full), range(0, 20));
    });

    for (const v of VARIANTS) {
      it(v.name, async () => {
        const stream = client(v.options).subscribe(id, { after: 7, transport: v.transport });
        const events = await stream.collect();
        assert.deepEqual(seqs(events), range(8, 20));
        assert.deepEqual(events, full.slice(8));
        assert.equal(stream.text, tokenText(full.slice(8)));
        assert.equal(stream.digestOk, null); // tokens 0..7 were not seen
      });

      it(`${v.name}: at the end of a finished stream, nothing and no error`, async () => {
        for (const at of [20]) {
          const stream = client(v.options).subscribe(id, { after: at, transport: v.transport });
          assert.deepEqual(await stream.collect(), []);
          assert.equal(stream.done, null);
          assert.equal(stream.stats.reconnects, 0);
          // One request (a 204, or the WebSocket's `end`); EventSource hides the 204, so
          // the client asks a zero-timeout poll whether anything is left.
          assert.equal(stream.stats.requests, v.name === "sse (EventSource)" ? 2 : 1);
        }
      });

      it(`${v.name}: past the end of a stream, refused (416)`, async () => {
        // No reader can have seen seq 25 of a 20-token stream: refused, never a silence.
        const stream = client(v.options).subscribe(id, { after: 25, transport: v.transport });
        await assert.rejects(stream.collect(), (e) => {
          assert.ok(e instanceof ServerError, e);
          assert.equal(e.code, "position_out_of_range");
          assert.equal(e.status, v.transport === "ws" ? null : 416);
          return true;
        });
      });
    }

    it("a live stream from the start, on every transport at once", async () => {
      const c = client();
      const liveId = await c.create("fan out", { max_tokens: 25, params: { tokens_per_s: 200 } });
      const results = await Promise.all(
        VARIANTS.map((v) =>
          client(v.options).subscribe(liveId, { transport: v.transport }).collect(),
        ),
      );
      for (const events of results) {
        assert.deepEqual(seqs(events), range(0, 25));
        assert.deepEqual(events, results[0]);
      }
    });
  });

  describe("cancel", () => {
    for (const v of VARIANTS) {
      it(v.name, async () => {
        const c = client(v.options);
        const stream = c.stream("cancel me", {
          transport: v.transport,
          max_tokens: 500,
          params: { tokens_per_s: 50, ttft_ms: 0 },
        });
        const events = [];
        for await (const e of stream) {
          events.push(e);
          if (events.length === 3) await c.cancel(stream.id);
        }
        const done = events.at(-1);
        assert.equal(done.type, "done");
        assert.equal(done.finish_reason, "cancelled");
        assert.ok(done.tokens >= 3 && done.tokens < 500, `${done.tokens} tokens`);
        assert.deepEqual(seqs(events), range(0, done.tokens));
        assert.equal(stream.digestOk, true);
        await c.cancel(stream.id); // idempotent
      });
    }
  });

  describe("resume after a cut connection", () => {
    let proxy;

    before(async () => {
      proxy = await startProxy(baseUrl);
    });

    after(async () => {
      await proxy.close();
    });

    /** A 30-token stream at 100 tokens/s through the proxy. */
    const proxied = (prompt, clientOptions, streamOptions) =>
      new Client(proxy.url, { backoffS: 0.05, ...clientOptions }).stream(prompt, {
        max_tokens: 30,
        params: { tokens_per_s: 100, ttft_ms: 0 },
        ...streamOptions,
      });

    /** Read `stream` into `events`, having the proxy cut the connection after the 5th. */
    async function readCutAtFifth(stream, events) {
      for await (const e of stream) {
        events.push(e);
        if (events.length === 5) proxy.cutNext();
      }
    }

    for (const v of VARIANTS) {
      it(v.name, async () => {
        const cutsBefore = proxy.cuts;
        const stream = proxied("resume me", v.options, { transport: v.transport });
        const events = [];
        await readCutAtFifth(stream, events);
        assert.equal(proxy.cuts, cutsBefore + 1);
        assert.deepEqual(seqs(events), range(0, 30)); // each event exactly once, in order
        assert.equal(events.at(-1).type, "done");
        assert.equal(stream.digestOk, true);
        assert.ok(stream.stats.reconnects >= 1, `reconnects ${stream.stats.reconnects}`);
        assert.equal(stream.stats.duplicates, 0); // resumed exactly after the last event received
      });

      if (v.overFetch) {
        it(`${v.name}, answers overlapping what was received`, async () => {
          // A fetch that asks for 3 events more than needed on every resume and poll.
          const rewind = (n) => String(Math.max(-1, Number(n) - 3));
          const overlapping = (url, init = {}) => {
            const u = new URL(url);
            if (u.searchParams.has("after"))
              u.searchParams.set("after", rewind(u.searchParams.get("after")));
            const headers = new Headers(init.headers);
            if (headers.has("Last-Event-ID"))
              headers.set("Last-Event-ID", rewind(headers.get("Last-Event-ID")));
            return fetch(u, { ...init, headers });
          };
          const stream = proxied(
            "overlap",
            { fetch: overlapping, ...v.options },
            { transport: v.transport },
          );
          const events = [];
          await readCutAtFifth(stream, events);
          assert.deepEqual(seqs(events), range(0, 30));
          assert.equal(stream.digestOk, true);
          assert.ok(stream.stats.duplicates >= 3, `duplicates ${stream.stats.duplicates}`);
        });
      }

      it(`${v.name}, resume off`, async () => {
        const stream = proxied("no resume", v.options, { transport: v.transport, resume: false });
        const events = [];
        await assert.rejects(
          () => readCutAtFifth(stream, events),
          (e) => {
            assert.ok(e instanceof ConnectionLost, e);
            // the proxy drops the TCP connection: no close frame, 1006
            if (v.transport === "ws") assert.equal(e.closeCode, 1006);
            return true;
          },
        );
        assert.deepEqual(seqs(events), range(0, events.length - 1));
        assert.equal(stream.stats.reconnects, 0);
        await client().cancel(stream.id);
      });

      it(`${v.name}, server unreachable: gives up after maxReconnects`, async () => {
        const lonely = await startProxy(baseUrl);
        const stream = new Client(lonely.url, {
          backoffS: 0.02,
          maxReconnects: 2,
          ...v.options,
        }).stream("unreachable", {
          transport: v.transport,
          max_tokens: 30,
          params: { tokens_per_s: 100, ttft_ms: 0 },
        });
        const events = [];
        await assert.rejects(
          async () => {
            for await (const e of stream) {
              events.push(e);
              if (events.length === 5) await lonely.close(); // and nothing listens there now
            }
          },
          (e) => e instanceof ConnectionLost,
        );
        assert.ok(events.length >= 5 && events.length < 31);
        assert.equal(stream.stats.reconnects, 2);
        await client().cancel(stream.id);
      });
    }
  });

  describe("errors", () => {
    for (const v of VARIANTS) {
      it(`${v.name}: unknown stream`, async () => {
        const stream = client(v.options).subscribe("no-such-stream00", { transport: v.transport });
        await assert.rejects(stream.collect(), (e) => {
          assert.ok(e instanceof ServerError, e);
          assert.equal(e.code, "unknown_stream");
          assert.equal(e.status, v.transport === "ws" ? null : 404);
          return true;
        });
      });

      it(`${v.name}: invalid create body`, async () => {
        const stream = client(v.options).stream("x", { transport: v.transport, max_tokens: 0 });
        await assert.rejects(stream.collect(), (e) => {
          assert.ok(e instanceof ServerError, e);
          assert.equal(e.code, "invalid_field");
          assert.match(e.serverMessage, /^max_tokens: /);
          assert.equal(e.status, v.transport === "ws" ? null : 400);
          return true;
        });
      });
    }

    it("cancel of an unknown stream", async () => {
      await assert.rejects(client().cancel("no-such-stream00"), {
        name: "ServerError",
        code: "unknown_stream",
        status: 404,
      });
    });

    for (const transport of ["poll", "chunked"]) {
      it(`${transport}: tampered tokens throw DigestMismatch`, async () => {
        // A fetch that changes the text of token 0 on its way in.
        const tamper = async (url, init) => {
          const resp = await fetch(url, init);
          const body = (await resp.text()).replace(/("seq":0,"type":"token","text":")/, "$1~");
          return new Response(body, { status: resp.status, headers: resp.headers });
        };
        const stream = client({ fetch: tamper }).stream("tamper", {
          transport,
          max_tokens: 10,
          params: FAST,
        });
        await assert.rejects(stream.collect(), (e) => {
          assert.ok(e instanceof DigestMismatch, e);
          assert.equal(e.expected, e.event.sha256);
          assert.notEqual(e.actual, e.expected);
          return true;
        });
        assert.equal(stream.digestOk, false);
        assert.ok(stream.text.startsWith("~"));
      });
    }

    it("poll: an answer shorter than its Content-Length is a lost connection", async () => {
      // What Chromium hands over when the connection drops mid-body (tests/test_browser.py).
      let cut = 0;
      const cutOnce = async (url, init) => {
        const resp = await fetch(url, init);
        if (!String(url).includes("/poll") || cut > 0) return resp;
        const bytes = new Uint8Array(await resp.arrayBuffer());
        if (bytes.length < 20) return new Response(bytes, resp);
        cut += 1;
        return new Response(bytes.slice(0, bytes.length - 10), resp); // Content-Length kept
      };
      const stream = client({ fetch: cutOnce }).stream("short body", {
        transport: "poll",
        max_tokens: 10,
        params: { tokens_per_s: 100, ttft_ms: 0 },
      });
      const events = await stream.collect();
      assert.equal(cut, 1);
      assert.deepEqual(seqs(events), range(0, 10));
      assert.equal(stream.stats.reconnects, 1);
      assert.equal(stream.digestOk, true);
    });

    it("poll: a missing event throws ProtocolError", async () => {
      const dropThree = async (url, init) => {
        const resp = await fetch(url, init);
        if (!String(url).includes("/poll")) return resp;
        const body = await resp.json();
        body.events = body.events.filter((e) => e.seq !== 3);
        const headers = new Headers(resp.headers);
        headers.delete("Content-Length"); // the body is rewritten
        return new Response(JSON.stringify(body), { status: resp.status, headers });
      };
      const stream = client({ fetch: dropThree }).stream("gap", {
        transport: "poll",
        max_tokens: 10,
        params: { tokens_per_s: 100, ttft_ms: 0 },
      });
      await assert.rejects(stream.collect(), (e) => {
        assert.ok(e instanceof ProtocolError, e);
        assert.equal(e.message, "expected seq 3, got 4");
        return true;
      });
    });

    it("error mapping", () => {
      const gone = serverError("gone", "expired", 410);
      assert.ok(gone instanceof StreamGone && gone instanceof ServerError);
      assert.equal(gone.code, "gone");
      assert.equal(gone.status, 410);
      const other = serverError("too_many_streams", "busy", 503, { retryAfter: 2 });
      assert.ok(!(other instanceof StreamGone));
      assert.equal(other.retryAfter, 2);
      const closed = new ClosedByServer(1008, "send timeout");
      assert.ok(closed instanceof ConnectionLost && closed instanceof TokenwireError);
      assert.equal(closed.closeCode, 1008);
    });
  });

  describe("an expired stream", () => {
    let own;
    let id;

    before(async () => {
      own = await startServer(["--retention-s", "0.2"]);
      const c = new Client(own.url);
      const events = await c
        .stream("expire", { transport: "chunked", max_tokens: 3, params: FAST })
        .collect();
      id = events[0].stream;
      // the sweeper forgets it within about a second
      await waitFor(async () => (await c.fetch(c.url(`/api/streams/${id}`))).status === 410);
    });

    after(async () => {
      await own.stop();
    });

    for (const v of VARIANTS) {
      it(`${v.name}: StreamGone`, async () => {
        for (const at of [-1, 1]) {
          const stream = new Client(own.url, v.options).subscribe(id, {
            after: at,
            transport: v.transport,
          });
          await assert.rejects(stream.collect(), (e) => {
            assert.ok(e instanceof StreamGone, e);
            assert.equal(e.code, "gone");
            // An HTTP answer has its status; a WebSocket error message has none.
            assert.equal(e.status, v.transport === "ws" ? null : 410);
            return true;
          });
        }
      });
    }
  });

  describe("leaving early", () => {
    for (const v of VARIANTS) {
      it(`${v.name}: break closes the connection`, async () => {
        const c = client(v.options);
        const stream = c.stream("leave early", {
          transport: v.transport,
          max_tokens: 500,
          params: { tokens_per_s: 50, ttft_ms: 0 },
        });
        for await (const e of stream) if (e.seq === 2) break;
        // the server sees the reader go
        await waitFor(async () => {
          const s = await c.status(stream.id);
          return Object.values(s.subscribers).every((n) => n === 0);
        });
        await c.cancel(stream.id);
      });
    }
  });

  // The twin of tests/test_client.py's token tests.
  describe("a server with --auth-token", () => {
    const TOKEN = "js-token";
    let own = null;
    before(async () => {
      own = await startServer(["--auth-token", TOKEN]);
    });
    after(async () => {
      await own?.stop();
    });
    const authed = (options = {}) => new Client(own.url, { backoffS: 0.05, ...options });

    for (const v of VARIANTS) {
      it(`${v.name}: stream, subscribe, status and cancel with the token`, async () => {
        const c = authed({ ...v.options, token: TOKEN });
        const stream = c.stream("token", { transport: v.transport, max_tokens: 5, params: FAST });
        const events = await stream.collect();
        assert.deepEqual(seqs(events), range(0, 5));
        assert.equal(stream.digestOk, true);
        // EventSource cannot send the header: with a token, SSE is one POST /api/sse (fetch).
        if (v.transport === "sse") assert.equal(stream.stats.requests, 1);
        const again = await c.subscribe(stream.id, { transport: v.transport }).collect();
        assert.equal(tokenText(again), stream.text);
        const id = await c.create("token", { max_tokens: 1000, params: { tokens_per_s: 5 } });
        assert.equal((await c.status(id)).state, "running");
        await c.cancel(id);
        const rest = await c.subscribe(id, { transport: v.transport }).collect();
        assert.equal(rest.at(-1).finish_reason, "cancelled");
      });

      for (const [token, httpMessage, wsMessage] of [
        [
          undefined,
          "this server needs a token: send Authorization: Bearer <token>",
          'authenticate first: send {"op":"auth","token":"..."} (or the Authorization header ' +
            "on the handshake)",
        ],
        ["wrong", "the bearer token is not valid", "the bearer token is not valid"],
      ]) {
        it(`${v.name}: ${token ? "a wrong" : "no"} token is ServerError unauthorized`, async () => {
          const c = authed({ ...v.options, token });
          const stream = c.stream("x", { transport: v.transport, max_tokens: 2, resume: false });
          await assert.rejects(stream.collect(), (e) => {
            assert.ok(e instanceof ServerError, e);
            assert.equal(e.code, "unauthorized");
            const ws = v.transport === "ws";
            assert.equal(e.serverMessage, ws ? wsMessage : httpMessage);
            assert.equal(e.status, ws ? null : 401);
            return true;
          });
        });
      }
    }

    it("create, status and cancel without the token", async () => {
      const c = authed({ token: "wrong" });
      const unauthorized = { name: "ServerError", code: "unauthorized", status: 401 };
      await assert.rejects(c.create("x"), unauthorized);
      await assert.rejects(c.status("any"), unauthorized);
      await assert.rejects(c.cancel("any"), unauthorized);
    });
  });

  describe("server shutdown", () => {
    it("every transport ends with the shutdown error event", async () => {
      const own = await startServer(["--shutdown-drain-s", "1"]);
      try {
        const streams = VARIANTS.map((v) =>
          new Client(own.url, { backoffS: 0.05, ...v.options }).stream("shutdown", {
            transport: v.transport,
            max_tokens: 1000,
            params: { tokens_per_s: 50, ttft_ms: 0 },
          }),
        );
        const seen = streams.map(() => []);
        const reads = streams.map(async (s, i) => {
          for await (const e of s) seen[i].push(e);
        });
        await waitFor(() => seen.every((events) => events.length >= 2));
        own.proc.kill("SIGTERM");
        const results = await Promise.allSettled(reads);
        results.forEach((r, i) => {
          const name = VARIANTS[i].name;
          assert.equal(r.status, "rejected", name);
          assert.ok(r.reason instanceof StreamFailed, `${name}: ${r.reason}`);
          assert.equal(r.reason.code, "shutdown", name);
          const last = seen[i].at(-1);
          assert.equal(last.type, "error", name);
          assert.equal(r.reason.event, last, name);
          assert.deepEqual(seqs(seen[i]), range(0, last.seq), name);
        });
      } finally {
        await own.stop();
      }
    });
  });
}

if (typeof WebSocket === "undefined" || typeof EventSource === "undefined") {
  test(`client tests (re-run with ${FLAGS.join(" ")})`, () => {
    // NODE_TEST_CONTEXT would make the child report to this runner instead of running.
    const env = { ...process.env };
    delete env.NODE_TEST_CONTEXT;
    const child = spawnSync(
      process.execPath,
      [...FLAGS, "--no-warnings", "--test", "--test-reporter=spec", fileURLToPath(import.meta.url)],
      { encoding: "utf-8", timeout: 300_000, env },
    );
    const summary = child.stdout.split("\n").filter((l) => /^ℹ (tests|pass|fail)/.test(l));
    console.log(summary.join("\n"));
    assert.equal(child.status, 0, `${child.stdout}\n${child.stderr}`);
    const passed = Number(/^ℹ pass (\d+)$/m.exec(child.stdout)?.[1] ?? 0);
    assert.ok(passed > 0, `the child ran no test:\n${child.stdout}\n${child.stderr}`);
  });
} else {
  defineTests();
}
