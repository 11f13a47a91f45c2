"""Typed parts (reasoning and tool calls) through the three dialects, read by the official
SDKs against a live server whose source emits them (``ScriptedParts``), and compared with
the native stream of the same id: exact reasoning text, exact argument JSON, exact text."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from aiohttp.test_utils import TestServer
from openai.types.shared import Reasoning

from tests.conftest import MakeServer, base_url
from tests.readers import read
from tests.test_typed_parts import SCRIPT, ScriptedParts

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
#: The two functions SCRIPT calls, as each dialect lists them (strict: the SDK helpers
#: parse only strict tools' arguments).
CHAT_TOOLS: list[Any] = [
    {"type": "function", "function": {"name": n, "parameters": WEATHER, "strict": True}}
    for n in ("get_weather", "second")
]
RESPONSES_TOOLS: list[Any] = [
    {"type": "function", "name": n, "parameters": WEATHER, "strict": True}
    for n in ("get_weather", "second")
]
ANTHROPIC_TOOLS: list[Any] = [
    {"name": n, "input_schema": WEATHER} for n in ("get_weather", "second")
]
HELLO: list[Any] = [{"role": "user", "content": "weather?"}]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


async def parts_server(make_server: MakeServer) -> TestServer:
    return await make_server(sources={"parts": ScriptedParts(SCRIPT)})


class Native:
    """What the native stream of an id carries: reasoning, each call, text."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.reasoning = "".join(e["text"] for e in events if e["type"] == "reasoning")
        self.text = "".join(e["text"] for e in events if e["type"] == "token")
        self.calls: dict[int, dict[str, str]] = {}
        for e in events:
            if e["type"] == "tool_call":
                call = self.calls.setdefault(e["index"], {"args": ""})
                call.update({k: e[k] for k in ("id", "name") if k in e})
                call["args"] += e["args"]
        self.done = events[-1]

    def args(self) -> list[str]:
        return [c["args"] for _, c in sorted(self.calls.items())]


async def native(srv: TestServer, stream_id: str) -> Native:
    async with aiohttp.ClientSession() as session:
        return Native(await read(session, base_url(srv), "sse", stream_id))


def openai_client(srv: TestServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url(srv)}/v1", api_key="x", max_retries=0)


def anthropic_client(srv: TestServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base_url(srv), api_key="x", max_retries=0)


def async_openai_client(srv: TestServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{base_url(srv)}/v1", api_key="x", max_retries=0)


def async_anthropic_client(srv: TestServer) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=base_url(srv), api_key="x", max_retries=0)


# -- Chat Completions ------------------------------------------------------------------------


def chat_stream_sync(srv: TestServer) -> tuple[str, dict[str, Any]]:
    with openai_client(srv) as client:
        stream = client.chat.completions.create(
            model="parts",
            messages=HELLO,
            stream=True,
            tools=CHAT_TOOLS,
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            reasoning_effort="low",
            stream_options={"include_usage": True},
        )
        got: dict[str, Any] = {"reasoning": "", "text": "", "calls": {}, "finish": []}
        for chunk in stream:
            if not chunk.choices:
                got["usage"] = chunk.usage
                continue
            choice = chunk.choices[0]
            delta = choice.delta
            got["reasoning"] += (delta.model_extra or {}).get("reasoning_content") or ""
            got["text"] += delta.content or ""
            for call in delta.tool_calls or []:
                now = got["calls"].setdefault(call.index, {"args": ""})
                if call.id is not None:
                    assert call.function is not None
                    now.update(id=call.id, name=call.function.name, type=call.type)
                assert call.function is not None
                now["args"] += call.function.arguments or ""
            if choice.finish_reason is not None:
                got["finish"].append(choice.finish_reason)
        return stream.response.headers["Tokenwire-Stream"], got


async def test_chat_completions_stream_with_tools_and_reasoning(make_server: MakeServer) -> None:
    srv = await parts_server(make_server)
    sid, got = await asyncio.to_thread(chat_stream_sync, srv)
    want = await native(srv, sid)
    assert got["reasoning"] == want.reasoning == "The user wants the weather ✓."
    assert got["text"] == want.text == "It is sunny."
    assert got["calls"] == {
        i: {"id": c["id"], "name": c["name"], "type": "function", "args": c["args"]}
        for i, c in want.calls.items()
    }
    assert json.loads(got["calls"][0]["args"]) == {"city": "Paris ✓ 😀", 'quote"': [1, 2]}
    assert got["finish"] == ["tool_calls"]
    assert got["usage"].completion_tokens == want.done["seq"]


