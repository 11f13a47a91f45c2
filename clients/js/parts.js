// A stream's content as parts: answer text, reasoning, tool calls (sans-I/O). The twin of
// clients/parts.py.
//
// The log carries three kinds of content in one seq order (docs/protocol.md, "Typed
// parts"): `token` (answer text), `reasoning` and `tool_call` (a call's first event names
// it, the next ones carry pieces of its argument JSON). `PartReader` turns those events into
// parts, event by event: `Text`, `Reasoning`, `ToolCall` (a piece of a call's arguments, as
// it came) and, once a call's arguments are complete (the next call starts, another kind of
// content comes, or `done`), `ToolCallDone` with the joined arguments parsed.
// `Stream.parts()` reads a stream through one.

import { InvalidToolCall } from "./errors.js";

/** `finish_reason` values that may cut a call's arguments short. */
const CUT = Object.freeze(["length", "cancelled"]);

/** A piece of the answer (a `token` event's text). */
export class Text {
  constructor(text) {
    this.text = text;
  }

  get type() {
    return "text";
  }

  toJSON() {
    return { type: this.type, text: this.text };
  }
}

/** A piece of reasoning (a `reasoning` event's text). */
export class Reasoning {
  constructor(text) {
    this.text = text;
  }

  get type() {
    return "reasoning";
  }

  toJSON() {
    return { type: this.type, text: this.text };
  }
}

/**
 * A piece of a tool call as it came: `arguments` is this event's piece of the argument JSON
 * (the call's first event: often ""). `id` and `name` are the call's (null when the reader
 * started inside the call and never saw them).
 */
export class ToolCall {
  constructor(index, id, name, args) {
    this.index = index;
    this.id = id;
    this.name = name;
    this.arguments = args;
  }

  get type() {
    return "tool_call";
  }

  toJSON() {
    const { index, id, name } = this;
    return { type: this.type, index, id, name, arguments: this.arguments };
  }
}

/** A tool call whose arguments are complete: `arguments` is their whole JSON text, `parsed`
 * its `JSON.parse`. */
export class ToolCallDone {
  constructor(index, id, name, args, parsed) {
    this.index = index;
    this.id = id;
    this.name = name;
    this.arguments = args;
    this.parsed = parsed;
  }

  get type() {
    return "tool_call_done";
  }

  toJSON() {
    const { index, id, name, parsed } = this;
    return { type: this.type, index, id, name, arguments: this.arguments, parsed };
  }
}

/**
 * Turns a stream's events into parts, one event at a time (feed each event once, in seq
 * order: the resume loop drops repeats before).
 *
 * A call is complete when the next call starts, another kind of content comes, or the stream
 * ends with `done`: then a `ToolCallDone` follows its last piece. Its arguments must be
 * JSON, else `InvalidToolCall`; except when `done` says `length` or `cancelled`, which may
 * cut the open call short: it then ends without a `ToolCallDone` if its text does not
 * parse. A call the reader joined in the middle (a read from a position) never gets one
 * either.
 */
export class PartReader {
  constructor() {
    /** @type {Map<number, {index: number, id: string|null, name: string|null, whole: boolean, pieces: string[]}>} */
    this._calls = new Map();
    this._open = null;
    this._reasoning = [];
  }

  /** The reasoning text so far. */
  get reasoning() {
    return this._reasoning.join("");
  }

  /** Every call so far, in index order, with the argument text received so far. */
  get toolCalls() {
    return [...this._calls.values()]
      .sort((a, b) => a.index - b.index)
      .map((c) => new ToolCall(c.index, c.id, c.name, c.pieces.join("")));
  }

  /** The parts one event makes (none for an event that is not content or `done`). */
  feed(ev) {
    if (ev.type === "tool_call") {
      const out = [];
      if (this._open !== null && this._open.index !== ev.index) out.push(...this._close(false));
      let call = this._calls.get(ev.index);
      if (call === undefined) {
        const { index } = ev;
        call = { index, id: ev.id ?? null, name: ev.name ?? null, whole: "id" in ev, pieces: [] };
        this._calls.set(index, call);
      }
      call.pieces.push(ev.args);
      this._open = call;
      out.push(new ToolCall(call.index, call.id, call.name, ev.args));
      return out;
    }
    if (ev.type === "token") return [...this._close(false), new Text(ev.text)];
    if (ev.type === "reasoning") {
      this._reasoning.push(ev.text);
      return [...this._close(false), new Reasoning(ev.text)];
    }
    if (ev.type === "done") return this._close(CUT.includes(ev.finish_reason));
    return [];
  }

  _close(cut) {
    const call = this._open;
    this._open = null;
    if (call === null || !call.whole) return [];
    const args = call.pieces.join("");
    let parsed;
    try {
      parsed = JSON.parse(args);
    } catch (e) {
      if (cut) return [];
      throw new InvalidToolCall(call.index, call.id, call.name, args, e.message);
    }
    return [new ToolCallDone(call.index, call.id ?? "", call.name ?? "", args, parsed)];
  }
}
