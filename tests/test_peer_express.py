"""The Express peer (``bench/peers/express/server.js``) as a real Node process on a real port:
every route's exact bytes against tokenwire's own encoding and framing, a fan-out, a long-poll
sequence, and ``bench.overhead`` reading it with zero failures.

The expected bytes are built with tokenwire's encoder (msgspec) and framing functions from the
text ``synthetic_text`` gives, so a difference in JSON escaping, key order or framing fails.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import orjson
import pytest

from bench import overhead
from bench.lab import REPO, Server, free_port, stop_server, wait_ready
from bench.peers import HERE as PEERS_DIR
from bench.peers import PEERS, write_pieces
from server.events import Event
from server.framing.longpoll import poll_body
from server.framing.sse import sse_control, sse_frames
from server.sources.synthetic import corpus_pieces, synthetic_text

#: The peer serves the hard cases: every escape a JSON encoder can get wrong.
CORPUS = "hard-cases"

EXPRESS = PEERS_DIR / "express"
FAST = {"tokens_per_s": 0, "ttft_ms": 0}
JSON_HEADERS = {"Content-Type": "application/json"}
T_FIELD = re.compile(rb',"t":(\d+)\}$')


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Express peer on a free loopback port, until the module's tests are done."""
    if not (EXPRESS / "node_modules" / "express").is_dir():
        pytest.fail("bench/peers/express/node_modules is missing: run `make express-deps`")
    tmp = tmp_path_factory.mktemp("express")
    pieces = tmp / "pieces.json"
    write_pieces(pieces, CORPUS)
    port = free_port()
    log = tmp / "express.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            PEERS["express"]("127.0.0.1", port, pieces),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = Server(f"http://127.0.0.1:{port}", proc.pid, proc, log)
    try:
        wait_ready(server, 15.0)
        yield server.base
    finally:
        assert stop_server(server) == 0, log.read_text()


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as s:
        yield s


# ---------------------------------------------------------------------------------------
# What tokenwire would send for the same stream


def expected_events(stream: str, prompt: str, n: int, ts: list[int]) -> list[Event]:
    """The events tokenwire encodes for this prompt (seed 0), with the peer's ``t`` stamps."""
    encode = msgspec.json.Encoder().encode
    text = synthetic_text(prompt, 0, n, CORPUS)
    events = [
        Event(
            i,
            "token",
            encode({"stream": stream, "seq": i, "type": "token", "text": piece, "t": ts[i]}),
        )
        for i, piece in enumerate(text)
    ]
    digest = hashlib.sha256("".join(text).encode()).hexdigest()
    done = {"stream": stream, "seq": n, "type": "done", "finish_reason": "length"}
    done |= {"tokens": n, "sha256": digest, "t": ts[n]}
    return [*events, Event(n, "done", encode(done))]


def stamps(raw: bytes) -> list[int]:
    """Every event's ``t``, in order, from a body or a list of event lines."""
    return [int(m) for m in re.findall(rb',"t":(\d+)\}', raw)]


def created(stream: str) -> bytes:
    return b'{"type":"created","stream":"%s"}' % stream.encode()


def body(prompt: str, n: int, params: dict[str, float] | None = None) -> bytes:
    return orjson.dumps({"prompt": prompt, "max_tokens": n, "params": params or FAST})


# ---------------------------------------------------------------------------------------
# Create and stream


async def test_sse_exact_bytes(peer: str, session: aiohttp.ClientSession) -> None:
    async with session.post(
        f"{peer}/api/sse", data=body("sse bytes", 25), headers=JSON_HEADERS
    ) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert r.headers["Cache-Control"] == "no-cache, no-transform"
        sid = r.headers["Tokenwire-Stream"]
        raw = await r.read()
    assert len(sid) == 16
    events = expected_events(sid, "sse bytes", 25, stamps(raw))
    assert raw == sse_control("created", created(sid)) + sse_frames(events)


async def test_chunked_exact_bytes(peer: str, session: aiohttp.ClientSession) -> None:
    url = f"{peer}/api/chunked"
    async with session.post(url, data=body("ndjson bytes", 25), headers=JSON_HEADERS) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "application/x-ndjson; charset=utf-8"
        sid = r.headers["Tokenwire-Stream"]
        raw = await r.read()
    events = expected_events(sid, "ndjson bytes", 25, stamps(raw))
    assert raw == created(sid) + b"\n" + b"".join(e.data + b"\n" for e in events)


