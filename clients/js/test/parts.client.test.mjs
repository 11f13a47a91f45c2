// The JS client's typed parts against a real server whose source emits them
// (`python -m tests.parts_server`: tokenwire with the scripted `parts` source, and a
// stand-in that records requests): `Stream.parts()` on every way to read, resume through a
// cut inside a call's argument pieces, the typed-part options' request bytes, and a call
// whose arguments are not JSON. The twin of tests/test_client_parts.py.
//
//   node --test --experimental-websocket --experimental-eventsource clients/js/test/
//
// Without the two flags, this file re-runs itself in a child with them.

import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { after, before, describe, test } from "node:test";

import { Client, InvalidToolCall } from "../tokenwire.js";
import { startProxy } from "./proxy.mjs";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const FLAGS = ["--experimental-websocket", "--experimental-eventsource"];

/** `python -m tests.parts_server`; resolves with its URLs and a stop(). */
async function startPartsServer() {
  const proc = spawn(`${ROOT}.venv/bin/python`, ["-m", "tests.parts_server"], {
    cwd: ROOT,
    env: { ...process.env, PYTHONPATH: ROOT },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const killOnExit = () => proc.kill("SIGKILL");
  process.once("exit", killOnExit);
  const lines = createInterface({ input: proc.stdout });
  const timer = setTimeout(() => proc.kill("SIGKILL"), 30_000);
  const [line] = await once(lines, "line");
  clearTimeout(timer);
  const urls = JSON.parse(line);
  return {
    ...urls,
    async stop() {
      process.removeListener("exit", killOnExit);
      if (proc.exitCode !== null) return;
      proc.kill("SIGTERM");
      const kill = setTimeout(() => proc.kill("SIGKILL"), 10_000);
      await once(proc, "exit");
      clearTimeout(kill);
    },
  };
}

const VARIANTS = [
  { name: "sse (EventSource)", transport: "sse", options: {} },
  { name: "sse (fetch)", transport: "sse", options: { EventSource: null } },
  { name: "ws", transport: "ws", options: {} },
  { name: "chunked", transport: "chunked", options: {} },
  { name: "poll", transport: "poll", options: {} },
];

function it(name, fn) {
  return test(name, { timeout: 30_000 }, fn);
}

// SCRIPT of tests/test_typed_parts.py, as parts (the JSON form of each).
const ARGS = ['{"city":"Pa', 'ris \u2713 \u{1f600}","q', 'uote\\"":', "", "[1,2]}"];
function scriptParts(sid) {
  const whole = ARGS.join("");
  const call = (index, id, name, args) => ({ type: "tool_call", index, id, name, arguments: args });
  const callDone = (index, id, name, args) => ({
    ...call(index, id, name, args),
    type: "tool_call_done",
    parsed: JSON.parse(args),
  });
  return [
    { type: "reasoning", text: "The user wants" },
    { type: "reasoning", text: " the weather \u2713." },
    call(0, "call_a", "get_weather", ""),
    ...ARGS.filter((a) => a).map((a) => call(0, "call_a", "get_weather", a)),
    callDone(0, "call_a", "get_weather", whole),
    call(1, `call_${sid}_1`, "second", '{"x"'),
    call(1, `call_${sid}_1`, "second", ":1}"),
    callDone(1, `call_${sid}_1`, "second", '{"x":1}'),
    { type: "text", text: "It is " },
    { type: "text", text: "sunny." },
  ];
}

// LONG of tests/parts_server.py.
const LONG_ARGS = ['{"q":"', ...Array.from({ length: 57 }, (_, i) => ["\u00e9", "\u{1f600}", "x"][i % 3]), '"', "}"];

async function collectParts(stream, onPart = () => {}) {
  const out = [];
  for await (const part of stream.parts()) {
    out.push(JSON.parse(JSON.stringify(part)));
    onPart(out.length);
  }
  return out;
}

function defineTests() {
  let server;
  before(async () => {
    server = await startPartsServer();
  });
  after(async () => {
    await server.stop();
  });

  describe("parts on every way to read", () => {
    for (const v of VARIANTS) {
      it(v.name, async () => {
        const c = new Client(server.url, { backoffS: 0.05, ...v.options });
        const stream = c.stream("parts", { transport: v.transport, source: "parts", max_tokens: 100 });
        const parts = await collectParts(stream);
        assert.deepEqual(parts, scriptParts(stream.id));
        assert.equal(stream.text, "It is sunny.");
        assert.equal(stream.reasoning, "The user wants the weather \u2713.");
        assert.deepEqual(
          stream.toolCalls.map((t) => [t.index, t.id, t.name, t.arguments]),
          [
            [0, "call_a", "get_weather", ARGS.join("")],
            [1, `call_${stream.id}_1`, "second", '{"x":1}'],
          ],
        );
        assert.equal(stream.digestOk, true);
        assert.equal(stream.done.finish_reason, "tool_calls");
      });
    }

    it("the event API reads a typed stream as before", async () => {
      const stream = new Client(server.url).stream("parts", { transport: "ws", source: "parts" });
      const events = await stream.collect();
      assert.deepEqual(
        events.map((e) => e.type),
        [
          "reasoning",
          "reasoning",
          ...Array(5).fill("tool_call"),
          "tool_call",
          "tool_call",
          "token",
          "token",
          "done",
        ],
      );
      assert.equal(stream.text, "It is sunny.");
      assert.equal(stream.digestOk, true);
    });
  });

  describe("resume through a cut inside a call's argument pieces", () => {
    let proxy;
    before(async () => {
      proxy = await startProxy(server.url);
    });
    after(async () => {
      await proxy.close();
    });

    for (const v of VARIANTS) {
      it(v.name, async () => {
        const cutsBefore = proxy.cuts;
        const c = new Client(proxy.url, { backoffS: 0.05, ...v.options });
        const stream = c.stream("long", { transport: v.transport, source: "parts", max_tokens: 100 });
        // Cut once the call's 10th piece arrived: the call's next pieces are lost in flight.
        const parts = await collectParts(stream, (n) => n === 12 && proxy.cutNext());
        const whole = LONG_ARGS.join("");
        const piece = (a) => ({ type: "tool_call", index: 0, id: "call_long", name: "search", arguments: a });
        assert.deepEqual(parts, [
          { type: "reasoning", text: "think " },
          { type: "reasoning", text: "\u2713" },
          piece(""),
          ...LONG_ARGS.map(piece),
          { ...piece(whole), type: "tool_call_done", parsed: JSON.parse(whole) },
          { type: "text", text: "done." },
        ]);
        assert.equal(proxy.cuts, cutsBefore + 1);
        assert.ok(stream.stats.reconnects >= 1);
        assert.equal(stream.digestOk, true);
      });
    }
  });

  describe("the stand-in: request bytes and bad arguments", () => {
    it("the typed-part options go top-level in the create body and ws generate", async () => {
      const c = new Client(server.standin);
      const tools = [{ name: "get_weather", parameters: { type: "object", required: ["city"] } }];
      const options = { reasoning_effort: "high", tools, tool_choice: "get_weather" };
      assert.equal(await c.create("p", { max_tokens: 5, ...options }), "s1");
      await c.stream("p", { transport: "chunked", ...options }).collect();
      await c.stream("p", { transport: "ws", source: "parts", ...options }).collect();
      await c.stream("p", { transport: "chunked" }).collect();
      const seen = await (await fetch(`${server.standin}/seen`)).json();
      const rest =
        '"reasoning_effort":"high","tools":[{"name":"get_weather","parameters":{"type":"object",' +
        '"required":["city"]}}],"tool_choice":"get_weather"}';
      assert.deepEqual(seen, [
        `{"prompt":"p","max_tokens":5,${rest}`,
        `{"prompt":"p",${rest}`,
        `{"op":"generate","prompt":"p","source":"parts",${rest}`,
        '{"prompt":"p"}',
      ]);
    });

    for (const transport of ["chunked", "ws"]) {
      it(`${transport}: arguments that are not JSON throw InvalidToolCall`, async () => {
        const c = new Client(server.standin);
        await assert.rejects(collectParts(c.stream("bad", { transport })), (e) => {
          assert.ok(e instanceof InvalidToolCall, e);
          assert.deepEqual([e.index, e.name, e.arguments], [0, "f", "{nope"]);
          assert.match(e.message, /^tool call 0 \(f\): arguments are not JSON: /);
          return true;
        });
        const events = await c.stream("bad", { transport }).collect(); // events: no error
        assert.deepEqual(
          events.map((e) => e.type),
          ["tool_call", "done"],
        );
      });
    }
  });
}

if (typeof WebSocket === "undefined" || typeof EventSource === "undefined") {
  test(`parts client tests (re-run with ${FLAGS.join(" ")})`, () => {
    const env = { ...process.env };
    delete env.NODE_TEST_CONTEXT;
    const child = spawnSync(
      process.execPath,
      [...FLAGS, "--no-warnings", "--test", "--test-reporter=spec", fileURLToPath(import.meta.url)],
      { encoding: "utf-8", timeout: 300_000, env },
    );
    console.log(child.stdout.split("\n").filter((l) => /^ℹ (tests|pass|fail)/.test(l)).join("\n"));
    assert.equal(child.status, 0, `${child.stdout}\n${child.stderr}`);
    const passed = Number(/^ℹ pass (\d+)$/m.exec(child.stdout)?.[1] ?? 0);
    assert.ok(passed > 0, `the child ran no test:\n${child.stdout}\n${child.stderr}`);
  });
} else {
  defineTests();
}
