// The shared typed-parts vectors (tests/vectors/parts.json) through the JS decoders,
// PartReader and PartsDigest: the same cases as tests/test_vectors.py.
// Run: node --test clients/js/test/

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { PartsDigest, describe } from "../check.js";
import { NDJSONDecoder, SSEDecoder } from "../decoders.js";
import { InvalidToolCall } from "../errors.js";
import { PartReader } from "../parts.js";

const cases = JSON.parse(
  readFileSync(new URL("../../../tests/vectors/parts.json", import.meta.url), "utf-8"),
);

/** A "byte string": each character U+0000..U+00FF is one byte. */
const toBytes = (s) => Uint8Array.from(s, (c) => c.charCodeAt(0));

/** The bytes whole, one byte at a time, and split in two at every boundary. */
function rechunkings(data, split) {
  if (!split) return [[data]];
  const out = [Array.from(data, (_, i) => data.subarray(i, i + 1))];
  for (let i = 0; i <= data.length; i++) out.push([data.subarray(0, i), data.subarray(i)]);
  return out;
}

function readParts(events) {
  const reader = new PartReader();
  const out = [];
  try {
    for (const ev of events) out.push(...reader.feed(ev).map((p) => p.toJSON()));
  } catch (e) {
    if (!(e instanceof InvalidToolCall)) throw e;
    return [out, { type: "InvalidToolCall", index: e.index, name: e.name, arguments: e.arguments }];
  }
  return [out, null];
}

for (const c of cases) {
  test(`${c.name}: the wire bytes at every split, both decoders`, () => {
    const split = !c.name.startsWith("check:");
    for (const chunks of rechunkings(toBytes(c.sse), split)) {
      const dec = new SSEDecoder();
      const got = chunks.flatMap((ch) => dec.feed(ch));
      assert.deepEqual(
        got.map((m) => JSON.parse(m.data)),
        c.events,
      );
      assert.deepEqual(
        got.map((m) => m.event),
        c.events.map((e) => e.type),
      );
    }
    for (const chunks of rechunkings(toBytes(c.ndjson), split)) {
      const dec = new NDJSONDecoder();
      assert.deepEqual(
        chunks.flatMap((ch) => dec.feed(ch)),
        c.events,
      );
    }
  });

  test(`${c.name}: parts and check`, async () => {
    assert.deepEqual(readParts(c.events), [c.parts, c.error]);
    if (!c.whole) return;
    const digest = new PartsDigest();
    const content = c.events.slice(0, -1);
    for (const ev of content) digest.update(ev);
    assert.deepEqual(await digest.mismatch(c.events.at(-1)), c.mismatch);
  });
}

test("describe: the same line as the Python client's", () => {
  assert.equal(describe(["sha256", "ab", "cd"]), "sha256 mismatch: server ab, received text cd");
  assert.equal(
    describe(["parts.tool_calls[1].name", "other", "s\u00e9cond"]),
    'done.parts.tool_calls[1].name mismatch: server "other", received "s\u00e9cond"',
  );
  assert.equal(
    describe(["parts.reasoning.tokens", null, 1]),
    "done.parts.reasoning.tokens mismatch: server null, received 1",
  );
});
