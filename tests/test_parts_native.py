"""Typed parts on the native API: a create body (and a WebSocket ``generate``) with
``reasoning_effort``, ``tools`` and ``tool_choice``, the synthetic and openai sources' exact
events over every transport, ``done.parts`` against the streamed bytes, and the exact 400s
(docs/protocol.md, "Creating a stream" and "Typed parts")."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jsonschema_rs
import orjson
import pytest
from aiohttp.test_utils import TestServer

from clients.decoders import NDJSONDecoder, SSEDecoder
from server.sources.base import GenerationRequest, Reasoning, SourceItem, Tool, ToolCallDelta
from server.sources.synthetic import synthetic_items
from tests.conftest import MakeServer, base_url, create
from tests.openai_standin import Behavior, OpenAIStandIn, tool_call_deltas
from tests.readers import TRANSPORTS, read
from tests.test_synthetic import WEATHER as WEATHER_TOOL

QUICK = {"tokens_per_s": 0, "ttft_ms": 0, "seed": 7}
#: test_synthetic's tool, as the create body lists it.
WEATHER: dict[str, Any] = {
    "name": WEATHER_TOOL.name,
    "description": "today's weather",
    "parameters": dict(WEATHER_TOOL.parameters),
}
#: Reasoning, then a forced call (the synthetic source's answer to it: no text).
CALL_BODY: dict[str, Any] = {
    "prompt": "weather?",
    "max_tokens": 40,
    "params": QUICK,
    "reasoning_effort": "low",
    "tools": [{"name": "noop"}, WEATHER],
    "tool_choice": "get_weather",
}
REASONING = ["Chunk", "ed", " HTTP", " s", "ends", " one", " line", " of"]
ARGS = ['{"city"', ':"each"', ',"days', '":7,"', "metr", "i", 'c":fal', 'se,"', "uni", 't":"c"}']


def sha(*pieces: str) -> str:
    return hashlib.sha256("".join(pieces).encode()).hexdigest()


def expected_call(sid: str) -> list[dict[str, Any]]:
    """Every event of ``CALL_BODY``'s stream, without ``t``."""
    call_id = f"call_{sid}_0"
    out: list[dict[str, Any]] = [
        *({"type": "reasoning", "text": r} for r in REASONING),
        {"type": "tool_call", "index": 0, "id": call_id, "name": "get_weather", "args": ""},
        *({"type": "tool_call", "index": 0, "args": a} for a in ARGS),
    ]
    for seq, event in enumerate(out):
        event.update(stream=sid, seq=seq)
    done = {
        "stream": sid,
        "seq": len(out),
        "type": "done",
        "finish_reason": "tool_calls",
        "tokens": 0,
        "sha256": sha(),
        "parts": {
            "reasoning": {"tokens": 8, "sha256": sha(*REASONING)},
            "tool_calls": [
                {"index": 0, "id": call_id, "name": "get_weather", "sha256": sha(*ARGS)}
            ],
        },
    }
    return [*out, done]


