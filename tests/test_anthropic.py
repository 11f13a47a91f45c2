"""``/v1/messages``, Anthropic's Messages API: the official SDK (sync and async) on a live
server, compared with the native stream of the same id."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import anthropic
import pytest

from server.errors import SourceError
from server.messages_request import parse_messages_body
from server.settings import Settings
from server.sources.synthetic import SyntheticSource, count_pieces, synthetic_text
from tests.conftest import MakeServer, base_url
from tests.readers import native_text
from tests.scripted_sources import FailingSource

WAIT = 10.0
FAST = {"params": {"ttft_ms": 0.0, "tokens_per_s": 0.0}}
HELLO: list[Any] = [{"role": "user", "content": "hello"}]
TOKEN = "s3cret-token"


@pytest.fixture(autouse=True)
def _clean_anthropic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def expected(prompt: str, n: int) -> str:
    return "".join(synthetic_text(prompt, 0, n))


async def test_stream_async_and_sync(make_server: MakeServer) -> None:
    srv = await make_server()
    async with (
        anthropic.AsyncAnthropic(base_url=base_url(srv), api_key="x", max_retries=0) as client,
        asyncio.timeout(WAIT),
    ):
        raw = await client.messages.with_raw_response.create(
            model="synthetic", max_tokens=20, messages=HELLO, stream=True, extra_body=FAST
        )
        events = [e async for e in await raw.parse()]
    sid = raw.headers["Tokenwire-Stream"]

    def run() -> tuple[str, list[Any]]:
        with anthropic.Anthropic(base_url=base_url(srv), api_key="x", max_retries=0) as sync:
            sraw = sync.messages.with_raw_response.create(
                model="synthetic", max_tokens=20, messages=HELLO, stream=True, extra_body=FAST
            )
            return sraw.headers["Tokenwire-Stream"], list(sraw.parse())

    sync_sid, sync_events = await asyncio.to_thread(run)
    text = expected("hello", 20)
    for stream_id, got in ((sid, events), (sync_sid, sync_events)):
        assert [e.type for e in got] == [
            "message_start",
            "content_block_start",
            *["content_block_delta"] * 20,
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
        assert got[0].message.id == f"msg_{stream_id}"
        assert got[0].message.usage.input_tokens == count_pieces("hello")
        assert "".join(e.delta.text for e in got[2:22]) == text
        assert text == await native_text(base_url(srv), stream_id)
        assert got[-2].delta.stop_reason == "max_tokens"
        assert got[-2].usage.output_tokens == 20
    assert sid != sync_sid


async def test_the_stream_helper_and_a_whole_message(make_server: MakeServer) -> None:
    srv = await make_server()
    async with (
        anthropic.AsyncAnthropic(base_url=base_url(srv), api_key="x", max_retries=0) as client,
        asyncio.timeout(WAIT),
    ):
        async with client.messages.stream(
            model="synthetic", max_tokens=9, messages=HELLO, system="Be brief.", extra_body=FAST
        ) as stream:
            texts = [t async for t in stream.text_stream]
            final = await stream.get_final_message()
        whole = await client.messages.create(
            model="synthetic", max_tokens=9, messages=HELLO, extra_body=FAST
        )
    text = expected("system: Be brief.\n\nuser: hello\n\nassistant:", 9)
    assert "".join(texts) == text
    assert final.content[0].type == "text"
    assert final.content[0].text == text
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 9
    assert whole.content[0].type == "text"
    assert whole.content[0].text == expected("hello", 9)
    assert whole.model_dump(exclude_none=True) == {
        "id": whole.id,
        "content": [{"text": expected("hello", 9), "type": "text"}],
        "model": "synthetic",
        "role": "assistant",
        "stop_reason": "max_tokens",
        "type": "message",
        "usage": {"input_tokens": 1, "output_tokens": 9},
    }
    assert await native_text(base_url(srv), whole.id.removeprefix("msg_")) == whole.content[0].text


async def test_sync_stream_helper(make_server: MakeServer) -> None:
    srv = await make_server()

    def run() -> str:
        with (
            anthropic.Anthropic(base_url=base_url(srv), api_key="x", max_retries=0) as client,
            client.messages.stream(
                model="synthetic", max_tokens=6, messages=HELLO, extra_body=FAST
            ) as stream,
        ):
            block = stream.get_final_message().content[0]
            assert block.type == "text"
            return block.text

    assert await asyncio.to_thread(run) == expected("hello", 6)


async def test_the_token_as_x_api_key_or_bearer(make_server: MakeServer) -> None:
    srv = await make_server(auth_token=TOKEN)
    body = {"model": "synthetic", "max_tokens": 2, "messages": HELLO, **FAST}
    async with aiohttp.ClientSession() as session:
        for headers in ({"x-api-key": TOKEN}, {"Authorization": f"Bearer {TOKEN}"}):
            async with session.post(
                f"{base_url(srv)}/v1/messages", json=body, headers=headers
            ) as r:
                assert r.status == 200
        async with session.post(
            f"{base_url(srv)}/v1/messages", json=body, headers={"x-api-key": "wrong"}
        ) as r:
            assert r.status == 401
            assert await r.json() == {
                "type": "error",
                "error": {
                    "type": "authentication_error",
                    "message": "the bearer token is not valid",
                },
            }
    async with anthropic.AsyncAnthropic(
        base_url=base_url(srv), api_key=TOKEN, max_retries=0
    ) as client:
        msg = await client.messages.create(
            model="synthetic", max_tokens=2, messages=HELLO, extra_body=FAST
        )
    assert msg.usage.output_tokens == 2
    async with anthropic.AsyncAnthropic(
        base_url=base_url(srv), api_key="wrong", max_retries=0
    ) as client:
        with pytest.raises(anthropic.AuthenticationError):
            await client.messages.create(model="synthetic", max_tokens=2, messages=HELLO)


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (
            {"model": "claude-x", "max_tokens": 2, "messages": HELLO},
            404,
            {
                "type": "not_found_error",
                "message": "The model 'claude-x' does not exist on this server "
                "(see GET /v1/models).",
            },
        ),
        (
            {"model": "synthetic", "messages": HELLO},
            400,
            {
                "type": "invalid_request_error",
                "message": "Missing required parameter: 'max_tokens'.",
            },
        ),
        (
            {
                "model": "synthetic",
                "max_tokens": 2,
                "messages": [{"role": "system", "content": "x"}],
            },
            400,
            {
                "type": "invalid_request_error",
                "message": "Invalid value: 'system'. Supported values are: 'user' and 'assistant'.",
            },
        ),
        (
            {"model": "synthetic", "max_tokens": 2, "messages": "hello"},
            400,
            {
                "type": "invalid_request_error",
                "message": "Invalid type for 'messages': expected an array, but got a string "
                "instead.",
            },
        ),
        (
            {
                "model": "synthetic",
                "max_tokens": 2,
                "messages": HELLO,
                "tool_choice": {"type": "tool", "name": "nope"},
                "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            },
            400,
            {
                "type": "invalid_request_error",
                "message": "Invalid value for 'tool_choice': function 'nope' is not in 'tools'.",
            },
        ),
        (
            {"model": "synthetic", "max_tokens": 2, "messages": HELLO, "tools": [{"name": "f"}]},
            400,
            {
                "type": "invalid_request_error",
                "message": "Missing required parameter: 'tools[0].input_schema'.",
            },
        ),
        (
            {
                "model": "synthetic",
                "max_tokens": 2000,
                "messages": HELLO,
                "thinking": {"type": "enabled", "budget_tokens": 2000},
            },
            400,
            {
                "type": "invalid_request_error",
                "message": "Invalid 'thinking.budget_tokens': must be less than max_tokens "
                "(2000), got 2000.",
            },
        ),
        (
            {"model": "synthetic", "max_tokens": 2, "messages": HELLO, "temperature": 1.5},
            400,
            {
                "type": "invalid_request_error",
                "message": "Invalid 'temperature': decimal above maximum value. Expected a value "
                "<= 1, but got 1.5 instead.",
            },
        ),
    ],
    ids=[
        "model",
        "max_tokens",
        "role",
        "messages",
        "tool",
        "tool-schema",
        "thinking-budget",
        "temperature",
    ],
)
async def test_bad_requests_in_anthropic_shape(
    make_server: MakeServer, body: dict[str, Any], status: int, error: dict[str, Any]
) -> None:
    srv = await make_server()
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base_url(srv)}/v1/messages", json=body) as resp:
            assert resp.status == status
            assert await resp.json() == {"type": "error", "error": error}
    if status == 404:
        async with anthropic.AsyncAnthropic(
            base_url=base_url(srv), api_key="x", max_retries=0
        ) as client:
            with pytest.raises(anthropic.NotFoundError) as info:
                await client.messages.create(**body)
            assert info.value.body == {"type": "error", "error": error}


async def test_not_json_in_anthropic_shape(make_server: MakeServer) -> None:
    srv = await make_server()
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base_url(srv)}/v1/messages", data=b"{") as resp:
            assert resp.status == 400
            got = await resp.json()
    assert got["type"] == "error"
    assert got["error"]["type"] == "invalid_request_error"
    assert got["error"]["message"].startswith("request body is not valid JSON: ")


async def drain(stream: Any, into: list[Any]) -> None:
    async for event in stream:
        into.append(event)


async def test_a_failure_before_and_after_the_first_token(make_server: MakeServer) -> None:
    before = FailingSource(0, SourceError("upstream_timeout", "upstream did not answer"))
    srv = await make_server(sources={"synthetic": before})
    async with anthropic.AsyncAnthropic(base_url=base_url(srv), api_key="x", max_retries=0) as c:
        with pytest.raises(anthropic.APIStatusError) as info:
            await c.messages.create(model="synthetic", max_tokens=5, messages=HELLO, stream=True)
    assert info.value.status_code == 504
    assert info.value.body == {
        "type": "error",
        "error": {"type": "timeout_error", "message": "upstream did not answer"},
    }
    after = FailingSource(3, SourceError("upstream_error", "boom"))
    srv = await make_server(sources={"synthetic": after})
    got: list[Any] = []
    async with (
        anthropic.AsyncAnthropic(base_url=base_url(srv), api_key="x", max_retries=0) as c,
        asyncio.timeout(WAIT),
    ):
        stream = await c.messages.create(
            model="synthetic", max_tokens=9, messages=HELLO, stream=True
        )
        with pytest.raises(anthropic.APIStatusError) as info:
            await drain(stream, got)
    assert info.value.body == {"type": "error", "error": {"type": "api_error", "message": "boom"}}
    assert "".join(e.delta.text for e in got if e.type == "content_block_delta") == expected(
        "hello", 3
    )


async def test_ping_events_the_sdk_skips(make_server: MakeServer) -> None:
    srv = await make_server(heartbeat_s=0.02)
    params = {"params": {"ttft_ms": 0.0, "tokens_per_s": 8.0, "jitter": 0.0}}
    body = {"model": "synthetic", "max_tokens": 3, "messages": HELLO, "stream": True, **params}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base_url(srv)}/v1/messages", json=body) as resp:
            raw = await resp.read()
    assert raw.count(b'event: ping\ndata: {"type":"ping"}\n\n') >= 5
    async with (
        anthropic.AsyncAnthropic(base_url=base_url(srv), api_key="x", max_retries=0) as c,
        asyncio.timeout(WAIT),
    ):
        async with c.messages.stream(
            model="synthetic", max_tokens=3, messages=HELLO, extra_body=params
        ) as stream:
            final = await stream.get_final_message()
    assert final.content[0].type == "text"
    assert final.content[0].text == expected("hello", 3)


TOOLS: list[dict[str, Any]] = [
    {"name": "get_weather", "input_schema": {"type": "object", "required": ["city"]}},
    {"name": "noop", "description": "d", "input_schema": {"type": "object"}},
]


@pytest.mark.parametrize(
    ("fields", "effort", "forced", "offered"),
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "low", None, 0),
        ({"thinking": {"type": "enabled", "budget_tokens": 4096}}, "medium", None, 0),
        ({"thinking": {"type": "enabled", "budget_tokens": 16384}}, "high", None, 0),
        ({"thinking": {"type": "disabled"}}, None, None, 0),
        ({"tools": TOOLS, "tool_choice": {"type": "any"}}, None, "get_weather", 2),
        ({"tools": TOOLS, "tool_choice": {"type": "tool", "name": "noop"}}, None, "noop", 2),
        ({"tools": TOOLS, "tool_choice": {"type": "none"}}, None, None, 0),
        ({"tools": TOOLS}, None, None, 2),
    ],
    ids=["low", "medium", "high", "disabled", "any", "tool", "none", "auto"],
)
def test_thinking_and_tools_reach_the_source(
    fields: dict[str, Any], effort: str | None, forced: str | None, offered: int
) -> None:
    body = {"model": "synthetic", "max_tokens": 20000, "messages": HELLO, **fields}
    req = parse_messages_body(
        body, Settings(max_tokens_cap=20000), {"synthetic": SyntheticSource()}
    )
    generation = req.create.request
    assert (generation.reasoning_effort, generation.tool_choice, len(generation.tools)) == (
        effort,
        forced,
        offered,
    )
    assert req.thinking == (effort is not None)
    assert req.typed == (effort is not None or offered > 0)
    if offered:
        assert generation.tools[0].parameters == TOOLS[0]["input_schema"]
