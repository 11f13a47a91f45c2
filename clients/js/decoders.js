// Pure decoders for the wire formats: bytes in, events out, no I/O.
//
// The JS twin of clients/decoders.py, checked on the same vectors (tests/vectors/*.json).
// `SSEDecoder` follows the WHATWG "Server-sent events" parsing rules; `NDJSONDecoder`
// splits newline-delimited JSON across arbitrary chunk boundaries. Both are incremental:
// feed them chunks (Uint8Array) as they arrive, in any sizes, and they return complete items.

/**
 * Header bytes of an unmasked server-to-client WebSocket frame with `n` payload bytes
 * (RFC 6455 section 5.2: 7-bit, 16-bit or 64-bit payload length).
 * @param {number} n
 */
export function wsFrameHeader(n) {
  return n < 126 ? 2 : n < 65536 ? 4 : 10;
}

/**
 * @typedef {object} SSEMessage One dispatched SSE event (WHATWG MessageEvent fields).
 * @property {string} event the event type ("message" when the event named none)
 * @property {string} data the data lines joined with LF
 * @property {string} lastEventId the last event ID string when it was dispatched
 * @property {number|null} retry the reconnection time in ms then (null if never set)
 */

/**
 * Incremental WHATWG SSE parser.
 *
 * Lines end with CR, LF or CRLF (a CRLF split across two chunks is one line end); one
 * leading BOM is stripped; lines starting with ":" are comments; `data` lines are joined
 * with LF; an `id` containing NUL is ignored; `retry` is taken only if all ASCII digits;
 * an event whose data buffer is empty dispatches nothing; an unterminated last event is
 * dropped (never returned). Invalid UTF-8 becomes U+FFFD.
 *
 * `lastEventId` is the spec's "last event ID string": an `id` takes effect when its event
 * is dispatched, so after a cut inside an event it is still the id of the last complete
 * one, the position to resume from. `retry` is the reconnection time in ms (null until set).
 *
 * `onLine`, if given, is called with every line as the decoder splits it (without its line
 * end; a blank line ends an event): the client's `tap` sees the wire through it.
 */
export class SSEDecoder {
  /** @param {{onLine?: (line: string) => void}} [options] */
  constructor({ onLine = null } = {}) {
    this._onLine = onLine;
    // Streaming mode joins characters split across chunks; the decoder strips one
    // leading BOM of the stream (ignoreBOM: false), as the WHATWG UTF-8 decode does.
    this._utf8 = new TextDecoder("utf-8");
    this._buf = "";
    this._afterCR = false;
    this._data = [];
    this._event = "";
    this._id = ""; // the last event ID buffer
    /** @type {string} */
    this.lastEventId = "";
    /** @type {number|null} */
    this.retry = null;
  }

  /**
   * @param {Uint8Array} chunk
   * @returns {SSEMessage[]}
   */
  feed(chunk) {
    let text = this._utf8.decode(chunk, { stream: true });
    if (!text) return []; // keep a pending CR: the LF of its CRLF may come next
    if (this._afterCR && text.startsWith("\n")) text = text.slice(1); // CRLF split
    this._afterCR = false;
    const buf = this._buf + text;
    const n = buf.length;
    const out = [];
    let start = 0;
    for (;;) {
      const cr = buf.indexOf("\r", start);
      const lf = buf.indexOf("\n", start);
      if (cr < 0 && lf < 0) break;
      let end;
      let next;
      if (cr >= 0 && (lf < 0 || cr < lf)) {
        end = cr;
        if (cr + 1 < n) {
          next = buf[cr + 1] === "\n" ? cr + 2 : cr + 1;
        } else {
          next = cr + 1;
          this._afterCR = true;
        }
      } else {
        end = lf;
        next = lf + 1;
      }
      const msg = this._line(buf.slice(start, end));
      if (msg !== null) out.push(msg);
      start = next;
    }
    this._buf = buf.slice(start);
    return out;
  }

  _line(line) {
    this._onLine?.(line);
    if (line === "") return this._dispatch();
    if (line.startsWith(":")) return null;
    const colon = line.indexOf(":");
    let name = line;
    let value = "";
    if (colon >= 0) {
      name = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
    }
    if (name === "data") {
      this._data.push(value);
    } else if (name === "event") {
      this._event = value;
    } else if (name === "id") {
      if (!value.includes("\0")) this._id = value;
    } else if (name === "retry") {
      if (/^[0-9]+$/.test(value)) this.retry = Number.parseInt(value, 10);
    }
    return null;
  }

  _dispatch() {
    this.lastEventId = this._id;
    const data = this._data;
    const event = this._event;
    this._data = [];
    this._event = "";
    if (data.length === 0) return null;
    return {
      event: event || "message",
      data: data.join("\n"),
      lastEventId: this.lastEventId,
      retry: this.retry,
    };
  }
}

// The bytes Python's bytes.strip() removes, so both decoders skip the same lines.
const BLANK = /^[ \t\r\n\v\f]*$/;

/**
 * Incremental newline-delimited JSON: returns one parsed value per complete line.
 *
 * Lines end at LF; a CR before the LF is tolerated (JSON whitespace). Empty and
 * whitespace-only lines (heartbeats) are skipped. UTF-8 is decoded in streaming mode, so a
 * character cut across chunks is joined first; invalid UTF-8 throws a TypeError (like the
 * Python decoder, which refuses it), and a line that is not JSON throws a SyntaxError.
 *
 * `onLine`, if given, is called with every complete line (without its LF, blank ones
 * included) before it is parsed: the client's `tap` sees the wire through it.
 */
export class NDJSONDecoder {
  /** @param {{onLine?: (line: string) => void}} [options] */
  constructor({ onLine = null } = {}) {
    this._onLine = onLine;
    // fatal: invalid UTF-8 is an error, as orjson makes it in Python; ignoreBOM: a BOM is
    // not JSON, so it is kept (and refused) rather than silently stripped.
    this._utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
    this._buf = "";
  }

  /**
   * @param {Uint8Array} chunk
   * @returns {any[]}
   */
  feed(chunk) {
    const buf = this._buf + this._utf8.decode(chunk, { stream: true });
    const lines = buf.split("\n");
    this._buf = lines.pop();
    const out = [];
    for (const line of lines) {
      this._onLine?.(line);
      if (!BLANK.test(line)) out.push(JSON.parse(line));
    }
    return out;
  }

  /** The decoded text of an unterminated last line (dropped if the stream ends here). */
  get pending() {
    return this._buf;
  }
}
