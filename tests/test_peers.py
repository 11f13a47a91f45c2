"""The Python peers of the race (``bench/peers/``), each a real subprocess on a real port,
started as ``bench.peers.PEERS`` starts it: every route answers the exact stream.

Streams are read with the bench's own readers (``bench.overhead``: the clients' decoders
and :class:`clients.check.StreamCheck`), and the text is compared with the synthetic
source's for the prompt. Nothing here measures time.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import orjson
import pytest

from bench import overhead
from bench.lab import free_port
from bench.peers import PEERS
from clients.check import StreamCheck
from clients.decoders import NDJSONDecoder, SSEDecoder
from server.sources.synthetic import synthetic_text

PYTHON_PEERS = ["aiohttp", "fastapi", "flask"]
UNPACED = {"tokens_per_s": 0, "ttft_ms": 0}
JSON = {"Content-Type": "application/json"}


def expected_text(prompt: str, n: int) -> str:
    return "".join(synthetic_text(prompt, 0, n))


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def body(prompt: str, n: int, params: dict[str, Any] | None = None) -> bytes:
    return orjson.dumps({"prompt": prompt, "max_tokens": n, "params": params or UNPACED})


@pytest.fixture(scope="module", params=PYTHON_PEERS)
def peer(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A peer serving on a free loopback port; its base URL. Stopped (SIGTERM, bounded)
    at the end of the module's tests for it: it must exit 0, with no traceback."""
    port = free_port()
    argv = PEERS[request.param]("127.0.0.1", port, Path("unused.json"))
    log = tmp_path_factory.mktemp(f"peer-{request.param}") / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"{request.param} exited: {log.read_text()[-2000:]}"
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=1) as resp:
                    health = orjson.loads(resp.read())
                break
            except OSError:
                assert time.monotonic() < deadline, f"{request.param} never answered /healthz"
                time.sleep(0.1)
        assert health == {"status": "ok", "live_streams": 0}
        yield base
    finally:
        proc.terminate()
        try:
            code = proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(5)
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
    assert code == 0, f"{request.param} exited {code} on SIGTERM: {log.read_text()[-2000:]}"


@pytest.mark.parametrize("transport", ["sse", "chunked", "ws", "poll"])
async def test_create_and_read_exact(peer: str, transport: str) -> None:
    prompt, n = f"peer {transport}", 60
    tally = overhead.CellTally()
    check = StreamCheck(tally.report, sent_ns=time.time_ns(), max_tokens=n)
    async with aiohttp.ClientSession() as session:
        await overhead.STREAM_READERS[transport](session, peer, body(prompt, n), check, tally)
    check.end()
    assert check.tokens == n
    assert check.sha256 == sha256(expected_text(prompt, n))
    assert check.stream_id is not None
    assert len(check.stream_id) == 16


async def test_sse_bytes_are_tokenwires(peer: str) -> None:
    """The create-and-stream SSE response, byte for byte: ``retry:``, the ``created`` control
    event, then ``id:``/``event:``/``data:`` per event with tokenwire's JSON."""
    prompt, n = "bytes", 3
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{peer}/api/sse", data=body(prompt, n), headers=JSON) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        stream_id = resp.headers["Tokenwire-Stream"]
        raw = await resp.read()
    frames = raw.split(b"\n\n")
    assert frames[:2] == [
        b"retry: 1000",
        b'event: created\ndata: {"type":"created","stream":"%s"}' % stream_id.encode(),
    ]
    assert frames[-1] == b""
    text = expected_text(prompt, n)
    events = [orjson.loads(f.split(b"\ndata: ", 1)[1]) for f in frames[2:-1]]
    want: list[dict[str, Any]] = [
        {"stream": stream_id, "seq": i, "type": "token", "text": piece, "t": ev["t"]}
        for i, (piece, ev) in enumerate(zip(synthetic_text(prompt, 0, n), events, strict=False))
    ]
    want.append(
        {
            "stream": stream_id,
            "seq": n,
            "type": "done",
            "finish_reason": "length",
            "tokens": n,
            "sha256": sha256(text),
            "t": events[-1]["t"],
        }
    )
    expected = [
        b"id: %d\nevent: %s\ndata: %s" % (w["seq"], w["type"].encode(), msgspec.json.encode(w))
        for w in want
    ]
    assert frames[2:-1] == expected


