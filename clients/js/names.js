// The names both ends of the wire agree on: the JS twin of wire/__init__.py
// (tests/test_wire_names.py checks that the two declare the same).

/** The four ways a stream of tokenwire events travels, in the order tables list them. */
export const TRANSPORTS = Object.freeze(["sse", "ws", "poll", "chunked"]);

/** Log event types: the content (`token`, and the typed parts `reasoning` and `tool_call`),
 * then `done` or `error`, which end a stream. */
export const EVENT_TYPES = Object.freeze(["token", "reasoning", "tool_call", "done", "error"]);
export const TERMINAL = Object.freeze(["done", "error"]);

/** Control messages outside the log (no `seq`): `created` names a new stream, `end` says a
 * subscription has nothing more (WebSocket `end`, HTTP 204). */
export const CONTROL_TYPES = Object.freeze(["created", "end"]);
