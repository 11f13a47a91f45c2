// Node's own clients and the npm `eventsource` package, run on tokenwire by
// tests/conformance/: `node --experimental-eventsource --experimental-websocket
// node_clients.mjs <scenario> <json options>` prints one JSON line with the result.
//
//   sse-builtin {url}   Node's EventSource reads until it stops reconnecting
//   sse-npm     {url}   the same with the `eventsource` package (v4, package-lock.json)
//   ws          {url, body}  generate, subscribe and cancel with Node's WebSocket

import { generateSubscribeCancel, readEventSource } from "./scenarios.js";

const [scenario, json] = process.argv.slice(2);
const options = JSON.parse(json);
let result;
if (scenario === "sse-builtin") {
  result = await readEventSource(globalThis.EventSource, options.url);
} else if (scenario === "sse-npm") {
  const { EventSource } = await import("eventsource");
  result = await readEventSource(EventSource, options.url);
} else if (scenario === "ws") {
  result = await generateSubscribeCancel(globalThis.WebSocket, options.url, options.body);
} else {
  throw new Error(`unknown scenario ${scenario}`);
}
process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(0));