async def test_chunked_starts_with_created(peer: str) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{peer}/api/chunked", data=body("nd", 2), headers=JSON) as resp,
    ):
        assert resp.headers["Content-Type"] == "application/x-ndjson; charset=utf-8"
        stream_id = resp.headers["Tokenwire-Stream"]
        lines = (await resp.read()).split(b"\n")
    assert lines[0] == b'{"type":"created","stream":"%s"}' % stream_id.encode()
    assert [orjson.loads(line)["seq"] for line in lines[1:-1]] == [0, 1, 2]
    assert lines[-1] == b""


async def create(session: aiohttp.ClientSession, base: str, data: bytes) -> str:
    async with session.post(f"{base}/api/streams", data=data, headers=JSON) as resp:
        assert resp.status == 201
        created = await resp.json()
        assert resp.headers["Location"] == f"/api/streams/{created['id']}"
    assert set(created) == {"id", "links"}
    return str(created["id"])


async def read_subscriber(
    session: aiohttp.ClientSession, base: str, stream_id: str, transport: str, n: int
) -> StreamCheck:
    check = StreamCheck(lambda *_: None, sent_ns=time.time_ns(), max_tokens=n, stream_id=stream_id)
    async with session.get(f"{base}/api/streams/{stream_id}/{transport}") as resp:
        assert resp.status == 200, await resp.text()
        decoder: SSEDecoder | NDJSONDecoder = (
            SSEDecoder() if transport == "sse" else NDJSONDecoder()
        )
        async for chunk in resp.content.iter_any():
            for item in decoder.feed(chunk):
                ev = orjson.loads(item.data) if transport == "sse" else item
                check.event(ev, time.time_ns())
    check.end()
    return check


async def test_fan_out_readers_all_exact(peer: str) -> None:
    """20 readers of one paced stream (10 SSE, 10 chunked) each get every event from the
    start, whenever they joined; a reader after the end too; one past the end gets 204."""
    prompt, n = "fan-out", 40
    async with aiohttp.ClientSession() as session:
        stream_id = await create(
            session, peer, body(prompt, n, {"tokens_per_s": 400, "ttft_ms": 20})
        )
        readers = [
            read_subscriber(session, peer, stream_id, t, n)
            for t in ("sse", "chunked")
            for _ in range(10)
        ]
        checks = await asyncio.gather(*readers)
        checks.append(await read_subscriber(session, peer, stream_id, "sse", n))
        checks.append(await read_subscriber(session, peer, stream_id, "chunked", n))
        for t in ("sse", "chunked"):
            url = f"{peer}/api/streams/{stream_id}/{t}?after={n}"
            async with session.get(url) as resp:
                assert resp.status == 204
    want = sha256(expected_text(prompt, n))
    assert [(c.tokens, c.sha256) for c in checks] == [(n, want)] * 22


async def test_sse_resumes_after_last_event_id(peer: str) -> None:
    prompt, n = "resume", 10
    async with aiohttp.ClientSession() as session:
        stream_id = await create(session, peer, body(prompt, n))
        await read_subscriber(session, peer, stream_id, "sse", n)  # until it ended
        url = f"{peer}/api/streams/{stream_id}/sse"
        async with session.get(url, headers={"Last-Event-ID": "6"}) as resp:
            decoder = SSEDecoder()
            seqs = [int(m.last_event_id) for m in decoder.feed(await resp.read())]
    assert seqs == [7, 8, 9, 10]


