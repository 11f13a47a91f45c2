"""A reader that stops reading: bounded server memory, dropped after the send timeout with
the right signal, the rest of the stream still readable by resuming, and no other reader
held up.

The stuck reader is an aiohttp client whose socket has a 4 KiB receive buffer and which
never reads its response (or WebSocket), so the kernel buffers fill and the server's
writes wait. The stream is big pieces, so that happens within a second. While it is
stuck, the server-side transport buffer of its connection is sampled: it must stay within
what one write can add past asyncio's high-water mark (64 KiB + one batch of at most 512
events); the stream's log stays within ``max_log_events``. After ``send_timeout_s`` the
server drops it: an HTTP response is aborted (the client reads what was buffered, then
the connection error), a WebSocket is closed with 1008 "send timeout" (or, if even the
close frame cannot be written, aborted: 1006). A paced stream read beside it over every
transport arrives whole (exact seqs, text and digest). The figures of how much the other
streams are slowed (their token gaps) are ``bench/stuck.py``'s, never asserted here.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from clients import Client
from clients.decoders import NDJSONDecoder, SSEDecoder
from server.appkeys import HUB
from server.sources.base import Finish, GenerationRequest, TokenSource
from server.sources.synthetic import SyntheticSource, synthetic_text
from tests.conftest import MakeServer, base_url
from tests.readers import TRANSPORTS, read, text_of

PIECE = "ab€" * 700  # 2100 characters, 2800 bytes: a few thousand outgrow every buffer
PIECES = 4000
#: For the long poll: one answer (512 events) must outgrow the socket buffers by itself.
HUGE_PIECE = "ab€" * 8000
SEND_TIMEOUT = 0.5
HIGH_WATER = 64 * 1024
MAX_LOG = PIECES + 1  # the resume after the drop finds every event
WAIT = 60


class BigPieces(TokenSource):
    """``PIECE`` (prompt ``big``) or ``HUGE_PIECE`` (prompt ``huge``) ``max_tokens`` times,
    as fast as the loop allows; other prompts go to the synthetic source, paced."""

    name = "synthetic"

    def __init__(self) -> None:
        self.synthetic = SyntheticSource()

    def validate_params(self, params: Any) -> dict[str, Any]:
        return self.synthetic.validate_params(params)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str | Finish]:
        piece = {"big": PIECE, "huge": HUGE_PIECE}.get(request.prompt)
        if piece is None:
            async for item in self.synthetic.stream(request):
                yield item
            return
        for _ in range(request.max_tokens):
            await asyncio.sleep(0)
            yield piece


def stuck_session() -> aiohttp.ClientSession:
    """A client session whose sockets have a 4 KiB receive buffer."""

    def small_socket(addr_info: Any) -> socket.socket:
        family, type_, proto, _, _ = addr_info
        s = socket.socket(family, type_, proto)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        return s

    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(socket_factory=small_socket))


def server_transport(srv: TestServer, peer: tuple[str, int]) -> asyncio.Transport | None:
    """The server side of the connection from ``peer``, while the server has it."""
    runner = srv.runner
    assert runner is not None
    assert runner.server is not None
    for handler in runner.server.connections:
        t = handler.transport
        if t is not None and t.get_extra_info("peername") == peer:
            return t
    return None


def connected(srv: TestServer, peer: tuple[str, int]) -> bool:
    t = server_transport(srv, peer)
    return t is not None and not t.is_closing()


@asynccontextmanager
async def buffer_watch(srv: TestServer, peer: tuple[str, int]) -> AsyncIterator[list[int]]:
    """Samples of the server-side write buffer of the connection from ``peer``, every 5 ms,
    and whether the stream logs stayed within ``max_log_events``."""
    samples: list[int] = []
    store = srv.app[HUB].store

    async def watch() -> None:
        for _ in range(20_000):
            t = server_transport(srv, peer)
            if t is not None:
                samples.append(t.get_write_buffer_size())
            for log in store._logs.values():  # the in-memory store's lists
                assert len(log.events) - log.start <= MAX_LOG
            await asyncio.sleep(0.005)

    task = asyncio.create_task(watch())
    try:
        yield samples
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def dropped(srv: TestServer, sid: str, transport: str) -> None:
    """Wait until the stuck reader is no longer counted as a subscriber."""
    st = srv.app[HUB].streams[sid]
    for _ in range(2000):
        if st.subscribers[transport] == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the stuck {transport} reader was not dropped")


async def bystander(base: str) -> list[list[dict[str, Any]]]:
    """A paced stream read over all four transports while the stuck reader is stuck."""
    async with aiohttp.ClientSession() as session:
        sid = await Client(base, session=session).create(
            "bystander", max_tokens=60, params={"tokens_per_s": 100, "ttft_ms": 0}
        )
        return list(await asyncio.gather(*(read(session, base, t, sid) for t in TRANSPORTS)))


def check_bystander(results: list[list[dict[str, Any]]]) -> None:
    for events in results:
        assert [e["seq"] for e in events] == list(range(61))
        assert text_of(events) == "".join(synthetic_text("bystander", 0, 60))


def check_rest(received: list[int], rest: list[dict[str, Any]]) -> None:
    """What the stuck reader got, then its resume: every seq once, the whole text."""
    assert received == list(range(len(received)))
    assert [e["seq"] for e in rest] == list(range(len(received), PIECES + 1))
    assert rest[-1]["type"] == "done"
    assert all(e["text"] == PIECE for e in rest[:-1])


def settings() -> dict[str, Any]:
    return {
        "sources": {"synthetic": BigPieces()},
        "send_timeout_s": SEND_TIMEOUT,
        "max_tokens_cap": PIECES,
        "max_log_events": MAX_LOG,
    }


def bound(piece: str = PIECE) -> int:
    """What one connection's transport buffer may hold: up to the high-water mark, plus
    one write (a batch of at most 512 events, framed)."""
    event = len(orjson.dumps(piece)) + 200
    return HIGH_WATER + 512 * event


Decoder = Callable[[bytes], list[int]]


def sse_seqs() -> Decoder:
    dec = SSEDecoder()
    return lambda chunk: [e["seq"] for m in dec.feed(chunk) if "seq" in (e := orjson.loads(m.data))]


def ndjson_seqs() -> Decoder:
    dec = NDJSONDecoder()
    return lambda chunk: [ev["seq"] for ev in dec.feed(chunk) if "seq" in ev]


def openai_seqs() -> Decoder:
    """Content chunk k of ``/v1`` is seq k."""
    dec = SSEDecoder()
    count = [0]

    def feed(chunk: bytes) -> list[int]:
        out = []
        for m in dec.feed(chunk):
            delta = orjson.loads(m.data)["choices"][0]["delta"]
            if delta.get("content"):
                out.append(count[0])
                count[0] += 1
        return out

    return feed


@pytest.mark.parametrize("transport", ["sse", "chunked", "openai"])
async def test_a_stuck_http_reader_is_aborted_and_can_resume(
    make_server: MakeServer, transport: str
) -> None:
    srv = await make_server(**settings())
    base = base_url(srv)
    async with stuck_session() as stuck, asyncio.timeout(WAIT):
        if transport == "openai":
            body = {
                "model": "synthetic",
                "messages": [{"role": "user", "content": "big"}],
                "max_tokens": PIECES,
                "stream": True,
            }
            request = stuck.post(f"{base}/v1/chat/completions", json=body)
            seqs = openai_seqs()
        else:
            create = {"prompt": "big", "max_tokens": PIECES}
            request = stuck.post(f"{base}/api/{transport}", json=create)
            seqs = sse_seqs() if transport == "sse" else ndjson_seqs()
        async with request as resp:
            assert resp.status == 200
            sid = resp.headers["Tokenwire-Stream"]
            assert resp.connection is not None
            assert resp.connection.transport is not None
            peer = resp.connection.transport.get_extra_info("sockname")
            async with buffer_watch(srv, peer) as samples:
                others = await bystander(base)
                await dropped(srv, sid, transport)
            # Now read what reached this client: whole events, then the abort.
            received: list[int] = []

            async def read_rest() -> None:
                async for chunk in resp.content.iter_any():
                    received.extend(seqs(chunk))

            with pytest.raises(aiohttp.ClientPayloadError):
                await read_rest()
    check_bystander(others)
    assert samples
    assert max(samples) <= bound()
    assert max(samples) > HIGH_WATER  # it was stuck, not merely slow
    async with Client(base) as c:
        rest = [e async for e in c.subscribe(sid, after=len(received) - 1, transport="chunked")]
    check_rest(received, rest)


async def test_a_stuck_websocket_is_closed_with_1008_and_can_resume(
    make_server: MakeServer,
) -> None:
    srv = await make_server(**settings())
    base = base_url(srv)
    async with stuck_session() as stuck, asyncio.timeout(WAIT):
        async with stuck.ws_connect(f"{base}/api/ws", autoping=False) as ws:
            await ws.send_json({"op": "generate", "prompt": "big", "max_tokens": PIECES})
            created = await ws.receive_json()
            sid = created["stream"]
            assert ws._conn is not None
            assert ws._conn.transport is not None
            peer = ws._conn.transport.get_extra_info("sockname")
            async with buffer_watch(srv, peer) as samples:
                others = await bystander(base)
                await dropped(srv, sid, "ws")
            received: list[int] = []
            closes: list[tuple[aiohttp.WSMsgType, Any]] = []
            async for msg in ws:
                assert msg.type == aiohttp.WSMsgType.TEXT
                received.append(orjson.loads(msg.data)["seq"])
            closes.append((aiohttp.WSMsgType.CLOSE, ws.close_code))
    check_bystander(others)
    assert samples
    assert max(samples) <= bound()
    assert max(samples) > HIGH_WATER
    assert closes == [(aiohttp.WSMsgType.CLOSE, 1008)]
    async with Client(base) as c:
        rest = [e async for e in c.subscribe(sid, after=received[-1], transport="ws")]
    check_rest(received, rest)


async def test_a_stuck_long_poll_reader_is_aborted(make_server: MakeServer) -> None:
    """A poll answer the client does not read (512 events of 24 KB, more than the socket
    buffers take) is bounded by the send timeout like a stream: the connection is
    aborted, and polling again from the same position gets the events."""
    srv = await make_server(**settings())
    base = base_url(srv)
    async with Client(base) as c:
        sid = await c.create("huge", max_tokens=600)
        await c.status(sid)
        for _ in range(500):  # until the log holds a full batch
            if (await c.status(sid))["tokens"] >= 512:
                break
            await asyncio.sleep(0.01)
    async with stuck_session() as stuck, asyncio.timeout(WAIT):
        async with stuck.get(f"{base}/api/streams/{sid}/poll", params={"after": "-1"}) as resp:
            assert resp.status == 200
            assert resp.connection is not None
            assert resp.connection.transport is not None
            peer = resp.connection.transport.get_extra_info("sockname")
            async with buffer_watch(srv, peer) as samples:
                others = await bystander(base)
                for _ in range(500):  # until the server no longer has the connection
                    if not connected(srv, peer):
                        break
                    await asyncio.sleep(0.01)
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
    check_bystander(others)
    assert samples
    assert HIGH_WATER < max(samples) <= bound(HUGE_PIECE)
    async with Client(base) as c:
        events = [e async for e in c.subscribe(sid, transport="poll")]
    assert [e["seq"] for e in events] == list(range(601))
