// tokenwire client for browsers and Node 20+: ES modules, no dependencies, no build step.
// This entry re-exports the public API, as clients/__init__.py does for the Python client;
// README.md beside it tells how to use it.

export { Client, Stream, StreamStats } from "./client.js";
export { NDJSONDecoder, SSEDecoder } from "./decoders.js";
export { PartReader, Reasoning, Text, ToolCall, ToolCallDone } from "./parts.js";
export * from "./errors.js";
export { TRANSPORTS } from "./names.js";
