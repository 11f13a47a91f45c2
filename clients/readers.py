"""One reader per transport: it opens a connection, reads it, and yields what arrived.

A reader only reads. It is told where to start (a create body, or a stream id and the last
``seq`` had) and yields :data:`SENT` before each request and a :class:`Received` for each
read: the bytes, the decoded messages, the receive times. The resume loop
(``Stream._run``) does all the bookkeeping. ``clients/js/readers.js`` has the same readers.

A reader also tells the client's ``tap`` (if it has one) each :class:`Frame` it sends and
reads, as it reads it: the text the decoders split, never a second parse of the bytes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

import aiohttp
import orjson

from clients.decoders import NDJSONDecoder, SSEDecoder, ws_frame_header
from clients.errors import ClosedByServer, server_error
from wire import Transport

if TYPE_CHECKING:
    from clients.client import Client

Event = dict[str, Any]

#: What a finished stream with nothing after the position answers: the WebSocket's control
#: message, which the HTTP readers also yield for a 204 or a poll that says ``done``.
END: Final[Event] = {"type": "end"}


@dataclass(frozen=True, slots=True)
class Sent:
    """A request (or WebSocket handshake) is about to go out."""


SENT: Final = Sent()


@dataclass(frozen=True, slots=True)
class Received:
    """What one read brought: its bytes on the wire (status line and headers, body bytes, or
    a message and its frame header), the messages decoded from it (log events and the
    control messages ``created`` and ``end``), when it arrived (``time.perf_counter_ns()``,
    ``time.time_ns()``), and the SSE ``retry:`` in force (milliseconds)."""

    nbytes: int
    messages: list[Event] = field(default_factory=list)
    perf_ns: int = 0
    wall_ns: int = 0
    retry_ms: int | None = None


FrameKind = Literal["request", "response", "body", "line", "message", "close"]


@dataclass(frozen=True, slots=True)
class Frame:
    """One thing a reader sent or read, as it went over the wire (the client's ``tap``).

    ``kind``: ``request`` (out: ``METHOD path``), ``response`` (in: the status line;
    ``nbytes`` is the size of the status line and headers), ``body`` (a request's JSON body
    out; a poll's answer, ``POST /api/streams``' answer or an HTTP error answer in),
    ``line`` (an SSE or NDJSON line as the decoder split it, without its line end; SSE's
    blank line ends an event), ``message`` (a WebSocket text message, in or out), ``close``
    (in: the WebSocket's close code). ``nbytes`` is the UTF-8 size of ``text`` except for a
    ``response``. ``clients/js/readers.js`` makes the same frames, plus ``rebuilt`` lines
    for ``EventSource``, which hides the wire.
    """

    transport: Transport
    direction: Literal["in", "out"]
    kind: FrameKind
    text: str
    nbytes: int


#: The client's tap: called with each :class:`Frame` as it is sent or read.
Tap = Callable[[Frame], object]


def _tap(
    client: Client,
    transport: Transport | None,
    direction: Literal["in", "out"],
    kind: FrameKind,
    text: str,
    nbytes: int | None = None,
) -> None:
    if client.tap is not None and transport is not None:
        size = len(text.encode()) if nbytes is None else nbytes
        client.tap(Frame(transport, direction, kind, text, size))


def _tap_response(
    client: Client, transport: Transport | None, resp: aiohttp.ClientResponse
) -> None:
    status = f"HTTP/1.1 {resp.status} {resp.reason or ''}".rstrip()
    _tap(client, transport, "in", "response", status, header_bytes(resp))


def _tap_body(client: Client, transport: Transport | None) -> Callable[[bytes], None] | None:
    """What taps an error answer's body (None without a tap)."""
    if client.tap is None or transport is None:
        return None
    return lambda raw: _tap(client, transport, "in", "body", raw.decode(errors="replace"), len(raw))


def _tap_request(
    client: Client, transport: Transport | None, method: str, path: str, body: Event | None = None
) -> bytes | None:
    """Tap a request going out (no ``transport``: no tap); its JSON body, encoded once for
    the wire and the tap."""
    _tap(client, transport, "out", "request", f"{method} {path}")
    if body is None:
        return None
    data = orjson.dumps(body)
    _tap(client, transport, "out", "body", data.decode(), len(data))
    return data


class Reader(Protocol):
    def __call__(
        self, client: Client, *, stream_id: str | None, after: int, body: Event | None
    ) -> AsyncGenerator[Sent | Received, None]: ...


def header_bytes(resp: aiohttp.ClientResponse) -> int:
    """Size of the response's status line and headers as they came on the wire."""
    status_line = len(f"HTTP/1.1 {resp.status} {resp.reason or ''}")
    return status_line + 2 + sum(len(k) + len(v) + 4 for k, v in resp.raw_headers) + 2


async def raise_for_error(
    resp: aiohttp.ClientResponse, on_body: Callable[[bytes], object] | None = None
) -> None:
    """Raise the :class:`ServerError` an error answer (``{"error": {...}}``) stands for;
    ``on_body`` is called with the answer's body first (a reader's tap)."""
    if resp.status < 400:
        return
    raw = await resp.read()
    if on_body is not None:
        on_body(raw)
    try:
        err = orjson.loads(raw)["error"]
        code, message = str(err["code"]), str(err["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        code, message = "http_error", raw.decode(errors="replace")[:300]
    raise server_error(code, message, resp.status, retry_after=_retry_after(resp))


def _retry_after(resp: aiohttp.ClientResponse) -> float | None:
    """``Retry-After`` in seconds (tokenwire sends delta-seconds), None if absent or not."""
    try:
        return float(resp.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


def _now() -> tuple[int, int]:
    return time.perf_counter_ns(), time.time_ns()


async def create_stream(client: Client, body: Event, transport: Transport | None = None) -> str:
    """``POST /api/streams``; the new stream's id. ``transport``: whose tap sees it."""
    path = "/api/streams"
    data = _tap_request(client, transport, "POST", path, body)
    headers = {**client.headers, "Content-Type": "application/json"}
    async with client.session.post(client.url(path), data=data, headers=headers) as resp:
        _tap_response(client, transport, resp)
        await raise_for_error(resp, _tap_body(client, transport))
        raw = await resp.read()
    _tap(client, transport, "in", "body", raw.decode(errors="replace"), len(raw))
    return str(orjson.loads(raw)["id"])


async def _read_response(
    client: Client,
    transport: Transport,
    path: str,
    *,
    body: Event | None = None,
    headers: dict[str, str] | None = None,
) -> AsyncGenerator[Sent | Received, None]:
    """An SSE or NDJSON response, read as it arrives: ``POST path`` with a create ``body``
    (the response's ``Tokenwire-Stream`` header tells the new stream's id before any body
    byte), else ``GET path``."""

    def on_line(line: str) -> None:
        _tap(client, transport, "in", "line", line)

    on = on_line if client.tap is not None else None
    decoder = SSEDecoder(on_line=on) if transport == "sse" else NDJSONDecoder(on_line=on)
    method = "GET" if body is None else "POST"
    data = _tap_request(client, transport, method, path, body)
    sent = {**client.headers, **(headers or {})}
    if body is not None:
        sent["Content-Type"] = "application/json"
    yield SENT
    async with client.session.request(method, client.url(path), data=data, headers=sent) as resp:
        _tap_response(client, transport, resp)
        yield Received(header_bytes(resp))
        await raise_for_error(resp, _tap_body(client, transport))
        if resp.status == 204:  # finished, nothing after the position
            yield Received(0, [END])
            return
        if body is not None and "Tokenwire-Stream" in resp.headers:
            yield Received(0, [{"type": "created", "stream": resp.headers["Tokenwire-Stream"]}])
        async for chunk in resp.content.iter_any():
            perf_ns, wall_ns = _now()
            if isinstance(decoder, SSEDecoder):
                messages = [orjson.loads(m.data) for m in decoder.feed(chunk)]
                yield Received(len(chunk), messages, perf_ns, wall_ns, decoder.retry)
            else:
                yield Received(len(chunk), decoder.feed(chunk), perf_ns, wall_ns)


def read_sse(
    client: Client, *, stream_id: str | None, after: int, body: Event | None
) -> AsyncGenerator[Sent | Received, None]:
    """``POST /api/sse``, or ``GET /api/streams/{id}/sse`` with ``Last-Event-ID``."""
    if stream_id is None:
        return _read_response(client, "sse", "/api/sse", body=body or {})
    headers = {"Last-Event-ID": str(after)} if after >= 0 else {}
    return _read_response(client, "sse", f"/api/streams/{stream_id}/sse", headers=headers)


def read_chunked(
    client: Client, *, stream_id: str | None, after: int, body: Event | None
) -> AsyncGenerator[Sent | Received, None]:
    """``POST /api/chunked``, or ``GET /api/streams/{id}/chunked?after=``: NDJSON lines."""
    if stream_id is None:
        return _read_response(client, "chunked", "/api/chunked", body=body or {})
    return _read_response(client, "chunked", f"/api/streams/{stream_id}/chunked?after={after}")


async def read_poll(
    client: Client, *, stream_id: str | None, after: int, body: Event | None
) -> AsyncGenerator[Sent | Received, None]:
    """``POST /api/streams`` if there is no id yet, then ``GET .../poll?after=&timeout=``
    until an answer says ``done``."""
    if stream_id is None:
        yield SENT
        stream_id = await create_stream(client, body or {}, "poll")
        yield Received(0, [{"type": "created", "stream": stream_id}])
    while True:
        path = f"/api/streams/{stream_id}/poll?after={after}&timeout={client.poll_timeout_s:g}"
        _tap_request(client, "poll", "GET", path)
        yield SENT
        async with client.session.get(client.url(path), headers=client.headers) as resp:
            _tap_response(client, "poll", resp)
            yield Received(header_bytes(resp))
            await raise_for_error(resp, _tap_body(client, "poll"))
            raw = await resp.read()
        perf_ns, wall_ns = _now()
        _tap(client, "poll", "in", "body", raw.decode(errors="replace"), len(raw))
        answer = orjson.loads(raw)
        messages = answer["events"] + ([END] if answer["done"] else [])
        yield Received(len(raw), messages, perf_ns, wall_ns)
        if answer["done"]:
            return
        after = answer["next"]


async def read_ws(
    client: Client, *, stream_id: str | None, after: int, body: Event | None
) -> AsyncGenerator[Sent | Received, None]:
    """``/api/ws``: ``{"op":"generate",...}``, or ``{"op":"subscribe","stream","after"}``
    (after ``{"op":"auth"}`` when the client has a token); ends with the socket."""

    async def send(message: Event) -> None:
        text = orjson.dumps(message).decode()
        _tap(client, "ws", "out", "message", text)
        await ws.send_str(text)

    _tap_request(client, "ws", "GET", "/api/ws")
    yield SENT
    async with client.session.ws_connect(client.url("/api/ws"), autoping=True) as ws:
        if client.token is not None:
            await send({"op": "auth", "token": client.token})
        if stream_id is None:
            first: Event = {"op": "generate", **(body or {})}
        else:
            first = {"op": "subscribe", "stream": stream_id, "after": after}
        await send(first)
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            perf_ns, wall_ns = _now()
            _tap(client, "ws", "in", "message", msg.data)
            data = msg.data.encode()
            nbytes = len(data) + ws_frame_header(len(data))
            ev = orjson.loads(data)
            kind = ev.get("type")
            messages: list[Event] = []
            if kind == "created" and stream_id is None:
                stream_id = str(ev["stream"])
                messages = [ev]
            elif kind == "end" and ev.get("stream") == stream_id:
                messages = [ev]  # nothing after our position: the stream is over
            elif not isinstance(ev.get("seq"), int):
                if kind == "error":  # an answer to our request, not the log's error event
                    yield Received(nbytes, [], perf_ns, wall_ns)
                    raise server_error(str(ev["code"]), str(ev["message"]))
            elif ev.get("stream") == stream_id:
                messages = [ev]
            yield Received(nbytes, messages, perf_ns, wall_ns)
        _tap(client, "ws", "in", "close", str(ws.close_code))
        raise ClosedByServer(ws.close_code)


#: The reader of each transport.
READERS: Final[dict[Transport, Reader]] = {
    "sse": read_sse,
    "ws": read_ws,
    "poll": read_poll,
    "chunked": read_chunked,
}
