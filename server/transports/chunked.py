"""Chunked HTTP, NDJSON: ``GET /api/streams/{id}/chunked`` and ``POST /api/chunked``."""

from __future__ import annotations

from aiohttp import web

from server.events import created_message
from server.framing.ndjson import HEARTBEAT, ndjson_control, ndjson_lines
from server.keys import HUB
from server.transports.common import client_address, pump, read_json
from server.validation import parse_after

CONTENT_TYPE = "application/x-ndjson; charset=utf-8"


async def subscribe(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    after = parse_after(request.query.get("after"))
    async with hub.subscribe(request.match_info["id"], after, "chunked") as sub:
        if sub.finished:
            return web.Response(status=204)
        return await pump(
            request,
            sub,
            transport="chunked",
            content_type=CONTENT_TYPE,
            frame=ndjson_lines,
            heartbeat=HEARTBEAT,
        )


async def create_and_stream(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    st = await hub.create(await read_json(request), client_address(request))
    async with hub.subscribe(st.id, -1, "chunked") as sub:
        return await pump(
            request,
            sub,
            transport="chunked",
            content_type=CONTENT_TYPE,
            frame=ndjson_lines,
            heartbeat=HEARTBEAT,
            prefix=ndjson_control(created_message(st.id)),
            headers={"Tokenwire-Stream": st.id, "Location": f"/api/streams/{st.id}"},
        )
