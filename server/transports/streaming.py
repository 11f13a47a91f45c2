"""What the HTTP streaming transports (SSE and chunked NDJSON, and ``/v1``) share: reading the
request, and ``pump()``, the whole life of a streaming response.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import typing
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import HttpVersion11, hdrs, web
from aiohttp.http_writer import StreamWriter

from server.appkeys import HUB, METRICS, SETTINGS
from server.errors import (
    BadRequest,
    RequestTimeout,
    StoreUnavailable,
    StreamGone,
    UnsupportedEncoding,
)
from server.events import Event, created_message
from server.framing.chunked import http_chunk
from server.hub import Subscription
from server.settings import Settings
from server.validation import parse_create_body
from wire import Reader

log = logging.getLogger("tokenwire.transport")


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamFormat:
    """How one streaming HTTP transport frames what it sends."""

    transport: Reader
    content_type: str
    frame: Callable[[Sequence[Event]], bytes]
    heartbeat: bytes
    #: Bytes sent once before any event (e.g. SSE ``retry:``).
    preamble: Callable[[Settings], bytes]
    #: The ``created`` control message of a create-and-stream request.
    created: Callable[[bytes], bytes]
    #: Written when the reader fell behind the retained log, before the response ends.
    gone: bytes = b""
    #: ``frame`` depends on the events only: readers of a stream share the framed batch.
    shared: bool = True


#: A write this small cannot take an empty transport buffer past its high-water mark (64 KiB
#: by default, in asyncio and uvloop alike).
FREE_WRITE_MAX = 16 * 1024


_NO_DEADLINE = contextlib.nullcontext()


def send_deadline(
    transport: asyncio.BaseTransport | None, size: int, timeout: float | None
) -> contextlib.AbstractAsyncContextManager[object]:
    """``asyncio.timeout(timeout)`` around a write of ``size`` bytes that could wait for the
    peer; nothing around one that cannot.

    aiohttp's writers wait only while the protocol is paused, which happens when the
    transport's buffer passes its high-water mark. With nothing buffered and a small write
    that cannot happen, so the send timeout (a timer per write, on every token's path) is
    needed only for the other writes: those are the ones a stuck reader would hold up.
    """
    return _NO_DEADLINE if free_write(transport, size) else asyncio.timeout(timeout)


def free_write(transport: asyncio.BaseTransport | None, size: int) -> bool:
    """A write of ``size`` bytes cannot wait for the peer: nothing is buffered and it is
    small (see :func:`send_deadline`)."""
    # Duck-typed: uvloop's transports do not subclass asyncio.WriteTransport.
    buffered = getattr(transport, "get_write_buffer_size", None)
    return buffered is not None and size < FREE_WRITE_MAX and buffered() == 0


def write_now(write: Coroutine[Any, Any, None]) -> None:
    """Run a write coroutine of a free write (:func:`free_write`) to its end, here, without
    a task: aiohttp's writers hand the bytes to the transport, then wait only while the
    protocol is paused, which a free write cannot cause (it leaves the buffer under its
    high-water mark). Were it to wait all the same, its bytes are already written: the wait
    is dropped, and the next write is not free (something is buffered), so it waits within
    the send timeout.
    """
    try:
        write.send(None)
    except StopIteration:
        return
    write.close()


def client_address(request: web.Request) -> str:
    return request.remote or "unknown"


#: The ``Content-Encoding``s a request body may have: what aiohttp decodes (``br`` with
#: Brotli, ``zstd`` with backports.zstd: both dependencies). Anything else (an unknown
#: coding, a list of codings) is 415 with these in ``Accept-Encoding``.
BODY_CODINGS = ("gzip", "deflate", "br", "zstd")


async def read_json(request: web.Request) -> Any:
    """The request body as JSON; a clear 400 if it is not, 415 for a ``Content-Encoding``
    not in :data:`BODY_CODINGS`, 408 if it does not arrive within ``body_timeout_s``."""
    coding = request.headers.get(hdrs.CONTENT_ENCODING)
    if coding is not None and coding.lower() not in ("identity", *BODY_CODINGS):
        raise UnsupportedEncoding(
            f"Content-Encoding {coding!r} is not supported; send the body as it is, or "
            f"encoded with one of: {', '.join(BODY_CODINGS)}",
            accepted=", ".join((*BODY_CODINGS, "identity")),
        )
    timeout = request.app[SETTINGS].body_timeout_s or None
    # A body already received whole (the usual small JSON body, in the headers' packet or
    # right behind them) is read without waiting: no timer for it.
    wait = asyncio.timeout(timeout) if not request.content.is_eof() else _NO_DEADLINE
    try:
        async with wait:
            raw = await request.read()  # aiohttp answers 413 past client_max_size
    except TimeoutError:
        request.content.feed_eof()  # the answer closes the connection: read no more
        raise RequestTimeout(f"the request body did not arrive within {timeout:g} s") from None
    except web.RequestPayloadError:
        # aiohttp decodes the body as Content-Encoding says; a body that is not what it
        # says (plain text sent as gzip) fails here. The rest is not worth reading: the
        # answer closes the connection, and aiohttp is told not to wait for more.
        request.content.feed_eof()
        if coding is None:
            error = BadRequest("request body could not be read", code="bad_body")
        else:
            error = BadRequest(
                f"request body is not valid {coding.lower()} (its Content-Encoding)",
                code="bad_encoding",
            )
        error.close_connection = True
        raise error from None
    if not raw:
        raise BadRequest("request body is empty; expected a JSON object", code="bad_json")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"request body is not valid JSON: {e}", code="bad_json") from None


async def stream_existing(
    request: web.Request, stream_format: StreamFormat, stream_id: str, after: int
) -> web.StreamResponse:
    """``GET`` an existing stream from ``after``; ``204`` if everything was delivered."""
    reading = request.app[METRICS].reading(stream_format.transport)
    hub = request.app[HUB]
    async with reading, hub.subscribe(stream_id, after, stream_format.transport) as sub:
        if sub.finished:
            return web.Response(status=204)
        return await pump(
            request, sub, stream_format, stream_format.preamble(request.app[SETTINGS])
        )


async def stream_created(request: web.Request, stream_format: StreamFormat) -> web.StreamResponse:
    """``POST`` a create body and stream the new stream in the same response."""
    hub = request.app[HUB]
    parsed = parse_create_body(await read_json(request), request.app[SETTINGS], hub.sources)
    stream = await hub.start(parsed, client_address(request))
    # Let the generation take its first step before the answer starts: a first token it
    # appends at once then goes out with the prefix, in one write (``_write_prefix``).
    await asyncio.sleep(0)
    reading = request.app[METRICS].reading(stream_format.transport)
    async with reading, hub.subscribe(stream, -1, stream_format.transport) as sub:
        return await pump(
            request,
            sub,
            stream_format,
            stream_format.preamble(request.app[SETTINGS])
            + stream_format.created(created_message(stream.id)),
            headers={"Tokenwire-Stream": stream.id, "Location": f"/api/streams/{stream.id}"},
        )


def _framed(sub: Subscription, stream_format: StreamFormat, batch: Sequence[Event]) -> bytes:
    """``batch`` in the stream's format: built once for all its readers when the format
    depends on the events only (``shared``)."""
    if stream_format.shared:
        return sub.framed(stream_format.frame, batch)
    return stream_format.frame(batch)


async def _write_prefix(
    request: web.Request,
    resp: web.StreamResponse,
    sub: Subscription,
    stream_format: StreamFormat,
    prefix: bytes,
    send_timeout: float | None,
) -> None:
    """Write ``prefix`` with the events the log already holds after it: one write, where
    the prefix alone and the first batch were two (the head is its own: aiohttp sends it at
    ``prepare()``). Nothing waits for events: none there, the prefix goes alone."""
    batch = await sub.logged()
    data = prefix + _framed(sub, stream_format, batch) if batch else prefix
    async with send_deadline(request.transport, len(data), send_timeout):
        if sub.finished:
            await resp.write_eof(data)
        else:
            await resp.write(data)
    if batch:
        request.app[METRICS].sent(stream_format.transport, len(batch), len(data) - len(prefix))


#: How :class:`_Push` writes a pushed frame: not yet decided (until the first push, after
#: ``prepare()``), through aiohttp (``resp.write``), or straight to the transport, as a chunk
#: or as it is.
_UNDECIDED, _VIA_AIOHTTP, _DIRECT_CHUNKED, _DIRECT_PLAIN = range(4)


def _direct_mode(request: web.Request, resp: web.StreamResponse) -> int:
    """Whether pushed frames can go straight to the transport, and framed how.

    aiohttp's writer (``StreamWriter.write``) does per write: compression, clipping at a
    ``Content-Length`` (``length``), the chunk framing, the headers if still buffered, its
    ``buffer_size``/``output_size`` counts, ``on_body_write`` and ``on_chunk_sent``
    callbacks, and a drain past 64 KiB. For our streaming responses after ``prepare()``: no
    compression (never enabled on these routes; checked), no ``Content-Length`` (``length``
    is None: chunked on HTTP/1.1, close-delimited on HTTP/1.0), no callbacks (the server's
    writer has none; checked); the headers are sent here (``send_headers()``, as the first
    write would). What remains is the framing (:func:`http_chunk`) and the counts, which
    :meth:`_Push.push` keeps (``output_size`` is the access log's body length). Anything
    else (another writer, compression, a length) writes through aiohttp.
    """
    writer = request.writer
    if (
        not resp.prepared
        or resp.compression
        or not isinstance(writer, StreamWriter)
        or writer.length is not None
        or writer.on_body_write is not None
        # (private: the server's writer has no chunk callback; a client-trace one would)
        or getattr(writer, "_on_chunk_sent", None) is not None
        or getattr(writer, "_compress", None) is not None
    ):
        return _VIA_AIOHTTP
    writer.send_headers()
    return _DIRECT_CHUNKED if writer.chunked else _DIRECT_PLAIN


class _Push:
    """Writes a paced stream's new token from the generation's step, if that cannot wait
    (else the reader's task wakes and writes it within the send timeout). An object, not a
    closure over ``pump``'s locals: what every waiting stream holds, smaller.

    The write goes straight to the transport, one ``transport.write`` (framed as a chunk
    when the body is chunked), keeping aiohttp's writer's counts true so its later writes
    (the terminal event, ``write_eof``) stay right: :func:`_direct_mode`.
    """

    __slots__ = ("frame", "metrics", "mode", "reader", "request", "resp", "sub")

    def __init__(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        sub: Subscription,
        stream_format: StreamFormat,
    ) -> None:
        self.request = request
        self.resp = resp
        self.sub = sub
        self.frame = stream_format.frame
        self.reader = stream_format.transport
        self.metrics = request.app[METRICS]
        self.mode = _UNDECIDED

    def push(self, event: Event) -> bool:
        data = self.sub.framed(self.frame, (event,))
        transport = self.request.transport
        if not free_write(transport, len(data)):
            return False
        mode = self.mode
        if mode == _UNDECIDED:
            mode = self.mode = _direct_mode(self.request, self.resp)
        if mode == _VIA_AIOHTTP:
            write_now(self.resp.write(data))
        else:
            assert transport is not None  # (free_write: it has a buffer)
            if transport.is_closing():
                return False  # (the reader's task meets the reset)
            wire = http_chunk(data) if mode == _DIRECT_CHUNKED else data
            writer = self.request.writer
            writer.buffer_size += len(wire)
            writer.output_size += len(wire)
            typing.cast(asyncio.WriteTransport, transport).write(wire)
        self.metrics.sent(self.reader, 1, len(data))
        return True


async def pump(
    request: web.Request,
    sub: Subscription,
    stream_format: StreamFormat,
    prefix: bytes = b"",
    headers: dict[str, str] | None = None,
) -> web.StreamResponse:
    """Stream a subscription to the client until its terminal event."""
    settings = request.app[SETTINGS]
    metrics = request.app[METRICS]
    resp = web.StreamResponse(
        headers={
            "Content-Type": stream_format.content_type,
            "Cache-Control": "no-cache, no-transform",
            "X-Accel-Buffering": "no",
            **(headers or {}),
        }
    )
    if request.version >= HttpVersion11:
        resp.enable_chunked_encoding()
    else:
        # HTTP/1.0 has no chunked coding: the body is close-delimited (RFC 9112 §6.3),
        # which is what a default nginx upstream (HTTP/1.0) reads.
        resp.force_close()
        resp.headers["Connection"] = "close"
    send_timeout = settings.send_timeout_s or None
    heartbeat = settings.heartbeat_s or None
    pushing = _Push(request, resp, sub, stream_format).push if stream_format.shared else None
    try:
        await resp.prepare(request)
        if prefix:
            await _write_prefix(request, resp, sub, stream_format, prefix, send_timeout)
        while not sub.finished:
            try:
                batch = await sub.next_batch(heartbeat, pushing)
            except StreamGone:
                # Fell behind what the log retains: end without a terminal event, so the
                # client's resume is answered 410 ``gone`` rather than silently skipping.
                log.info("subscriber of %s fell out of the retained log", sub.stream.id)
                if stream_format.gone:
                    async with asyncio.timeout(send_timeout):
                        await resp.write(stream_format.gone)
                break
            except StoreUnavailable as e:
                # The shared store stopped answering: cut, so the client resumes later.
                log.warning("cutting a subscriber of %s: %s", sub.stream.id, e.message)
                break
            data = _framed(sub, stream_format, batch) if batch else stream_format.heartbeat
            async with send_deadline(request.transport, len(data), send_timeout):
                if sub.finished:  # the terminal event and the body's end: one write
                    await resp.write_eof(data)
                else:
                    await resp.write(data)
            metrics.sent(stream_format.transport, len(batch), len(data))
        await resp.write_eof()
    except TimeoutError:
        log.info(
            "dropping a %s client of %s: send timed out", stream_format.transport, sub.stream.id
        )
        if request.transport is not None:
            request.transport.abort()
    except ConnectionResetError:
        log.debug("%s client of %s left", stream_format.transport, sub.stream.id)
    return resp