async def test_chat_stream_helper_accumulates_the_native_arguments(
    make_server: MakeServer,
) -> None:
    srv = await parts_server(make_server)
    async with async_openai_client(srv) as client:
        async with client.chat.completions.stream(
            model="parts", messages=HELLO, tools=CHAT_TOOLS, reasoning_effort="high"
        ) as stream:
            final = await stream.get_final_completion()
        sid = final.id.removeprefix("chatcmpl-")
    want = await native(srv, sid)
    message = final.choices[0].message
    assert final.choices[0].finish_reason == "tool_calls"
    assert message.content == want.text
    assert message.tool_calls is not None
    assert [c.function.arguments for c in message.tool_calls] == want.args()  # type: ignore[union-attr]
    assert [c.function.parsed_arguments for c in message.tool_calls] == [  # type: ignore[union-attr]
        json.loads(a) for a in want.args()
    ]
    assert [c.id for c in message.tool_calls] == ["call_a", f"call_{sid}_1"]


async def test_chat_completion_whole(make_server: MakeServer) -> None:
    srv = await parts_server(make_server)
    async with async_openai_client(srv) as client:
        done = await client.chat.completions.create(
            model="parts", messages=HELLO, tools=CHAT_TOOLS, reasoning_effort="medium"
        )
    sid = done.id.removeprefix("chatcmpl-")
    want = await native(srv, sid)
    message = done.choices[0].message
    assert (done.choices[0].finish_reason, message.content) == ("tool_calls", want.text)
    assert (message.model_extra or {})["reasoning_content"] == want.reasoning
    assert message.tool_calls is not None
    assert [
        (c.id, c.function.name, c.function.arguments)  # type: ignore[union-attr]
        for c in message.tool_calls
    ] == [(c["id"], c["name"], c["args"]) for _, c in sorted(want.calls.items())]
    assert done.usage is not None
    assert done.usage.completion_tokens == want.done["seq"]


# -- Responses -------------------------------------------------------------------------------


def responses_stream_sync(srv: TestServer) -> tuple[list[Any], Any]:
    with (
        openai_client(srv) as client,
        client.responses.stream(
            model="parts",
            input="weather?",
            tools=RESPONSES_TOOLS,
            reasoning={"effort": "low"},
        ) as stream,
    ):
        events = list(stream)
        return events, stream.get_final_response()


async def test_responses_stream_helper_ends_with_the_completed_output(
    make_server: MakeServer,
) -> None:
    srv = await parts_server(make_server)
    events, final = await asyncio.to_thread(responses_stream_sync, srv)
    sid = final.id.removeprefix("resp_")
    want = await native(srv, sid)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    completed = events[-1]
    assert completed.type == "response.completed"
    assert [i.model_dump() for i in final.output] == [
        i.model_dump() for i in completed.response.output
    ]
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",  # reasoning
        "response.reasoning_text.delta",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.output_item.done",
        "response.output_item.added",  # call 0
        *["response.function_call_arguments.delta"] * 4,
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added",  # call 1
        *["response.function_call_arguments.delta"] * 2,
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added",  # message
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    reasoning, call0, call1, message = final.output
    assert reasoning.type == "reasoning"
    assert reasoning.content is not None
    assert reasoning.content[0].text == want.reasoning
    assert (call0.type, call1.type) == ("function_call", "function_call")
    assert [call0.arguments, call1.arguments] == want.args()  # type: ignore[union-attr]
    assert [call0.call_id, call0.name] == ["call_a", "get_weather"]  # type: ignore[union-attr]
    assert call0.parsed_arguments == json.loads(want.args()[0])  # type: ignore[union-attr]
    assert final.output_text == want.text
    assert final.usage is not None
    assert (final.usage.output_tokens, final.usage.output_tokens_details.reasoning_tokens) == (
        want.done["seq"],
        2,
    )


async def test_responses_resume_with_parts(make_server: MakeServer) -> None:
    srv = await parts_server(make_server)
    async with async_openai_client(srv) as client:
        created = await client.responses.create(
            model="parts",
            input="x",
            tools=RESPONSES_TOOLS,
            reasoning={"effort": "low"},
            background=True,
        )
        whole = [e async for e in await client.responses.retrieve(created.id, stream=True)]
        assert [e.sequence_number for e in whole] == list(range(len(whole)))
        for after in (0, 3, 8, 15, len(whole) - 3, len(whole) - 1):
            tail = [
                e
                async for e in await client.responses.retrieve(
                    created.id, stream=True, starting_after=after
                )
            ]
            assert [e.model_dump() for e in tail] == [e.model_dump() for e in whole[after + 1 :]]
        got = await client.responses.retrieve(created.id)
    assert got.status == "completed"
    # what the request said, kept in the record's note: tools, choice, effort
    assert [(t.type, t.name) for t in got.tools] == [  # type: ignore[union-attr]
        ("function", "get_weather"),
        ("function", "second"),
    ]
    assert (got.tool_choice, got.reasoning) == ("auto", Reasoning(effort="low", summary=None))
    assert [i.type for i in got.output] == [
        "reasoning",
        "function_call",
        "function_call",
        "message",
    ]
    assert [i.model_dump() for i in got.output] == [
        i.model_dump() for i in whole[-1].response.output
    ]


