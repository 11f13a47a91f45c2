"""The Python client against the real server on every transport: full streams, resume
through server-side cuts, the digest check and every typed error."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bench.cutproxy import CutProxy
from clients import (
    TRANSPORTS,
    Client,
    ClosedByServer,
    ConnectionLost,
    DigestMismatch,
    ServerError,
    Stream,
    StreamFailed,
    StreamGone,
    SyncClient,
)
from clients.check import TextDigest, place
from clients.client import backoff_s
from server.sources.synthetic import synthetic_text
from tests.conftest import MakeServer, base_url
from tests.serving import ws_closing_mid_stream

transports = pytest.mark.parametrize("transport", TRANSPORTS)


async def collect(stream: Stream, on_event: Callable[[dict[str, object]], None]) -> None:
    async for ev in stream:
        on_event(ev)


FAST = {"tokens_per_s": 0, "ttft_ms": 0}


@pytest.mark.parametrize(
    ("seq", "last", "expected"),
    [
        (0, -1, "next"),
        (5, 4, "next"),
        (4, 4, "repeat"),
        (0, 4, "repeat"),
        (6, 4, "gap"),
        (1, -1, "gap"),
    ],
)
def test_place(seq: int, last: int, expected: str) -> None:
    """The same table as ``clients/js/test/check.test.mjs``."""
    assert place(seq, last) == expected


def test_text_digest() -> None:
    digest = TextDigest()
    for piece in ["h", "\u00e9", "\U0001f600", " x"]:
        digest.update(piece)
    expected = hashlib.sha256("h\u00e9\U0001f600 x".encode()).hexdigest()
    assert digest.sha256 == expected
    assert digest.matches({"sha256": expected})
    assert not digest.matches({"sha256": "0" * 64})


@pytest.mark.parametrize("attempt", range(8))
def test_backoff(attempt: int) -> None:
    """Doubling, capped, plus up to 25% jitter (``clients/js/test/backoff.test.mjs``)."""
    base = min(2.0, 0.1 * 2**attempt)
    for _ in range(50):
        assert base <= backoff_s(attempt, 0.1, 2.0) <= base * 1.25


def test_client_options() -> None:
    c = Client("http://127.0.0.1:1")
    assert (c.max_reconnects, c.backoff_s, c.max_backoff_s, c.poll_timeout_s) == (10, 0.1, 5, 25)


@transports
async def test_full_stream(server: TestServer, transport: str) -> None:
    async with Client(base_url(server)) as c:
        stream = c.stream("client", transport=transport, max_tokens=40, params=FAST)  # type: ignore[arg-type]
        events = await stream.collect()
        with pytest.raises(TypeError, match="iterated only once"):
            stream.__aiter__()
    assert [e["seq"] for e in events] == list(range(41))
    assert stream.text == "".join(synthetic_text("client", 0, 40))
    assert stream.done is not None
    assert stream.done["sha256"] == hashlib.sha256(stream.text.encode()).hexdigest()
    s = stream.stats
    assert (s.tokens, s.reconnects) == (40, 0)
    assert len(s.gaps_ns) == 39
    assert len(s.latencies_ns) == 40
    assert s.ttft_s is not None
    assert s.bytes_received > sum(len(e["text"].encode()) for e in events[:-1])
    assert s.requests >= {"sse": 1, "ws": 1, "chunked": 1, "poll": 2}[transport]


@transports
@pytest.mark.parametrize("cut", [150, 700, 2500])
async def test_resume_through_server_side_cuts(
    server: TestServer, transport: str, cut: int
) -> None:
    """The proxy cuts the first three connections after ``cut`` bytes (mid-frame)."""
    async with CutProxy(server.port or 0, [cut, cut, cut]) as proxy:
        async with Client(proxy.url, backoff_s=0.01) as c:
            stream = c.stream("cut me", transport=transport, max_tokens=120, params=FAST)  # type: ignore[arg-type]
            events = [ev async for ev in stream]
    assert [e["seq"] for e in events] == list(range(121))
    assert stream.text == "".join(synthetic_text("cut me", 0, 120))
    assert proxy.cut_count >= 1
    assert stream.stats.reconnects >= 1


@transports
async def test_subscribe_from_a_position_and_cancel(server: TestServer, transport: str) -> None:
    async with Client(base_url(server)) as c:
        sid = await c.create("sub", max_tokens=1000, params={"tokens_per_s": 100, "ttft_ms": 0})
        stream = c.subscribe(sid, after=-1, transport=transport)  # type: ignore[arg-type]
        events = []
        async for ev in stream:
            events.append(ev)
            if ev["seq"] == 2:
                await c.cancel(sid)
        tail = [ev async for ev in c.subscribe(sid, after=1, transport=transport)]  # type: ignore[arg-type]
    assert events[-1]["finish_reason"] == "cancelled"
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert tail == events[2:]


@transports
async def test_resume_off_raises_connection_lost(server: TestServer, transport: str) -> None:
    async with CutProxy(server.port or 0, [400]) as proxy, Client(proxy.url) as c:
        stream = c.stream("x", transport=transport, max_tokens=200, params=FAST, resume=False)  # type: ignore[arg-type]
        with pytest.raises(ConnectionLost):
            async for _ in stream:
                pass


@transports
async def test_server_errors_are_typed(make_server: MakeServer, transport: str) -> None:
    srv = await make_server(max_log_events=4)
    async with Client(base_url(srv)) as c:
        with pytest.raises(ServerError) as info:
            async for _ in c.stream("x", transport=transport, max_tokens=0):  # type: ignore[arg-type]
                pass
        assert (info.value.code, info.value.message) == (
            "invalid_field",
            "max_tokens: must be an integer from 1 to 4096",
        )
        sid = await c.create("x", max_tokens=10, params=FAST)
        async for _ in c.subscribe(sid, after=9, transport="poll"):
            pass
        with pytest.raises(StreamGone) as gone:
            async for _ in c.subscribe(sid, after=2, transport=transport):  # type: ignore[arg-type]
                pass
        # An HTTP answer has its status; a WebSocket error message has none.
        assert gone.value.status == (None if transport == "ws" else 410)
        assert gone.value.code == "gone"
        with pytest.raises(ServerError) as unknown:
            await c.cancel("nope")
        assert (unknown.value.status, unknown.value.code) == (404, "unknown_stream")


async def test_server_error_carries_retry_after(make_server: MakeServer) -> None:
    srv = await make_server(max_streams_per_client=1)
    async with Client(base_url(srv)) as c:
        await c.create("x", max_tokens=50, params={"tokens_per_s": 5})
        with pytest.raises(ServerError) as info:
            await c.create("y")
    err = info.value
    assert (err.status, err.code, err.retry_after) == (429, "too_many_streams", 5.0)
    assert str(err) == "429 too_many_streams: " + err.message


async def test_error_event_raises_stream_failed(make_server: MakeServer) -> None:
    srv = await make_server(generation_timeout_s=0.2)
    async with Client(base_url(srv)) as c:
        stream = c.stream("slow", transport="ws", max_tokens=100, params={"tokens_per_s": 5})
        seen: list[dict[str, object]] = []
        with pytest.raises(StreamFailed) as info:
            await collect(stream, seen.append)
    assert info.value.code == "generation_timeout"
    assert seen[-1]["type"] == "error"


async def test_digest_mismatch_is_detected() -> None:
    async def lying(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        await resp.write(b'{"type":"created","stream":"s1"}\n')
        await resp.write(b'{"stream":"s1","seq":0,"type":"token","text":"hi","t":1}\n')
        await resp.write(
            b'{"stream":"s1","seq":1,"type":"done","finish_reason":"stop","tokens":1,'
            b'"sha256":"' + hashlib.sha256(b"ho").hexdigest().encode() + b'","t":2}\n'
        )
        return resp

    app = web.Application()
    app.router.add_post("/api/chunked", lying)
    srv = TestServer(app, host="127.0.0.1", port=0)
    await srv.start_server()
    try:
        async with Client(base_url(srv)) as c:
            stream = c.stream("x", transport="chunked")
            seen: list[dict[str, object]] = []
            with pytest.raises(DigestMismatch) as info:
                await collect(stream, seen.append)
        assert info.value.expected == hashlib.sha256(b"ho").hexdigest()
        assert info.value.actual == hashlib.sha256(b"hi").hexdigest()
        assert [e["type"] for e in seen] == ["token"]  # `done` is not yielded
        assert (stream.digest_ok, stream.text) == (False, "hi")
    finally:
        await srv.close()


async def test_shutdown_ends_the_stream_with_stream_failed(make_server: MakeServer) -> None:
    srv = await make_server()
    async with Client(base_url(srv), max_reconnects=0) as c:
        stream = c.stream("x", transport="ws", max_tokens=4000, params={"tokens_per_s": 20})

        closing: list[asyncio.Task[None]] = []

        def stop_server(ev: dict[str, object]) -> None:
            if ev["seq"] == 0:
                closing.append(asyncio.get_running_loop().create_task(srv.close()))

        with pytest.raises(StreamFailed) as info:
            await collect(stream, stop_server)
        await asyncio.gather(*closing)  # before the fixture closes it too
    assert (info.value.code, info.value.message) == ("shutdown", "the server is shutting down")


async def test_websocket_closed_without_terminal_event() -> None:
    async with ws_closing_mid_stream() as srv:
        async with Client(base_url(srv), max_reconnects=0) as c:
            stream = c.stream("x", transport="ws")
            with pytest.raises(ClosedByServer) as info:
                async for _ in stream:
                    pass
        assert info.value.close_code == 1011
        assert stream.text == "a"


def test_sync_client(server: TestServer) -> None:
    url = base_url(server)

    def run() -> tuple[list[dict[str, object]], dict[str, object], str, list[int]]:
        with SyncClient(url) as c:
            stream = c.stream("sync", transport="chunked", max_tokens=5, params=FAST)
            events = list(stream)
            assert (stream.id, stream.digest_ok, stream.done) == (
                events[0]["stream"],
                True,
                events[-1],
            )
            again = c.subscribe(c.create("sync", 3, params=FAST), transport="ws").collect()
            return events, stream.stats.summary(), stream.text, [e["seq"] for e in again]

    events, summary, text, again = (
        asyncio.get_event_loop_policy().get_event_loop().run_until_complete(asyncio.to_thread(run))
    )
    assert [e["seq"] for e in events] == [0, 1, 2, 3, 4, 5]
    assert (summary["transport"], summary["tokens"], summary["reconnects"]) == ("chunked", 5, 0)
    assert text == "".join(synthetic_text("sync", 0, 5))
    assert again == [0, 1, 2, 3]


@transports
async def test_subscribe_past_the_end_of_a_finished_stream(
    server: TestServer, transport: str
) -> None:
    async with Client(base_url(server)) as c:
        sid = await c.create("end", max_tokens=3, params=FAST)
        async for _ in c.subscribe(sid, transport="poll"):
            pass
        stream = c.subscribe(sid, after=3, transport=transport)  # type: ignore[arg-type]
        assert [ev async for ev in stream] == []
        assert (stream.stats.reconnects, stream.done) == (0, None)


# A server with --auth-token: the twin of clients/js/test/client.test.mjs's token tests.
TOKEN = "py-token"
MISSING = "this server needs a token: send Authorization: Bearer <token>"
INVALID = "the bearer token is not valid"
AUTH_FIRST = (
    'authenticate first: send {"op":"auth","token":"..."} (or the Authorization header on the '
    "handshake)"
)


@transports
async def test_token_on_every_transport(make_server: MakeServer, transport: str) -> None:
    srv = await make_server(auth_token=TOKEN)
    async with Client(base_url(srv), token=TOKEN) as c:
        stream = c.stream("token", transport=transport, max_tokens=5, params=FAST)  # type: ignore[arg-type]
        events = [ev async for ev in stream]
        assert [e["seq"] for e in events] == list(range(6))
        assert stream.digest_ok is True
        again = c.subscribe(stream.id or "", transport=transport)  # type: ignore[arg-type]
        async for _ in again:
            pass
        assert again.text == stream.text
        sid = await c.create("token", max_tokens=1000, params={"tokens_per_s": 5})
        assert (await c.status(sid))["state"] == "running"
        await c.cancel(sid)
        rest = [ev async for ev in c.subscribe(sid, transport=transport)]  # type: ignore[arg-type]
        assert rest[-1]["finish_reason"] == "cancelled"


@transports
@pytest.mark.parametrize(
    ("token", "http_message", "ws_message"),
    [(None, MISSING, AUTH_FIRST), ("wrong", INVALID, INVALID)],
    ids=["no-token", "wrong-token"],
)
async def test_a_missing_or_wrong_token_is_server_error_unauthorized(
    make_server: MakeServer,
    transport: str,
    token: str | None,
    http_message: str,
    ws_message: str,
) -> None:
    srv = await make_server(auth_token=TOKEN)
    async with Client(base_url(srv), token=token) as c:
        stream = c.stream("x", transport=transport, max_tokens=2, resume=False)  # type: ignore[arg-type]
        with pytest.raises(ServerError) as info:
            async for _ in stream:
                pass
    ws = transport == "ws"
    assert (info.value.code, info.value.message, info.value.status) == (
        "unauthorized",
        ws_message if ws else http_message,
        None if ws else 401,
    )


async def test_create_status_and_cancel_without_the_token(make_server: MakeServer) -> None:
    srv = await make_server(auth_token=TOKEN)
    async with Client(base_url(srv), token="wrong") as c:
        for call in (c.create("x"), c.status("any"), c.cancel("any")):
            with pytest.raises(ServerError) as info:
                await call
            assert (info.value.code, info.value.status) == ("unauthorized", 401)
