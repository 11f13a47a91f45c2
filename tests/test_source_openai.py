"""The ``openai`` token source, with the real SDK over HTTP against a local stand-in."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import openai
import pytest

from server.errors import InvalidField, SourceError
from server.sources.base import (
    ChatMessage,
    Finish,
    FinishReason,
    GenerationRequest,
    Reasoning,
    Tool,
    ToolCallDelta,
)
from server.sources.openai import (
    CLOSED_EARLY_MESSAGE,
    PLACEHOLDER_API_KEY,
    OpenAISource,
    map_finish_reason,
)
from tests.openai_standin import (
    DEFAULT_INBAND_ERROR,
    Behavior,
    OpenAIStandIn,
    default_error,
    tool_call_deltas,
)

#: Upper bound of every wait in this module (never reached when things work).
WAIT = 5.0

_OPENAI_ENV = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_ADMIN_KEY",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
    "OPENAI_CUSTOM_HEADERS",
)


@pytest.fixture(autouse=True)
def _clean_openai_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the machine's OpenAI variables out of these tests."""
    for name in _OPENAI_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def standin() -> AsyncIterator[OpenAIStandIn]:
    async with OpenAIStandIn() as server:
        yield server


@pytest.fixture
async def source(standin: OpenAIStandIn) -> AsyncIterator[OpenAISource]:
    src = OpenAISource(model="gpt-test", base_url=standin.url, api_key="sk-test")
    await src.start()
    yield src
    await src.aclose()


def make_request(
    prompt: str = "Say hi", max_tokens: int = 16, params: Mapping[str, Any] | None = None
) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, max_tokens=max_tokens, params=dict(params or {}))


async def collect(
    source: OpenAISource, request: GenerationRequest | None = None, into: list[Any] | None = None
) -> list[str | Finish]:
    """Every item of one stream (also appended to ``into`` as they come, for error tests)."""
    items: list[str | Finish] = [] if into is None else into
    gen = source.stream(request or make_request())
    try:
        async with asyncio.timeout(WAIT):
            async for item in gen:
                items.append(item)
    finally:
        await gen.aclose()
    return items


