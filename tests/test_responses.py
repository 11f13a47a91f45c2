"""``/v1/responses``, OpenAI's Responses API: the official SDK (sync and async) on a live
server, compared with the native stream of the same id."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from aiohttp.test_utils import TestServer

from bench.cutproxy import CutProxy
from server.errors import SourceError
from server.responses_request import parse_responses_body
from server.settings import Settings
from server.sources.synthetic import SyntheticSource, count_pieces, synthetic_text
from tests.conftest import MakeServer, base_url
from tests.readers import native_text
from tests.scripted_sources import FailingSource, StoppingSource

WAIT = 10.0
FAST = {"params": {"ttft_ms": 0.0, "tokens_per_s": 0.0}}
SLOW = {"params": {"ttft_ms": 0.0, "tokens_per_s": 40.0, "jitter": 0.0}}
OPENING = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
]
CLOSING = [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]


@pytest.fixture(autouse=True)
def _clean_openai_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)


def expected(prompt: str, n: int) -> str:
    return "".join(synthetic_text(prompt, 0, n))


def v1(srv: TestServer) -> str:
    return f"{base_url(srv)}/v1"


def types_of(events: list[Any]) -> list[str]:
    return [e.type for e in events]


def deltas(events: list[Any]) -> str:
    return "".join(e.delta for e in events if e.type == "response.output_text.delta")


async def test_stream_async_and_sync(make_server: MakeServer) -> None:
    srv = await make_server()
    async with openai.AsyncOpenAI(base_url=v1(srv), api_key="x", max_retries=0) as client:
        raw = await client.responses.with_raw_response.create(
            model="synthetic", input="hello", max_output_tokens=20, stream=True, extra_body=FAST
        )
        async with asyncio.timeout(WAIT):
            events = [e async for e in raw.parse()]
    sid = raw.headers["Tokenwire-Stream"]

    def run() -> tuple[str, list[Any]]:
        with openai.OpenAI(base_url=v1(srv), api_key="x", max_retries=0) as sync:
            sraw = sync.responses.with_raw_response.create(
                model="synthetic", input="hello", max_output_tokens=20, stream=True, extra_body=FAST
            )
            return sraw.headers["Tokenwire-Stream"], list(sraw.parse())

    sync_sid, sync_events = await asyncio.to_thread(run)
    text = expected("hello", 20)
    for stream_id, got in ((sid, events), (sync_sid, sync_events)):
        assert types_of(got) == [
            *OPENING,
            *["response.output_text.delta"] * 20,
            *CLOSING,
            "response.incomplete",
        ]
        assert [e.sequence_number for e in got] == list(range(28))
        assert deltas(got) == text == await native_text(base_url(srv), stream_id)
        final = got[-1].response
        assert final.id == f"resp_{stream_id}"
        assert final.status == "incomplete"
        assert final.incomplete_details.reason == "max_output_tokens"
        assert final.output_text == text
        assert final.usage.output_tokens == 20
        assert final.usage.input_tokens == count_pieces("hello")
    assert sid != sync_sid


async def test_the_stream_helper_and_a_completed_response(make_server: MakeServer) -> None:
    srv = await make_server(sources={"synthetic": StoppingSource(stop_after=7)})
    async with (
        openai.AsyncOpenAI(base_url=v1(srv), api_key="x", max_retries=0) as client,
        asyncio.timeout(WAIT),
    ):
        async with client.responses.stream(
            model="synthetic", input="hello", instructions="Be brief."
        ) as stream:
            events = [e async for e in stream]
            final = await stream.get_final_response()
        whole = await client.responses.create(model="synthetic", input="hello")
    text = expected("system: Be brief.\n\nuser: hello\n\nassistant:", 7)
    assert types_of(events)[-1] == "response.completed"
    assert final.status == "completed"
    assert final.output_text == text
    assert final.instructions == "Be brief."
    assert [e.sequence_number for e in events] == list(range(4 + 7 + 4))
    text_events = [e for e in events if e.type == "response.output_text.delta"]
    assert [e.snapshot for e in text_events][-1] == text  # the helper's own accumulation
    assert whole.status == "completed"
    assert whole.output_text == expected("hello", 7)
    assert await native_text(base_url(srv), whole.id.removeprefix("resp_")) == whole.output_text


async def test_background_then_resume_then_retrieve(make_server: MakeServer) -> None:
    srv = await make_server(grace_s=0.5)
    async with (
        openai.AsyncOpenAI(base_url=v1(srv), api_key="x", max_retries=0) as client,
        asyncio.timeout(WAIT),
    ):
        created = await client.responses.create(
            model="synthetic", input="hello", max_output_tokens=12, background=True, extra_body=SLOW
        )
        assert created.status == "in_progress"
        assert created.background is True
        assert created.output == []
        sid = created.id.removeprefix("resp_")
        # Nobody reads it for longer than the grace period: a background response goes on.
        await asyncio.sleep(0.8)
        tail = [
            e
            async for e in await client.responses.retrieve(
                created.id, stream=True, starting_after=9
            )
        ]
        head = [e async for e in await client.responses.retrieve(created.id, stream=True)]
        got = await client.responses.retrieve(created.id)
    assert [e.sequence_number for e in head] == list(range(4 + 12 + 4))
    assert [e.sequence_number for e in tail] == list(range(10, 20))
    assert [e.model_dump() for e in tail] == [e.model_dump() for e in head[10:]]
    assert head[0].response.id == created.id
    text = expected("hello", 12)
    assert deltas(head) == text == await native_text(base_url(srv), sid)
    assert got.status == "incomplete"
    assert got.output_text == text
    assert got.background is True


async def test_retrieve_while_running_then_cancel(make_server: MakeServer) -> None:
    srv = await make_server()
    slow = {"params": {"ttft_ms": 0.0, "tokens_per_s": 20.0, "jitter": 0.0}}
    async with (
        openai.AsyncOpenAI(base_url=v1(srv), api_key="x", max_retries=0) as client,
        asyncio.timeout(WAIT),
    ):
        created = await client.responses.create(
            model="synthetic",
            input="hello",
            max_output_tokens=200,
            background=True,
            extra_body=slow,
        )
        stream = await client.responses.retrieve(created.id, stream=True)
        seen = []
        async for event in stream:
            seen.append(event)
            if event.type == "response.output_text.delta" and event.sequence_number == 6:
                break
        running = await client.responses.retrieve(created.id)
        cancelled = await client.responses.cancel(created.id)
        again = await client.responses.cancel(created.id)  # idempotent
        rest = [e async for e in stream]
    assert running.status == "in_progress"
    assert expected("hello", 200).startswith(running.output_text)
    assert len(running.output_text) >= len(deltas(seen))
    assert cancelled.status == "cancelled"
    assert again.model_dump() == cancelled.model_dump()
    assert expected("hello", 200).startswith(cancelled.output_text)
    assert rest[-1].type == "response.failed"
    assert rest[-1].response.status == "cancelled"
    assert deltas(seen + rest) == cancelled.output_text
    numbers = [e.sequence_number for e in seen + rest]
    assert numbers == list(range(len(numbers)))


async def test_sync_background_retrieve_and_cancel(make_server: MakeServer) -> None:
    srv = await make_server()

    def run() -> tuple[list[int], str, str]:
        with openai.OpenAI(base_url=v1(srv), api_key="x", max_retries=0) as client:
            created = client.responses.create(
                model="synthetic", input="hi", max_output_tokens=5, background=True, extra_body=FAST
            )
            events = list(client.responses.retrieve(created.id, stream=True, starting_after=2))
            cancelled = client.responses.cancel(created.id)  # finished: as it ended
            return [e.sequence_number for e in events], deltas(events), str(cancelled.status)

    numbers, text, status = await asyncio.to_thread(run)
    assert numbers == list(range(3, 4 + 5 + 4))
    assert text == expected("hi", 5)
    assert status == "incomplete"


async def test_resume_through_cuts_sees_every_sequence_number_once(
    make_server: MakeServer,
) -> None:
    srv = await make_server()
    body = {"model": "synthetic", "input": "hello", "max_output_tokens": 40, **FAST}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{v1(srv)}/responses", json={**body, "background": True}) as r:
            rid = (await r.json())["id"]
        numbers: list[int] = []
        text = ""
        async with CutProxy(srv.port or 0, [700, 1100, 900, 1300], match=b"stream=true") as proxy:
            client = openai.AsyncOpenAI(base_url=f"{proxy.url}/v1", api_key="x", max_retries=0)
            async with client, asyncio.timeout(WAIT):
                for _ in range(20):  # bounded: each try gets further
                    after = numbers[-1] if numbers else None
                    kwargs: dict[str, Any] = {} if after is None else {"starting_after": after}
                    try:
                        async for e in await client.responses.retrieve(rid, stream=True, **kwargs):
                            numbers.append(e.sequence_number)
                            if e.type == "response.output_text.delta":
                                text += e.delta
                    except (openai.APIConnectionError, openai.APIError, orjson.JSONDecodeError):
                        continue
                    except ValueError:  # a JSON line cut mid-way, as the SDK reports it
                        continue
                    if numbers and numbers[-1] == 4 + 40 + 3:
                        break
        assert proxy.cut_count == 4
    assert numbers == list(range(4 + 40 + 4))
    assert text == expected("hello", 40)


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (
            {"model": "gpt-4o", "input": "x"},
            404,
            {
                "message": "The model 'gpt-4o' does not exist on this server (see GET /v1/models).",
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_found",
            },
        ),
        (
            {"model": "synthetic"},
            400,
            {
                "message": "Missing required parameter: 'input'.",
                "type": "invalid_request_error",
                "param": "input",
                "code": "missing_required_parameter",
            },
        ),
        (
            {
                "model": "synthetic",
                "input": [{"role": "user", "content": [{"type": "input_image"}]}],
            },
            400,
            {
                "message": "Unsupported value: 'input[0].content[0].type' does not support "
                "'input_image' on tokenwire (text only).",
                "type": "invalid_request_error",
                "param": "input[0].content[0].type",
                "code": "unsupported_value",
            },
        ),
        (
            {"model": "synthetic", "input": [{"type": "function_call_output", "output": "1"}]},
            400,
            {
                "message": "Unsupported value: 'input[0].type' does not support "
                "'function_call_output' on tokenwire (message items only).",
                "type": "invalid_request_error",
                "param": "input[0].type",
                "code": "unsupported_value",
            },
        ),
        (
            {"model": "synthetic", "input": 3},
            400,
            {
                "message": "Invalid type for 'input': expected a string or an array of input "
                "items, but got an integer instead.",
                "type": "invalid_request_error",
                "param": "input",
                "code": "invalid_type",
            },
        ),
        (
            {
                "model": "synthetic",
                "input": "x",
                "tools": [{"type": "function", "name": "f"}],
                "tool_choice": {"type": "function", "name": "g"},
            },
            400,
            {
                "message": "Invalid value for 'tool_choice': function 'g' is not in 'tools'.",
                "type": "invalid_request_error",
                "param": "tool_choice",
                "code": "invalid_value",
            },
        ),
        (
            {"model": "synthetic", "input": "x", "tools": [{"type": "function"}]},
            400,
            {
                "message": "Missing required parameter: 'tools[0].name'.",
                "type": "invalid_request_error",
                "param": "tools[0].name",
                "code": "missing_required_parameter",
            },
        ),
        (
            {"model": "synthetic", "input": "x", "reasoning": {"effort": "lots"}},
            400,
            {
                "message": "Invalid value: 'lots'. Supported values are: 'none', 'minimal', "
                "'low', 'medium', 'high', 'xhigh' and 'max'.",
                "type": "invalid_request_error",
                "param": "reasoning.effort",
                "code": "invalid_value",
            },
        ),
        (
            {"model": "synthetic", "input": "x", "seed": 1},
            400,
            {
                "message": "Unknown parameter: 'seed'.",
                "type": "invalid_request_error",
                "param": "seed",
                "code": "unknown_parameter",
            },
        ),
    ],
    ids=[
        "model",
        "no-input",
        "image",
        "item-type",
        "input-type",
        "forced-tool",
        "tool-name",
        "effort",
        "unknown",
    ],
)
async def test_bad_requests_in_openai_shape(
    make_server: MakeServer, body: dict[str, Any], status: int, error: dict[str, Any]
) -> None:
    srv = await make_server()
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{v1(srv)}/responses", json=body) as resp:
            assert resp.status == status
            assert await resp.json() == {"error": error}


async def test_unknown_response_and_bad_position(make_server: MakeServer) -> None:
    srv = await make_server()
    async with openai.AsyncOpenAI(base_url=v1(srv), api_key="x", max_retries=0) as client:
        with pytest.raises(openai.NotFoundError) as info:
            await client.responses.retrieve("resp_nope")
        assert info.value.body == {
            "message": "no stream 'nope'",
            "type": "invalid_request_error",
            "param": None,
            "code": "unknown_stream",
        }
        with pytest.raises(openai.NotFoundError):
            await client.responses.cancel("resp_nope")
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{v1(srv)}/responses", json={"model": "synthetic", "input": "x"}
        ) as r:
            rid = (await r.json())["id"]
        async with session.get(f"{v1(srv)}/responses/{rid}?stream=true&starting_after=x") as r:
            assert r.status == 400
            assert await r.json() == {
                "error": {
                    "message": "starting_after: must be an integer >= -1",
                    "type": "invalid_request_error",
                    "param": "starting_after",
                    "code": "invalid_field",
                }
            }


async def test_a_failure_before_and_after_the_first_token(make_server: MakeServer) -> None:
    before = FailingSource(0, SourceError("upstream_timeout", "upstream did not answer"))
    srv = await make_server(sources={"synthetic": before})
    async with openai.AsyncOpenAI(base_url=v1(srv), api_key="x", max_retries=0) as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.responses.create(model="synthetic", input="hello", stream=True)
    assert info.value.status_code == 504
    assert info.value.body == {
        "message": "upstream did not answer",
        "type": "server_error",
        "param": None,
        "code": "upstream_timeout",
    }
    after = FailingSource(3, SourceError("upstream_error", "boom"))
    srv = await make_server(sources={"synthetic": after})
    async with (
        openai.AsyncOpenAI(base_url=v1(srv), api_key="x", max_retries=0) as client,
        asyncio.timeout(WAIT),
    ):
        events = [
            e
            async for e in await client.responses.create(
                model="synthetic", input="hello", stream=True
            )
        ]
    assert types_of(events) == [*OPENING, *["response.output_text.delta"] * 3, "response.failed"]
    failed = events[-1].response
    assert failed.status == "failed"
    assert failed.error is not None
    assert failed.error.model_dump() == {
        "code": "server_error",
        "message": "upstream_error: boom",
        "misalignment": None,
        "param": None,
        "type": None,
    }
    assert failed.output_text == expected("hello", 3)


async def test_heartbeats_the_sdk_skips(make_server: MakeServer) -> None:
    srv = await make_server(heartbeat_s=0.02)
    body = {
        "model": "synthetic",
        "input": "hello",
        "max_output_tokens": 3,
        "stream": True,
        "params": {"ttft_ms": 0.0, "tokens_per_s": 8.0, "jitter": 0.0},
    }
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{v1(srv)}/responses", json=body) as resp:
            raw = await resp.read()
    assert raw.count(b": ping\n\n") >= 5
    assert b"\nid:" not in raw
    assert b"retry:" not in raw
    async with (
        openai.AsyncOpenAI(base_url=v1(srv), api_key="x", max_retries=0) as client,
        asyncio.timeout(WAIT),
    ):
        events = [
            e
            async for e in await client.responses.create(
                model="synthetic",
                input="hello",
                max_output_tokens=3,
                stream=True,
                extra_body={"params": body["params"]},
            )
        ]
    assert [e.sequence_number for e in events] == list(range(4 + 3 + 4))
    assert deltas(events) == expected("hello", 3)


def test_tools_and_reasoning_reach_the_source_and_the_object() -> None:
    tools = [
        {"type": "function", "name": "get_weather", "parameters": {"type": "object"}},
        {"type": "function", "name": "noop", "strict": False},
    ]
    req = parse_responses_body(
        {
            "model": "synthetic",
            "input": "x",
            "tools": tools,
            "tool_choice": {"type": "function", "name": "noop"},
            "reasoning": {"effort": "high", "summary": "auto"},
        },
        Settings(),
        {"synthetic": SyntheticSource()},
    )
    generation = req.create.request
    assert (generation.reasoning_effort, generation.tool_choice) == ("high", "noop")
    assert [(t.name, dict(t.parameters)) for t in generation.tools] == [
        ("get_weather", {"type": "object"}),
        ("noop", {}),
    ]
    assert req.tool_choice == {"type": "function", "name": "noop"}
    required = parse_responses_body(
        {"model": "synthetic", "input": "x", "tools": tools, "tool_choice": "required"},
        Settings(),
        {"synthetic": SyntheticSource()},
    )
    assert required.create.request.tool_choice == "get_weather"