def without_t(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for e in events:
        assert isinstance(e.pop("t"), int)
    return events


def check_digests(events: list[dict[str, Any]]) -> None:
    """``done`` and ``done.parts`` are the digests of what was streamed."""
    done = events[-1]
    kinds: dict[str, list[str]] = {"token": [], "reasoning": []}
    calls: dict[int, list[str]] = {}
    for e in events[:-1]:
        if e["type"] == "tool_call":
            calls.setdefault(e["index"], []).append(e["args"])
        else:
            kinds[e["type"]].append(e["text"])
    assert done["sha256"] == sha(*kinds["token"])
    assert done["tokens"] == len(kinds["token"])
    assert done["parts"]["reasoning"] == {
        "tokens": len(kinds["reasoning"]),
        "sha256": sha(*kinds["reasoning"]),
    }
    assert [c["sha256"] for c in done["parts"].get("tool_calls", [])] == [
        sha(*calls[i]) for i in sorted(calls)
    ]


def test_the_expected_events_are_the_synthetic_items() -> None:
    """What the tests below expect is what the source's pure function says."""
    tools = tuple(Tool(**t) for t in CALL_BODY["tools"])
    request = GenerationRequest(
        prompt="weather?",
        max_tokens=40,
        reasoning_effort="low",
        tools=tools,
        tool_choice="get_weather",
    )
    items: list[SourceItem] = [
        *map(Reasoning, REASONING),
        ToolCallDelta(0, "", name="get_weather"),
        *(ToolCallDelta(0, a) for a in ARGS),
    ]
    assert synthetic_items(request, 7) == (items, "tool_calls")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_reasoning_and_a_forced_call_over_every_transport(
    server: TestServer, session: aiohttp.ClientSession, transport: str
) -> None:
    sid = await create(session, server, **CALL_BODY)
    events = await read(session, base_url(server), transport, sid)
    check_digests(events)
    assert without_t(events) == expected_call(sid)


async def test_reasoning_then_the_answer(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    body = {"prompt": "weather?", "max_tokens": 10, "params": QUICK, "reasoning_effort": "low"}
    sid = await create(session, server, **body, tools=[WEATHER])  # offered, not forced
    events = await read(session, base_url(server), "sse", sid)
    check_digests(events)
    assert [(e["type"], e.get("text")) for e in events] == [
        *(("reasoning", r) for r in REASONING),
        ("token", "A"),
        ("token", " lang"),
        ("done", None),
    ]
    assert events[-1]["finish_reason"] == "length"
    assert events[-1]["parts"] == {"reasoning": {"tokens": 8, "sha256": sha(*REASONING)}}


async def test_create_and_stream_carry_the_parts(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    base = base_url(server)
    for path in ("/api/sse", "/api/chunked"):
        async with session.post(base + path, data=orjson.dumps(CALL_BODY)) as resp:
            assert resp.status == 200
            raw = await resp.read()
        if path == "/api/sse":
            messages = [orjson.loads(m.data) for m in SSEDecoder().feed(raw)]
        else:
            messages = list(NDJSONDecoder().feed(raw))
        created, *events = messages
        assert created == {"type": "created", "stream": created["stream"]}
        assert without_t(events) == expected_call(created["stream"])


async def test_ws_generate_takes_the_same_fields(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(f"{base_url(server)}/api/ws") as ws:
        await ws.send_str(orjson.dumps({"op": "generate", **CALL_BODY}).decode())
        created = orjson.loads(await ws.receive_str(timeout=10))
        sid = created["stream"]
        assert created == {"type": "created", "stream": sid}
        events = []
        async with asyncio.timeout(10):
            while not events or events[-1]["type"] != "done":
                events.append(orjson.loads(await ws.receive_str()))
        assert without_t(events) == expected_call(sid)
        # A bad one is an error message; the socket stays usable.
        await ws.send_str(
            orjson.dumps({"op": "generate", **CALL_BODY, "tool_choice": "nope"}).decode()
        )
        assert orjson.loads(await ws.receive_str(timeout=10)) == {
            "type": "error",
            "code": "invalid_field",
            "message": "tool_choice: no tool named 'nope' in tools",
            "op": "generate",
        }


def _nested(depth: int) -> dict[str, Any]:
    """A ``parameters`` object whose JSON nests ``depth`` levels (itself the first)."""
    deep: list[Any] = []
    for _ in range(depth - 2):
        deep = [deep]
    return {"type": "object", "examples": deep}


def _properties(steps: int) -> dict[str, Any]:
    """``parameters`` with an object property ``steps`` deep: 2 levels a step, 1 + 2 * steps
    in all."""
    schema: dict[str, Any] = {"type": "object"}
    for _ in range(steps):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


TOOL_RULE = "must be 1 to 64 characters of A-Z, a-z, 0-9, _ and -"
#: Bad typed-parts fields and the exact message of their ``400 invalid_field``.
BAD: list[tuple[dict[str, Any], str]] = [
    ({"reasoning_effort": "max"}, "reasoning_effort: must be one of: low, medium, high"),
    ({"reasoning_effort": 1}, "reasoning_effort: must be one of: low, medium, high"),
    ({"reasoning_effort": ["low"]}, "reasoning_effort: must be one of: low, medium, high"),
    ({"tools": {}}, "tools: must be an array of at most 128 tools"),
    (
        {"tools": [{"name": f"f{i}"} for i in range(129)]},
        "tools: must be an array of at most 128 tools",
    ),
    ({"tools": [1]}, "tools[0]: must be an object"),
    ({"tools": [{"name": "f"}, None]}, "tools[1]: must be an object"),
    (
        {"tools": [{"name": "f", "strict": True, "type": "function"}]},
        "tools[0].strict: unknown field (allowed: description, name, parameters)",
    ),
    ({"tools": [{}]}, f"tools[0].name: {TOOL_RULE}"),
    ({"tools": [{"name": ""}]}, f"tools[0].name: {TOOL_RULE}"),
    ({"tools": [{"name": "a b"}]}, f"tools[0].name: {TOOL_RULE}"),
    ({"tools": [{"name": "f\n"}]}, f"tools[0].name: {TOOL_RULE}"),
    ({"tools": [{"name": "é"}]}, f"tools[0].name: {TOOL_RULE}"),
    ({"tools": [{"name": "x" * 65}]}, f"tools[0].name: {TOOL_RULE}"),
    ({"tools": [{"name": "f"}, {"name": "f"}]}, "tools[1].name: duplicate tool name 'f'"),
    ({"tools": [{"name": "f", "description": 1}]}, "tools[0].description: must be a string"),
    (
        {"tools": [{"name": "f", "parameters": {"type": "string"}}]},
        'tools[0].parameters: must be a JSON Schema object (its type "object")',
    ),
    (
        {"tools": [{"name": "f", "parameters": []}]},
        'tools[0].parameters: must be a JSON Schema object (its type "object")',
    ),
    (
        {"tools": [{"name": "f", "parameters": _nested(33)}]},
        "tools[0].parameters: must nest at most 32 levels deep",
    ),
    (
        {
            "tools": [
                {
                    "name": "f",
                    "parameters": {
                        "enum": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]
                    },
                }
            ]
        },
        "tools[0].parameters: must nest at most 32 levels deep",
    ),
    ({"tool_choice": 1}, "tool_choice: must be a string, the name of a tool in tools"),
    (
        {"tool_choice": {"type": "function", "function": {"name": "f"}}},
        "tool_choice: must be a string, the name of a tool in tools",
    ),
    ({"tool_choice": "f"}, "tool_choice: no tool named 'f' in tools"),
    ({"tools": [{"name": "g"}], "tool_choice": "f"}, "tool_choice: no tool named 'f' in tools"),
]


@pytest.mark.parametrize(("fields", "message"), BAD, ids=[m for _, m in BAD])
async def test_bad_typed_parts_fields_are_400(
    server: TestServer, session: aiohttp.ClientSession, fields: dict[str, Any], message: str
) -> None:
    body = orjson.dumps({"prompt": "hi", **fields})
    async with session.post(f"{base_url(server)}/api/streams", data=body) as resp:
        assert resp.status == 400
        assert await resp.json() == {"error": {"code": "invalid_field", "message": message}}


async def test_what_is_accepted(server: TestServer, session: aiohttp.ClientSession) -> None:
    """``null`` is absent; the edges of each rule are inside it."""
    ok: list[dict[str, Any]] = [
        {"reasoning_effort": None, "tools": None, "tool_choice": None},
        {"tools": []},
        {"tools": [{"name": "x" * 64, "description": None, "parameters": None}]},
        {"tools": [{"name": "A-z_0", "parameters": {}}], "tool_choice": "A-z_0"},
        {"tools": [{"name": "f", "parameters": _nested(32)}], "tool_choice": "f"},
        {"tools": [{"name": "f", "parameters": _properties(15)}], "tool_choice": "f"},
        {"tools": [{"name": f"f{i}"} for i in range(128)], "tool_choice": "f127"},
        {
            "tools": [{"name": "f", "parameters": {"properties": 5, "required": "x"}}],
            "tool_choice": "f",
        },
    ]
    for fields in ok:
        sid = await create(session, server, prompt="hi", max_tokens=50, params=QUICK, **fields)
        events = await read(session, base_url(server), "poll", sid)
        assert events[-1]["type"] == "done", (fields, events[-1])


@pytest.fixture
async def standin() -> AsyncIterator[OpenAIStandIn]:
    async with OpenAIStandIn() as s:
        yield s


UPSTREAM_ARGS = ['{"ci', 'ty":"Pa', 'ris ✓"', "}"]


async def test_the_openai_source_passes_the_parts_through(
    make_server: MakeServer, session: aiohttp.ClientSession, standin: OpenAIStandIn
) -> None:
    standin.behavior = Behavior(
        pieces=[
            {"reasoning_content": "Look "},
            {"reasoning_content": "it up 😀"},
            "Checking.",
            *tool_call_deltas(0, "call_up", "get_weather", UPSTREAM_ARGS),
        ],
        finish_reason="tool_calls",
    )
    srv = await make_server(source="openai", base_url=standin.url, api_key="k", model="m1")
    sid = await create(session, srv, **{**CALL_BODY, "source": "openai", "params": {}})
    results = await asyncio.gather(*(read(session, base_url(srv), t, sid) for t in TRANSPORTS))
    for events in results:
        check_digests(events)
        assert without_t(events) == [
            {"stream": sid, "seq": 0, "type": "reasoning", "text": "Look "},
            {"stream": sid, "seq": 1, "type": "reasoning", "text": "it up 😀"},
            {"stream": sid, "seq": 2, "type": "token", "text": "Checking."},
            {
                "stream": sid,
                "seq": 3,
                "type": "tool_call",
                "index": 0,
                "id": "call_up",
                "name": "get_weather",
                "args": "",
            },
            *(
                {"stream": sid, "seq": 4 + i, "type": "tool_call", "index": 0, "args": a}
                for i, a in enumerate(UPSTREAM_ARGS)
            ),
            {
                "stream": sid,
                "seq": 8,
                "type": "done",
                "finish_reason": "tool_calls",
                "tokens": 1,
                "sha256": sha("Checking."),
                "parts": {
                    "reasoning": {"tokens": 2, "sha256": sha("Look ", "it up 😀")},
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_up",
                            "name": "get_weather",
                            "sha256": sha(*UPSTREAM_ARGS),
                        }
                    ],
                },
            },
        ]
    body = standin.requests[-1].body
    assert body["reasoning_effort"] == "low"
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["tools"] == [
        {"type": "function", "function": {"name": "noop"}},
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "today's weather",
                "parameters": WEATHER["parameters"],
            },
        },
    ]


