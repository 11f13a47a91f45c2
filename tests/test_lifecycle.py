"""Cancel (DELETE, WebSocket, abandonment), retention, presence, and shutdown."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import orjson
import pytest

from server.app import drain
from server.appkeys import SETTINGS
from tests.conftest import MakeServer, base_url, create
from tests.readers import TRANSPORTS, read
from tests.spy import spy_sources
from wire import READERS

SLOW = {"ttft_ms": 0, "tokens_per_s": 50, "jitter": 0}


@pytest.fixture
def server_store(store_url: str) -> str:
    """Every test here runs on the memory store and on Redis (one process)."""
    return store_url


async def wait_closed(spy_closed: asyncio.Event) -> None:
    async with asyncio.timeout(10):
        await spy_closed.wait()


async def status(session: aiohttp.ClientSession, base: str, sid: str) -> dict[str, object]:
    async with session.get(f"{base}/api/streams/{sid}") as resp:
        assert resp.status == 200
        return dict(await resp.json())


async def ended(session: aiohttp.ClientSession, base: str, sid: str) -> dict[str, object]:
    """The status once the stream has ended (its final event is appended just after its
    source closed: a store round trip later, with Redis)."""
    for _ in range(500):
        st = await status(session, base, sid)
        if st["state"] != "running":
            return st
        await asyncio.sleep(0.02)
    raise AssertionError(f"stream {sid} still running after 10 s")


async def wait_gone(
    session: aiohttp.ClientSession, base: str, sid: str, gone: dict[str, Any]
) -> None:
    """Look at the stream until it answers 410 (200 meanwhile, 10 s at most), then check
    that every read route answers the same 410."""
    async with asyncio.timeout(10):
        while True:
            async with session.get(f"{base}/api/streams/{sid}") as resp:
                if resp.status == 410:
                    assert await resp.json() == gone
                    break
                assert resp.status == 200
            await asyncio.sleep(0.02)
    for path in ("sse", "chunked", "poll"):
        async with session.get(f"{base}/api/streams/{sid}/{path}") as resp:
            assert resp.status == 410
            assert await resp.json() == gone


async def test_cancel_by_delete_stops_the_source(
    make_server: MakeServer, session: aiohttp.ClientSession
) -> None:
    spy, sources = spy_sources()
    srv = await make_server(sources=sources)
    base = base_url(srv)
    sid = await create(session, srv, prompt="del", max_tokens=1000, params=SLOW)
    head = await read(session, base, "chunked", sid, limit=3)
    async with session.delete(f"{base}/api/streams/{sid}") as resp:
        assert resp.status == 204
        assert await resp.read() == b""
    await wait_closed(spy.closed["del"])
    assert spy.cancelled["del"] is True
    events = await read(session, base, "sse", sid)
    done = events[-1]
    n = done["seq"]
    assert done["type"] == "done"
    assert done["finish_reason"] == "cancelled"
    assert done["tokens"] == n == spy.yielded["del"]
    assert n < 1000
    assert events[:3] == head
    st = await status(session, base, sid)
    assert st["state"] == "done"
    assert st["finish_reason"] == "cancelled"
    assert st["tokens"] == n
    # A second DELETE on a finished stream is still 204 (idempotent).
    async with session.delete(f"{base}/api/streams/{sid}") as resp:
        assert resp.status == 204


async def test_cancel_over_websocket(
    make_server: MakeServer, session: aiohttp.ClientSession
) -> None:
    spy, sources = spy_sources()
    srv = await make_server(sources=sources)
    async with session.ws_connect(f"{base_url(srv)}/api/ws") as ws:
        await ws.send_json({"op": "generate", "prompt": "wsc", "max_tokens": 1000, "params": SLOW})
        created = await ws.receive_json()
        sid = created["stream"]
        first = await ws.receive_json()
        assert first["seq"] == 0
        await ws.send_json({"op": "cancel", "stream": sid})
        events = [first]
        async with asyncio.timeout(10):
            while events[-1]["type"] != "done":
                events.append(await ws.receive_json())
    assert events[-1]["finish_reason"] == "cancelled"
    assert [e["seq"] for e in events] == list(range(len(events)))
    await wait_closed(spy.closed["wsc"])
    assert spy.yielded["wsc"] == events[-1]["tokens"]


@pytest.mark.parametrize("transport", ["sse", "ws", "chunked"])
async def test_abandoned_stream_is_cancelled_after_grace(
    make_server: MakeServer, session: aiohttp.ClientSession, transport: str
) -> None:
    spy, sources = spy_sources()
    srv = await make_server(sources=sources, grace_s=0.3)
    base = base_url(srv)
    sid = await create(session, srv, prompt="abandon", max_tokens=1000, params=SLOW)
    await read(session, base, transport, sid, limit=2)  # read a little, then hang up
    await wait_closed(spy.closed["abandon"])
    st = await ended(session, base, sid)
    assert st["state"] == "done"
    assert st["finish_reason"] == "cancelled"
    assert st["subscribers"] == dict.fromkeys(READERS, 0)


async def test_stream_nobody_reads_is_cancelled(
    make_server: MakeServer, session: aiohttp.ClientSession
) -> None:
    spy, sources = spy_sources()
    srv = await make_server(sources=sources, grace_s=0.2)
    await create(session, srv, prompt="nobody", max_tokens=1000, params=SLOW)
    await wait_closed(spy.closed["nobody"])
    assert spy.cancelled["nobody"] is True


async def test_long_poll_client_counts_as_present_between_polls(
    make_server: MakeServer, session: aiohttp.ClientSession
) -> None:
    spy, sources = spy_sources()
    srv = await make_server(sources=sources, grace_s=0.4)
    base = base_url(srv)
    sid = await create(
        session, srv, prompt="poller", max_tokens=60, params={"ttft_ms": 0, "tokens_per_s": 40}
    )
    # A poller that pauses 0.2 s between polls (less than the grace) keeps it alive.
    events: list[dict[str, object]] = []
    after = -1
    for _ in range(500):
        async with session.get(
            f"{base}/api/streams/{sid}/poll", params={"after": str(after), "timeout": "5"}
        ) as resp:
            body = orjson.loads(await resp.read())
        events.extend(body["events"])
        after = body["next"]
        if body["done"]:
            break
        await asyncio.sleep(0.2)
    assert events[-1]["type"] == "done"
    assert events[-1]["finish_reason"] == "length"
    assert [e["seq"] for e in events] == list(range(61))
    assert spy.cancelled["poller"] is False


async def test_finished_stream_expires_after_retention(
    make_server: MakeServer, session: aiohttp.ClientSession
) -> None:
    srv = await make_server(retention_s=0.2)
    base = base_url(srv)
    sid = await create(session, srv, max_tokens=3, params={"tokens_per_s": 0, "ttft_ms": 0})
    await read(session, base, "poll", sid)
    gone = {"error": {"code": "gone", "message": f"stream {sid!r} has expired"}}
    await wait_gone(session, base, sid, gone)


async def test_retained_memory_bound_forgets_the_oldest_finished_stream(
    make_server: MakeServer, session: aiohttp.ClientSession
) -> None:
    """Past a bound on finished streams' memory, the oldest goes first and answers 410 on
    every route, as after retention_s; /metrics shows the figures."""
    srv = await make_server(max_retained_events_per_client=25)
    base = base_url(srv)
    fast = {"tokens_per_s": 0, "ttft_ms": 0}
    sids = []
    for _ in range(3):  # 11 events each (10 tokens and done): the third passes 25
        sids.append(await create(session, srv, max_tokens=10, params=fast))
        assert len(await read(session, base, "poll", sids[-1])) == 11
    first = sids[0]
    gone = {
        "error": {
            "code": "gone",
            "message": f"stream {first!r} was forgotten early: the server's bound on memory "
            "for finished streams was reached",
        }
    }
    # (the third stream is counted once its generation task has ended)
    await wait_gone(session, base, first, gone)
    for sid in sids[1:]:
        assert len(await read(session, base, "sse", sid)) == 11
    async with session.get(f"{base}/metrics") as resp:
        lines = (await resp.text()).splitlines()
    assert "tokenwire_retained_streams 2.0" in lines
    assert "tokenwire_retained_events 22.0" in lines
    assert 'tokenwire_streams_forgotten_total{bound="client_events"} 1.0' in lines
    (nbytes,) = [ln for ln in lines if ln.startswith("tokenwire_retained_bytes ")]
    retained = float(nbytes.split()[1])
    if srv.app[SETTINGS].store == "memory":
        assert 0 < retained < 22 * 100  # compact logs: well under 100 B/event
    else:
        assert retained > 0  # Redis's MEMORY USAGE of the two logs


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_shutdown_with_streams_open(
    make_server: MakeServer, session: aiohttp.ClientSession, transport: str
) -> None:
    srv = await make_server(shutdown_timeout_s=5, shutdown_drain_s=0.3)
    base = base_url(srv)
    sid = await create(session, srv, max_tokens=4000, params=SLOW)
    reader = asyncio.create_task(read(session, base, transport, sid))
    async with asyncio.timeout(10):
        while True:  # wait until the reader is attached
            st = await status(session, base, sid)
            if st["subscribers"][transport] and st["tokens"]:  # type: ignore[index]
                break
            await asyncio.sleep(0.02)
    close_codes: list[int | None] = []

    async def watch_close() -> None:
        async with session.ws_connect(f"{base}/api/ws") as ws:
            await ws.send_json({"op": "subscribe", "stream": sid})
            async for _ in ws:
                pass
            close_codes.append(ws.close_code)

    watcher = asyncio.create_task(watch_close())
    await asyncio.sleep(0.1)
    async with asyncio.timeout(15):
        await drain(srv.app)
        await srv.close()
        events = await reader
        await watcher
    last = events[-1]
    assert last["type"] == "error"
    assert last["code"] == "shutdown"
    assert last["message"] == "the server is shutting down"
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert close_codes == [1001]


async def test_a_stuck_reader_is_dropped_and_slows_no_one(
    make_server: MakeServer, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that never reads fills its socket, is dropped after the send timeout, and
    meanwhile the generation and another reader of the same stream run to the end."""
    import socket

    caplog.set_level(logging.INFO, logger="tokenwire.transport")
    # 60k events of ~120 bytes outgrow the kernel's socket buffers (4 MiB at most here).
    n = 60_000
    srv = await make_server(send_timeout_s=0.5, max_tokens_cap=n, max_log_events=n + 1)
    base = base_url(srv)
    sid = await create(session, srv, max_tokens=n, params={"tokens_per_s": 0, "ttft_ms": 300})
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(stuck, ("127.0.0.1", srv.port or 0))
    await loop.sock_sendall(
        stuck, f"GET /api/streams/{sid}/sse HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    )
    dropped = asyncio.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == f"dropping a sse client of {sid}: send timed out":
                loop.call_soon_threadsafe(dropped.set)

    watch = Watch()
    logging.getLogger("tokenwire.transport").addHandler(watch)
    try:
        events = await read(session, base, "chunked", sid)
        assert [e["seq"] for e in events] == list(range(n + 1))
        assert events[-1]["finish_reason"] == "length"
        async with asyncio.timeout(10):
            await dropped.wait()
        # The drop is logged before the reader's count goes down (on the Redis store, a
        # round trip later): look again, a bounded number of times.
        for _ in range(50):
            st = await status(session, base, sid)
            if st["subscribers"] == dict.fromkeys(READERS, 0):
                break
            await asyncio.sleep(0.1)
        assert st["subscribers"] == dict.fromkeys(READERS, 0)
    finally:
        logging.getLogger("tokenwire.transport").removeHandler(watch)
        stuck.close()
