"""The Python client's typed parts against a real server whose source emits them (the
scripted source of ``tests/test_typed_parts.py``): ``Stream.parts()`` on every transport,
resume through cuts inside a call's argument pieces, the digest check of ``done.parts``,
the old event API beside it, and the typed-part options' request bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bench.cutproxy import CutProxy
from clients import (
    Client,
    DigestMismatch,
    InvalidToolCall,
    Part,
    Reasoning,
    SyncClient,
    Text,
    ToolCall,
    ToolCallDone,
)
from clients.check import IncompleteStream, StreamCheck
from server.sources.base import GenerationRequest, Tool
from server.sources.base import Reasoning as SourceReasoning
from server.sources.synthetic import synthetic_arguments, synthetic_items
from tests.conftest import MakeServer, base_url
from tests.parts_server import LONG_ARGS, Scripts
from tests.test_typed_parts import ARGS, expected
from wire import TRANSPORTS

transports = pytest.mark.parametrize("transport", TRANSPORTS)


async def parts_server(make_server: MakeServer) -> TestServer:
    return await make_server(sources={"parts": Scripts()})


def script_parts(sid: str) -> list[Part]:
    """The parts ``SCRIPT``'s stream reads as."""
    whole = "".join(ARGS)
    return [
        Reasoning("The user wants"),
        Reasoning(" the weather ✓."),
        ToolCall(0, "call_a", "get_weather", ""),
        *(ToolCall(0, "call_a", "get_weather", a) for a in ARGS if a),
        ToolCallDone(0, "call_a", "get_weather", whole, json.loads(whole)),
        ToolCall(1, f"call_{sid}_1", "second", '{"x"'),
        ToolCall(1, f"call_{sid}_1", "second", ":1}"),
        ToolCallDone(1, f"call_{sid}_1", "second", '{"x":1}', {"x": 1}),
        Text("It is "),
        Text("sunny."),
    ]


@transports
async def test_parts_on_every_transport(make_server: MakeServer, transport: Any) -> None:
    srv = await parts_server(make_server)
    async with Client(base_url(srv)) as c:
        stream = c.stream("parts", transport=transport, source="parts", max_tokens=100)
        parts = [p async for p in stream.parts()]
        with pytest.raises(TypeError, match="iterated only once"):
            stream.__aiter__()
    assert stream.id is not None
    assert parts == script_parts(stream.id)
    assert (stream.text, stream.reasoning) == ("It is sunny.", "The user wants the weather ✓.")
    assert stream.tool_calls == [
        ToolCall(0, "call_a", "get_weather", "".join(ARGS)),
        ToolCall(1, f"call_{stream.id}_1", "second", '{"x":1}'),
    ]
    assert stream.digest_ok is True
    assert stream.done is not None
    assert stream.done["finish_reason"] == "tool_calls"
    assert stream.stats.tokens == len(expected(stream.id)) - 1  # every content event


@transports
async def test_the_event_api_reads_typed_streams_as_before(
    make_server: MakeServer, transport: Any
) -> None:
    """Code that reads events and ``text`` keeps working: the typed events come through
    as they are, ``text`` is the answer only."""
    srv = await parts_server(make_server)
    async with Client(base_url(srv)) as c:
        stream = c.stream("parts", transport=transport, source="parts", max_tokens=100)
        events = await stream.collect()
    assert stream.id is not None
    assert [{k: v for k, v in e.items() if k != "t"} for e in events] == expected(stream.id)
    assert (stream.text, stream.digest_ok) == ("It is sunny.", True)


@transports
@pytest.mark.parametrize("cut", [700, 1300])
async def test_resume_through_cuts_inside_a_call_keeps_the_parts_exact(
    make_server: MakeServer, transport: Any, cut: int
) -> None:
    srv = await parts_server(make_server)
    # mid_char: each cut moves on to the next UTF-8 continuation byte, so it lands inside a
    # response (inside an argument piece's é or 😀), never between two poll answers.
    async with CutProxy(srv.port or 0, [cut, cut, cut], mid_char=True) as proxy:
        async with Client(proxy.url, backoff_s=0.01) as c:
            stream = c.stream("long", transport=transport, source="parts", max_tokens=100)
            parts = [p async for p in stream.parts()]
    whole = "".join(LONG_ARGS)
    assert parts == [
        Reasoning("think "),
        Reasoning("\u2713"),
        ToolCall(0, "call_long", "search", ""),
        *(ToolCall(0, "call_long", "search", a) for a in LONG_ARGS),
        ToolCallDone(0, "call_long", "search", whole, json.loads(whole)),
        Text("done."),
    ]
    assert proxy.cut_count >= 1
    assert stream.stats.reconnects >= 1
    assert stream.digest_ok is True


