"""One reader per transport: it opens a connection, reads it, and yields what arrived.

A reader only reads. It is told where to start (a create body, or a stream id and the last
``seq`` had) and yields :data:`SENT` before each request and a :class:`Received` for each
read: the bytes, the decoded messages, the receive times. The resume loop
(``Stream._run``) does all the bookkeeping. ``clients/js/readers.js`` has the same readers.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

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


class Reader(Protocol):
    def __call__(
        self, client: Client, *, stream_id: str | None, after: int, body: Event | None
    ) -> AsyncGenerator[Sent | Received, None]: ...


def header_bytes(resp: aiohttp.ClientResponse) -> int:
    """Size of the response's status line and headers as they came on the wire."""
    status_line = len(f"HTTP/1.1 {resp.status} {resp.reason or ''}")
    return status_line + 2 + sum(len(k) + len(v) + 4 for k, v in resp.raw_headers) + 2


async def raise_for_error(resp: aiohttp.ClientResponse) -> None:
    """Raise the :class:`ServerError` an error answer (``{"error": {...}}``) stands for."""
    if resp.status < 400:
        return
    raw = await resp.read()
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


async def _read_response(
    ctx: Any, created: bool, decoder: SSEDecoder | NDJSONDecoder
) -> AsyncGenerator[Sent | Received, None]:
    """An SSE or NDJSON response, read as it arrives. ``created``: the request creates the
    stream, whose id its ``Tokenwire-Stream`` header tells before any body byte."""
    yield SENT
    async with ctx as resp:
        yield Received(header_bytes(resp))
        await raise_for_error(resp)
        if resp.status == 204:  # finished, nothing after the position
            yield Received(0, [END])
            return
        if created and "Tokenwire-Stream" in resp.headers:
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
        ctx = client.session.post(client.url("/api/sse"), json=body, headers=client.headers)
    else:
        headers = dict(client.headers)
        if after >= 0:
            headers["Last-Event-ID"] = str(after)
        ctx = client.session.get(client.url(f"/api/streams/{stream_id}/sse"), headers=headers)
    return _read_response(ctx, stream_id is None, SSEDecoder())


def read_chunked(
    client: Client, *, stream_id: str | None, after: int, body: Event | None
) -> AsyncGenerator[Sent | Received, None]:
    """``POST /api/chunked``, or ``GET /api/streams/{id}/chunked?after=``: NDJSON lines."""
    if stream_id is None:
        ctx = client.session.post(client.url("/api/chunked"), json=body, headers=client.headers)
    else:
        ctx = client.session.get(
            client.url(f"/api/streams/{stream_id}/chunked"),
            headers=client.headers,
            params={"after": str(after)},
        )
    return _read_response(ctx, stream_id is None, NDJSONDecoder())


async def read_poll(
    client: Client, *, stream_id: str | None, after: int, body: Event | None
) -> AsyncGenerator[Sent | Received, None]:
    """``POST /api/streams`` if there is no id yet, then ``GET .../poll?after=&timeout=``
    until an answer says ``done``."""
    if stream_id is None:
        yield SENT
        stream_id = await client.create(**(body or {}))
        yield Received(0, [{"type": "created", "stream": stream_id}])
    while True:
        yield SENT
        async with client.session.get(
            client.url(f"/api/streams/{stream_id}/poll"),
            params={"after": str(after), "timeout": str(client.poll_timeout_s)},
            headers=client.headers,
        ) as resp:
            yield Received(header_bytes(resp))
            await raise_for_error(resp)
            raw = await resp.read()
        perf_ns, wall_ns = _now()
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
    yield SENT
    async with client.session.ws_connect(client.url("/api/ws"), autoping=True) as ws:
        if client.token is not None:
            await ws.send_str(orjson.dumps({"op": "auth", "token": client.token}).decode())
        if stream_id is None:
            first: Event = {"op": "generate", **(body or {})}
        else:
            first = {"op": "subscribe", "stream": stream_id, "after": after}
        await ws.send_str(orjson.dumps(first).decode())
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            perf_ns, wall_ns = _now()
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
        raise ClosedByServer(ws.close_code)


#: The reader of each transport.
READERS: Final[dict[Transport, Reader]] = {
    "sse": read_sse,
    "ws": read_ws,
    "poll": read_poll,
    "chunked": read_chunked,
}
