// Is this stream whole? The JS twin of the rules in clients/check.py: `place` (is this seq
// the next, one already had, or past a gap) and `PartsDigest` (does what arrived match the
// `done` event: the answer text's `tokens` and `sha256`, and the typed parts' `parts`).
// Sans-I/O: no socket, no timer.

import { EVENT_TYPES, TERMINAL } from "./names.js";

/**
 * Where `seq` stands after `lastSeq` (-1: none yet): the "next" one, a "repeat" of one
 * already had (a resume overlapped, or out of order), or past a "gap".
 * @param {number} seq
 * @param {number} lastSeq
 * @returns {"next"|"repeat"|"gap"}
 */
export function place(seq, lastSeq) {
  if (seq === lastSeq + 1) return "next";
  return seq <= lastSeq ? "repeat" : "gap";
}

/**
 * The SHA-256 of a stream's token text, fed token by token, for `done.sha256`. WebCrypto
 * hashes only whole buffers, so this keeps the text and hashes it when asked.
 */
export class TextDigest {
  /** False where WebCrypto is missing (a browser page on plain http, not localhost). */
  static get available() {
    return Boolean(globalThis.crypto?.subtle);
  }

  constructor() {
    /** The text so far. */
    this.text = "";
  }

  /** @param {string} text */
  update(text) {
    this.text += text;
  }

  /** Hex SHA-256 of the UTF-8 text so far. */
  async sha256() {
    const bytes = new TextEncoder().encode(this.text);
    const digest = await globalThis.crypto.subtle.digest("SHA-256", bytes);
    return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  /** True if the `done` event's `sha256` is that of the text so far. */
  async matches(done) {
    return done.sha256 === (await this.sha256());
  }
}

/** The content event types, one seq space: "token", "reasoning", "tool_call". */
export const CONTENT = Object.freeze(EVENT_TYPES.filter((t) => !TERMINAL.includes(t)));

/**
 * Everything a stream's content events carry, in the form `done` reports it, fed event by
 * event: the answer text (`tokens`, `sha256`) and the typed parts (`parts`: the reasoning's
 * count and digest, each tool call's index, id, name and argument digest). `mismatch()`
 * compares them with the `done` event (the twin of the Python PartsDigest).
 */
export class PartsDigest {
  constructor() {
    /** The answer text's digest (`done.sha256`). */
    this.text = new TextDigest();
    /** `token` events (`done.tokens`). */
    this.tokens = 0;
    this.reasoning = new TextDigest();
    this.reasoningTokens = 0;
    /** @type {Map<number, {id: string|null, name: string|null, digest: TextDigest}>} */
    this._calls = new Map();
  }

  /** Hex SHA-256 of the answer text so far. */
  sha256() {
    return this.text.sha256();
  }

  /** @param {string} text */
  token(text) {
    this.text.update(text);
    this.tokens += 1;
  }

  /** Count one content event (`token`, `reasoning` or `tool_call`). */
  update(ev) {
    if (ev.type === "token") this.token(ev.text);
    else if (ev.type === "reasoning") {
      this.reasoning.update(ev.text);
      this.reasoningTokens += 1;
    } else if (ev.type === "tool_call") {
      let call = this._calls.get(ev.index);
      if (call === undefined) {
        // the call's first event names it
        call = { id: ev.id ?? null, name: ev.name ?? null, digest: new TextDigest() };
        this._calls.set(ev.index, call);
      }
      call.digest.update(ev.args);
    }
  }

  /** `done.parts` as what arrived makes it (null: neither reasoning nor calls). */
  async parts() {
    const out = {};
    if (this.reasoningTokens) {
      out.reasoning = { tokens: this.reasoningTokens, sha256: await this.reasoning.sha256() };
    }
    if (this._calls.size) {
      const indexes = [...this._calls.keys()].sort((a, b) => a - b);
      out.tool_calls = [];
      for (const index of indexes) {
        const { id, name, digest } = this._calls.get(index);
        out.tool_calls.push({ index, id, name, sha256: await digest.sha256() });
      }
    }
    return Object.keys(out).length ? out : null;
  }

  /**
   * The first field where `done` differs from what arrived (`sha256` first, then `tokens`,
   * then `parts`) as [field, the done event's value, the received value], or null when
   * everything matches. `field` is a path into `done`: "parts.tool_calls[0].id", ...
   */
  async mismatch(done) {
    const server = flat("", {
      sha256: done.sha256 ?? null,
      tokens: done.tokens ?? null,
      parts: done.parts ?? null,
    });
    const received = flat("", {
      sha256: await this.sha256(),
      tokens: this.tokens,
      parts: await this.parts(),
    });
    for (const key of new Set([...server.keys(), ...received.keys()])) {
      const a = server.get(key) ?? null;
      const b = received.get(key) ?? null;
      if (a !== b) return [key, a, b];
    }
    return null;
  }
}

/** `value` as a Map {path: leaf} (`a.b`, `a[0].b`), in document order. */
function flat(prefix, value, out = new Map()) {
  if (Array.isArray(value)) value.forEach((v, i) => flat(`${prefix}[${i}]`, v, out));
  else if (value !== null && typeof value === "object") {
    for (const [k, v] of Object.entries(value)) flat(prefix ? `${prefix}.${k}` : k, v, out);
  } else out.set(prefix, value);
  return out;
}

/** One line for a mismatch, the same in both clients (values as JSON). */
export function describe([field, server, received]) {
  if (field === "sha256") return `sha256 mismatch: server ${server}, received text ${received}`;
  const json = (v) => JSON.stringify(v) ?? "null";
  return `done.${field} mismatch: server ${json(server)}, received ${json(received)}`;
}
