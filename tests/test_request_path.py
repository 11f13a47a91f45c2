"""The request path's writes: what goes out together, read as chunks off a raw socket
(each write of a chunked answer is one chunk), and the readers and streams counted on
``/metrics``. Exact bytes and counts; no timing."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest

from clients.decoders import SSEDecoder
from server.appkeys import HUB
from server.events import TokenEncoder, done_event
from server.framing.longpoll import poll_body
from server.transports.longpoll import poll_batch
from server.transports.ws import SocketSession
from tests.faults.hostile import eventually, exchange, request_bytes, served


def chunks(raw: bytes) -> list[bytes]:
    """A chunked answer's chunks, as written (the last-chunk ``0`` not included)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    out = []
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            assert rest == b"\r\n"
            return out
        out.append(rest[:size])
        assert rest[size : size + 2] == b"\r\n"
        body = rest[size + 2 :]
    raise AssertionError("the answer did not end with the last chunk")


def kinds(transport: str, chunk: bytes) -> list[tuple[str, int | None]]:
    """The (type, seq) of each message in one chunk; SSE's ``retry:`` as ``("retry", ms)``."""
    if transport == "chunked":
        return [(m["type"], m.get("seq")) for m in map(orjson.loads, chunk.splitlines())]
    decoder = SSEDecoder()
    out: list[tuple[str, int | None]] = []
    if chunk.startswith(b"retry: "):
        out.append(("retry", int(chunk.split(b"\n", 1)[0][7:])))
    for msg in decoder.feed(chunk):
        out.append((msg.event, orjson.loads(msg.data).get("seq")))
    return out


def create(params: dict[str, Any], max_tokens: int) -> bytes:
    body = {"prompt": "path", "max_tokens": max_tokens, "params": {"jitter": 0, **params}}
    return orjson.dumps(body)


@pytest.mark.parametrize("transport", ["sse", "chunked"])
async def test_a_stream_that_is_whole_at_once_is_one_write(transport: str) -> None:
    """Unpaced, one token: the generation appends the token and ``done`` in its first step,
    which runs before the answer starts; the prefix, both events and the body's end go out
    in one write."""
    async with served() as s:
        body = create({"tokens_per_s": 0, "ttft_ms": 0}, 1)
        answer = await exchange(
            s.port, request_bytes("POST", f"/api/{transport}", body=body), until_close=False
        )
    assert answer.status == 200
    got = chunks(answer.raw)
    assert len(got) == 1
    created = [("created", None)]
    if transport == "sse":
        created = [("retry", 1000), *created]
    assert kinds(transport, got[0]) == [*created, ("token", 0), ("done", 1)]


@pytest.mark.parametrize("transport", ["sse", "chunked"])
async def test_a_first_token_due_at_once_goes_with_the_prefix(transport: str) -> None:
    """Paced, ``ttft_ms`` 0: the first token is in the prefix's write; the next one is its
    own write (pushed when appended), and ``done`` is written with the body's end."""
    async with served() as s:
        body = create({"tokens_per_s": 50, "ttft_ms": 0}, 2)
        answer = await exchange(
            s.port, request_bytes("POST", f"/api/{transport}", body=body), until_close=False
        )
    got = [kinds(transport, c) for c in chunks(answer.raw)]
    prefix = [("created", None)]
    if transport == "sse":
        prefix = [("retry", 1000), *prefix]
    assert got == [[*prefix, ("token", 0)], [("token", 1)], [("done", 2)]]


@pytest.mark.parametrize("transport", ["sse", "chunked"])
async def test_the_prefix_is_not_held_for_a_later_first_token(transport: str) -> None:
    """``ttft_ms`` 300: nothing is in the log when the answer starts, so the prefix goes out
    alone, at once (``created`` is not held back until the first token)."""
    async with served() as s:
        body = create({"tokens_per_s": 50, "ttft_ms": 300}, 1)
        answer = await exchange(
            s.port, request_bytes("POST", f"/api/{transport}", body=body), until_close=False
        )
    got = [kinds(transport, c) for c in chunks(answer.raw)]
    prefix = [("created", None)]
    if transport == "sse":
        prefix = [("retry", 1000), *prefix]
    assert got[0] == prefix
    assert [k for c in got[1:] for k in c] == [("token", 0), ("done", 1)]


