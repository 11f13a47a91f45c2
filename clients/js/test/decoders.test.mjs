// The shared decoder vectors (tests/vectors/*.json) through the JS decoders.
// Run: node --test clients/js/test/
//
// Each case is fed chunk by chunk as written, then re-chunked (one byte at a time, and
// split in two at every byte boundary): the events must not depend on the chunking.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";

import { NDJSONDecoder, SSEDecoder } from "../decoders.js";

const VECTORS = new URL("../../../tests/vectors/", import.meta.url);

function load(name) {
  return JSON.parse(readFileSync(new URL(name, VECTORS), "utf-8"));
}

/** A chunk is a "byte string": each character U+0000..U+00FF is one byte. */
function toBytes(chunk) {
  const out = new Uint8Array(chunk.length);
  for (let i = 0; i < chunk.length; i++) {
    const code = chunk.charCodeAt(i);
    assert.ok(code < 256, `chunk character U+${code.toString(16)} is not a byte`);
    out[i] = code;
  }
  return out;
}

function rechunkings(chunks) {
  const total = chunks.reduce((n, c) => n + c.length, 0);
  const data = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    data.set(c, at);
    at += c.length;
  }
  const out = [Array.from(data, (_, i) => data.subarray(i, i + 1))];
  for (let i = 0; i <= data.length; i++) out.push([data.subarray(0, i), data.subarray(i)]);
  return out;
}

/** The vectors use the Python field names. */
function fromVector(e) {
  return { event: e.event, data: e.data, lastEventId: e.last_event_id, retry: e.retry };
}

function runSSE(chunks) {
  const dec = new SSEDecoder();
  const events = chunks.flatMap((c) => dec.feed(c));
  return { events, state: { lastEventId: dec.lastEventId, retry: dec.retry } };
}

function runNDJSON(chunks) {
  const dec = new NDJSONDecoder();
  return chunks.flatMap((c) => dec.feed(c));
}

const sseCases = load("sse.json");
const ndjsonCases = load("ndjson.json");

describe("SSE vectors", () => {
  for (const c of sseCases) {
    test(c.name, () => {
      const expected = {
        events: c.events.map(fromVector),
        state: { lastEventId: c.state.last_event_id, retry: c.state.retry },
      };
      const chunks = c.chunks.map(toBytes);
      assert.deepStrictEqual(runSSE(chunks), expected);
      for (const other of rechunkings(chunks)) {
        assert.deepStrictEqual(runSSE(other), expected, `chunked as ${other.length} pieces`);
      }
    });
  }
});

describe("NDJSON vectors", () => {
  for (const c of ndjsonCases) {
    test(c.name, () => {
      const chunks = c.chunks.map(toBytes);
      assert.deepStrictEqual(runNDJSON(chunks), c.events);
      if (!c.name.startsWith("multi-byte payload")) {
        for (const other of rechunkings(chunks)) {
          assert.deepStrictEqual(runNDJSON(other), c.events);
        }
      }
    });
  }
});

describe("decoder extras", () => {
  test("vectors are not empty", () => {
    assert.ok(sseCases.length >= 40);
    assert.ok(ndjsonCases.length >= 100);
  });

  test("NDJSON pending is the unterminated line", () => {
    const dec = new NDJSONDecoder();
    assert.deepStrictEqual(dec.feed(new TextEncoder().encode('{"a":1}\n{"b"')), [{ a: 1 }]);
    assert.equal(dec.pending, '{"b"');
  });

  test("NDJSON refuses invalid UTF-8 and non-JSON lines", () => {
    assert.throws(() => new NDJSONDecoder().feed(Uint8Array.of(0x22, 0xff, 0x22, 0x0a)), TypeError);
    assert.throws(() => new NDJSONDecoder().feed(new TextEncoder().encode("nope\n")), SyntaxError);
  });

  test("each decoder tells every line it splits (the client's tap)", () => {
    const enc = (text) => new TextEncoder().encode(text);
    const lines = [];
    const sse = new SSEDecoder({ onLine: (line) => lines.push(line) });
    const bom = [0xef, 0xbb, 0xbf];
    const events = [
      ...sse.feed(Uint8Array.of(...bom, ...enc("retry: 5\r\n\r\n: ping\n\nid: 1\nevent: tok"))),
      ...sse.feed(enc("en\ndata: {}\r")),
      ...sse.feed(enc("\n\nid: 2")), // an unterminated line is not told
    ];
    assert.deepStrictEqual(events.map((e) => e.data), ["{}"]);
    const told = ["retry: 5", "", ": ping", "", "id: 1", "event: token", "data: {}", ""];
    assert.deepStrictEqual(lines, told);

    lines.length = 0;
    const nd = new NDJSONDecoder({ onLine: (line) => lines.push(line) });
    assert.deepStrictEqual(nd.feed(Uint8Array.of(...enc('{"a":1}\n\n{"b":"'), 0xc3)), [{ a: 1 }]);
    assert.deepStrictEqual(nd.feed(Uint8Array.of(0xa9, ...enc('"}\r\n{"c"'))), [{ b: "é" }]);
    assert.deepStrictEqual(lines, ['{"a":1}', "", '{"b":"é"}\r']);
  });
});
