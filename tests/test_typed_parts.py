"""Typed parts (reasoning and tool calls) in the log: the events the generation appends for
a source's ``Reasoning`` and ``ToolCallDelta`` pieces, ``done.parts``, and the same events
over every transport, on both stores, from any position (docs/protocol.md, "Typed parts")."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp.test_utils import TestServer

from server.events import Event, PartEncoder, done_event
from server.sources.base import (
    Finish,
    GenerationRequest,
    Reasoning,
    SourceItem,
    TokenSource,
    ToolCallDelta,
)
from server.store.memory import MemoryStore
from tests.conftest import MakeServer, base_url, create
from tests.readers import TRANSPORTS, read


@pytest.fixture
def server_store(store_url: str) -> str:
    """Every test here runs on both stores."""
    return store_url


ARGS = ['{"city":"Pa', 'ris ✓ 😀","q', 'uote\\"":', "", "[1,2]}"]


class ScriptedParts(TokenSource):
    """Yields ``script`` as it is (then nothing): a test predicts every event."""

    name = "parts"
    typed_parts = True

    def __init__(self, script: Sequence[SourceItem]) -> None:
        self.script = script

    async def stream(self, request: GenerationRequest) -> AsyncIterator[SourceItem]:
        for item in self.script:
            yield item


SCRIPT: tuple[SourceItem, ...] = (
    Reasoning("The user wants"),
    Reasoning(""),  # skipped: no empty event
    Reasoning(" the weather ✓."),
    ToolCallDelta(0, "", id="call_a", name="get_weather"),
    *(ToolCallDelta(0, piece) for piece in ARGS),
    ToolCallDelta(1, '{"x"', name="second"),  # no id: the hub makes one; args on the first
    ToolCallDelta(1, ":1}", id="ignored", name="ignored"),
    "It is ",
    "",
    "sunny.",
)


def sha(*pieces: str) -> str:
    return hashlib.sha256("".join(pieces).encode()).hexdigest()


def expected(sid: str) -> list[dict[str, Any]]:
    """Every event of ``SCRIPT``'s stream, without ``t``."""
    out: list[dict[str, Any]] = [
        {"type": "reasoning", "text": "The user wants"},
        {"type": "reasoning", "text": " the weather ✓."},
        {"type": "tool_call", "index": 0, "id": "call_a", "name": "get_weather", "args": ""},
        *({"type": "tool_call", "index": 0, "args": p} for p in ARGS if p),
        {"type": "tool_call", "index": 1, "id": f"call_{sid}_1", "name": "second", "args": '{"x"'},
        {"type": "tool_call", "index": 1, "args": ":1}"},
        {"type": "token", "text": "It is "},
        {"type": "token", "text": "sunny."},
    ]
    for seq, event in enumerate(out):
        event.update(stream=sid, seq=seq)
    out.append(
        {
            "stream": sid,
            "seq": len(out),
            "type": "done",
            "finish_reason": "tool_calls",  # inferred: the source made calls, no Finish
            "tokens": 2,
            "sha256": sha("It is ", "sunny."),
            "parts": {
                "reasoning": {"tokens": 2, "sha256": sha("The user wants", " the weather ✓.")},
                "tool_calls": [
                    {"index": 0, "id": "call_a", "name": "get_weather", "sha256": sha(*ARGS)},
                    {"index": 1, "id": f"call_{sid}_1", "name": "second", "sha256": sha('{"x":1}')},
                ],
            },
        }
    )
    return out