async def test_a_subscriber_gets_the_retry_and_the_retained_events_in_one_write() -> None:
    async with served() as s, aiohttp.ClientSession() as session:
        body = create({"tokens_per_s": 0, "ttft_ms": 0}, 3)
        async with session.post(f"{s.base}/api/streams", data=body) as resp:
            stream_id = (await resp.json())["id"]
        await eventually(lambda: s.app[HUB].streams[stream_id].state == "done")
        answer = await exchange(
            s.port, request_bytes("GET", f"/api/streams/{stream_id}/sse?after=0"), until_close=False
        )
    got = chunks(answer.raw)
    assert [kinds("sse", c) for c in got] == [
        [("retry", 1000), ("token", 1), ("token", 2), ("done", 3)]
    ]


def metric(text: str, name: str) -> str | None:
    """The value of one sample line of ``/metrics``."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return line.split(" ", 1)[1]
    return None


async def test_open_readers_and_created_streams_are_counted() -> None:
    async with served() as s, aiohttp.ClientSession() as session:
        body = create({"tokens_per_s": 20, "ttft_ms": 0}, 3)
        async with session.post(f"{s.base}/api/sse", data=body) as resp:
            await resp.content.readuntil(b"event: token")
            async with session.get(f"{s.base}/metrics") as m:
                during = await m.text()
            await resp.read()
        async with session.post(f"{s.base}/api/streams", data=body) as resp:
            assert resp.status == 201
        await asyncio.sleep(0)
        async with session.get(f"{s.base}/metrics") as m:
            after = await m.text()
    assert metric(during, 'tokenwire_subscribers{transport="sse"}') == "1.0"
    assert metric(during, 'tokenwire_subscribers{transport="poll"}') == "0.0"
    assert metric(after, 'tokenwire_subscribers{transport="sse"}') == "0.0"
    assert metric(during, 'tokenwire_streams_created_total{source="synthetic"}') == "1.0"
    assert metric(after, 'tokenwire_streams_created_total{source="synthetic"}') == "2.0"


def test_a_poll_batch_is_the_poll_body_of_its_events() -> None:
    """``poll_batch`` (shared by the pollers one append woke) answers what ``poll_body``
    answers a poll from just before the events, ``done`` when the last is terminal."""
    token = TokenEncoder("s")
    running = [token(4, "a"), token(5, "b")]
    assert poll_batch(running) == poll_body(running, 3, False)
    assert poll_batch(running).startswith(b'{"events":[{"stream":"s","seq":4,')
    assert poll_batch(running).endswith(b'],"next":5,"done":false}')
    ended = [token(6, "c"), done_event("s", 7, "stop", 7, "0" * 64, None)]
    assert poll_batch(ended) == poll_body(ended, 5, True)
    assert poll_batch(ended).endswith(b'],"next":7,"done":true}')


def text_frames(data: bytes) -> list[dict[str, Any]]:
    """The JSON messages of whole server text frames (unmasked, RFC 6455 §5.2)."""
    out = []
    while data:
        assert data[0] == 0x81  # FIN, text
        size, at = data[1] & 0x7F, 2
        if size == 126:
            size, at = int.from_bytes(data[2:4], "big"), 4
        elif size == 127:
            size, at = int.from_bytes(data[2:10], "big"), 10
        out.append(orjson.loads(data[at : at + size]))
        data = data[at + size :]
    return out


@pytest.mark.parametrize(
    ("params", "first"),
    [
        ({"tokens_per_s": 0, "ttft_ms": 0}, [("created", None), ("token", 0), ("done", 1)]),
        ({"tokens_per_s": 50, "ttft_ms": 300}, [("created", None)]),
    ],
    ids=["whole-at-once", "later-first-token"],
)
async def test_a_websocket_generate_writes_created_with_the_logged_events(
    monkeypatch: pytest.MonkeyPatch, params: dict[str, Any], first: list[Any]
) -> None:
    """``created`` goes out in the pump's first write, with the events the generation's
    first step logged (none when the first token is later: ``created`` is not held)."""
    writes: list[bytes] = []
    write_frames = SocketSession._write_frames

    def recording(self: SocketSession, data: bytes) -> None:
        writes.append(bytes(data))
        write_frames(self, data)

    monkeypatch.setattr(SocketSession, "_write_frames", recording)
    async with served() as s, aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{s.base}/api/ws") as ws:
            body = orjson.loads(create(params, 1))
            await ws.send_str(orjson.dumps({"op": "generate", **body}).decode())
            got = []
            async for msg in ws:
                got.append(orjson.loads(msg.data))
                if got[-1]["type"] == "done":
                    break
    assert [(m["type"], m.get("seq")) for m in got] == [
        ("created", None),
        ("token", 0),
        ("done", 1),
    ]
    assert [(m["type"], m.get("seq")) for m in text_frames(writes[0])] == first