@pytest.mark.parametrize("max_tokens", [19, 12])
async def test_a_call_that_reaches_max_tokens_ends_length(
    server: TestServer, session: aiohttp.ClientSession, max_tokens: int
) -> None:
    """19 = the 8 reasoning pieces, the opening and the 10 argument pieces: complete, but
    at the budget, as the hub counts it; 12: cut inside the arguments."""
    sid = await create(session, server, **{**CALL_BODY, "max_tokens": max_tokens})
    events = await read(session, base_url(server), "chunked", sid)
    check_digests(events)
    want = expected_call(sid)[:max_tokens]
    assert without_t(events[:-1]) == want
    done = events[-1]
    assert (done["seq"], done["finish_reason"], done["tokens"]) == (max_tokens, "length", 0)
    tools = tuple(Tool(**t) for t in CALL_BODY["tools"])
    request = GenerationRequest(
        prompt="weather?",
        max_tokens=max_tokens,
        reasoning_effort="low",
        tools=tools,
        tool_choice="get_weather",
    )
    assert synthetic_items(request, 7)[1] == "length"


async def test_the_openapi_document_declares_the_fields(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    async with session.get(f"{base_url(server)}/openapi.json") as resp:
        doc = await resp.json()
    components = doc["components"]

    def validator(name: str) -> jsonschema_rs.Validator:
        schema = {"$ref": f"#/components/schemas/{name}", "components": components}
        return jsonschema_rs.validator_for(schema)

    body = validator("CreateBody")
    body.validate(CALL_BODY)
    # Every refusal the schema can state, it states; the rest is the server's alone.
    server_only = ("duplicate tool name", "no tool named", "levels deep")
    for fields, message in BAD:
        refused = not body.is_valid({"prompt": "hi", **fields})
        assert refused != any(rule in message for rule in server_only), message
    sid = await create(session, server, **CALL_BODY)
    event = validator("Event")
    for e in await read(session, base_url(server), "sse", sid):
        event.validate(e)
