// Is this stream whole? The JS twin of the rules in clients/check.py: `place` (is this seq
// the next, one already had, or past a gap) and `TextDigest` (does the text match
// `done.sha256`). Sans-I/O: no socket, no timer.

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
