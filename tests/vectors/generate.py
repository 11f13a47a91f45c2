"""Write the shared decoder test vectors: ``sse.json`` and ``ndjson.json`` beside this file.

Run from the repository root::

    .venv/bin/python tests/vectors/generate.py          # rewrite the JSON files
    .venv/bin/python tests/vectors/generate.py --check  # exit 1 if they are out of date

The output is deterministic. Expected events are written here by hand (SSE) or taken from
the payload with ``json.loads`` (NDJSON), never from the decoders under test. The file
format is described in ``README.md`` beside this file.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

Chunk = str | bytes
Case = dict[str, Any]


def ev(
    data: str, event: str = "message", last_event_id: str = "", retry: int | None = None
) -> dict[str, Any]:
    """One expected SSE message (the fields of ``clients.decoders.SSEMessage``)."""
    return {"event": event, "data": data, "last_event_id": last_event_id, "retry": retry}


def as_bytes(chunk: Chunk) -> bytes:
    return chunk.encode("utf-8") if isinstance(chunk, str) else chunk


def byte_string(chunk: Chunk) -> str:
    """Bytes as a JSON "byte string": one character U+0000..U+00FF per byte."""
    return as_bytes(chunk).decode("latin-1")


def sse(
    name: str,
    chunks: list[Chunk],
    events: list[dict[str, Any]],
    last_event_id: str = "",
    retry: int | None = None,
) -> Case:
    """An SSE case; ``state`` is the decoder's ``last_event_id``/``retry`` after all chunks."""
    return {
        "name": name,
        "chunks": [byte_string(c) for c in chunks],
        "events": events,
        "state": {"last_event_id": last_event_id, "retry": retry},
    }


def every_byte(data: Chunk) -> list[bytes]:
    raw = as_bytes(data)
    return [raw[i : i + 1] for i in range(len(raw))]


TOKEN0 = '{"stream":"StWNx7bsU3jQNt7N","seq":0,"type":"token","text":"42","t":1795243524369295721}'
DONE1 = (
    '{"stream":"StWNx7bsU3jQNt7N","seq":1,"type":"done","finish_reason":"length","tokens":1,'
    '"sha256":"73475cb40a568e8da8a045ced110137e159f890ac4da883b6b17dc651b3a8049",'
    '"t":1795243524406878164}'
)
CREATED = '{"type":"created","stream":"StWNx7bsU3jQNt7N"}'


