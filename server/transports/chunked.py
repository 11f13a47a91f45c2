"""Chunked HTTP, NDJSON: ``GET /api/streams/{id}/chunked`` and ``POST /api/chunked``."""

from __future__ import annotations

from aiohttp import web

from server.framing.ndjson import HEARTBEAT, ndjson_control, ndjson_lines
from server.transports.streaming import StreamFormat, stream_created, stream_existing
from server.validation import parse_after

FORMAT = StreamFormat(
    transport="chunked",
    content_type="application/x-ndjson; charset=utf-8",
    frame=ndjson_lines,
    heartbeat=HEARTBEAT,
    preamble=lambda settings: b"",
    created=ndjson_control,
)


async def subscribe(request: web.Request) -> web.StreamResponse:
    after = parse_after(request.query.get("after"))
    return await stream_existing(request, FORMAT, request.match_info["id"], after)


async def create_and_stream(request: web.Request) -> web.StreamResponse:
    return await stream_created(request, FORMAT)
