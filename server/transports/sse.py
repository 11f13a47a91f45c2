"""Server-Sent Events: ``GET /api/streams/{id}/sse`` and create-and-stream ``POST /api/sse``."""

from __future__ import annotations

from aiohttp import web

from server.framing.sse import PING, sse_control, sse_frames, sse_retry
from server.transports.streaming import StreamFormat, stream_created, stream_existing
from server.validation import parse_after

FORMAT = StreamFormat(
    transport="sse",
    content_type="text/event-stream; charset=utf-8",
    frame=sse_frames,
    heartbeat=PING,
    preamble=lambda settings: sse_retry(settings.sse_retry_ms),
    created=lambda data: sse_control("created", data),
)


def _resume_position(request: web.Request) -> int:
    # A reconnecting EventSource sends Last-Event-ID; it wins over the URL's ?after= (which
    # must be valid all the same).
    after = parse_after(request.query.get("after"))
    last_id = request.headers.get("Last-Event-ID", "").strip()
    if last_id:
        return parse_after(last_id, "Last-Event-ID")
    return after


async def subscribe(request: web.Request) -> web.StreamResponse:
    return await stream_existing(
        request, FORMAT, request.match_info["id"], _resume_position(request)
    )


async def create_and_stream(request: web.Request) -> web.StreamResponse:
    return await stream_created(request, FORMAT)