def sse_cases() -> list[Case]:
    korean_emoji = "data: 한국어 🎉👩‍💻\n\n"
    return [
        # --- line ends ---
        sse("lf line ends", ["data: a\n\ndata: b\n\n"], [ev("a"), ev("b")]),
        sse("cr line ends", ["data: a\r\rdata: b\r\r"], [ev("a"), ev("b")]),
        sse("crlf line ends", ["data: a\r\n\r\ndata: b\r\n\r\n"], [ev("a"), ev("b")]),
        sse("mixed line ends in one event", ["data: a\rdata: b\ndata: c\r\n\n"], [ev("a\nb\nc")]),
        sse("lf then cr is two line ends", ["data: a\n\rdata: b\n\n"], [ev("a"), ev("b")]),
        sse(
            "crlf split across chunks",
            ["data: a\r", "\n\r", "\ndata: b\r", "\n", "\r\n"],
            [ev("a"), ev("b")],
        ),
        sse(
            "cr at a chunk end followed by a field",
            ["data: a\r", "data: b\r", "\r"],
            [ev("a\nb")],
        ),
        sse(
            "cr at a chunk end followed by cr lf",
            ["data: a\r", "\r\n"],
            [ev("a")],
        ),
        sse(
            "crlf split by an empty chunk",
            ["data: a\r", "", "\ndata: b\n\n"],
            [ev("a\nb")],
        ),
        sse("empty chunks", ["", "data: a", "", "\n", "", "\n", ""], [ev("a")]),
        sse("blank lines only", ["\n\n\r\n\r\r"], []),
        # --- byte order mark ---
        sse("leading bom stripped", [b"\xef\xbb\xbfdata: a\n\n"], [ev("a")]),
        sse("leading bom split across chunks", [b"\xef", b"\xbb", b"\xbfdata: a\n\n"], [ev("a")]),
        sse("leading bom after an empty chunk", [b"", b"\xef\xbb\xbfdata: a\n\n"], [ev("a")]),
        sse(
            "only the first bom is stripped",
            # the second BOM makes the field name "\ufeffdata", which is ignored
            [b"\xef\xbb\xbf\xef\xbb\xbfdata: a\n\ndata: b\n\n"],
            [ev("b")],
        ),
        sse(
            "bom after the start is kept",
            ["data: a\n\n\ufeffdata: b\n\ndata:\ufeffc\n\n"],
            [ev("a"), ev("\ufeffc")],
        ),
        # --- comments and field syntax ---
        sse(
            "comments ignored",
            [": ping\n\n:\n: comment\ndata: a\n: between\ndata: b\n\n"],
            [ev("a\nb")],
        ),
        sse(
            "multi-line data joined with lf",
            ["data: a\ndata: b\ndata: c\n\n"],
            [ev("a\nb\nc")],
        ),
        sse(
            "one space after the colon is removed",
            ["data:a\n\ndata: a\n\ndata:  a\n\ndata:\ta\n\ndata:   \n\n"],
            [ev("a"), ev("a"), ev(" a"), ev("\ta"), ev("  ")],
        ),
        sse("colons in the value are kept", ["data: a: b:c\n\n"], [ev("a: b:c")]),
        sse(
            "field with no colon has an empty value",
            ["data\n\ndata:\n\ndata: \n\ndata\ndata\n\n"],
            [ev(""), ev(""), ev(""), ev("\n")],
        ),
        sse(
            "unknown fields ignored",
            ["foo: bar\nData: x\nDATA: y\nevent : z\ndata : w\nretry : 5\nid : 9\ndata: a\n\n"],
            [ev("a")],
        ),
        sse("nul in data kept", ["data: a\x00b\n\n"], [ev("a\x00b")]),
        # --- event type ---
        sse(
            "event type reset after dispatch",
            ["event: token\ndata: a\n\ndata: b\n\n"],
            [ev("a", "token"), ev("b")],
        ),
        sse(
            "event type reset by an event without data",
            ["event: token\n\ndata: b\n\n"],
            [ev("b")],
        ),
        sse(
            "empty event type is message",
            ["event:\ndata: a\n\nevent\ndata: b\n\n"],
            [ev("a"), ev("b")],
        ),
        sse(
            "last event field wins",
            ["event: a\nevent: b\ndata: x\n\n"],
            [ev("x", "b")],
        ),
        # --- id ---
        sse(
            "id persists across events",
            ["id: 1\ndata: a\n\ndata: b\n\nid: 2\ndata: c\n\n"],
            [ev("a", last_event_id="1"), ev("b", last_event_id="1"), ev("c", last_event_id="2")],
            last_event_id="2",
        ),
        sse(
            "id with nul ignored",
            ["id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n"],
            [ev("a", last_event_id="1"), ev("b", last_event_id="1")],
            last_event_id="1",
        ),
        sse(
            "empty id resets the last event id",
            ["id: 1\ndata: a\n\nid\ndata: b\n\nid: 3\ndata: c\n\nid:\ndata: d\n\n"],
            [
                ev("a", last_event_id="1"),
                ev("b"),
                ev("c", last_event_id="3"),
                ev("d"),
            ],
        ),
        sse(
            "id set by an event without data",
            ["id: 5\n\ndata: a\n\n"],
            [ev("a", last_event_id="5")],
            last_event_id="5",
        ),
        sse(
            "id of an unterminated event is not yet the last event id",
            ["id: 1\ndata: a\n\nid: 2\ndata: b\n"],
            [ev("a", last_event_id="1")],
            last_event_id="1",
        ),
        sse(
            "id value keeps spaces after the first",
            ["id:  7 \ndata: a\n\n"],
            [ev("a", last_event_id=" 7 ")],
            last_event_id=" 7 ",
        ),
        # --- retry ---
        sse(
            "retry only if all ascii digits",
            [
                "retry: 1000\n\n"
                "retry: 10x\ndata: a\n\n"
                "retry: -1\ndata: b\n\n"
                "retry:  500\ndata: c\n\n"
                "retry:\ndata: d\n\n"
                "retry: ١٢\ndata: e\n\n"
                "retry: 1.5\ndata: f\n\n"
                "retry: 2500 \ndata: g\n\n"
                "retry:2500\ndata: h\n\n"
            ],
            [
                ev("a", retry=1000),
                ev("b", retry=1000),
                ev("c", retry=1000),
                ev("d", retry=1000),
                ev("e", retry=1000),
                ev("f", retry=1000),
                ev("g", retry=1000),
                ev("h", retry=2500),
            ],
            retry=2500,
        ),
        sse(
            "retry zero and leading zeros",
            ["retry: 0\ndata: a\n\nretry: 007\ndata: b\n\n"],
            [ev("a", retry=0), ev("b", retry=7)],
            retry=7,
        ),
        sse(
            "retry applies at once, even without dispatch",
            ["retry: 3000\n\ndata: a\nretry: 50\n"],
            [],
            retry=50,
        ),
        # --- dispatch ---
        sse(
            "event without data dispatches nothing",
            ["event: token\nid: 4\n\nretry: 10\n\n"],
            [],
            last_event_id="4",
            retry=10,
        ),
        sse(
            "unterminated last event dropped (line ended)",
            ["data: a\n\ndata: b\n"],
            [ev("a")],
        ),
        sse(
            "unterminated last event dropped (line not ended)",
            ["data: a\n\ndata: b"],
            [ev("a")],
        ),
        sse(
            "unterminated last event dropped (cr ended)",
            ["data: a\r\rdata: b\r"],
            [ev("a")],
        ),
        # --- UTF-8 ---
        sse(
            "multi-byte characters split across chunks",
            [b"data: \xed", b"\x95", b"\x9c\xf0\x9f", b"\x8e", b"\x89\n\n"],
            [ev("한🎉")],
        ),
        sse(
            "multi-byte characters one byte at a time",
            list(every_byte(korean_emoji)),
            [ev("한국어 🎉👩‍💻")],
        ),
        sse(
            "invalid utf-8 replaced",
            [b"data: a\xffb\n\ndata: \xed\x95x\n\ndata: \xc0\xaf\n\ndata: \xf0\x9f\x8e\n\n"],
            [ev("a\ufffdb"), ev("\ufffdx"), ev("\ufffd\ufffd"), ev("\ufffd")],
        ),
        # --- what the server sends ---
        sse(
            "server framing: retry, events, ping",
            [
                f"retry: 1000\n\nid: 0\nevent: token\ndata: {TOKEN0}\n\n"
                f": ping\n\nid: 1\nevent: done\ndata: {DONE1}\n\n"
            ],
            [
                ev(TOKEN0, "token", "0", 1000),
                ev(DONE1, "done", "1", 1000),
            ],
            last_event_id="1",
            retry=1000,
        ),
        sse(
            "server framing: created control event has no id",
            [
                f"retry: 1000\n\nevent: created\ndata: {CREATED}\n\n"
                f"id: 0\nevent: token\ndata: {TOKEN0}\n\n"
            ],
            [ev(CREATED, "created", "", 1000), ev(TOKEN0, "token", "0", 1000)],
            last_event_id="0",
            retry=1000,
        ),
        sse(
            "server framing: cut inside an event",
            [f"retry: 1000\n\nid: 0\nevent: token\ndata: {TOKEN0}\n\nid: 1\nevent: do"],
            [ev(TOKEN0, "token", "0", 1000)],
            last_event_id="0",
            retry=1000,
        ),
    ]