def free_port() -> int:
    """A loopback port nobody listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- streaming -------------------------------------------------------------------------------


async def test_streams_pieces_then_finish(standin: OpenAIStandIn, source: OpenAISource) -> None:
    standin.behavior = Behavior(pieces=["Hello", "", ",", None, " world", "", "!"])

    items = await collect(source)

    assert items == ["Hello", ",", " world", "!", Finish("stop")]
    assert "".join(i for i in items if isinstance(i, str)) == "Hello, world!"
    record = standin.requests[-1]
    assert record.pieces_written == 7
    assert record.done_sent
    assert not record.disconnected


async def test_multibyte_pieces_arrive_intact(standin: OpenAIStandIn, source: OpenAISource) -> None:
    standin.behavior = Behavior(pieces=["héllo", " 안녕", " 世界", " 🙂", "👨‍👩‍👧"])

    assert await collect(source) == ["héllo", " 안녕", " 世界", " 🙂", "👨‍👩‍👧", Finish("stop")]


async def test_usage_chunk_without_choices_is_skipped(
    standin: OpenAIStandIn, source: OpenAISource
) -> None:
    standin.behavior = Behavior(pieces=["a", "b"], finish_reason="length", usage=True)

    assert await collect(source) == ["a", "b", Finish("length")]
    record = standin.requests[-1]
    assert record.chunks_written == 5  # role, a, b, finish, usage
    assert record.done_sent


async def test_finish_without_done_still_finishes(
    standin: OpenAIStandIn, source: OpenAISource
) -> None:
    # The SDK ends quietly when the body ends without [DONE]; the finish_reason was seen.
    standin.behavior = Behavior(pieces=["x"], send_done=False)

    assert await collect(source) == ["x", Finish("stop")]


@pytest.mark.parametrize(
    ("upstream_reason", "expected"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("content_filter", "stop"),
        ("tool_calls", "tool_calls"),
        ("function_call", "stop"),
        ("eos_token", "stop"),
    ],
)
async def test_finish_reason_mapping(
    standin: OpenAIStandIn, source: OpenAISource, upstream_reason: str, expected: FinishReason
) -> None:
    standin.behavior = Behavior(pieces=["one", " two"], finish_reason=upstream_reason)

    assert await collect(source) == ["one", " two", Finish(expected)]
    assert map_finish_reason(upstream_reason) == expected


async def test_request_body_defaults(standin: OpenAIStandIn, source: OpenAISource) -> None:
    await collect(source, make_request(prompt="Tell me a story", max_tokens=7))

    record = standin.requests[-1]
    assert record.method == "POST"
    assert record.path == "/v1/chat/completions"
    assert record.authorization == "Bearer sk-test"
    assert record.body == {
        "model": "gpt-test",
        "messages": [{"role": "user", "content": "Tell me a story"}],
        "stream": True,
        "max_tokens": 7,
    }


async def test_request_body_with_params(standin: OpenAIStandIn, source: OpenAISource) -> None:
    params = source.validate_params({"temperature": 1, "top_p": 0.5, "seed": 42, "model": "gpt-x"})

    await collect(source, make_request(prompt="Hi", max_tokens=3, params=params))

    assert standin.requests[-1].body == {
        "model": "gpt-x",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "max_tokens": 3,
        "temperature": 1.0,
        "top_p": 0.5,
        "seed": 42,
    }


async def test_chat_messages_are_sent_as_they_are(
    standin: OpenAIStandIn, source: OpenAISource
) -> None:
    # A request that came through tokenwire's /v1 keeps its conversation upstream.
    messages = (ChatMessage("system", "Be brief."), ChatMessage("user", "Hi"))
    request = GenerationRequest(
        prompt="system: Be brief.\nuser: Hi\nassistant:", max_tokens=5, messages=messages
    )

    await collect(source, request)

    assert standin.requests[-1].body == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ],
        "stream": True,
        "max_tokens": 5,
    }
    assert source.served_model() == "gpt-test"


WEATHER = Tool(
    name="get_weather",
    description="today's weather",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)


async def test_typed_parts_are_sent_upstream(standin: OpenAIStandIn, source: OpenAISource) -> None:
    request = GenerationRequest(
        prompt="Hi",
        max_tokens=9,
        reasoning_effort="high",
        tools=(WEATHER, Tool(name="noop")),
        tool_choice="get_weather",
    )

    await collect(source, request)

    assert standin.requests[-1].body == {
        "model": "gpt-test",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "max_tokens": 9,
        "reasoning_effort": "high",
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "today's weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            },
            {"type": "function", "function": {"name": "noop"}},
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    }


#: A scripted upstream answer with every kind of piece: reasoning under both names, text,
#: two tool calls (the second interleaved with the first), and deltas that carry nothing.
TYPED_PIECES: tuple[str | Mapping[str, Any] | None, ...] = (
    {"reasoning_content": "The user "},
    {"reasoning_content": ""},  # nothing
    {"reasoning": "wants ✓ 😀"},  # OpenRouter's and newer vLLM's name
    {"reasoning_content": "both", "reasoning": "both"},  # one piece, not two
    "Let me check.",
    *tool_call_deltas(0, "call_abc", "get_weather", ['{"ci', 'ty":"Pa', "", 'ris"}']),
    {"tool_calls": [{"index": 1, "id": "call_def", "function": {"name": "noop"}}]},
    {"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]},
    None,
)


async def test_reasoning_and_tool_calls_pass_through(
    standin: OpenAIStandIn, source: OpenAISource
) -> None:
    standin.behavior = Behavior(pieces=TYPED_PIECES, finish_reason="tool_calls")

    assert await collect(source) == [
        Reasoning("The user "),
        Reasoning("wants ✓ 😀"),
        Reasoning("both"),
        "Let me check.",
        ToolCallDelta(0, "", id="call_abc", name="get_weather"),
        ToolCallDelta(0, '{"ci'),
        ToolCallDelta(0, 'ty":"Pa'),
        ToolCallDelta(0, ""),  # an empty piece: the generation appends nothing for it
        ToolCallDelta(0, 'ris"}'),
        ToolCallDelta(1, "", id="call_def", name="noop"),
        ToolCallDelta(1, "{}"),
        Finish("tool_calls"),
    ]


async def test_max_completion_tokens_field(standin: OpenAIStandIn) -> None:
    src = OpenAISource(
        model="o-test",
        base_url=standin.url,
        api_key="sk-test",
        max_tokens_field="max_completion_tokens",
    )
    await src.start()
    try:
        await collect(src, make_request(prompt="Hi", max_tokens=9))
    finally:
        await src.aclose()

    assert standin.requests[-1].body == {
        "model": "o-test",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "max_completion_tokens": 9,
    }


async def test_concurrent_streams_share_one_client(
    standin: OpenAIStandIn, source: OpenAISource
) -> None:
    standin.behavior = Behavior(pieces=["a", "b", "c"], delay=0.001)

    results = await asyncio.gather(*(collect(source, make_request(f"p{i}")) for i in range(5)))

    assert results == [["a", "b", "c", Finish("stop")]] * 5
    prompts = sorted(r.body["messages"][0]["content"] for r in standin.requests)
    assert prompts == ["p0", "p1", "p2", "p3", "p4"]


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (
            401,
            "upstream answered HTTP 401 (invalid_api_key): Incorrect API key provided: "
            "sk-wrong. You can find your API key at https://platform.openai.com/account/api-keys.",
        ),
        (
            429,
            "upstream answered HTTP 429 (rate_limit_exceeded): Rate limit reached for gpt-test "
            "in organization org-test on requests per min (RPM): Limit 3, Used 3, Requested 1. "
            "Please try again in 20s.",
        ),
        (
            500,
            "upstream answered HTTP 500: The server had an error while processing your "
            "request. Sorry about that!",
        ),
        (
            503,
            "upstream answered HTTP 503: The engine is currently overloaded, please try "
            "again later.",
        ),
    ],
    ids=["401", "429", "500", "503"],
)
async def test_http_error_becomes_upstream_error(
    standin: OpenAIStandIn, source: OpenAISource, status: int, expected: str
) -> None:
    standin.behavior = Behavior(status=status, error_headers={"retry-after": "20"})

    with pytest.raises(SourceError) as info:
        await collect(source)

    assert info.value.code == "upstream_error"
    assert info.value.message == expected
    assert isinstance(info.value.__cause__, openai.APIStatusError)
    assert info.value.__cause__.status_code == status
    assert len(standin.requests) == 1  # max_retries=0: no retry, even for 429/5xx


async def test_non_json_error_body_is_quoted(standin: OpenAIStandIn, source: OpenAISource) -> None:
    standin.behavior = Behavior(status=502, error_text="<html>502 Bad Gateway</html>")

    with pytest.raises(SourceError) as info:
        await collect(source)

    assert info.value.code == "upstream_error"
    assert info.value.message == "upstream answered HTTP 502: <html>502 Bad Gateway</html>"


async def test_stand_in_401_on_wrong_key(standin: OpenAIStandIn) -> None:
    standin.api_key = "sk-right"
    src = OpenAISource(model="gpt-test", base_url=standin.url, api_key="sk-wrong")
    await src.start()
    try:
        with pytest.raises(SourceError) as info:
            await collect(src)
    finally:
        await src.aclose()

    assert info.value.code == "upstream_error"
    assert info.value.message.startswith("upstream answered HTTP 401 (invalid_api_key): ")


async def test_inband_error_after_some_pieces(standin: OpenAIStandIn, source: OpenAISource) -> None:
    standin.behavior = Behavior(pieces=["Hello", " world", "!"], error_after=2)
    got: list[Any] = []

    with pytest.raises(SourceError) as info:
        await collect(source, into=got)

    assert got == ["Hello", " world"]
    assert info.value.code == "upstream_error"
    assert info.value.message == f"upstream error event: {DEFAULT_INBAND_ERROR['message']}"
    assert standin.requests[-1].chunks_written == 4  # role, 2 pieces, error


async def test_inband_error_with_custom_message(
    standin: OpenAIStandIn, source: OpenAISource
) -> None:
    error = {"message": "model overloaded", "type": "server_error", "param": None, "code": "busy"}
    standin.behavior = Behavior(pieces=["a"], error_after=0, error=error)
    got: list[Any] = []

    with pytest.raises(SourceError) as info:
        await collect(source, into=got)

    assert got == []
    assert (info.value.code, info.value.message) == (
        "upstream_error",
        "upstream error event: model overloaded",
    )


@pytest.mark.parametrize(
    "behavior",
    [
        Behavior(pieces=["Hello", " world", "!"], close_after=2),
        Behavior(pieces=["Hello", " world", "!"], abort_after=2),
        Behavior(pieces=["Hello", " world"], finish_reason=None),
        Behavior(pieces=["Hello", " world"], finish_reason=None, send_done=False),
    ],
    ids=["clean-close", "connection-drop", "done-without-finish", "eof-without-finish"],
)
async def test_stream_ending_before_finish_reason(
    standin: OpenAIStandIn, source: OpenAISource, behavior: Behavior
) -> None:
    standin.behavior = behavior
    got: list[Any] = []

    with pytest.raises(SourceError) as info:
        await collect(source, into=got)

    assert got == ["Hello", " world"]
    assert (info.value.code, info.value.message) == ("upstream_error", CLOSED_EARLY_MESSAGE)
    assert CLOSED_EARLY_MESSAGE == "upstream closed the stream before finish_reason"


async def test_connection_refused_is_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    src = OpenAISource(model="gpt-test", base_url=url, api_key="sk-test")
    await src.start()
    try:
        with pytest.raises(SourceError) as info:
            await collect(src)
    finally:
        await src.aclose()

    assert info.value.code == "upstream_unavailable"
    cause = info.value.__cause__
    assert isinstance(cause, openai.APIConnectionError)
    assert not isinstance(cause, openai.APITimeoutError)
    transport_error = cause.__cause__
    assert transport_error is not None
    assert info.value.message == f"cannot reach {url}: {transport_error}"


async def test_no_answer_within_timeout(standin: OpenAIStandIn) -> None:
    standin.behavior = Behavior(stall_before_headers=True)
    src = OpenAISource(model="gpt-test", base_url=standin.url, api_key="sk-test", timeout=0.2)
    await src.start()
    try:
        with pytest.raises(SourceError) as info:
            await collect(src)
    finally:
        await src.aclose()

    assert (info.value.code, info.value.message) == (
        "upstream_timeout",
        "upstream did not answer within 0.2 s",
    )
    record = standin.requests[-1]
    async with asyncio.timeout(WAIT):
        await record.ended.wait()
    assert record.disconnected
    assert record.chunks_written == 0


async def test_stall_mid_stream_times_out(standin: OpenAIStandIn) -> None:
    standin.behavior = Behavior(pieces=["Hello", " world"], hold_after=1)
    src = OpenAISource(model="gpt-test", base_url=standin.url, api_key="sk-test", timeout=0.2)
    await src.start()
    got: list[Any] = []
    try:
        with pytest.raises(SourceError) as info:
            await collect(src, into=got)
    finally:
        await src.aclose()

    assert got == ["Hello"]
    assert (info.value.code, info.value.message) == (
        "upstream_timeout",
        "upstream sent nothing for 0.2 s mid-stream",
    )
    record = standin.requests[-1]
    async with asyncio.timeout(WAIT):
        await record.ended.wait()
    assert record.disconnected
    assert record.pieces_written == 1


# -- cancellation ----------------------------------------------------------------------------


async def test_cancel_mid_stream_closes_upstream(
    standin: OpenAIStandIn, source: OpenAISource
) -> None:
    standin.behavior = Behavior(pieces=[f"t{i}" for i in range(50)], hold_after=3)
    gen = source.stream(make_request())
    got: list[Any] = []
    three = asyncio.Event()

    async def consume() -> None:
        async for item in gen:
            got.append(item)
            if len(got) == 3:
                three.set()

    task = asyncio.create_task(consume())
    async with asyncio.timeout(WAIT):
        await three.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(WAIT):
            await task
    assert task.cancelled()  # CancelledError was not swallowed
    await gen.aclose()  # what the hub does next: a no-op by now

    record = standin.requests[-1]
    async with asyncio.timeout(WAIT):
        await record.disconnect_seen.wait()
        await record.ended.wait()
    assert got == ["t0", "t1", "t2"]
    assert record.disconnected
    assert record.pieces_written == 3
    assert record.chunks_written == record.chunks_at_disconnect == 4  # role + 3 pieces
    assert not record.done_sent


async def test_aclose_at_yield_closes_upstream(
    standin: OpenAIStandIn, source: OpenAISource
) -> None:
    total = 400
    standin.behavior = Behavior(pieces=["tok"] * total, delay=0.002)
    gen = source.stream(make_request())
    got: list[Any] = []

    async with asyncio.timeout(WAIT):
        async for item in gen:
            got.append(item)
            if len(got) == 5:
                break
        await gen.aclose()  # GeneratorExit at the yield: the finally closes the response

        record = standin.requests[-1]
        await record.disconnect_seen.wait()
        await record.ended.wait()

    assert got == ["tok"] * 5
    assert record.disconnected
    # It stopped producing: nothing was written after the disconnect, far fewer than total.
    assert record.chunks_written == record.chunks_at_disconnect
    assert 5 <= record.pieces_written < total
    assert not record.done_sent


async def test_cancel_while_waiting_for_headers(
    standin: OpenAIStandIn, source: OpenAISource
) -> None:
    standin.behavior = Behavior(stall_before_headers=True)
    gen = source.stream(make_request())
    task = asyncio.create_task(anext(gen))

    async with asyncio.timeout(WAIT):
        record = await standin.wait_request()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(WAIT):
            await task
    await gen.aclose()

    async with asyncio.timeout(WAIT):
        await record.disconnect_seen.wait()
        await record.ended.wait()
    assert record.disconnected
    assert record.chunks_written == 0


async def test_source_still_works_after_a_cancel(
    standin: OpenAIStandIn, source: OpenAISource
) -> None:
    standin.enqueue(Behavior(pieces=["x"] * 20, hold_after=1))
    gen = source.stream(make_request())
    async with asyncio.timeout(WAIT):
        assert await anext(gen) == "x"
    await gen.aclose()

    standin.behavior = Behavior(pieces=["ok"])
    assert await collect(source) == ["ok", Finish("stop")]


# -- params ----------------------------------------------------------------------------------


TEMPERATURE = "must be a number from 0 to 2"
TOP_P = "must be a number greater than 0, at most 1"
SEED = "must be an integer from -2^63 to 2^63-1"


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"temperature": "hot"}, "params.temperature", TEMPERATURE),
        ({"temperature": True}, "params.temperature", TEMPERATURE),
        ({"temperature": None}, "params.temperature", TEMPERATURE),
        ({"temperature": 2.01}, "params.temperature", TEMPERATURE),
        ({"temperature": -0.5}, "params.temperature", TEMPERATURE),
        ({"temperature": float("nan")}, "params.temperature", TEMPERATURE),
        ({"temperature": float("inf")}, "params.temperature", TEMPERATURE),
        ({"top_p": 0}, "params.top_p", TOP_P),
        ({"top_p": 1.5}, "params.top_p", TOP_P),
        ({"top_p": False}, "params.top_p", TOP_P),
        ({"top_p": "0.5"}, "params.top_p", TOP_P),
        ({"seed": 1.0}, "params.seed", SEED),
        ({"seed": True}, "params.seed", SEED),
        ({"seed": "7"}, "params.seed", SEED),
        ({"seed": 2**63}, "params.seed", SEED),
        ({"seed": -(2**63) - 1}, "params.seed", SEED),
        ({"model": ""}, "params.model", "must be a non-empty string"),
        ({"model": "   "}, "params.model", "must be a non-empty string"),
        ({"model": 4}, "params.model", "must be a non-empty string"),
        (
            {"frequency_penalty": 0.1},
            "params.frequency_penalty",
            "unknown parameter (allowed: model, seed, temperature, top_p)",
        ),
    ],
)
def test_validate_params_rejects(params: dict[str, Any], field: str, message: str) -> None:
    src = OpenAISource(model="gpt-test")

    with pytest.raises(InvalidField) as info:
        src.validate_params(params)

    assert info.value.field == field
    assert info.value.message == f"{field}: {message}"
    assert info.value.code == "invalid_field"
    assert info.value.status == 400


def test_validate_params_cleans() -> None:
    src = OpenAISource(model="gpt-test")

    assert src.validate_params({}) == {}
    cleaned = src.validate_params({"temperature": 0, "top_p": 1, "seed": -3, "model": "m"})
    assert cleaned == {"temperature": 0.0, "top_p": 1.0, "seed": -3, "model": "m"}
    assert type(cleaned["temperature"]) is float
    assert type(cleaned["top_p"]) is float
    assert src.validate_params({"temperature": 2}) == {"temperature": 2.0}


def test_validate_params_not_an_object() -> None:
    with pytest.raises(InvalidField) as info:
        OpenAISource(model="gpt-test").validate_params(["temperature"])  # type: ignore[arg-type]
    assert info.value.message == "params: must be an object"


# -- configuration ---------------------------------------------------------------------------


async def test_env_fallback_for_base_url_and_key(
    standin: OpenAIStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", standin.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    src = OpenAISource(model="gpt-test")
    await src.start()
    try:
        assert await collect(src) == ["Hello", ",", " world", "!", Finish("stop")]
    finally:
        await src.aclose()

    assert standin.requests[-1].authorization == "Bearer sk-from-env"


async def test_explicit_settings_beat_env(
    standin: OpenAIStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{free_port()}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    src = OpenAISource(model="gpt-test", base_url=standin.url, api_key="sk-explicit")
    await src.start()
    try:
        await collect(src)
    finally:
        await src.aclose()

    assert standin.requests[-1].authorization == "Bearer sk-explicit"


@pytest.mark.parametrize("from_env", [False, True], ids=["argument", "env"])
async def test_placeholder_key_when_only_base_url(
    standin: OpenAIStandIn, monkeypatch: pytest.MonkeyPatch, from_env: bool
) -> None:
    if from_env:
        monkeypatch.setenv("OPENAI_BASE_URL", standin.url)
        src = OpenAISource(model="gpt-test")
    else:
        src = OpenAISource(model="gpt-test", base_url=standin.url)
    await src.start()
    try:
        await collect(src)
    finally:
        await src.aclose()

    assert standin.requests[-1].authorization == f"Bearer {PLACEHOLDER_API_KEY}"


async def test_no_key_and_no_base_url_fails_at_start() -> None:
    src = OpenAISource(model="gpt-test")

    with pytest.raises(ValueError, match="needs an API key") as info:
        await src.start()

    assert str(info.value) == (
        "OpenAISource needs an API key: pass api_key or set OPENAI_API_KEY (a local "
        "OpenAI-compatible server needs none: set base_url or OPENAI_BASE_URL instead)"
    )
    with pytest.raises(RuntimeError, match="not started"):
        _ = src.client


async def test_key_without_base_url_targets_openai(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-cloud")
    src = OpenAISource(model="gpt-test", timeout=12.5)
    await src.start()
    try:
        client = src.client
        assert str(client.base_url) == "https://api.openai.com/v1/"
        assert client.api_key == "sk-cloud"
        assert client.max_retries == 0
        assert client.timeout == 12.5
    finally:
        await src.aclose()


async def test_lifecycle_is_idempotent(standin: OpenAIStandIn) -> None:
    src = OpenAISource(model="gpt-test", base_url=standin.url, api_key="sk-test")
    with pytest.raises(RuntimeError, match="not started"):
        await anext(src.stream(make_request()))

    await src.start()
    client = src.client
    await src.start()
    assert src.client is client
    await src.aclose()
    await src.aclose()
    with pytest.raises(RuntimeError, match="not started"):
        _ = src.client


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": ""}, "model must be a non-empty string"),
        ({"model": "m", "timeout": 0}, "timeout must be a positive number of seconds"),
        ({"model": "m", "timeout": float("inf")}, "timeout must be a positive number"),
        ({"model": "m", "max_tokens_field": "tokens"}, "max_tokens_field must be"),
    ],
)
def test_constructor_rejects(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OpenAISource(**kwargs)


def test_source_name() -> None:
    assert OpenAISource.name == "openai"


# -- the stand-in itself (its wire format is what the other tests rely on) ------------------


async def test_standin_wire_format(standin: OpenAIStandIn) -> None:
    standin.behavior = Behavior(pieces=["Hi", ""], finish_reason="length")
    body = {
        "model": "gpt-test",
        "messages": [{"role": "user", "content": "x"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with (
        asyncio.timeout(WAIT),
        aiohttp.ClientSession() as session,
        session.post(f"{standin.url}/chat/completions", json=body) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        raw = await resp.text()

    events = raw.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(e.startswith("data: {") and "\n" not in e for e in events[:-2])
    assert [c["object"] for c in chunks] == ["chat.completion.chunk"] * 5
    assert [c["choices"][0]["delta"] for c in chunks[:4]] == [
        {"role": "assistant", "content": "", "refusal": None},
        {"content": "Hi"},
        {"content": ""},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:4]] == [None, None, None, "length"]
    assert [c["usage"] for c in chunks[:4]] == [None] * 4
    assert chunks[4]["choices"] == []
    assert chunks[4]["usage"]["completion_tokens"] == 1
    assert len({c["id"] for c in chunks}) == 1


async def test_standin_with_sdk_directly(standin: OpenAIStandIn) -> None:
    standin.behavior = Behavior(pieces=["a", "b"])
    async with openai.AsyncOpenAI(base_url=standin.url, api_key="sk-test", max_retries=0) as client:
        async with asyncio.timeout(WAIT):
            models = await client.models.list()
            assert [m.id for m in models.data] == ["gpt-test"]

            stream = await client.chat.completions.create(
                model="gpt-test",
                messages=[{"role": "user", "content": "x"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [chunk async for chunk in stream]

            completion = await client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "x"}]
            )

    assert [c.choices[0].delta.content if c.choices else None for c in chunks] == [
        "",
        "a",
        "b",
        None,
        None,
    ]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 9
    assert completion.choices[0].message.content == "ab"
    assert standin.requests[-1].status == 200


async def test_standin_error_shape(standin: OpenAIStandIn) -> None:
    standin.behavior = Behavior(status=429)
    async with (
        asyncio.timeout(WAIT),
        aiohttp.ClientSession() as session,
        session.post(f"{standin.url}/chat/completions", json={"messages": []}) as resp,
    ):
        assert resp.status == 429
        assert await resp.json() == {"error": default_error(429)}
    assert set(default_error(429)) == {"message", "type", "param", "code"}
