"""The client's ``tap``: each frame the readers send and read, as they read it.

A finished stream is read once more with a tap on every transport, and what the tap saw is
checked against the raw bytes of the same request, read here with a bare aiohttp session:
the tap shows the wire, line for line, message for message. ``clients/js/test/`` holds the
same checks for the JS client.
"""

from __future__ import annotations

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from clients import TRANSPORTS, Client, ClosedByServer, Frame, ServerError
from clients.decoders import NDJSONDecoder, SSEDecoder
from clients.readers import header_bytes
from tests.conftest import base_url
from tests.serving import ws_closing_mid_stream

FAST = {"tokens_per_s": 0, "ttft_ms": 0}
OK = "HTTP/1.1 200 OK"


def test_the_decoders_tell_each_line() -> None:
    lines: list[str] = []
    sse = SSEDecoder(on_line=lines.append)
    events = sse.feed(b"\xef\xbb\xbfretry: 5\r\n\r\n: ping\n\nid: 1\nevent: tok")
    events += sse.feed(b"en\ndata: {}\r")
    events += sse.feed(b"\n\nid: 2")  # an unterminated line is not told
    assert [e.data for e in events] == ["{}"]
    assert lines == ["retry: 5", "", ": ping", "", "id: 1", "event: token", "data: {}", ""]

    lines.clear()
    nd = NDJSONDecoder(on_line=lines.append)
    assert nd.feed(b'{"a":1}\n\n{"b":"\xc3') == [{"a": 1}]
    assert nd.feed(b'\xa9"}\r\n{"c"') == [{"b": "é"}]
    assert lines == ['{"a":1}', "", '{"b":"é"}\r']


async def finished_stream(url: str) -> str:
    async with Client(url) as c:
        stream_id = await c.create("tap the wire", max_tokens=6, params=FAST)
        await c.subscribe(stream_id, transport="chunked").collect()
        return stream_id


async def raw(url: str, path: str) -> tuple[bytes, int]:
    """The body and the header size of a GET, read with a bare session."""
    async with aiohttp.ClientSession() as s, s.get(f"{url}{path}") as resp:
        assert resp.status == 200
        return await resp.read(), header_bytes(resp)


def lines_of(body: bytes) -> list[str]:
    return body.decode().split("\n")[:-1]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_tap_shows_the_wire(server: TestServer, transport: str) -> None:
    url = base_url(server)
    stream_id = await finished_stream(url)
    frames: list[Frame] = []
    async with Client(url, tap=frames.append) as c:
        stream = c.subscribe(stream_id, transport=transport)
        events = await stream.collect()
    assert [e["seq"] for e in events] == list(range(7))
    seen = [(f.transport, f.direction, f.kind, f.text) for f in frames]

    if transport in ("sse", "chunked"):
        path = f"/api/streams/{stream_id}/{transport}"
        if transport == "chunked":
            path += "?after=-1"
        body, head = await raw(url, path)
        assert seen == [
            (transport, "out", "request", f"GET {path}"),
            (transport, "in", "response", OK),
            *[(transport, "in", "line", line) for line in lines_of(body)],
        ]
        assert frames[1].nbytes == head
        # Every byte counted is in a frame: the head, and each line and its LF.
        lines = sum(f.nbytes + 1 for f in frames[2:])
        assert stream.stats.bytes_received == head + lines == head + len(body)
    elif transport == "poll":
        path = f"/api/streams/{stream_id}/poll?after=-1&timeout=25"
        body, head = await raw(url, path)
        assert seen == [
            ("poll", "out", "request", f"GET {path}"),
            ("poll", "in", "response", OK),
            ("poll", "in", "body", body.decode()),
        ]
        assert (frames[1].nbytes, frames[2].nbytes) == (head, len(body))
    else:
        body, _ = await raw(url, f"/api/streams/{stream_id}/chunked?after=-1")
        subscribe = {"op": "subscribe", "stream": stream_id, "after": -1}
        assert seen == [
            ("ws", "out", "request", "GET /api/ws"),
            ("ws", "out", "message", orjson.dumps(subscribe).decode()),
            *[("ws", "in", "message", line) for line in lines_of(body)],
        ]
    assert all(f.nbytes == len(f.text.encode()) for f in frames if f.kind != "response")