# -- Anthropic Messages ----------------------------------------------------------------------


def anthropic_stream_sync(srv: TestServer) -> tuple[str, list[Any], Any]:
    with (
        anthropic_client(srv) as client,
        client.messages.stream(
            model="parts",
            max_tokens=2048,
            messages=HELLO,
            thinking={"type": "enabled", "budget_tokens": 1024},
            tools=ANTHROPIC_TOOLS,
            tool_choice={"type": "tool", "name": "get_weather"},
        ) as stream,
    ):
        events = list(stream)
        final = stream.get_final_message()
        return final.id.removeprefix("msg_"), events, final


async def test_anthropic_stream_with_thinking_and_a_forced_tool(make_server: MakeServer) -> None:
    srv = await parts_server(make_server)
    sid, events, final = await asyncio.to_thread(anthropic_stream_sync, srv)
    want = await native(srv, sid)
    assert final.stop_reason == "tool_use"
    assert final.usage.output_tokens == want.done["seq"]
    thinking, call0, call1, text = final.content
    assert thinking.type == "thinking"
    assert thinking.thinking == want.reasoning
    assert thinking.signature == hashlib.sha256(want.reasoning.encode()).hexdigest()
    assert (call0.type, call0.id, call0.name) == ("tool_use", "call_a", "get_weather")
    assert [call0.input, call1.input] == [json.loads(a) for a in want.args()]
    assert text.type == "text"
    assert text.text == want.text
    # the raw partial JSON pieces join to the native arguments byte for byte
    pieces: dict[int, str] = {}
    for e in events:
        if e.type == "content_block_delta" and e.delta.type == "input_json_delta":
            pieces[e.index] = pieces.get(e.index, "") + e.delta.partial_json
    assert list(pieces.values()) == want.args()


async def test_anthropic_async_stream_and_whole_message(make_server: MakeServer) -> None:
    srv = await parts_server(make_server)
    async with async_anthropic_client(srv) as client:
        async with client.messages.stream(
            model="parts", max_tokens=50, messages=HELLO, tools=ANTHROPIC_TOOLS
        ) as stream:
            streamed = await stream.get_final_message()
        whole = await client.messages.create(
            model="parts", max_tokens=50, messages=HELLO, tools=ANTHROPIC_TOOLS
        )
    # without thinking enabled no thinking block is sent
    assert [b.type for b in streamed.content] == ["tool_use", "tool_use", "text"]
    # the same blocks, but for the id the hub made for the second call (per stream)
    assert [b.model_dump(exclude={"id"}) for b in whole.content] == [
        b.model_dump(exclude={"id"}) for b in streamed.content
    ]
    assert whole.content[1].id == f"call_{whole.id.removeprefix('msg_')}_1"  # type: ignore[union-attr]
    assert (whole.stop_reason, streamed.stop_reason) == ("tool_use", "tool_use")


async def test_responses_create_stream_async_carries_the_native_parts(
    make_server: MakeServer,
) -> None:
    srv = await parts_server(make_server)
    async with async_openai_client(srv) as client:
        stream = await client.responses.create(
            model="parts",
            input="x",
            tools=RESPONSES_TOOLS,
            reasoning={"effort": "low"},
            stream=True,
        )
        events = [e async for e in stream]
    sid = events[0].response.id.removeprefix("resp_")
    want = await native(srv, sid)

    def joined(kind: str) -> str:
        return "".join(getattr(e, "delta", "") for e in events if e.type == kind)

    assert joined("response.reasoning_text.delta") == want.reasoning
    assert joined("response.output_text.delta") == want.text
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert [e.arguments for e in done] == want.args()