async def test_a_subscriber_from_inside_a_call(make_server: MakeServer) -> None:
    """A read from a position inside a call gets its tail without id or name, and no
    ``ToolCallDone`` (its arguments are not whole); the digest is not checked."""
    srv = await parts_server(make_server)
    async with Client(base_url(srv)) as c:
        sid = await c.create("parts", source="parts", max_tokens=100)
        await c.subscribe(sid).collect()  # the whole stream is appended
        stream = c.subscribe(sid, after=3, transport="chunked")
        parts = [p async for p in stream.parts()]
    tail = [a for a in ARGS if a][1:]
    assert parts == [
        *(ToolCall(0, None, None, a) for a in tail),
        *script_parts(sid)[len(ARGS) + 3 :],
    ]
    assert stream.digest_ok is None


async def test_sync_client_parts(make_server: MakeServer) -> None:
    url = base_url(await parts_server(make_server))

    def run() -> tuple[list[Part], str | None, str, bool | None]:
        with SyncClient(url) as c:
            stream = c.stream("parts", transport="ws", source="parts", max_tokens=100)
            return list(stream.parts()), stream.id, stream.reasoning, stream.digest_ok

    parts, sid, reasoning, ok = await asyncio.to_thread(run)
    assert sid is not None
    assert parts == script_parts(sid)
    assert (reasoning, ok) == ("The user wants the weather ✓.", True)


# --- a stand-in server: what the client sends, and what it does with a bad stream ---


def standin(events: list[bytes], seen: list[Any]) -> web.Application:
    """``POST /api/streams``, ``POST /api/chunked`` and ``/api/ws``: record what came, answer
    with ``events`` (NDJSON lines / WebSocket messages) after ``created``."""

    async def create(request: web.Request) -> web.Response:
        seen.append(await request.read())
        return web.json_response({"id": "s1"}, status=201)

    async def chunked(request: web.Request) -> web.StreamResponse:
        seen.append(await request.read())
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        await resp.write(b'{"type":"created","stream":"s1"}\n')
        for line in events:
            await resp.write(line + b"\n")
        return resp

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        seen.append((await sock.receive()).data)
        await sock.send_str('{"type":"created","stream":"s1"}')
        for line in events:
            await sock.send_str(line.decode())
        await sock.close()
        return sock

    app = web.Application()
    app.router.add_post("/api/streams", create)
    app.router.add_post("/api/chunked", chunked)
    app.router.add_get("/api/ws", ws)
    return app


DONE = (
    b'{"stream":"s1","seq":0,"type":"done","finish_reason":"stop","tokens":0,'
    b'"sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","t":1}'
)
TOOLS = [{"name": "get_weather", "parameters": {"type": "object", "required": ["city"]}}]
OPTIONS = {"reasoning_effort": "high", "tools": TOOLS, "tool_choice": "get_weather"}


async def test_the_typed_part_options_go_top_level_in_the_create_body() -> None:
    seen: list[Any] = []
    srv = TestServer(standin([DONE], seen), host="127.0.0.1", port=0)
    await srv.start_server()
    try:
        async with Client(base_url(srv)) as c:
            assert await c.create("p", 5, **OPTIONS) == "s1"  # type: ignore[arg-type]
            await c.stream("p", transport="chunked", **OPTIONS).collect()  # type: ignore[arg-type]
            await c.stream("p", transport="ws", source="parts", **OPTIONS).collect()  # type: ignore[arg-type]
            await c.stream("p", transport="chunked").collect()
    finally:
        await srv.close()
    body = (
        b'{"prompt":"p","reasoning_effort":"high","tools":[{"name":"get_weather",'
        b'"parameters":{"type":"object","required":["city"]}}],"tool_choice":"get_weather"}'
    )
    assert seen == [
        body.replace(b'"p",', b'"p","max_tokens":5,'),
        body,
        '{"op":"generate",' + body.decode()[1:].replace('"p",', '"p","source":"parts",'),
        b'{"prompt":"p"}',  # no options: no fields
    ]


def tool_stream(args: str, done_parts: dict[str, Any], reason: str = "tool_calls") -> list[bytes]:
    return [
        orjson.dumps(
            {
                "stream": "s1",
                "seq": 0,
                "type": "tool_call",
                "index": 0,
                "id": "c",
                "name": "f",
                "args": args,
                "t": 1,
            }  # fmt: skip
        ),
        orjson.dumps(
            {
                "stream": "s1",
                "seq": 1,
                "type": "done",
                "finish_reason": reason,
                "tokens": 0,
                "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "parts": done_parts,
                "t": 2,
            }  # fmt: skip
        ),
    ]


