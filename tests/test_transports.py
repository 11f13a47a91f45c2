"""One stream, four transports: identical events, resume, late join, gone, hard cases."""

from __future__ import annotations

import asyncio
import hashlib

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from server.sources.synthetic import corpus, corpus_pieces, synthetic_text
from tests.conftest import MakeServer, base_url, create
from tests.readers import TRANSPORTS, read, text_of

transports = pytest.mark.parametrize("transport", TRANSPORTS)
FAST = {"ttft_ms": 0, "tokens_per_s": 400, "jitter": 0.5}


@pytest.fixture
def server_store(store_url: str) -> str:
    """Every test here runs on the memory store and on Redis (one process)."""
    return store_url


def check_complete(events: list[dict[str, object]], stream_id: str, n: int) -> None:
    """Exactly seq 0..n, every event of this stream, tokens then one done."""
    assert [e["seq"] for e in events] == list(range(n + 1))
    assert all(e["stream"] == stream_id for e in events)
    assert [e["type"] for e in events] == ["token"] * n + ["done"]
    done = events[-1]
    assert done["tokens"] == n
    assert done["sha256"] == hashlib.sha256(text_of(events).encode()).hexdigest()  # type: ignore[arg-type]


async def test_same_stream_over_all_four_transports_at_once(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    sid = await create(session, server, prompt="fan out", max_tokens=60, params=FAST)
    base = base_url(server)
    results = await asyncio.gather(*(read(session, base, t, sid) for t in TRANSPORTS))
    first = results[0]
    check_complete(first, sid, 60)
    for other in results[1:]:
        assert other == first  # the same objects, byte for byte, t stamps included
    assert text_of(first) == "".join(synthetic_text("fan out", 0, 60))
    assert first[-1]["finish_reason"] == "length"


@transports
async def test_resume_after_client_cut(
    server: TestServer, session: aiohttp.ClientSession, transport: str
) -> None:
    sid = await create(session, server, prompt="resume me", max_tokens=40, params=FAST)
    base = base_url(server)
    head = await read(session, base, transport, sid, limit=13)
    assert [e["seq"] for e in head][:13] == list(range(13))
    head = head[:13]
    tail = await read(session, base, transport, sid, after=head[-1]["seq"])
    check_complete(head + tail, sid, 40)


async def test_sse_resume_prefers_last_event_id(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    from tests.readers import read_sse

    sid = await create(session, server, max_tokens=10, params={"tokens_per_s": 0, "ttft_ms": 0})
    # (read it whole first: a resume after seq 6 of a log that does not hold seq 6 yet is
    # a 416, and on the Redis store the unpaced events may still be on their way there)
    await read(session, base_url(server), "chunked", sid)
    url = f"{base_url(server)}/api/streams/{sid}/sse"
    events = await read_sse(session, url, after=1, last_event_id="6")
    assert [e["seq"] for e in events] == [7, 8, 9, 10]
    # All delivered: a reconnecting EventSource gets 204 and stops.
    async with session.get(url, headers={"Last-Event-ID": "10"}) as resp:
        assert resp.status == 204
        assert await resp.read() == b""


@transports
async def test_late_join_reads_from_the_start(
    server: TestServer, session: aiohttp.ClientSession, transport: str
) -> None:
    sid = await create(session, server, max_tokens=25, params={"tokens_per_s": 0})
    base = base_url(server)
    await read(session, base, "chunked", sid)  # wait until it is finished
    events = await read(session, base, transport, sid)
    check_complete(events, sid, 25)
    middle = await read(session, base, transport, sid, after=19)
    assert [e["seq"] for e in middle] == [20, 21, 22, 23, 24, 25]


@transports
async def test_hard_cases_round_trip_byte_for_byte(
    server: TestServer, session: aiohttp.ClientSession, transport: str
) -> None:
    n = 2 * len(corpus_pieces("hard-cases"))  # wraps the whole text at least once
    params = {"tokens_per_s": 0, "ttft_ms": 0, "corpus": "hard-cases"}
    sid = await create(session, server, prompt="hard", max_tokens=n, params=params)
    events = await read(session, base_url(server), transport, sid)
    check_complete(events, sid, n)
    assert [e["text"] for e in events[:-1]] == synthetic_text("hard", 0, n, "hard-cases")
    text = text_of(events)
    assert corpus("hard-cases") in text
    for hard in (
        "\r\n",
        "\rright",
        "\ndata: this",
        "\nevent: and",
        "안녕하세요",
        "👩\u200d💻",
        "🇰🇷",
        '"double"',
        "\\\\",
        "\t",
        "<script>",
    ):
        assert hard in text


@transports
async def test_gone_for_an_evicted_position(
    make_server: MakeServer, session: aiohttp.ClientSession, transport: str
) -> None:
    srv = await make_server(max_log_events=8)
    base = base_url(srv)
    sid = await create(session, srv, max_tokens=30, params={"tokens_per_s": 0, "ttft_ms": 0})
    async with session.get(f"{base}/api/streams/{sid}/poll", params={"after": "29"}) as resp:
        body = await resp.json()
        assert body["done"] is True
    # Retained: seqs 23..30. after=22 is still complete; after=21 would miss seq 22.
    tail = await read(session, base, transport, sid, after=22)
    assert [e["seq"] for e in tail] == list(range(23, 31))
    expected = {
        "code": "gone",
        "message": "events after seq 21 are no longer retained; the oldest retained seq is 23",
    }
    if transport == "ws":
        async with session.ws_connect(f"{base}/api/ws") as ws:
            await ws.send_json({"op": "subscribe", "stream": sid, "after": 21})
            assert await ws.receive_json() == {"type": "error", "stream": sid, **expected}
        return
    path = {"sse": "sse", "chunked": "chunked", "poll": "poll"}[transport]
    async with session.get(f"{base}/api/streams/{sid}/{path}", params={"after": "21"}) as resp:
        assert resp.status == 410
        assert await resp.json() == {"error": expected}


@pytest.mark.parametrize("transport", ["sse", "ws", "chunked"])
async def test_create_and_stream_in_one_request(
    server: TestServer, session: aiohttp.ClientSession, transport: str
) -> None:
    """POST /api/sse, POST /api/chunked and WebSocket generate tell the id first."""
    from clients.decoders import NDJSONDecoder, SSEDecoder

    base = base_url(server)
    body = {"prompt": "one shot", "max_tokens": 12, "params": FAST}
    events: list[dict[str, object]] = []
    created: dict[str, object] = {}
    if transport == "ws":
        async with session.ws_connect(f"{base}/api/ws") as ws:
            await ws.send_str(orjson.dumps({"op": "generate", **body}).decode())
            created = await ws.receive_json()
            async for m in ws:
                events.append(orjson.loads(m.data))
                if events[-1]["type"] == "done":
                    break
    else:
        async with session.post(f"{base}/api/{transport}", data=orjson.dumps(body)) as resp:
            assert resp.status == 200
            sid_header = resp.headers["Tokenwire-Stream"]
            assert resp.headers["Location"] == f"/api/streams/{sid_header}"
            dec = SSEDecoder() if transport == "sse" else NDJSONDecoder()
            items: list[object] = []
            async for chunk in resp.content.iter_any():
                items.extend(dec.feed(chunk))
            if transport == "sse":
                assert items[0].event == "created"  # type: ignore[attr-defined]
                assert items[0].last_event_id == ""  # type: ignore[attr-defined]
                parsed = [orjson.loads(m.data) for m in items]  # type: ignore[attr-defined]
            else:
                parsed = items  # type: ignore[assignment]
            created, events = parsed[0], parsed[1:]  # type: ignore[assignment]
            assert created["stream"] == sid_header
    assert created == {"type": "created", "stream": created["stream"]}
    check_complete(events, str(created["stream"]), 12)
    assert text_of(events) == "".join(synthetic_text("one shot", 0, 12))


async def test_a_paced_sse_stream_gets_pings_in_its_silences_and_arrives_whole(
    make_server: MakeServer, session: aiohttp.ClientSession
) -> None:
    """A paced stream's reader takes its tokens in the generation's step (pushed, its own
    task asleep): its heartbeat still comes after ``heartbeat_s`` of silence (here gaps
    of 0.4 s, heartbeats of 0.1 s: pings between the tokens), and the stream is exact."""
    srv = await make_server(heartbeat_s=0.1)
    params = {"ttft_ms": 0, "tokens_per_s": 2.5, "jitter": 0}
    sid = await create(session, srv, prompt="pings", max_tokens=3, params=params)
    async with session.get(f"{base_url(srv)}/api/streams/{sid}/sse") as resp:
        assert resp.status == 200
        body = (await resp.read()).decode()
    blocks = [b for b in body.split("\n\n") if b]
    kinds = ["ping" if b.startswith(":") else b.split("\n")[1] for b in blocks[1:]]
    tokens = [i for i, k in enumerate(kinds) if k == "event: token"]
    assert len(tokens) == 3
    assert kinds[-1] == "event: done"
    between = kinds[tokens[0] + 1 : tokens[-1]]
    # At least one ping in the 0.8 s of silences (none only if a stall of the whole
    # schedule let every token come within 0.1 s of the one before); nothing else.
    assert between.count("ping") >= 1
    assert set(between) == {"ping", "event: token"}
    text = "".join(
        orjson.loads(b.split("data: ", 1)[1])["text"] for b in blocks if "event: token" in b
    )
    assert text == "".join(synthetic_text("pings", 0, 3))
