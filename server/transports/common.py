"""What the HTTP transports share: reading the request, and pumping a subscription.

``pump()`` is the whole life of a streaming response (SSE and chunked differ only in the
framing functions they pass): prepare, write each batch of events in one write, write a
heartbeat when idle, stop after the terminal event. A client that stops reading is dropped
after ``send_timeout_s``; a client that leaves ends the loop at the next write.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from aiohttp import web

from server.errors import BadRequest, StreamGone
from server.events import Event
from server.hub import Subscription
from server.keys import METRICS, SETTINGS

log = logging.getLogger("tokenwire.transport")

Framer = Callable[[Sequence[Event]], bytes]


def client_address(request: web.Request) -> str:
    return request.remote or "unknown"


async def read_json(request: web.Request) -> Any:
    """The request body as JSON; a clear 400 if it is not."""
    raw = await request.read()  # aiohttp answers 413 past client_max_size
    if not raw:
        raise BadRequest("request body is empty; expected a JSON object", code="bad_json")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"request body is not valid JSON: {e}", code="bad_json") from None


async def pump(
    request: web.Request,
    sub: Subscription,
    *,
    transport: str,
    content_type: str,
    frame: Framer,
    heartbeat: bytes,
    prefix: bytes = b"",
    headers: dict[str, str] | None = None,
) -> web.StreamResponse:
    """Stream a subscription to the client until its terminal event."""
    settings = request.app[SETTINGS]
    metrics = request.app[METRICS]
    resp = web.StreamResponse(
        headers={
            "Content-Type": content_type,
            "Cache-Control": "no-cache, no-transform",
            "X-Accel-Buffering": "no",
            **(headers or {}),
        }
    )
    resp.enable_chunked_encoding()
    send_timeout = settings.send_timeout_s or None
    try:
        await resp.prepare(request)
        if prefix:
            await resp.write(prefix)
        while not sub.finished:
            try:
                batch = await sub.next_batch(settings.heartbeat_s or None)
            except StreamGone:
                # Fell behind what the log retains: end without a terminal event, so the
                # client's resume is answered 410 ``gone`` rather than silently skipping.
                log.info("subscriber of %s fell out of the retained log", sub.stream.id)
                break
            data = frame(batch) if batch else heartbeat
            async with asyncio.timeout(send_timeout):
                await resp.write(data)
            metrics.sent(transport, len(batch), len(data))
        await resp.write_eof()
    except TimeoutError:
        log.info("dropping a %s client of %s: send timed out", transport, sub.stream.id)
        if request.transport is not None:
            request.transport.abort()
    except ConnectionResetError:
        log.debug("%s client of %s left", transport, sub.stream.id)
    return resp
