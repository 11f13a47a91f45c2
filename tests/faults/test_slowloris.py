"""Slow and greedy connections: what one client can hold is bounded (docs/guarantees.md).

Served as ``tokenwire serve`` serves (the connection guard in front of aiohttp), with short
timeouts from the settings so each test takes a second or two: a request's headers that
trickle in, a connection that sends nothing, an idle kept-alive connection, a body that
trickles in, a few hundred connections from one address, an unmasked WebSocket frame; and
the open-files limit raised at start-up. The waits below are "did not hang" bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from server.connections import CONNECTIONS
from server.settings import CONNECTION_RANGES, Settings
from tests.faults.hostile import eventually, exchange, parse_answer, request_bytes, served

HANG = 10.0  # a generous "did not hang" bound


async def read_to_close(reader: asyncio.StreamReader) -> bytes:
    got = b""
    async with asyncio.timeout(HANG):
        while chunk := await reader.read(65536):
            got += chunk
    return got


def timeout_answer(seconds: float) -> dict[str, object]:
    return {
        "error": {
            "code": "request_timeout",
            "message": f"the request's headers did not arrive within {seconds:g} s",
        }
    }


async def trickle_until_closed(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, byte: bytes, count: int
) -> bytes:
    """Send ``byte`` every 50 ms, at most ``count`` times, while reading what the server
    answers until it closes; then abort the socket."""

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            for _ in range(count):
                await asyncio.sleep(0.05)
                writer.write(byte)

    task = asyncio.create_task(trickle())
    try:
        return await read_to_close(reader)
    finally:
        task.cancel()
        writer.transport.abort()


async def test_headers_that_trickle_in_get_408_and_are_closed() -> None:
    async with served(header_timeout_s=0.5) as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHo")

        # One byte every 50 ms: never a whole request.
        got = await trickle_until_closed(reader, writer, b"s", 100)
        ans = parse_answer(got, closed=True)
        assert (ans.status, ans.headers["connection"]) == (408, "close")
        assert ans.json() == timeout_answer(0.5)
        assert not srv.app[CONNECTIONS].open


async def test_a_connection_that_sends_nothing_is_closed() -> None:
    async with served(header_timeout_s=0.5) as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        assert await read_to_close(reader) == b""  # closed, nothing said: nothing came
        writer.close()


async def test_an_idle_kept_alive_connection_is_closed() -> None:
    async with served(header_timeout_s=5, idle_timeout_s=0.5) as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(request_bytes("GET", "/healthz"))
        got = await read_to_close(reader)
        writer.close()
        ans = parse_answer(got, closed=True)
        assert ans.status == 200
        assert ans.json() == {"status": "ok", "live_streams": 0}
        assert ans.raw.endswith(b'"live_streams":0}')  # nothing after the answer


async def test_a_long_stream_is_never_cut_by_the_header_or_idle_timeouts() -> None:
    """The timers run only while no request is in the app: a 2 s stream outlives them."""
    async with served(header_timeout_s=0.3, idle_timeout_s=0.3) as srv:
        body = orjson.dumps({"prompt": "hi", "max_tokens": 20, "params": {"tokens_per_s": 10}})
        ans = await exchange(
            srv.port,
            request_bytes("POST", "/api/chunked", headers={"Connection": "close"}, body=body),
        )
        lines = [orjson.loads(line) for line in ans.body.splitlines() if line]
        assert [e.get("seq") for e in lines[1:]] == list(range(21))
        assert lines[-1]["type"] == "done"


async def test_a_body_that_trickles_in_gets_408_and_creates_nothing() -> None:
    async with served(body_timeout_s=0.5) as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(
            b"POST /api/streams HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n"
            b'{"prompt":'
        )

        # 80 bytes in 4 s: never the whole body in time.
        got = await trickle_until_closed(reader, writer, b" ", 80)
        ans = parse_answer(got, closed=True)
        assert (ans.status, ans.headers["connection"]) == (408, "close")
        assert ans.json() == {
            "error": {
                "code": "request_timeout",
                "message": "the request body did not arrive within 0.5 s",
            }
        }
        assert srv.streams == 0


TOO_MANY = {
    "error": {
        "code": "too_many_connections",
        "message": "this client address has 50 open connections; the limit per client is 50",
    }
}


async def test_connections_per_client_are_capped_and_others_still_served() -> None:
    """200 connections that send nothing from one address: 50 are held, 150 refused with
    429; another address is served meanwhile; once they close, the address is served
    again."""
    async with served(max_connections_per_client=50, header_timeout_s=30) as srv:
        conns = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(200)]
        guard = srv.app[CONNECTIONS]
        await eventually(lambda: guard.refused == 150)  # all 200 accepted by the server

        async def first_answer(reader: asyncio.StreamReader) -> bytes | None:
            try:
                async with asyncio.timeout(1.0):
                    return await reader.read()  # a refusal: the answer, then EOF
            except TimeoutError:
                return None  # held open, waiting for a request

        got = await asyncio.gather(*(first_answer(r) for r, _ in conns))
        held = [g for g in got if g is None]
        refused = [parse_answer(g, closed=True) for g in got if g is not None]
        assert (len(held), len(refused)) == (50, 150)
        assert {(a.status, a.headers["retry-after"]) for a in refused} == {(429, "5")}
        assert all(a.json() == TOO_MANY for a in refused)
        assert guard.per_client == {"127.0.0.1": 50}

        other = await exchange(
            srv.port, request_bytes("GET", "/healthz"), local_host="127.0.0.2", until_close=False
        )
        assert other.status == 200
        same = await exchange(srv.port, request_bytes("GET", "/healthz"))
        assert (same.status, same.json()) == (429, TOO_MANY)

        for _, writer in conns:
            writer.transport.abort()
        await eventually(lambda: not guard.per_client)
        again = await exchange(srv.port, request_bytes("GET", "/healthz"), until_close=False)
        assert again.status == 200


async def test_a_slowloris_from_one_address_starves_no_one() -> None:
    """A few hundred trickling connections: the cap holds them to 100, the header timeout
    closes those within a second or so, and a client of another address streams a whole
    stream meanwhile."""
    async with served(max_connections_per_client=100, header_timeout_s=1.0) as srv:
        stop = asyncio.Event()

        async def slow_client() -> None:
            with contextlib.suppress(ConnectionError, OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", srv.port)
                writer.write(b"GET / HTTP/1.1\r\n")
                for _ in range(200):
                    if stop.is_set():
                        break
                    await asyncio.sleep(0.1)
                    writer.write(b"X")
                writer.transport.abort()

        attackers = [asyncio.create_task(slow_client()) for _ in range(300)]
        await asyncio.sleep(0.3)
        assert srv.app[CONNECTIONS].per_client["127.0.0.1"] <= 100
        body = orjson.dumps({"prompt": "hi", "max_tokens": 10, "params": {"tokens_per_s": 20}})
        ans = await exchange(
            srv.port,
            request_bytes("POST", "/api/chunked", headers={"Connection": "close"}, body=body),
            local_host="127.0.0.2",
        )
        lines = [orjson.loads(line) for line in ans.body.splitlines() if line]
        assert [e.get("seq") for e in lines[1:]] == list(range(11))
        # Every slow connection timed out.
        await eventually(lambda: not srv.app[CONNECTIONS].per_client.get("127.0.0.1"))
        stop.set()
        await asyncio.gather(*attackers)


async def test_an_unmasked_client_frame_closes_with_1002() -> None:
    """RFC 6455 §5.1: a server must close the connection on a client frame that is not
    masked; the close frame says 1002 (protocol error)."""
    async with served() as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(_handshake())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 ")
        message = b'{"op":"generate","prompt":"x","max_tokens":1}'
        writer.write(b"\x81%c%s" % (len(message), message))  # no mask bit, no key
        got = await read_to_close(reader)
        writer.close()
        reason = b"client frames must be masked"
        assert got == b"\x88%c\x03\xea%s" % (2 + len(reason), reason)
        assert srv.streams == 0  # the unmasked message was never acted on


def _handshake() -> bytes:
    return request_bytes(
        "GET",
        "/api/ws",
        headers={
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
        },
    )


async def test_a_client_gone_during_pongs_is_a_disconnect_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Pings, then a reset (RST) while the server writes the pongs: logged as a client
    that left, never an ERROR traceback."""
    ping = b"\x89\x80\x00\x00\x00\x00"  # a masked ping, empty (mask key 0)
    async with served(ws_max_msgs_per_s=0) as srv:
        for _ in range(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(_handshake())
            await reader.readuntil(b"\r\n\r\n")
            writer.write(ping * 2000)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()  # RST: the server's next write fails
        await eventually(lambda: not srv.app[CONNECTIONS].open)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


def test_the_open_files_limit_is_raised_at_start_and_logged(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard <= 256 or hard == resource.RLIM_INFINITY:
        pytest.fail(f"this test needs a finite hard limit above 256, not {hard}")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tokenwire", "serve", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(Path.cwd())},
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)),
        )
    try:
        for _ in range(200):
            if b"serving on" in log.read_bytes():
                break
            assert proc.poll() is None, log.read_text()
            subprocess.run(["sleep", "0.05"], check=True)
        text = log.read_text()
        assert f"open files limit: {hard} (hard limit {hard})" in text, text
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        assert re.search(rf"Max open files\s+{hard}\s+{hard}", limits), limits
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=HANG)


@pytest.mark.parametrize(
    ("name", "value"),
    [("header_timeout_s", 3601), ("body_timeout_s", -1), ("max_connections_per_client", 10**7)],
)
def test_the_connection_bounds_have_declared_ranges(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=re.escape(name)):
        Settings(**{name: value})
    for low, high in [CONNECTION_RANGES[name]]:
        Settings(**{name: low})
        Settings(**{name: high})
