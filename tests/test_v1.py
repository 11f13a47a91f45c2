"""``/v1``, the OpenAI-compatible routes: the official SDK (sync and async) on a live server.

Every test talks to a real tokenwire server on a real port through ``openai.OpenAI`` /
``openai.AsyncOpenAI`` (or raw aiohttp, for the bytes on the wire). The synthetic source is
deterministic, so the expected text is computed from the source itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from server.app import create_app
from server.appkeys import HUB
from server.chat_request import chat_prompt
from server.errors import SourceError
from server.events import token_event, token_text_json
from server.framing.openai import DONE, ChunkFramer
from server.framing.sse import PING
from server.hub import Hub
from server.settings import Settings
from server.sources.base import ChatMessage, Finish, GenerationRequest
from server.sources.synthetic import SyntheticSource, count_pieces, synthetic_text
from tests.conftest import MakeServer, base_url, create
from tests.openai_standin import Behavior, OpenAIStandIn
from tests.readers import TRANSPORTS, read, text_of
from tests.scripted_sources import FailingSource
from tests.spy import spy_sources

#: Upper bound of every wait in this module (never reached when things work).
WAIT = 10.0
FAST = {"ttft_ms": 0.0, "tokens_per_s": 0.0}
SLOW = {"ttft_ms": 0.0, "tokens_per_s": 50.0, "jitter": 0.0}
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]

_OPENAI_ENV = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID")


@pytest.fixture
def server_store(store_url: str) -> str:
    """Every test here that starts its server with ``make_server`` runs on the memory store
    and on Redis (one process)."""
    return store_url


@pytest.fixture(autouse=True)
def _clean_openai_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the machine's OpenAI variables out of the SDK clients and the openai source."""
    for name in _OPENAI_ENV:
        monkeypatch.delenv(name, raising=False)


def v1(srv: TestServer) -> str:
    return f"{base_url(srv)}/v1"


@contextlib.asynccontextmanager
async def async_client(srv: TestServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=v1(srv), api_key="x", max_retries=0) as client:
        yield client


@contextlib.contextmanager
def sync_client(srv: TestServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=v1(srv), api_key="x", max_retries=0) as client:
        yield client


def expected_text(prompt: str, max_tokens: int, seed: int = 0) -> str:
    return "".join(synthetic_text(prompt, seed, max_tokens))


async def fast_server(make_server: MakeServer, **overrides: Any) -> TestServer:
    return await make_server(ttft_ms=0, tokens_per_s=0, **overrides)


async def drain(
    stream: openai.AsyncStream[ChatCompletionChunk], into: list[ChatCompletionChunk]
) -> None:
    """Read the rest of a stream into ``into`` (kept as far as it got if the stream raises)."""
    async for chunk in stream:
        into.append(chunk)


def content_of(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def check_chunks(
    chunks: list[ChatCompletionChunk],
    *,
    text: str,
    finish_reason: str,
    model: str,
    usage: tuple[int, int] | None,
) -> None:
    """The exact shape of a stream: role, content deltas, finish, usage (if asked)."""
    ids = {c.id for c in chunks}
    assert len(ids) == 1
    assert next(iter(ids)).startswith("chatcmpl-")
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert {c.model for c in chunks} == {model}
    body = chunks[:-1] if usage is not None else chunks
    first, *deltas, last = body
    assert first.choices[0].delta.role == "assistant"
    assert first.choices[0].delta.content == ""
    assert [c.choices[0].finish_reason for c in body] == [None] * (len(body) - 1) + [finish_reason]
    assert last.choices[0].delta.content is None
    assert all(c.choices[0].delta.content for c in deltas)  # no empty deltas
    assert content_of(chunks) == text
    if usage is None:
        assert all(c.usage is None for c in chunks)
    else:
        prompt_tokens, completion_tokens = usage
        assert chunks[-1].choices == []
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.model_dump(exclude_none=True) == {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }


class GatedSource(SyntheticSource):
    """Synthetic pieces, holding after the first one until ``gate`` is set."""

    def __init__(self) -> None:
        super().__init__(ttft_ms=0, tokens_per_s=0)
        self.gate = asyncio.Event()
        self.holding = asyncio.Event()

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str | Finish]:
        n = 0
        async for item in super().stream(request):
            if n == 1:
                self.holding.set()
                await self.gate.wait()
            n += 1
            yield item


