"""A pushed token written straight to the transport (``_Push`` in
server/transports/streaming.py): the bytes on the wire, read off a raw socket, are what
aiohttp would have sent. Chunked over HTTP/1.1 (each write one chunk, the last-chunk once
at the end), close-delimited over HTTP/1.0, and through aiohttp again for a reader whose
buffer is not empty. Exact events; no timing."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from typing import Any

import orjson

from clients.decoders import SSEDecoder
from server.sources.synthetic import synthetic_text
from tests.conftest import MakeServer
from tests.faults.hostile import eventually, exchange, request_bytes, served
from tests.faults.test_slow_readers import buffer_watch, server_transport
from tests.test_request_path import chunks

PACED = {"ttft_ms": 0, "tokens_per_s": 1000, "jitter": 0, "seed": 7}


def create(prompt: str, max_tokens: int) -> bytes:
    return orjson.dumps({"prompt": prompt, "max_tokens": max_tokens, "params": PACED})


def sse_events(body: bytes) -> list[dict[str, Any]]:
    events = [orjson.loads(m.data) for m in SSEDecoder().feed(body)]
    for e in events:
        e.pop("t", None)
    return events


def expected(prompt: str, max_tokens: int) -> list[dict[str, Any]]:
    pieces = synthetic_text(prompt, 7, max_tokens)
    done = {
        "seq": max_tokens,
        "type": "done",
        "finish_reason": "length",
        "tokens": max_tokens,
        "sha256": hashlib.sha256("".join(pieces).encode()).hexdigest(),
    }
    tokens = [{"seq": i, "type": "token", "text": p} for i, p in enumerate(pieces)]
    return [*tokens, done]


def without_stream(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if k != "stream"} for e in events]


async def test_a_paced_stream_over_http11_is_one_chunk_per_token_and_ends_once() -> None:
    async with served() as s:
        answer = await exchange(
            s.port, request_bytes("POST", "/api/sse", body=create("direct", 40)), until_close=False
        )
    assert answer.status == 200
    got = chunks(answer.raw)  # asserts the last-chunk once, with nothing after it
    assert answer.raw.endswith(b"\r\n0\r\n\r\n")
    assert answer.raw.count(b"\r\n0\r\n\r\n") == 1
    events = sse_events(b"".join(got))
    assert events[0]["type"] == "created"
    assert without_stream(events[1:]) == expected("direct", 40)
    # Pushed tokens are one write each: most chunks hold one event.
    singles = [c for c in got[1:] if c.count(b"\n\n") == 1]
    assert len(singles) >= 30


async def test_a_paced_stream_over_http10_is_close_delimited_and_exact() -> None:
    async with served() as s:
        answer = await exchange(
            s.port,
            request_bytes("POST", "/api/sse", version="HTTP/1.0", body=create("ten", 25)),
            until_close=True,
        )
    assert answer.status == 200
    head, _, body = answer.raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower()
    assert b"connection: close" in head.lower()
    events = sse_events(body)
    assert events[0]["type"] == "created"
    assert without_stream(events[1:]) == expected("ten", 25)


async def test_a_reader_that_falls_behind_gets_every_byte_in_order(
    make_server: MakeServer,
) -> None:
    """The client does not read for a while and both socket buffers are small: the
    transport buffers (so pushes fall back to the reader's task and aiohttp's writer), and
    the whole body is still exact, in order, with the last-chunk once at the end."""
    n = 2000
    srv = await make_server(send_timeout_s=30.0)
    assert srv.port is not None
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", srv.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        peer = sock.getsockname()
        await eventually(lambda: server_transport(srv, peer) is not None)
        transport = server_transport(srv, peer)
        assert transport is not None
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        writer.write(request_bytes("POST", "/api/sse", body=create("slow", n)))
        await writer.drain()
        async with buffer_watch(srv, peer) as samples:
            await asyncio.sleep(1.5)  # not reading: the server's buffer fills
        raw = b""
        async with asyncio.timeout(30):
            while not raw.endswith(b"\r\n0\r\n\r\n"):
                data = await reader.read(65536)
                assert data, "the answer ended before its last chunk"
                raw += data
    finally:
        writer.close()
    got = chunks(raw)
    events = sse_events(b"".join(got))
    assert without_stream(events[1:]) == expected("slow", n)
    # Tokens came while something was buffered: those went through aiohttp.
    assert max(samples) > 0, samples
