"""What the dialects' routes share (Chat Completions, Responses, Messages): an answer is an
ordinary stream read from the start by the request that created it.

Streamed, its headers wait for the first event, so a generation that fails before its
first token is answered with an HTTP status (in the dialect's error shape); whole, the
answer is sent when the stream has ended.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from aiohttp import web

from server.appkeys import METRICS, SETTINGS
from server.errors import GenerationError
from server.events import Event
from server.framing.openai import outcome
from server.hub import StreamRecord, Subscription
from server.transports.streaming import StreamFormat, pump
from wire import Dialect


def stream_headers(stream: StreamRecord) -> dict[str, str]:
    """The stream's id, where the four transports can read it too."""
    # X-Request-Id is what the SDKs expose as ``_request_id`` on a response object.
    return {
        "Tokenwire-Stream": stream.id,
        "X-Request-Id": stream.id,
        "Location": f"/api/streams/{stream.id}",
    }


def sse_format(
    dialect: Dialect, frame: Callable[[Sequence[Event]], bytes], heartbeat: bytes, gone: bytes
) -> StreamFormat:
    """A dialect's SSE stream: framed per request (``frame`` holds the request's id, model
    and position), so readers of one stream do not share frames."""
    return StreamFormat(
        transport=dialect,
        content_type="text/event-stream; charset=utf-8",
        frame=frame,
        heartbeat=heartbeat,
        preamble=lambda settings: b"",
        created=lambda data: b"",
        gone=gone,
        shared=False,
    )


def client_gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


async def first_batch(request: web.Request, stream: StreamRecord, sub: Subscription) -> list[Event]:
    """The stream's first events, or ``[]`` after ``heartbeat_s`` with none.

    Raises:
        GenerationError: The stream ended before its first token (answered as a status).
    """
    batch = await sub.next_batch(request.app[SETTINGS].heartbeat_s or None)
    if len(batch) == 1 and batch[0].terminal:
        end = outcome(stream.id, batch[0])
        if isinstance(end, GenerationError):
            raise end
    return batch


async def stream_answer(
    request: web.Request,
    stream: StreamRecord,
    sub: Subscription,
    stream_format: StreamFormat,
    opening: bytes,
) -> web.StreamResponse:
    """Stream the answer: ``opening`` (the dialect's first events) with the first batch,
    then the rest as it comes."""
    first = await first_batch(request, stream, sub)
    prefix = opening + stream_format.frame(first)
    request.app[METRICS].sent(stream_format.transport, len(first), len(prefix))
    return await pump(request, sub, stream_format, prefix, headers=stream_headers(stream))


async def read_to_end(request: web.Request, sub: Subscription) -> list[Event] | None:
    """Every event up to the terminal one, or None if the client left meanwhile."""
    heartbeat = request.app[SETTINGS].heartbeat_s or None
    events: list[Event] = []
    while not sub.finished:
        events.extend(await sub.next_batch(heartbeat))
        if client_gone(request):
            return None
    return events


#: The answer to a client that left before its whole answer was ready (nginx's "client
#: closed request"; only the access log shows it).
CLIENT_LEFT = 499


async def whole_answer(
    request: web.Request, stream: StreamRecord, sub: Subscription
) -> tuple[list[Event], str] | None:
    """Every event of an answer that ended well and its finish reason (``stop``,
    ``length``); None if the client left meanwhile: nobody will read the answer, so
    reading stops and the grace period cancels the stream.

    Raises:
        GenerationError: The stream ended without an answer (answered as a status).
    """
    events = await read_to_end(request, sub)
    if events is None:
        return None
    end = outcome(stream.id, events[-1])
    if isinstance(end, GenerationError):
        raise end
    return events, end


def json_answer(body: bytes, stream: StreamRecord) -> web.Response:
    return web.Response(body=body, content_type="application/json", headers=stream_headers(stream))