# --- NDJSON ---

SPLIT_LINES = [
    '{"seq":0,"type":"token","text":"안녕하세요"}\n',
    "\n",  # a heartbeat
    '{"seq":1,"type":"token","text":" 🎉👩‍💻"}\r\n',  # CR LF tolerated
    '{"seq":2,"type":"done","text":"끝"}\n',
]


def objects(lines: list[str]) -> list[Any]:
    return [json.loads(line) for line in lines if line.strip()]


def nd(name: str, chunks: list[Chunk], events: list[Any]) -> Case:
    return {"name": name, "chunks": [byte_string(c) for c in chunks], "events": events}


def ndjson_cases() -> list[Case]:
    a, b = {"a": 1}, {"b": "x"}
    cases = [
        nd("one line", ['{"a":1}\n'], [a]),
        nd("several lines in one chunk", ['{"a":1}\n{"b":"x"}\n'], [a, b]),
        nd("line split across chunks", ['{"a"', ":1}", "\n"], [a]),
        nd("empty heartbeat lines skipped", ['\n{"a":1}\n\n\n{"b":"x"}\n\n'], [a, b]),
        nd("whitespace-only lines skipped", [' \t\n{"a":1}\n'], [a]),
        nd("crlf line ends tolerated", ['{"a":1}\r\n{"b":"x"}\r\n'], [a, b]),
        nd("crlf heartbeat skipped", ['\r\n{"a":1}\r\n\r\n'], [a]),
        nd("cr and lf in different chunks", ['{"a":1}\r', '\n{"b":"x"}', "\r", "\n"], [a, b]),
        nd("empty chunks", ["", '{"a":1}', "", "\n", ""], [a]),
        nd("unterminated last line not returned", ['{"a":1}\n{"b":"x"}'], [a]),
        nd("unterminated last line with cr not returned", ['{"a":1}\n{"b":"x"}\r'], [a]),
        nd(
            "escaped line break inside a string",
            ['{"text":"a\\nb\\r\\nc"}\n'],
            [{"text": "a\nb\r\nc"}],
        ),
        nd(
            "json unicode escapes",
            ['{"text":"\\ud55c\\ud83c\\udf89"}\n'],
            [{"text": "한🎉"}],
        ),
        nd(
            "server framing: created, token, done",
            [f"{CREATED}\n{TOKEN0}\n\n{DONE1}\n"],
            objects([CREATED, TOKEN0, DONE1]),
        ),
    ]
    payload = "".join(SPLIT_LINES).encode("utf-8")
    expected = objects(SPLIT_LINES)
    cases.append(nd("multi-byte payload one byte at a time", every_byte(payload), expected))
    for i in range(1, len(payload)):
        cases.append(
            nd(f"multi-byte payload split at byte {i}", [payload[:i], payload[i:]], expected)
        )
    return cases


