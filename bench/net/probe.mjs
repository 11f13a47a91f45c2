// The JS client on one lab path: reads one stream with the tokenwire JS client and prints
// one JSON line with what it measured (the Python side, bench/net/probes.py, judges it).
//
//   NODE_EXTRA_CA_CERTS=ca.pem node --experimental-websocket --experimental-eventsource \
//     bench/net/probe.mjs '{"url", "transport", "prompt", "max_tokens", "params", ...}'
//
// Output: {"text", "digestOk", "tokens", "firstNs", "lastNs", "startedNs", "latenciesNs",
// "reconnects", "requests", "error"}. Node's fetch and WebSocket speak HTTP/1.1 only.

import { Client } from "../../clients/js/tokenwire.js";

const spec = JSON.parse(process.argv[2]);
const client = new Client(spec.url, {
  backoffS: 0.1,
  maxBackoffS: 1,
  maxReconnects: spec.maxReconnects ?? 10,
  pollTimeoutS: spec.pollTimeoutS ?? 25,
  EventSource: null,
});
const out = { text: "", digestOk: null, error: null };
const stream = client.stream(spec.prompt, {
  transport: spec.transport,
  max_tokens: spec.max_tokens,
  params: spec.params,
});
const timer = setTimeout(() => stream.close(), spec.timeoutMs ?? 60000);
try {
  for await (const ev of stream) {
    if (ev.type === "token") out.text += ev.text;
  }
} catch (e) {
  out.error = `${e.name}: ${e.message}`;
} finally {
  clearTimeout(timer);
}
const s = stream.stats;
Object.assign(out, {
  digestOk: stream.digestOk,
  tokens: s.tokens,
  startedNs: s.startedNs,
  firstNs: s.firstTokenNs,
  lastNs: s.lastTokenNs,
  latenciesNs: s.latenciesNs,
  reconnects: s.reconnects,
  requests: s.requests,
});
process.stdout.write(`${JSON.stringify(out)}\n`);