async def test_long_poll_sequence_exact(peer: str) -> None:
    """Polls from -1 until ``done``, each ``next`` following its events; the whole text exact;
    a poll past the end answers at once with no events and ``done``."""
    prompt, n = "long poll", 30
    check = StreamCheck(lambda *_: None, sent_ns=time.time_ns(), max_tokens=n)
    async with aiohttp.ClientSession() as session:
        check.stream_id = await create(
            session, peer, body(prompt, n, {"tokens_per_s": 300, "ttft_ms": 0})
        )
        url = f"{peer}/api/streams/{check.stream_id}/poll"
        after, polls = -1, 0
        while True:
            async with session.get(url, params={"after": after, "timeout": 10}) as resp:
                assert resp.status == 200
                assert resp.headers["Cache-Control"] == "no-store"
                raw = await resp.read()
            page = orjson.loads(raw)
            assert list(page) == ["events", "next", "done"]
            polls += 1
            for ev in page["events"]:
                check.event(ev, time.time_ns())
            assert page["next"] == (page["events"][-1]["seq"] if page["events"] else after)
            after = page["next"]
            if page["done"]:
                break
        check.end()
        async with session.get(url, params={"after": n, "timeout": 10}) as resp:
            assert await resp.read() == b'{"events":[],"next":%d,"done":true}' % n
    assert check.sha256 == sha256(expected_text(prompt, n))
    assert polls >= 1


async def test_bad_input_is_a_400_json_error(peer: str) -> None:
    async with aiohttp.ClientSession() as session:
        for route in ("/api/sse", "/api/chunked", "/api/streams"):
            bad = orjson.dumps({"prompt": "x", "max_tokens": "many"})
            async with session.post(f"{peer}{route}", data=bad, headers=JSON) as resp:
                assert resp.status == 400
                err = (await resp.json())["error"]
                assert err["code"] == "invalid_field"
                assert "max_tokens" in err["message"]
        async with session.get(f"{peer}/api/streams/nope/poll") as resp:
            assert resp.status == 404
            assert await resp.json() == {
                "error": {"code": "unknown_stream", "message": "no stream 'nope'"}
            }
        async with session.ws_connect(f"{peer}/api/ws") as ws:
            await ws.send_str('{"op":"generate","prompt":"x","max_tokens":0}')
            error = orjson.loads(await ws.receive_str())
            assert (error["type"], error["code"]) == ("error", "invalid_field")
            assert "max_tokens" in error["message"]
            await ws.send_str(
                body("after an error", 2).decode().replace("{", '{"op":"generate",', 1)
            )
            created = orjson.loads(await ws.receive_str())
            assert created["type"] == "created"
            seqs = [orjson.loads(await ws.receive_str())["seq"] for _ in range(3)]
    assert seqs == [0, 1, 2]


async def live_streams(session: aiohttp.ClientSession, base: str) -> int:
    async with session.get(f"{base}/healthz") as resp:
        health = await resp.json()
    assert health["status"] == "ok"
    return int(health["live_streams"])


@pytest.mark.parametrize("route", ["/api/sse", "/api/chunked"])
async def test_a_client_leaving_ends_its_stream(peer: str, route: str) -> None:
    """A reader that leaves mid-stream: the peer notices (``live_streams`` back to 0) and
    logs no traceback (the fixture checks the log)."""
    data = body("leaving", 2000, {"tokens_per_s": 100, "ttft_ms": 0})
    async with aiohttp.ClientSession() as session:
        async with aiohttp.ClientSession() as reader:
            resp = await reader.post(f"{peer}{route}", data=data, headers=JSON)
            assert resp.status == 200
            await resp.content.readline()
            assert await live_streams(session, peer) == 1
            resp.close()
        for _ in range(100):
            if await live_streams(session, peer) == 0:
                break
            await asyncio.sleep(0.1)
        assert await live_streams(session, peer) == 0