def without_t(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for e in events:
        assert isinstance(e.pop("t"), int)
    return events


async def parts_server(make_server: MakeServer, script: Sequence[SourceItem]) -> TestServer:
    return await make_server(sources={"parts": ScriptedParts(script)})


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_every_transport_carries_the_typed_parts_exactly(
    make_server: MakeServer, session: aiohttp.ClientSession, transport: str
) -> None:
    srv = await parts_server(make_server, SCRIPT)
    sid = await create(session, srv, source="parts", max_tokens=100)
    want = expected(sid)
    assert without_t(await read(session, base_url(srv), transport, sid)) == want
    for after in (1, 3, 9, len(want) - 2):  # a resume from inside each kind of part
        got = without_t(await read(session, base_url(srv), transport, sid, after=after))
        assert got == want[after + 1 :]


async def test_status_counts_every_content_event(
    make_server: MakeServer, session: aiohttp.ClientSession
) -> None:
    srv = await parts_server(make_server, SCRIPT)
    sid = await create(session, srv, source="parts", max_tokens=100)
    await read(session, base_url(srv), "sse", sid)
    async with session.get(f"{base_url(srv)}/api/streams/{sid}") as resp:
        status = await resp.json()
    assert (status["state"], status["tokens"], status["finish_reason"]) == (
        "done",
        len(expected(sid)) - 1,
        "tool_calls",
    )


@pytest.mark.parametrize(
    ("script", "max_tokens", "reason", "types"),
    [
        # max_tokens counts every content event, as OpenAI's counts reasoning tokens
        ((Reasoning("a"), Reasoning("b"), "c"), 2, "length", ["reasoning", "reasoning"]),
        # an explicit Finish wins over the inferred tool_calls
        ((ToolCallDelta(0, "{}", name="f"), Finish("stop")), 10, "stop", ["tool_call"]),
        # text only: no parts in done
        (("a", "b"), 10, "stop", ["token", "token"]),
        # an empty later piece of a call is skipped
        ((ToolCallDelta(0, name="f"), ToolCallDelta(0, "")), 10, "tool_calls", ["tool_call"]),
    ],
    ids=["length-counts-reasoning", "finish-wins", "text-only", "empty-args-skipped"],
)
async def test_ending_rules(
    make_server: MakeServer,
    session: aiohttp.ClientSession,
    script: tuple[SourceItem, ...],
    max_tokens: int,
    reason: str,
    types: list[str],
) -> None:
    srv = await parts_server(make_server, script)
    sid = await create(session, srv, source="parts", max_tokens=max_tokens)
    events = await read(session, base_url(srv), "chunked", sid)
    assert [e["type"] for e in events[:-1]] == types
    done = events[-1]
    assert (done["type"], done["finish_reason"], done["seq"]) == ("done", reason, len(types))
    assert ("parts" in done) == (types != ["token", "token"])


@pytest.mark.parametrize("index", [-1, True, "0"], ids=["negative", "bool", "str"])
async def test_a_bad_tool_call_index_is_a_source_error(
    make_server: MakeServer, session: aiohttp.ClientSession, index: Any
) -> None:
    srv = await parts_server(make_server, ("a", ToolCallDelta(index, "{}", name="f")))
    sid = await create(session, srv, source="parts", max_tokens=10)
    events = without_t(await read(session, base_url(srv), "sse", sid))
    assert events[1] == {
        "stream": sid,
        "seq": 1,
        "type": "error",
        "code": "source_error",
        "message": f"tool call index {index!r} is not valid",
    }


@pytest.mark.parametrize("call_id", [None, "call_x"])
@pytest.mark.parametrize("args", ["", '{"a":"\\"✓\\u2028😀"}', ',"t":1}'])
def test_the_part_encoder_gives_msgspec_bytes(call_id: str | None, args: str) -> None:
    encode = PartEncoder('s"1')
    event = encode.tool_call(7, 2, args, call_id, "n" if call_id else None)
    fields = msgspec.json.decode(event.data)
    opening = {} if call_id is None else {"id": call_id, "name": "n"}
    assert event.data == msgspec.json.encode(
        {"stream": 's"1', "seq": 7, "type": "tool_call", "index": 2, **opening, "args": args}
        | {"t": fields["t"]}
    )
    assert (event.seq, event.type, event.terminal) == (7, "tool_call", False)
    reasoning = encode.reasoning(8, args or "r")
    assert msgspec.json.decode(reasoning.data) == {
        "stream": 's"1',
        "seq": 8,
        "type": "reasoning",
        "text": args or "r",
        "t": msgspec.json.decode(reasoning.data)["t"],
    }


async def test_a_closed_log_with_typed_parts_keeps_each_event_type() -> None:
    """The memory store's compaction of a closed log keeps lines whole and their types."""
    store = MemoryStore(100)
    await store.open("s")
    encode = PartEncoder("s")
    events: list[Event] = [
        encode.reasoning(0, "r"),
        encode.tool_call(1, 0, "", "call_0", "f"),
        encode.tool_call(2, 0, "{}"),
        encode(3, "text"),
    ]

    events.append(done_event("s", 4, "tool_calls", 1, sha("text")))
    for e in events:
        await store.append("s", e)
    compact = store._logs["s"].compact
    assert compact is not None
    assert compact.kinds == ("reasoning", "tool_call", "tool_call", "token")
    for after in range(-1, 4):
        assert await store.read("s", after, limit=10, wait=None) == events[after + 1 :]