async def test_the_tap_sees_a_create(server: TestServer) -> None:
    """A read that creates its stream: the request's body goes out in a frame of its own;
    polling shows the POST and its 201 answer before the first poll."""
    frames: list[Frame] = []
    async with Client(base_url(server), tap=frames.append) as c:
        chunked = c.stream("made here", transport="chunked", max_tokens=2, params=FAST)
        await chunked.collect()
        first = [(f.direction, f.kind, f.text) for f in frames[:4]]
        body = orjson.dumps({"prompt": "made here", "max_tokens": 2, "params": FAST}).decode()
        assert first == [
            ("out", "request", "POST /api/chunked"),
            ("out", "body", body),
            ("in", "response", OK),
            ("in", "line", orjson.dumps({"type": "created", "stream": chunked.id}).decode()),
        ]
        frames.clear()
        poll = c.stream("made here", transport="poll", max_tokens=2, params=FAST)
        await poll.collect()
    first = [(f.direction, f.kind, f.text) for f in frames[:5]]
    at = f"/api/streams/{poll.id}"
    links = {"sse": f"{at}/sse", "ws": "/api/ws", "poll": f"{at}/poll"}
    links |= {"chunked": f"{at}/chunked", "self": at}
    assert first == [
        ("out", "request", "POST /api/streams"),
        ("out", "body", body),
        ("in", "response", "HTTP/1.1 201 Created"),
        ("in", "body", orjson.dumps({"id": poll.id, "links": links}).decode()),
        ("out", "request", f"GET {at}/poll?after=-1&timeout=25"),
    ]
    assert {f.transport for f in frames} == {"poll"}


async def test_the_tap_sees_a_websocket_close() -> None:
    """A socket the server closes before the stream's end: its messages, then its code."""

    frames: list[Frame] = []
    async with ws_closing_mid_stream() as srv:
        async with Client(base_url(srv), max_reconnects=0, tap=frames.append) as c:
            with pytest.raises(ClosedByServer):
                await c.stream("x", transport="ws").collect()
    assert [(f.direction, f.kind, f.text) for f in frames] == [
        ("out", "request", "GET /api/ws"),
        ("out", "message", '{"op":"generate","prompt":"x"}'),
        ("in", "message", '{"type":"created","stream":"s1"}'),
        ("in", "message", '{"stream":"s1","seq":0,"type":"token","text":"a","t":1}'),
        ("in", "close", "1011"),
    ]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_tap_sees_an_error_answer(server: TestServer, transport: str) -> None:
    """An error answer's body is a frame too (over HTTP; a WebSocket's is a message)."""
    frames: list[Frame] = []
    async with Client(base_url(server), tap=frames.append) as c:
        with pytest.raises(ServerError):
            await c.subscribe("nope", transport=transport, resume=False).collect()
    error = '{"error":{"code":"unknown_stream","message":"no stream \'nope\'"}}'
    paths = {
        "sse": "/api/streams/nope/sse",
        "chunked": "/api/streams/nope/chunked?after=-1",
        "poll": "/api/streams/nope/poll?after=-1&timeout=25",
    }
    seen = [(f.direction, f.kind, f.text) for f in frames]
    if transport == "ws":
        assert seen[:2] == [
            ("out", "request", "GET /api/ws"),
            ("out", "message", '{"op":"subscribe","stream":"nope","after":-1}'),
        ]
        (message,) = seen[2:]
        assert message[:2] == ("in", "message")
        assert orjson.loads(message[2]) == {
            "type": "error",
            "code": "unknown_stream",
            "message": "no stream 'nope'",
            "stream": "nope",
            "op": "subscribe",
        }
    else:
        assert seen == [
            ("out", "request", f"GET {paths[transport]}"),
            ("in", "response", "HTTP/1.1 404 Not Found"),
            ("in", "body", error),
        ]