def call_parts(args: str, name: str = "f") -> dict[str, Any]:
    digest = hashlib.sha256(args.encode()).hexdigest()
    return {"tool_calls": [{"index": 0, "id": "c", "name": name, "sha256": digest}]}


@pytest.mark.parametrize("transport", ["chunked", "ws"])
async def test_arguments_that_are_not_json_are_a_clear_error(transport: Any) -> None:
    seen: list[Any] = []
    srv = TestServer(standin(tool_stream("{nope", call_parts("{nope")), seen), port=0)
    await srv.start_server()
    try:
        async with Client(base_url(srv)) as c:
            stream = c.stream("p", transport=transport)
            got: list[Part] = []

            async def read() -> None:
                async for part in stream.parts():
                    got.append(part)

            with pytest.raises(InvalidToolCall) as info:
                await read()
            events = await c.stream("p", transport=transport).collect()  # events: no error
    finally:
        await srv.close()
    assert got == [ToolCall(0, "c", "f", "{nope")]
    assert (info.value.index, info.value.name, info.value.arguments) == (0, "f", "{nope")
    assert str(info.value).startswith("tool call 0 (f): arguments are not JSON: ")
    assert [e["type"] for e in events] == ["tool_call", "done"]


@pytest.mark.parametrize("transport", ["chunked", "ws"])
async def test_a_wrong_tool_call_digest_is_a_digest_mismatch(transport: Any) -> None:
    seen: list[Any] = []
    srv = TestServer(standin(tool_stream("{}", call_parts("{}", name="g")), seen), port=0)
    await srv.start_server()
    try:
        async with Client(base_url(srv)) as c:
            stream = c.stream("p", transport=transport)
            with pytest.raises(DigestMismatch) as info:
                await stream.collect()
    finally:
        await srv.close()
    assert (info.value.field, info.value.expected, info.value.actual) == (
        "parts.tool_calls[0].name",
        "g",
        "f",
    )
    assert str(info.value) == 'done.parts.tool_calls[0].name mismatch: server "g", received "f"'
    assert stream.digest_ok is False


def test_stream_check_takes_typed_parts() -> None:
    """The bench's strict check: typed events in the seq rule, ``done.parts`` checked."""
    good = [orjson.loads(line) for line in tool_stream("{}", call_parts("{}"))]
    check = StreamCheck(lambda *_: None, sent_ns=0, stream_id="s1")
    assert [check.event(ev, 1) for ev in good] == [False, True]
    assert check.tokens == 1
    bad = [orjson.loads(line) for line in tool_stream("{}", call_parts("[]"))]
    check = StreamCheck(lambda *_: None, sent_ns=0, stream_id="s1")
    check.event(bad[0], 1)
    with pytest.raises(IncompleteStream, match=r"done\.parts\.tool_calls\[0\]\.sha256 mismatch"):
        check.event(bad[1], 1)


@transports
async def test_the_synthetic_sources_parts_through_the_client(
    make_server: MakeServer, transport: Any
) -> None:
    """End to end with the real synthetic source: reasoning asked for and a forced call,
    read as parts on every transport, equal to what the source's pure function predicts."""
    srv = await make_server()
    async with Client(base_url(srv)) as c:
        stream = c.stream(
            "what is the weather?",
            transport=transport,
            max_tokens=200,
            params={"seed": 7, "tokens_per_s": 0, "ttft_ms": 0},
            **OPTIONS,  # type: ignore[arg-type]
        )
        parts = [p async for p in stream.parts()]
    assert stream.id is not None
    schema = TOOLS[0]["parameters"]
    request = GenerationRequest(
        prompt="what is the weather?",
        max_tokens=200,
        reasoning_effort="high",
        tools=(Tool(name="get_weather", parameters=schema),),
        tool_choice="get_weather",
    )
    items, reason = synthetic_items(request, 7)
    assert reason == "tool_calls"
    reasoning = [i.text for i in items if isinstance(i, SourceReasoning)]
    args = synthetic_arguments(schema, "what is the weather?", 7)
    call_id = f"call_{stream.id}_0"
    assert parts[: len(reasoning)] == [Reasoning(t) for t in reasoning]
    assert len(reasoning) == 128  # high
    calls = parts[len(reasoning) :]
    assert calls[0] == ToolCall(0, call_id, "get_weather", "")
    assert "".join(p.arguments for p in calls[1:-1]) == args  # type: ignore[union-attr]
    assert calls[-1] == ToolCallDone(0, call_id, "get_weather", args, json.loads(args))
    assert (stream.text, stream.digest_ok) == ("", True)
    assert stream.done is not None
    assert stream.done["finish_reason"] == "tool_calls"