# --- typed parts: events, their SSE and NDJSON bytes, the parts and the check ---

SID = "Pt3sVq8LmN0aBcDe"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def log(items: list[dict[str, Any]], start: int = 0) -> list[dict[str, Any]]:
    """Log events: ``stream``, ``seq`` (from ``start``), the item's fields, ``t``."""
    return [
        {"stream": SID, "seq": start + i, **item, "t": 1795243524369295721 + i}
        for i, item in enumerate(items)
    ]


def done(
    seq: int, reason: str, text: list[str], parts: dict[str, Any] | None = None
) -> dict[str, Any]:
    fields: dict[str, Any] = {"type": "done", "finish_reason": reason, "tokens": len(text)}
    fields["sha256"] = sha("".join(text))
    if parts is not None:
        fields["parts"] = parts
    return {"stream": SID, "seq": seq, **fields, "t": 1795243524406878164}


def reasoning_parts(pieces: list[str]) -> dict[str, Any]:
    return {"tokens": len(pieces), "sha256": sha("".join(pieces))}


def call_part(index: int, call_id: str, name: str, args: list[str]) -> dict[str, Any]:
    return {"index": index, "id": call_id, "name": name, "sha256": sha("".join(args))}


def compact(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def wire_sse(events: list[dict[str, Any]]) -> str:
    frames = [f"id: {e['seq']}\nevent: {e['type']}\ndata: {compact(e)}\n\n" for e in events]
    return byte_string("retry: 1000\n\n" + "".join(frames))


def wire_ndjson(events: list[dict[str, Any]]) -> str:
    return byte_string("".join(compact(e) + "\n" for e in events))


def pc(
    name: str,
    events: list[dict[str, Any]],
    parts: list[dict[str, Any]],
    *,
    mismatch: list[Any] | None = None,
    error: dict[str, Any] | None = None,
    whole: bool = True,
) -> Case:
    """A typed-parts case: the log ``events`` (the wire bytes made from them), the
    ``parts`` a PartReader makes of them (each part's JSON form), the ``error`` it raises
    (then ``parts`` are those before it), and, for a stream read ``whole`` from its start,
    the check's ``mismatch`` with the ``done`` event (null: it matches)."""
    case: Case = {"name": name, "sse": wire_sse(events), "ndjson": wire_ndjson(events)}
    case |= {"events": events, "parts": parts, "error": error, "whole": whole}
    if whole:
        case["mismatch"] = mismatch
    return case


def text(t: str) -> dict[str, Any]:
    return {"type": "text", "text": t}


def thought(t: str) -> dict[str, Any]:
    return {"type": "reasoning", "text": t}


def piece(index: int, call_id: str | None, name: str | None, args: str) -> dict[str, Any]:
    return {"type": "tool_call", "index": index, "id": call_id, "name": name, "arguments": args}


def call_done(index: int, call_id: str, name: str, args: str) -> dict[str, Any]:
    return {"type": "tool_call_done", "index": index, "id": call_id, "name": name,
            "arguments": args, "parsed": json.loads(args)}  # fmt: skip


def parts_cases() -> list[Case]:
    why = ["The user wants", " the weather \u2713 \U0001f600."]
    args = ['{"city":"Pa', 'ris \u2713 \U0001f600\\"\u2028', '","days":[1,', "2]}"]
    whole_args = "".join(args)
    full = [
        *({"type": "reasoning", "text": w} for w in why),
        {"type": "tool_call", "index": 0, "id": "call_a", "name": "get_weather", "args": ""},
        *({"type": "tool_call", "index": 0, "args": a} for a in args),
        {"type": "tool_call", "index": 1, "id": "call_b", "name": "second", "args": '{"x"'},
        {"type": "tool_call", "index": 1, "args": ":1}"},
        {"type": "token", "text": "It is "},
        {"type": "token", "text": "sunny."},
    ]
    full_parts = {
        "reasoning": reasoning_parts(why),
        "tool_calls": [
            call_part(0, "call_a", "get_weather", args),
            call_part(1, "call_b", "second", ['{"x":1}']),
        ],
    }
    full_events = log(full) + [done(len(full), "tool_calls", ["It is ", "sunny."], full_parts)]
    full_out = [
        *(thought(w) for w in why),
        piece(0, "call_a", "get_weather", ""),
        *(piece(0, "call_a", "get_weather", a) for a in args),
        call_done(0, "call_a", "get_weather", whole_args),
        piece(1, "call_b", "second", '{"x"'),
        piece(1, "call_b", "second", ":1}"),
        call_done(1, "call_b", "second", '{"x":1}'),
        text("It is "),
        text("sunny."),
    ]

    def tampered(change: dict[str, Any]) -> list[dict[str, Any]]:
        *events, last = full_events
        return [*events, {**last, "parts": {**full_parts, **change}}]

    calls = full_parts["tool_calls"]
    opened = {"type": "tool_call", "index": 0, "id": "call_c", "name": "f", "args": ""}
    cut = log([opened, {"type": "tool_call", "index": 0, "args": '{"a":'}])
    cut_parts = {"tool_calls": [call_part(0, "call_c", "f", ['{"a":'])]}
    ended = log([opened, {"type": "tool_call", "index": 0, "args": '{"a":1}'}])
    ended_parts = {"tool_calls": [call_part(0, "call_c", "f", ['{"a":1}'])]}
    bad = log(
        [
            opened,
            {"type": "tool_call", "index": 0, "args": "{nope}"},
            {"type": "token", "text": "x"},
        ]
    )
    interleaved = log(
        [
            {"type": "tool_call", "index": 0, "id": "c0", "name": "f", "args": "[]"},
            {"type": "token", "text": "then"},
            {"type": "tool_call", "index": 1, "id": "c1", "name": "g", "args": "{}"},
            {"type": "reasoning", "text": "hm"},
        ]
    )
    interleaved_parts = {
        "reasoning": reasoning_parts(["hm"]),
        "tool_calls": [call_part(0, "c0", "f", ["[]"]), call_part(1, "c1", "g", ["{}"])],
    }
    return [
        pc("reasoning, two calls, then text", full_events, full_out),
        pc(
            "old stream: tokens only, no parts",
            log([{"type": "token", "text": "42"}]) + [done(1, "length", ["42"])],
            [text("42")],
        ),
        pc(
            "a call closes when text or reasoning comes, or the next call",
            interleaved + [done(4, "stop", ["then"], interleaved_parts)],
            [
                piece(0, "c0", "f", "[]"),
                call_done(0, "c0", "f", "[]"),
                text("then"),
                piece(1, "c1", "g", "{}"),
                call_done(1, "c1", "g", "{}"),
                thought("hm"),
            ],
        ),
        pc(
            "a call cut by length: no tool_call_done",
            cut + [done(2, "length", [], cut_parts)],
            [piece(0, "call_c", "f", ""), piece(0, "call_c", "f", '{"a":')],
        ),
        pc(
            "a call complete at length: tool_call_done",
            ended + [done(2, "length", [], ended_parts)],
            [
                piece(0, "call_c", "f", ""),
                piece(0, "call_c", "f", '{"a":1}'),
                call_done(0, "call_c", "f", '{"a":1}'),
            ],  # fmt: skip
        ),
        pc(
            "arguments that are not JSON: InvalidToolCall",
            bad
            + [done(3, "stop", ["x"], {"tool_calls": [call_part(0, "call_c", "f", ["{nope}"])]})],
            [piece(0, "call_c", "f", ""), piece(0, "call_c", "f", "{nope}")],
            error={"type": "InvalidToolCall", "index": 0, "name": "f", "arguments": "{nope}"},
        ),
        pc(
            "read from inside a call: no id, no name, no tool_call_done",
            log(
                [{"type": "tool_call", "index": 0, "args": "1}"}, {"type": "token", "text": "ok"}],
                5,
            )
            + [done(7, "stop", ["ok"], cut_parts)],
            [piece(0, None, None, "1}"), text("ok")],
            whole=False,
        ),
        pc(
            "check: an argument digest differs",
            tampered({"tool_calls": [{**calls[0], "sha256": sha("{}")}, calls[1]]}),
            full_out,
            mismatch=["parts.tool_calls[0].sha256", sha("{}"), calls[0]["sha256"]],
        ),
        pc(
            "check: a tool name differs",
            tampered({"tool_calls": [calls[0], {**calls[1], "name": "other"}]}),
            full_out,
            mismatch=["parts.tool_calls[1].name", "other", "second"],
        ),
        pc(
            "check: the reasoning count differs",
            tampered({"reasoning": reasoning_parts([*why, "more"])}),
            full_out,
            mismatch=["parts.reasoning.tokens", 3, 2],
        ),
        pc(
            "check: a call the done event does not know",
            tampered({"tool_calls": calls[:1]}),
            full_out,
            mismatch=["parts.tool_calls[1].index", None, 1],
        ),
        pc(
            "check: done without parts after reasoning",
            log([{"type": "reasoning", "text": "r"}]) + [done(1, "stop", [])],
            [thought("r")],
            mismatch=["parts.reasoning.tokens", None, 1],
        ),
    ]


def render(cases: list[Case]) -> str:
    """A JSON array with one case per line: ASCII only, stable, diff-friendly."""
    lines = [json.dumps(c, ensure_ascii=True, separators=(", ", ": ")) for c in cases]
    return "[\n" + ",\n".join(lines) + "\n]\n"


def outputs() -> dict[Path, str]:
    for cases in (sse_cases(), ndjson_cases(), parts_cases()):
        names = [c["name"] for c in cases]
        assert len(names) == len(set(names)), "case names must be unique"
    return {
        HERE / "sse.json": render(sse_cases()),
        HERE / "ndjson.json": render(ndjson_cases()),
        HERE / "parts.json": render(parts_cases()),
    }


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for path, text in outputs().items():
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"out of date: {', '.join(stale)}; run tests/vectors/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