async def test_anthropic_create_stream_sync_raw_events(make_server: MakeServer) -> None:
    srv = await parts_server(make_server)

    def run() -> list[Any]:
        with anthropic_client(srv) as client:
            return list(
                client.messages.create(
                    model="parts",
                    max_tokens=2048,
                    messages=HELLO,
                    thinking={"type": "enabled", "budget_tokens": 1024},
                    tools=ANTHROPIC_TOOLS,
                    stream=True,
                )
            )

    events = await asyncio.to_thread(run)
    sid = events[0].message.id.removeprefix("msg_")
    want = await native(srv, sid)
    deltas = [e.delta for e in events if e.type == "content_block_delta"]
    assert "".join(d.thinking for d in deltas if d.type == "thinking_delta") == want.reasoning
    assert "".join(d.text for d in deltas if d.type == "text_delta") == want.text
    assert [e.content_block.type for e in events if e.type == "content_block_start"] == [
        "thinking",
        "tool_use",
        "tool_use",
        "text",
    ]
    assert events[-2].delta.stop_reason == "tool_use"


# -- The synthetic source ----------------------------------------------------------------------

#: A schema with every kind of value the synthetic source builds (docs/protocol.md).
FORECAST = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "days": {"type": "integer"},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "hourly": {"type": "boolean"},
        "where": {"type": "object", "properties": {"lat": {"type": "number"}}},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["city", "days", "unit", "hourly", "where", "tags"],
}


def synthetic_calls_sync(srv: TestServer) -> list[tuple[str, str, Any]]:
    """Each SDK forces ``forecast`` on the synthetic source with reasoning: ``(stream id,
    the reasoning it read, the parsed arguments it read)`` per SDK."""
    out: list[tuple[str, str, Any]] = []
    with openai_client(srv) as client:
        with client.chat.completions.stream(
            model="synthetic",
            messages=HELLO,
            tools=[
                {
                    "type": "function",
                    "function": {"name": "forecast", "parameters": FORECAST, "strict": True},
                }
            ],
            tool_choice={"type": "function", "function": {"name": "forecast"}},
            reasoning_effort="low",
        ) as stream:
            final = stream.get_final_completion()
        message = final.choices[0].message
        assert message.tool_calls is not None
        reasoning = (message.model_extra or {}).get("reasoning_content") or ""
        out.append(
            (
                final.id.removeprefix("chatcmpl-"),
                reasoning,
                message.tool_calls[0].function.parsed_arguments,  # type: ignore[union-attr]
            )
        )
        with client.responses.stream(
            model="synthetic",
            input="weather?",
            tools=[
                {"type": "function", "name": "forecast", "parameters": FORECAST, "strict": True}
            ],
            tool_choice={"type": "function", "name": "forecast"},
            reasoning={"effort": "low"},
        ) as rstream:
            response = rstream.get_final_response()
        (reasoning_item, call) = response.output
        assert (reasoning_item.type, call.type) == ("reasoning", "function_call")
        out.append(
            (
                response.id.removeprefix("resp_"),
                "".join(c.text for c in reasoning_item.content or []),  # type: ignore[union-attr]
                json.loads(call.arguments),  # type: ignore[union-attr]
            )
        )
    with (
        anthropic_client(srv) as claude,
        claude.messages.stream(
            model="synthetic",
            max_tokens=2048,
            messages=HELLO,
            thinking={"type": "enabled", "budget_tokens": 1024},
            tools=[{"name": "forecast", "input_schema": FORECAST}],  # type: ignore[list-item,typeddict-item]
            tool_choice={"type": "tool", "name": "forecast"},
        ) as astream,
    ):
        message_a = astream.get_final_message()
    thinking, use = message_a.content
    assert (thinking.type, use.type, message_a.stop_reason) == ("thinking", "tool_use", "tool_use")
    out.append((message_a.id.removeprefix("msg_"), thinking.thinking, use.input))  # type: ignore[union-attr]
    return out


async def test_every_sdk_reads_the_synthetic_sources_forced_call_and_reasoning(
    make_server: MakeServer,
) -> None:
    """The synthetic source's call of a forced tool (arguments from its schema) and its
    reasoning, read by the three SDKs: each equals the native stream of its id, and the
    arguments hold every required key with its schema's type."""
    srv = await make_server()
    calls = await asyncio.to_thread(synthetic_calls_sync, srv)
    for sid, reasoning, arguments in calls:
        want = await native(srv, sid)
        assert want.done["finish_reason"] == "tool_calls"
        assert want.text == ""  # no answer text after a forced call
        assert reasoning == want.reasoning != ""
        assert want.done["parts"]["reasoning"]["tokens"] == 8  # low
        (args,) = want.args()
        assert arguments == json.loads(args)
        assert list(arguments) == FORECAST["required"]
        assert isinstance(arguments["city"], str)
        assert isinstance(arguments["days"], int)
        assert arguments["unit"] == "celsius"
        assert isinstance(arguments["hourly"], bool)
        assert isinstance(arguments["where"]["lat"], float)
        assert len(arguments["tags"]) == 1
        assert isinstance(arguments["tags"][0], str)
