// Every error the tokenwire JS client throws, in one place (the twin of clients/errors.py).
//
//   TokenwireError
//   ├── ServerError       the server said no: an HTTP error body {"error":{"code","message"}}
//   │   │                 (.status) or a WebSocket error message (.status null)
//   │   └── StreamGone    code "gone": the stream expired, or the position is evicted (410)
//   ├── StreamFailed      the stream ended with an `error` event: .code, .event
//   ├── DigestMismatch    what arrived differs from the `done` event: the answer text's
//   │                     sha256 or count, or `parts` (reasoning, tool calls): .field
//   ├── InvalidToolCall   a complete tool call's arguments are not JSON: .index, .name
//   ├── ProtocolError     the server broke the wire contract (a gap in seq, a bad frame)
//   └── ConnectionLost    a connection dropped before the terminal event
//       └── ClosedByServer  a WebSocket closed before the terminal event: .closeCode
//
// ConnectionLost is what resume handles; it reaches the caller only when resume is off or
// the reconnect budget is spent (its `cause` is the last failure).

import { describe } from "./check.js";

export class TokenwireError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = new.target.name;
  }
}

export class ServerError extends TokenwireError {
  /**
   * @param {string} code the stable error code (`unknown_stream`, `invalid_field`, ...)
   * @param {string} message the server's message
   * @param {number|null} [status] the HTTP status; null for a WebSocket error message
   * @param {{retryAfter?: number|null}} [extra] `Retry-After` in seconds, if sent
   */
  constructor(code, message, status = null, { retryAfter = null } = {}) {
    super(`${status == null ? "" : `${status} `}${code}: ${message}`);
    this.code = code;
    this.serverMessage = message;
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

export class StreamGone extends ServerError {
  constructor(message, status = 410, extra = {}) {
    super("gone", message, status, extra);
  }
}

export class StreamFailed extends TokenwireError {
  /**
   * @param {string} code the `error` event's code (`shutdown`, `upstream_error`, ...)
   * @param {string} message the `error` event's message
   * @param {object|null} [event] the `error` event
   */
  constructor(code, message, event = null) {
    super(`${code}: ${message}`);
    this.code = code;
    this.serverMessage = message;
    this.event = event;
  }
}

export class DigestMismatch extends TokenwireError {
  /**
   * @param {*} expected the `done` event's value (its `sha256`, by default)
   * @param {*} actual the value of what arrived
   * @param {object|null} [event] the `done` event
   * @param {string} [field] the path of the first difference in `done`: "sha256" (the
   *   answer text), "tokens", "parts.reasoning.sha256", "parts.tool_calls[0].id", ...
   */
  constructor(expected, actual, event = null, field = "sha256") {
    super(describe([field, expected, actual]));
    this.expected = expected;
    this.actual = actual;
    this.event = event;
    this.field = field;
  }
}

/** A tool call's arguments, complete, are not JSON (the model's fault, not the wire's:
 * `done.parts` vouches for the bytes). */
export class InvalidToolCall extends TokenwireError {
  constructor(index, id, name, args, reason) {
    super(`tool call ${index} (${name}): arguments are not JSON: ${reason}`);
    this.index = index;
    this.id = id;
    this.name = name;
    this.arguments = args;
    this.reason = reason;
  }
}

export class ProtocolError extends TokenwireError {}

export class ConnectionLost extends TokenwireError {}

export class ClosedByServer extends ConnectionLost {
  /**
   * @param {number|null} closeCode the WebSocket close code (1006: no close frame)
   * @param {string} [reason] the close reason
   */
  constructor(closeCode, reason = "") {
    super(`WebSocket closed by the server with code ${closeCode}${reason ? ` (${reason})` : ""}`);
    this.closeCode = closeCode;
    this.reason = reason;
  }
}

/**
 * A `ServerError`, or a `StreamGone` for code "gone".
 * @returns {ServerError}
 */
export function serverError(code, message, status = null, extra = {}) {
  return code === "gone"
    ? new StreamGone(message, status, extra)
    : new ServerError(code, message, status, extra);
}
