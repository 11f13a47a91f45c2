// The reconnect delay and the client's options, without a server (the twin of
// tests/test_client.py's test_backoff and test_client_options).

import assert from "node:assert/strict";
import { test } from "node:test";

import { Client, backoffS } from "../client.js";

test("backoffS: doubling, capped, plus up to 25% jitter", () => {
  for (let attempt = 0; attempt < 8; attempt++) {
    const base = Math.min(2, 0.1 * 2 ** attempt);
    for (let i = 0; i < 50; i++) {
      const delay = backoffS(attempt, 0.1, 2);
      assert.ok(delay >= base && delay <= base * 1.25, `${attempt}: ${delay}`);
    }
  }
});

test("options: seconds in the names", () => {
  const c = new Client("http://127.0.0.1:1");
  assert.deepEqual([c.maxReconnects, c.backoffS, c.maxBackoffS, c.pollTimeoutS], [10, 0.1, 5, 25]);
  const options = { backoffS: 0.02, maxBackoffS: 0.5, pollTimeoutS: 5, maxReconnects: 3 };
  const set = new Client("http://127.0.0.1:1", options);
  assert.deepEqual([set.backoffS, set.maxBackoffS, set.pollTimeoutS, set.maxReconnects], [0.02, 0.5, 5, 3]);
});