async def test_ws_exact_messages(peer: str, session: aiohttp.ClientSession) -> None:
    async with session.ws_connect(f"{peer}/api/ws") as ws:
        # Two generations on one socket, one after the other.
        for prompt in ("ws one", "ws two"):
            op = {"op": "generate", "prompt": prompt, "max_tokens": 12, "params": FAST}
            await ws.send_str(json.dumps(op))
            first = await ws.receive_str()
            sid = orjson.loads(first)["stream"]
            assert first.encode() == created(sid)
            got = [(await ws.receive_str()).encode() for _ in range(13)]
            events = expected_events(sid, prompt, 12, [stamps(m)[0] for m in got])
            assert got == [e.data for e in events]
        await ws.send_str('{"op":"subscribe"}')
        assert orjson.loads(await ws.receive_str())["code"] == "unknown_op"


async def test_every_corpus_piece_is_escaped_like_msgspec(
    peer: str, session: aiohttp.ClientSession
) -> None:
    """One stream of as many tokens as the corpus has pieces holds each piece once (CR, LF,
    quotes, backslashes, CJK, emoji): the peer's JSON strings equal msgspec's."""
    n = len(corpus_pieces(CORPUS))
    url = f"{peer}/api/chunked"
    async with session.post(url, data=body("escapes", n), headers=JSON_HEADERS) as r:
        lines = (await r.read()).split(b"\n")
    sid = orjson.loads(lines[0])["stream"]
    events = expected_events(sid, "escapes", n, stamps(b"".join(lines[1:])))
    assert lines[1:-1] == [e.data for e in events]
    assert {orjson.loads(line)["text"] for line in lines[1:-2]} == set(corpus_pieces(CORPUS))


async def test_t_is_wall_clock_ns(peer: str, session: aiohttp.ClientSession) -> None:
    before = time.time_ns()
    async with session.post(
        f"{peer}/api/chunked", data=body("clock", 5), headers=JSON_HEADERS
    ) as r:
        raw = await r.read()
    after = time.time_ns()
    ts = stamps(raw)
    assert len(ts) == 6
    assert ts == sorted(ts)
    # The anchor is read once at start with sub-millisecond precision: allow 2 ms either way.
    assert before - 2_000_000 <= ts[0]
    assert ts[-1] <= after + 2_000_000


async def test_pacing_and_defaults(peer: str, session: aiohttp.ClientSession) -> None:
    """``ttft_ms`` and ``tokens_per_s`` pace the stream; no ``params`` means 256 tokens at the
    defaults (only its first tokens are read here)."""
    paced = body("paced", 6, {"tokens_per_s": 50, "ttft_ms": 100})
    sent = time.time_ns()
    async with session.post(f"{peer}/api/chunked", data=paced, headers=JSON_HEADERS) as r:
        raw = await r.read()
    assert len(raw.splitlines()) == 8
    # Token k is due 100 ms + k x 20 ms after the request, on an absolute schedule (a late
    # timer makes a token late, never the next one early); 3 ms for the clocks and timers.
    ts = stamps(raw)
    for k in range(6):
        assert (ts[k] - sent) / 1e6 >= 100 + 20 * k - 3, (k, ts)
    plain = orjson.dumps({"prompt": "defaults"})
    async with session.post(f"{peer}/api/chunked", data=plain, headers=JSON_HEADERS) as r:
        sid = r.headers["Tokenwire-Stream"]
        lines = [await r.content.readline() for _ in range(3)]
    expected = expected_events(sid, "defaults", 256, [0] * 257)
    assert [T_FIELD.sub(b',"t":0}', line.rstrip(b"\n")) for line in lines[1:]] == [
        e.data for e in expected[:2]
    ]


async def test_bad_requests(peer: str, session: aiohttp.ClientSession) -> None:
    async with session.post(f"{peer}/api/sse", data=b"{", headers=JSON_HEADERS) as r:
        assert (r.status, (await r.json())["error"]["code"]) == (400, "bad_json")
    bad = orjson.dumps({"prompt": "x", "max_tokens": 0})
    async with session.post(f"{peer}/api/streams", data=bad, headers=JSON_HEADERS) as r:
        assert r.status == 400
        assert await r.json() == {
            "error": {
                "code": "invalid_field",
                "message": "max_tokens: must be an integer from 1 to 4096",
            }
        }
    async with session.get(f"{peer}/api/streams/nope/poll") as r:
        assert r.status == 404
        assert await r.json() == {
            "error": {"code": "unknown_stream", "message": "no stream 'nope'"}
        }


# ---------------------------------------------------------------------------------------
# One generation, many readers


