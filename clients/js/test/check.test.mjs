// The sans-I/O checks (check.js), on the same table as tests/test_client.py's.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";

import { TextDigest, place } from "../check.js";

test("place: next, repeat, gap", () => {
  const table = [
    [0, -1, "next"],
    [5, 4, "next"],
    [4, 4, "repeat"],
    [0, 4, "repeat"],
    [6, 4, "gap"],
    [1, -1, "gap"],
  ];
  for (const [seq, last, expected] of table) assert.equal(place(seq, last), expected, `${seq}`);
});

test("TextDigest: the SHA-256 of the UTF-8 text, fed piece by piece", async () => {
  const digest = new TextDigest();
  for (const piece of ["h", "\u00e9", "\u{1f600}", " x"]) digest.update(piece);
  const expected = createHash("sha256").update("h\u00e9\u{1f600} x", "utf8").digest("hex");
  assert.equal(digest.text, "h\u00e9\u{1f600} x");
  assert.equal(await digest.sha256(), expected);
  assert.equal(await digest.matches({ sha256: expected }), true);
  assert.equal(await digest.matches({ sha256: "0".repeat(64) }), false);
});