class RecordingProxy:
    """A loopback TCP relay that keeps every byte the server sent (to count pings)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.received = bytearray()
        self.changed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> RecordingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._server.wait_closed()

    async def wait_for(self, needle: bytes, count: int) -> None:
        async with asyncio.timeout(WAIT):
            while self.received.count(needle) < count:
                self.changed.clear()
                await self.changed.wait()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, keep: bool) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    if keep:
                        self.received += data
                        self.changed.set()
                    dst.write(data)
                    await dst.drain()

        try:
            await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))
        finally:
            for w in (writer, up_writer):
                w.transport.abort()
            self._tasks.discard(task)


# -- streaming, async and sync ---------------------------------------------------------------


async def test_async_stream_exact_text_finish_and_usage(make_server: MakeServer) -> None:
    srv = await fast_server(make_server)
    async with async_client(srv) as client, asyncio.timeout(WAIT):
        stream = await client.chat.completions.create(
            model="synthetic",
            messages=HELLO,
            max_tokens=40,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]

    check_chunks(
        chunks,
        text=expected_text("hello", 40),
        finish_reason="length",
        model="synthetic",
        usage=(count_pieces("hello"), 40),
    )
    assert len(chunks) == 1 + 40 + 1 + 1  # role, one chunk per token, finish, usage


async def test_async_stream_without_usage_and_with_seed(make_server: MakeServer) -> None:
    srv = await fast_server(make_server)
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Tell me about 🚀 and \r\n line ends"},
    ]
    prompt = chat_prompt(
        [ChatMessage("system", "You are terse."), ChatMessage("user", str(messages[1]["content"]))]
    )
    async with async_client(srv) as client, asyncio.timeout(WAIT):
        stream = await client.chat.completions.create(
            model="synthetic", messages=messages, max_completion_tokens=25, seed=7, stream=True
        )
        chunks = [chunk async for chunk in stream]

    check_chunks(
        chunks,
        text=expected_text(prompt, 25, seed=7),
        finish_reason="length",
        model="synthetic",
        usage=None,
    )


async def test_sync_stream(make_server: MakeServer) -> None:
    srv = await fast_server(make_server)

    def run() -> list[ChatCompletionChunk]:
        with sync_client(srv) as client:
            stream = client.chat.completions.create(
                model="synthetic",
                messages=HELLO,
                max_tokens=12,
                stream=True,
                stream_options={"include_usage": True},
            )
            return list(stream)

    async with asyncio.timeout(WAIT):
        chunks = await asyncio.to_thread(run)

    check_chunks(
        chunks,
        text=expected_text("hello", 12),
        finish_reason="length",
        model="synthetic",
        usage=(1, 12),
    )


async def test_async_and_sync_non_streamed(make_server: MakeServer) -> None:
    srv = await fast_server(make_server)
    async with async_client(srv) as client, asyncio.timeout(WAIT):
        raw = await client.chat.completions.with_raw_response.create(
            model="synthetic", messages=HELLO, max_tokens=30
        )
        answer = raw.parse()

    def run() -> Any:
        with sync_client(srv) as client:
            return client.chat.completions.create(model="synthetic", messages=HELLO, max_tokens=30)

    async with asyncio.timeout(WAIT):
        sync_answer = await asyncio.to_thread(run)

    sid = raw.headers["Tokenwire-Stream"]
    assert raw.headers["Location"] == f"/api/streams/{sid}"
    assert answer._request_id == sid
    assert answer.id == f"chatcmpl-{sid}"
    assert answer.object == "chat.completion"
    assert answer.model == "synthetic"
    assert len(answer.choices) == 1
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content == expected_text("hello", 30)
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None
    assert (
        answer.usage.prompt_tokens,
        answer.usage.completion_tokens,
        answer.usage.total_tokens,
    ) == (1, 30, 31)
    assert sync_answer.choices[0].message.content == answer.choices[0].message.content
    assert sync_answer.id != answer.id  # two requests, two streams


async def test_finish_reason_stop_and_messages_forwarded(
    make_server: MakeServer,
) -> None:
    async with OpenAIStandIn() as standin:
        standin.behavior = Behavior(pieces=["Hel", "lo", "", None, ", 세계 🚀"])
        srv = await make_server(source="openai", base_url=standin.url, model="gpt-test")
        messages: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        ]
        async with async_client(srv) as client, asyncio.timeout(WAIT):
            stream = await client.chat.completions.create(
                model="openai/gpt-test",
                messages=messages,
                max_tokens=9,
                temperature=0.5,
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [chunk async for chunk in stream]

        check_chunks(
            chunks,
            text="Hello, 세계 🚀",
            finish_reason="stop",
            model="openai/gpt-test",
            usage=(count_pieces("system: Be brief.\n\nuser: Hi\n\nassistant:"), 3),
        )
        assert standin.requests[-1].body == {
            "model": "gpt-test",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
            ],
            "stream": True,
            "max_tokens": 9,
            "temperature": 0.5,
        }


# -- the stream behind it is an ordinary tokenwire stream ------------------------------------


async def test_same_stream_over_the_other_transports(
    make_server: MakeServer, session: aiohttp.ClientSession
) -> None:
    srv = await fast_server(make_server)
    base = base_url(srv)
    async with async_client(srv) as client, asyncio.timeout(WAIT):
        raw = await client.chat.completions.with_raw_response.create(
            model="synthetic", messages=HELLO, max_tokens=20, stream=True
        )
        stream = raw.parse()
        chunks = [chunk async for chunk in stream]
    sid = raw.headers["Tokenwire-Stream"]
    assert raw.headers["X-Request-Id"] == sid
    assert chunks[0].id == f"chatcmpl-{sid}"

    results = await asyncio.gather(*(read(session, base, t, sid) for t in TRANSPORTS))
    text = expected_text("hello", 20)
    for events in results:
        assert events == results[0]
        assert text_of(events) == content_of(chunks) == text
        assert events[-1]["type"] == "done"
        assert events[-1]["finish_reason"] == "length"
        assert events[-1]["tokens"] == 20
        assert events[-1]["sha256"] == hashlib.sha256(text.encode()).hexdigest()
    # ... and resumed from a position, as any stream.
    tail = await read(session, base, "sse", sid, after=14)
    assert [e["seq"] for e in tail] == list(range(15, 21))
    async with session.get(f"{base}/api/streams/{sid}") as resp:
        status = await resp.json()
    assert status["source"] == "synthetic"
    assert set(status["subscribers"]) == {
        "sse",
        "ws",
        "poll",
        "chunked",
        "openai",
        "responses",
        "anthropic",
    }


async def test_client_disconnect_cancels_after_grace(
    make_server: MakeServer, session: aiohttp.ClientSession
) -> None:
    spy, sources = spy_sources(**SLOW)
    srv = await make_server(sources=sources, grace_s=0.3)
    async with async_client(srv) as client, asyncio.timeout(WAIT):
        raw = await client.chat.completions.with_raw_response.create(
            model="synthetic",
            messages=[{"role": "user", "content": "leave"}],
            max_tokens=1000,
            stream=True,
        )
        sid = raw.headers["Tokenwire-Stream"]
        stream = raw.parse()
        got = [await anext(stream) for _ in range(4)]  # role + 3 tokens
        await stream.close()
        await spy.closed["leave"].wait()

    assert spy.cancelled["leave"] is True
    assert content_of(got) == expected_text("leave", 3)
    # The final event is appended just after the source closed: a store round trip later
    # with Redis. (Bounded: 500 reads, 10 s.)
    for _ in range(500):
        async with session.get(f"{base_url(srv)}/api/streams/{sid}") as resp:
            status = await resp.json()
        if status["state"] != "running":
            break
        await asyncio.sleep(0.02)
    assert status["state"] == "done"
    assert status["finish_reason"] == "cancelled"
    assert 3 <= status["tokens"] < 1000
    assert status["subscribers"]["openai"] == 0


@pytest.mark.parametrize("handler_cancellation", [True, False], ids=["cancelled", "not-cancelled"])
async def test_non_streamed_client_leaving_cancels_after_grace(
    session: aiohttp.ClientSession, handler_cancellation: bool
) -> None:
    # ``tokenwire serve`` (and TestServer) cancel a handler whose client left; an app run
    # without that notices the closed connection itself at the next event or heartbeat.
    # Either way the request stops reading, and the grace period cancels the stream.
    gated = GatedSource()
    settings = Settings(grace_s=0.3, heartbeat_s=0.05)
    app = create_app(settings, sources={"synthetic": gated})
    runner = web.AppRunner(app, handler_cancellation=handler_cancellation)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        hub = app[HUB]
        body = {"model": "synthetic", "messages": HELLO}
        request = asyncio.create_task(
            session.post(f"http://{host}:{port}/v1/chat/completions", json=body)
        )
        async with asyncio.timeout(WAIT):
            await gated.holding.wait()
            (sid,) = hub.streams
            request.cancel()  # the client hangs up mid-answer
            with pytest.raises(asyncio.CancelledError):
                await request
            await hub.wait_finished(sid)
    finally:
        await runner.cleanup()

    st = hub.get(sid)
    assert (st.state, st.finish_reason, st.cancel_reason) == ("done", "cancelled", "abandoned")
    assert st.tokens == 1
    assert st.total_subscribers == 0


async def test_cancel_from_another_transport_ends_the_stream_with_an_error(
    make_server: MakeServer, session: aiohttp.ClientSession
) -> None:
    spy, sources = spy_sources(**SLOW)
    srv = await make_server(sources=sources)
    async with async_client(srv) as client, asyncio.timeout(WAIT):
        raw = await client.chat.completions.with_raw_response.create(
            model="synthetic", messages=HELLO, max_tokens=1000, stream=True
        )
        sid = raw.headers["Tokenwire-Stream"]
        stream = raw.parse()
        got = [await anext(stream) for _ in range(3)]
        async with session.delete(f"{base_url(srv)}/api/streams/{sid}") as resp:
            assert resp.status == 204
        with pytest.raises(openai.APIError) as info:
            await drain(stream, got)

    err = info.value
    assert not isinstance(err, openai.APIStatusError)  # in-band, after a 200
    message = (
        f"stream {sid} was cancelled (DELETE, a WebSocket cancel, or no reader for the grace "
        "period)"
    )
    assert err.message == message
    assert err.body == {
        "message": message,
        "type": "invalid_request_error",
        "param": None,
        "code": "cancelled",
    }
    assert err.code == "cancelled"
    assert content_of(got) == expected_text("hello", spy.yielded["hello"])
    assert all(c.choices[0].finish_reason is None for c in got)


async def test_non_streamed_cancel_is_a_conflict_not_retried(
    make_server: MakeServer, session: aiohttp.ClientSession
) -> None:
    gated = GatedSource()
    srv = await make_server(sources={"synthetic": gated})
    hub: Hub = srv.app[HUB]
    # max_retries=2: the x-should-retry header, not the client's setting, prevents a retry.
    async with openai.AsyncOpenAI(base_url=v1(srv), api_key="x", max_retries=2) as client:
        task = asyncio.create_task(
            client.chat.completions.create(model="synthetic", messages=HELLO, max_tokens=1000)
        )
        async with asyncio.timeout(WAIT):
            await gated.holding.wait()
            (sid,) = hub.streams
            async with session.delete(f"{base_url(srv)}/api/streams/{sid}") as resp:
                assert resp.status == 204
            with pytest.raises(openai.ConflictError) as info:
                await task

    assert info.value.status_code == 409
    assert info.value.response.headers["x-should-retry"] == "false"
    assert info.value.body == {
        "message": f"stream {sid} was cancelled (DELETE, a WebSocket cancel, or no reader for "
        "the grace period)",
        "type": "invalid_request_error",
        "param": None,
        "code": "cancelled",
    }
    assert list(hub.streams) == [sid]  # no retry created a second stream


# -- errors before the stream: HTTP status, the SDK's own exception types --------------------


async def test_unknown_model_is_not_found(make_server: MakeServer) -> None:
    srv = await make_server()
    async with async_client(srv) as client, asyncio.timeout(WAIT):
        with pytest.raises(openai.NotFoundError) as info:
            await client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True)
    err = info.value
    assert err.status_code == 404
    assert err.body == {
        "message": "The model 'gpt-4o' does not exist on this server (see GET /v1/models).",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }
    assert (err.code, err.param, err.type) == ("model_not_found", "model", "invalid_request_error")
    assert srv.app[HUB].streams == {}  # nothing was started


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        (
            {"n": 2},
            {
                "message": "Unsupported value: 'n' must be 1 on tokenwire (one generation per "
                "request).",
                "param": "n",
                "code": "unsupported_value",
            },
        ),
        (
            {"max_tokens": 0},
            {
                "message": "Invalid 'max_tokens': integer below minimum value. Expected a value "
                ">= 1, but got 0 instead.",
                "param": "max_tokens",
                "code": "integer_below_min_value",
            },
        ),
        (
            {"messages": []},
            {
                "message": "Invalid 'messages': empty array. Expected an array with minimum "
                "length 1, but got an empty array instead.",
                "param": "messages",
                "code": "empty_array",
            },
        ),
        (
            {"extra_body": {"colour": "red"}},
            {
                "message": "Unknown parameter: 'colour'.",
                "param": "colour",
                "code": "unknown_parameter",
            },
        ),
        (
            {"extra_body": {"params": {"tokens_per_s": 1e9}}},
            {
                "message": "Invalid 'params.tokens_per_s': must be a number from 0 to 5000.",
                "param": "params.tokens_per_s",
                "code": "invalid_value",
            },
        ),
    ],
    ids=["n", "max_tokens", "messages", "unknown", "params"],
)
async def test_bad_request(
    make_server: MakeServer, kwargs: dict[str, Any], error: dict[str, Any]
) -> None:
    srv = await make_server()
    args: dict[str, Any] = {"model": "synthetic", "messages": HELLO, "stream": True, **kwargs}

    def run() -> None:
        with sync_client(srv) as client:
            client.chat.completions.create(**args)

    async with async_client(srv) as client, asyncio.timeout(WAIT):
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(**args)
        with pytest.raises(openai.BadRequestError) as sync_info:
            await asyncio.to_thread(run)

    expected = {**error, "type": "invalid_request_error"}
    assert info.value.status_code == sync_info.value.status_code == 400
    assert info.value.body == sync_info.value.body == expected


async def test_rate_limit(make_server: MakeServer, session: aiohttp.ClientSession) -> None:
    srv = await make_server(max_streams_per_client=1, **SLOW)
    await create(session, srv, max_tokens=1000)
    async with async_client(srv) as client, asyncio.timeout(WAIT):
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(model="synthetic", messages=HELLO, stream=True)
    assert info.value.status_code == 429
    assert info.value.response.headers["Retry-After"] == "5"
    assert info.value.body == {
        "message": "this client has 1 live streams; the limit per client is 1",
        "type": "requests",
        "param": None,
        "code": "too_many_streams",
    }


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "non-streamed"])
async def test_generation_failing_before_its_first_token(
    make_server: MakeServer, stream: bool
) -> None:
    failing = FailingSource(0, SourceError("upstream_timeout", "upstream did not answer"))
    srv = await make_server(sources={"synthetic": failing})
    async with async_client(srv) as client, asyncio.timeout(WAIT):
        with pytest.raises(openai.InternalServerError) as info:
            await client.chat.completions.create(model="synthetic", messages=HELLO, stream=stream)
    assert info.value.status_code == 504
    sid = info.value.response.headers["Tokenwire-Stream"]
    assert sid in srv.app[HUB].streams
    assert info.value.body == {
        "message": "upstream did not answer",
        "type": "server_error",
        "param": None,
        "code": "upstream_timeout",
    }


async def test_upstream_http_error_before_the_stream(make_server: MakeServer) -> None:
    async with OpenAIStandIn(behavior=Behavior(status=429)) as standin:
        srv = await make_server(source="openai", base_url=standin.url, model="gpt-test")
        async with async_client(srv) as client, asyncio.timeout(WAIT):
            with pytest.raises(openai.InternalServerError) as info:
                await client.chat.completions.create(
                    model="openai/gpt-test", messages=HELLO, stream=True
                )
    assert info.value.status_code == 502
    assert info.value.body == {
        "message": "upstream answered HTTP 429 (rate_limit_exceeded): Rate limit reached for "
        "gpt-test in organization org-test on requests per min (RPM): Limit 3, Used 3, "
        "Requested 1. Please try again in 20s.",
        "type": "server_error",
        "param": None,
        "code": "upstream_error",
    }


# -- errors during the stream: in-band, then the stream ends ---------------------------------


async def test_error_during_the_stream_async_and_sync(
    make_server: MakeServer, session: aiohttp.ClientSession
) -> None:
    failing = FailingSource(5, SourceError("generation_failed", "RuntimeError: out of memory"))
    srv = await make_server(sources={"synthetic": failing})
    expected_body = {
        "message": "RuntimeError: out of memory",
        "type": "server_error",
        "param": None,
        "code": "generation_failed",
    }
    got: list[ChatCompletionChunk] = []
    async with async_client(srv) as client, asyncio.timeout(WAIT):
        stream = await client.chat.completions.create(
            model="synthetic", messages=HELLO, stream=True
        )
        with pytest.raises(openai.APIError) as info:
            await drain(stream, got)

    def run() -> tuple[list[ChatCompletionChunk], openai.APIError]:
        chunks: list[ChatCompletionChunk] = []
        with sync_client(srv) as client:
            sync_stream = client.chat.completions.create(
                model="synthetic", messages=HELLO, stream=True
            )
            try:
                for chunk in sync_stream:
                    chunks.append(chunk)
            except openai.APIError as e:
                return chunks, e
        raise AssertionError("the stream did not raise")

    async with asyncio.timeout(WAIT):
        sync_got, sync_err = await asyncio.to_thread(run)

    for chunks, err in ((got, info.value), (sync_got, sync_err)):
        assert type(err) is openai.APIError
        assert err.message == "RuntimeError: out of memory"
        assert err.body == expected_body
        assert len(chunks) == 1 + 5
        assert content_of(chunks) == expected_text("hello", 5)

    # The same error is the stream's last event for every other transport.
    async with session.post(
        f"{v1(srv)}/chat/completions",
        json={"model": "synthetic", "messages": HELLO, "stream": True},
    ) as resp:
        assert resp.status == 200
        raw = await resp.read()
    assert raw.endswith(b'\n\ndata: {"error":' + orjson.dumps(expected_body) + b"}\n\n")
    assert DONE not in raw
    events = await read(session, base_url(srv), "poll", resp.headers["Tokenwire-Stream"])
    assert events[-1]["type"] == "error"
    assert events[-1]["seq"] == 5
    assert (events[-1]["code"], events[-1]["message"]) == (
        "generation_failed",
        "RuntimeError: out of memory",
    )


async def test_upstream_error_event_mid_stream(make_server: MakeServer) -> None:
    async with OpenAIStandIn(behavior=Behavior(pieces=["a", "b", "c"], error_after=2)) as standin:
        srv = await make_server(source="openai", base_url=standin.url, model="gpt-test")
        got: list[ChatCompletionChunk] = []
        async with async_client(srv) as client, asyncio.timeout(WAIT):
            stream = await client.chat.completions.create(
                model="openai", messages=HELLO, stream=True
            )
            with pytest.raises(openai.APIError) as info:
                await drain(stream, got)
    assert content_of(got) == "ab"
    assert info.value.body == {
        "message": "upstream error event: The server had an error while processing your "
        "request. Sorry about that!",
        "type": "server_error",
        "param": None,
        "code": "upstream_error",
    }


# -- keep-alive pings ------------------------------------------------------------------------


async def test_sdk_reads_a_stream_with_many_pings(make_server: MakeServer) -> None:
    gated = GatedSource()
    srv = await make_server(sources={"synthetic": gated}, heartbeat_s=0.02)
    assert srv.port is not None
    async with RecordingProxy(srv.port) as proxy:
        async with (
            openai.AsyncOpenAI(base_url=f"{proxy.url}/v1", api_key="x", max_retries=0) as client,
            asyncio.timeout(WAIT),
        ):
            stream = await client.chat.completions.create(
                model="synthetic",
                messages=HELLO,
                max_tokens=10,
                stream=True,
                stream_options={"include_usage": True},
            )
            head = [await anext(stream) for _ in range(2)]  # role, first token
            await proxy.wait_for(PING, 5)  # the source holds: only pings flow now
            gated.gate.set()
            chunks = head + [chunk async for chunk in stream]

    assert proxy.received.count(PING) >= 5
    check_chunks(
        chunks,
        text=expected_text("hello", 10),
        finish_reason="length",
        model="synthetic",
        usage=(1, 10),
    )


# -- the bytes on the wire -------------------------------------------------------------------


async def test_wire_bytes_exactly(make_server: MakeServer, session: aiohttp.ClientSession) -> None:
    gated = GatedSource()
    srv = await make_server(sources={"synthetic": gated}, heartbeat_s=0.02)
    body = {
        "model": "synthetic",
        "messages": [{"role": "user", "content": "wire"}],
        "max_tokens": 6,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    received = bytearray()
    async with (
        asyncio.timeout(WAIT),
        session.post(f"{v1(srv)}/chat/completions", json=body) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert resp.headers["Cache-Control"] == "no-cache, no-transform"
        assert resp.headers["X-Accel-Buffering"] == "no"
        assert resp.headers["Transfer-Encoding"] == "chunked"
        assert "Content-Encoding" not in resp.headers
        sid = resp.headers["Tokenwire-Stream"]
        async for chunk in resp.content.iter_any():
            received += chunk
            if received.count(PING) >= 3:
                gated.gate.set()

    st = srv.app[HUB].get(sid)
    framer = ChunkFramer(
        stream_id=sid,
        created=int(st.created_at),
        model="synthetic",
        include_usage=True,
        prompt_tokens=count_pieces("wire"),
    )
    pieces = synthetic_text("wire", 0, 6)
    expected = (
        framer.role()
        + b"".join(framer.content(token_text_json(token_event(sid, 0, p))) for p in pieces)
        + framer.finish("length")
        + framer.usage(6)
        + DONE
    )
    raw = bytes(received)
    assert raw.replace(PING, b"") == expected
    assert raw.count(PING) >= 3
    assert raw.endswith(b"\n\ndata: [DONE]\n\n")
    # Nothing but data lines, comment pings and the blank lines that end events.
    lines = raw.split(b"\n")
    assert {line[:6] for line in lines} <= {b"data: ", b": ping", b""}
    assert not any(line.startswith((b"id:", b"retry:", b"event:")) for line in lines)


async def test_wire_bytes_non_streamed(
    make_server: MakeServer, session: aiohttp.ClientSession
) -> None:
    srv = await fast_server(make_server)
    async with session.post(
        f"{v1(srv)}/chat/completions",
        json={"model": "synthetic", "messages": HELLO, "max_tokens": 3},
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/json"
        sid = resp.headers["Tokenwire-Stream"]
        answer = await resp.json()
    assert answer == {
        "id": f"chatcmpl-{sid}",
        "object": "chat.completion",
        "created": int(srv.app[HUB].get(sid).created_at),
        "model": "synthetic",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": expected_text("hello", 3)},
                "logprobs": None,
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
    }


@pytest.mark.parametrize(
    ("method", "path", "data", "status", "error"),
    [
        (
            "POST",
            "/v1/chat/completions",
            b"{not json",
            400,
            {
                "message": "request body is not valid JSON: unexpected character, expected a "
                "string key: line 1 column 2 (char 1)",
                "type": "invalid_request_error",
                "param": None,
                "code": "bad_json",
            },
        ),
        (
            "POST",
            "/v1/chat/completions",
            b"",
            400,
            {
                "message": "request body is empty; expected a JSON object",
                "type": "invalid_request_error",
                "param": None,
                "code": "bad_json",
            },
        ),
        (
            "POST",
            "/v1/chat/completions",
            b"[]",
            400,
            {
                "message": "body must be a JSON object",
                "type": "invalid_request_error",
                "param": None,
                "code": "bad_json",
            },
        ),
        (
            "POST",
            "/v1/completions",
            b"{}",
            404,
            {
                "message": "no route POST /v1/completions",
                "type": "invalid_request_error",
                "param": None,
                "code": "not_found",
            },
        ),
        (
            "GET",
            "/v1/chat/completions",
            None,
            405,
            {
                "message": "GET is not allowed on /v1/chat/completions",
                "type": "invalid_request_error",
                "param": None,
                "code": "method_not_allowed",
            },
        ),
        (
            "POST",
            "/v1/chat/completions",
            b" " * (64 * 1024 + 1),
            413,
            {
                "message": "request body is larger than 65536 bytes",
                "type": "invalid_request_error",
                "param": None,
                "code": "body_too_large",
            },
        ),
    ],
    ids=["bad-json", "empty", "not-object", "no-route", "method", "too-large"],
)
async def test_raw_errors_in_openai_shape(
    server: TestServer,
    session: aiohttp.ClientSession,
    method: str,
    path: str,
    data: bytes | None,
    status: int,
    error: dict[str, Any],
) -> None:
    async with session.request(method, f"{base_url(server)}{path}", data=data) as resp:
        assert resp.status == status
        assert resp.headers["Content-Type"] == "application/json"
        assert await resp.json() == {"error": error}
        if status == 405:
            assert resp.headers["Allow"] == "POST"


# -- models ----------------------------------------------------------------------------------


async def test_models(make_server: MakeServer) -> None:
    async with OpenAIStandIn() as standin:
        srv = await make_server(source="openai", base_url=standin.url, model="gpt-test")
        async with async_client(srv) as client, asyncio.timeout(WAIT):
            page = await client.models.list()
            one = await client.models.retrieve("openai/gpt-test")
            with pytest.raises(openai.NotFoundError) as info:
                await client.models.retrieve("openai/gpt-other")

    assert [(m.id, m.object, m.owned_by) for m in page.data] == [
        ("synthetic", "model", "tokenwire"),
        ("openai/gpt-test", "model", "tokenwire"),
    ]
    assert one.id == "openai/gpt-test"
    assert one.created == page.data[1].created
    assert info.value.body == {
        "message": "The model 'openai/gpt-other' does not exist on this server (see GET "
        "/v1/models).",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }


# -- tokenwire's openai source reading another tokenwire's /v1 -------------------------------


async def test_chain_tokenwire_behind_tokenwire(
    make_server: MakeServer, session: aiohttp.ClientSession
) -> None:
    upstream = await fast_server(make_server)  # B: the synthetic source
    front = await make_server(source="openai", base_url=v1(upstream), model="synthetic")  # A
    assert front.app[HUB].sources["openai"].served_model() == "synthetic"

    # A native stream on A, read over SSE: A's openai source asked B's /v1 for it.
    sid = await create(session, front, prompt="chain me", max_tokens=33, source="openai")
    events = await read(session, base_url(front), "sse", sid)

    async with async_client(upstream) as direct, asyncio.timeout(WAIT):
        b_answer = await direct.chat.completions.create(
            model="synthetic",
            messages=[{"role": "user", "content": "chain me"}],
            max_tokens=33,
        )
    text = expected_text("chain me", 33)
    assert text_of(events) == b_answer.choices[0].message.content == text
    assert events[-1]["finish_reason"] == "length"

    # The SDK on A's /v1, through A's openai source, to B's /v1: the conversation goes
    # upstream as it is, and B builds its prompt from it.
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "Relay."},
        {"role": "user", "content": "chain me"},
    ]
    async with async_client(front) as client, asyncio.timeout(WAIT):
        stream = await client.chat.completions.create(
            model="openai/synthetic",
            messages=messages,
            max_tokens=21,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    prompt = "system: Relay.\n\nuser: chain me\n\nassistant:"
    check_chunks(
        chunks,
        text=expected_text(prompt, 21),
        finish_reason="length",
        model="openai/synthetic",
        usage=(count_pieces(prompt), 21),
    )


# -- the hf source behind /v1 ----------------------------------------------------------------


@pytest.mark.hf
async def test_hf_model_id_gives_the_native_stream_text(
    make_server: MakeServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    import torch

    from tests.tinymodel import build_tiny_gpt2

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors; spare the shared CPU
    try:
        model = str(build_tiny_gpt2(tmp_path / "tiny-gpt2"))
        srv = await make_server(source="hf", model=model)
        sid = await create(session, srv, prompt="Emoji:", max_tokens=16, source="hf")
        events = await read(session, base_url(srv), "chunked", sid)
        async with async_client(srv) as client, asyncio.timeout(WAIT):
            page = await client.models.list()
            answer = await client.chat.completions.create(
                model=f"hf/{model}",
                messages=[{"role": "user", "content": "Emoji:"}],
                max_tokens=16,
                temperature=0,
            )
    finally:
        torch.set_num_threads(threads)

    assert [m.id for m in page.data] == ["synthetic", f"hf/{model}"]
    assert answer.choices[0].message.content == text_of(events)
    assert answer.choices[0].finish_reason == events[-1]["finish_reason"]
    assert answer.usage is not None
    assert answer.usage.completion_tokens == events[-1]["tokens"]