async def create_stream(session: aiohttp.ClientSession, peer: str, data: bytes) -> str:
    async with session.post(f"{peer}/api/streams", data=data, headers=JSON_HEADERS) as r:
        assert r.status == 201
        reply = await r.json()
        assert r.headers["Location"] == f"/api/streams/{reply['id']}"
        assert list(reply) == ["id"]
        return str(reply["id"])


async def test_fanout_every_reader_gets_every_event(
    peer: str, session: aiohttp.ClientSession
) -> None:
    sid = await create_stream(
        session, peer, body("fan out", 30, {"tokens_per_s": 200, "ttft_ms": 200})
    )

    async def read(route: str, delay: float) -> bytes:
        await asyncio.sleep(delay)
        async with session.get(f"{peer}/api/streams/{sid}/{route}") as r:
            assert r.status == 200
            return await r.read()

    # Ten readers of each kind before the first token, mid-stream and after the end.
    delays = [0.0] * 6 + [0.28] * 2 + [0.6] * 2
    sse, ndjson = await asyncio.gather(
        asyncio.gather(*(read("sse", d) for d in delays)),
        asyncio.gather(*(read("chunked", d) for d in delays)),
    )
    events = expected_events(sid, "fan out", 30, stamps(ndjson[0]))
    assert all(raw == sse_frames(events) for raw in sse)
    assert all(raw == b"".join(e.data + b"\n" for e in events) for raw in ndjson)
    async with session.get(f"{peer}/api/streams/{sid}/chunked?after=27") as r:
        assert (
            await r.read()
            == events[28].data + b"\n" + events[29].data + b"\n" + events[30].data + b"\n"
        )


async def test_long_poll_sequence(peer: str, session: aiohttp.ClientSession) -> None:
    sid = await create_stream(
        session, peer, body("long poll", 10, {"tokens_per_s": 40, "ttft_ms": 300})
    )
    url = f"{peer}/api/streams/{sid}/poll"
    async with session.get(f"{url}?after=-1&timeout=0.1") as r:  # before the first token
        assert r.headers["Content-Type"].startswith("application/json")
        assert r.headers["Cache-Control"] == "no-store"
        assert await r.read() == b'{"events":[],"next":-1,"done":false}'
    pages: list[bytes] = []
    after = -1
    while True:
        async with session.get(f"{url}?after={after}&timeout=5") as r:
            assert r.status == 200
            raw = await r.read()
        pages.append(raw)
        page = orjson.loads(raw)
        after = page["next"]
        if page["done"]:
            break
    events = expected_events(sid, "long poll", 10, stamps(b"".join(pages)))
    # Each answer holds what was there when it was asked (paced: mostly one event), and
    # ``next`` is the last seq it holds.
    at = -1
    for raw in pages:
        k = len(orjson.loads(raw)["events"])
        assert k >= 1
        assert raw == poll_body(events[at + 1 : at + 1 + k], at, at + k == 10)
        at += k
    assert at == 10
    async with session.get(f"{url}?after=10&timeout=5") as r:  # nothing after done
        assert await r.read() == b'{"events":[],"next":10,"done":true}'
    async with session.get(f"{url}?after=7") as r:  # a batch of what is there
        assert await r.read() == poll_body(events[8:], 7, True)


async def test_healthz_counts_live_streams(peer: str, session: aiohttp.ClientSession) -> None:
    sid = await create_stream(session, peer, body("live", 3, {"tokens_per_s": 10, "ttft_ms": 0}))
    async with session.get(f"{peer}/healthz") as r:
        assert await r.json() == {"status": "ok", "live_streams": 1}
    async with session.get(f"{peer}/api/streams/{sid}/poll?after=2&timeout=5") as r:
        assert orjson.loads(await r.read())["done"] is True
    async with session.get(f"{peer}/healthz") as r:
        assert await r.json() == {"status": "ok", "live_streams": 0}


# ---------------------------------------------------------------------------------------
# The load client


def test_overhead_reads_the_peer_without_failures(peer: str, tmp_path: Path) -> None:
    out = tmp_path / "overhead.json"
    argv = ["--url", peer, "--transports", "sse,ws,poll,chunked", "--concurrency", "1,10"]
    argv += ["--tokens", "40", "--cell-tokens", "400", "--no-warmup", "--plain"]
    assert overhead.main([*argv, "--json", str(out)]) == 0
    cells = json.loads(out.read_text())["cells"]
    assert [(c["transport"], c["concurrency"]) for c in cells] == [
        (t, c) for c in (1, 10) for t in ("sse", "ws", "poll", "chunked")
    ]
    for cell in cells:
        assert (cell["streams"], cell["tokens"], cell["failures"]) == (10, 400, 0), cell
