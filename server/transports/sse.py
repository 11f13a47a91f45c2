"""Server-Sent Events: ``GET /api/streams/{id}/sse`` and create-and-stream ``POST /api/sse``."""

from __future__ import annotations

from aiohttp import web

from server.errors import InvalidField
from server.events import created_message
from server.framing.sse import PING, sse_control, sse_frames, sse_retry
from server.keys import HUB, SETTINGS
from server.transports.common import client_address, pump, read_json
from server.validation import parse_after

CONTENT_TYPE = "text/event-stream; charset=utf-8"


def _resume_position(request: web.Request) -> int:
    # A reconnecting EventSource sends Last-Event-ID; it wins over the URL's ?after=.
    last_id = request.headers.get("Last-Event-ID")
    if last_id is not None and last_id.strip() != "":
        try:
            return parse_after(last_id.strip(), "Last-Event-ID")
        except InvalidField:
            raise InvalidField("Last-Event-ID", "must be an integer >= -1") from None
    return parse_after(request.query.get("after"))


async def subscribe(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    stream_id = request.match_info["id"]
    after = _resume_position(request)
    async with hub.subscribe(stream_id, after, "sse") as sub:
        if sub.finished:
            return web.Response(status=204)  # all delivered: EventSource stops here
        return await pump(
            request,
            sub,
            transport="sse",
            content_type=CONTENT_TYPE,
            frame=sse_frames,
            heartbeat=PING,
            prefix=sse_retry(request.app[SETTINGS].sse_retry_ms),
        )


async def create_and_stream(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    st = await hub.create(await read_json(request), client_address(request))
    async with hub.subscribe(st.id, -1, "sse") as sub:
        return await pump(
            request,
            sub,
            transport="sse",
            content_type=CONTENT_TYPE,
            frame=sse_frames,
            heartbeat=PING,
            prefix=sse_retry(request.app[SETTINGS].sse_retry_ms)
            + sse_control("created", created_message(st.id)),
            headers={"Tokenwire-Stream": st.id, "Location": f"/api/streams/{st.id}"},
        )
