"""Long polling: ``GET /api/streams/{id}/poll?after=&timeout=``.

Answers as soon as an event after ``after`` exists (all that exist, batched), or after
``timeout`` with none; the answer is sent within ``send_timeout_s`` like a streamed batch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from aiohttp import web

from server.appkeys import HUB, METRICS, SETTINGS
from server.events import Event
from server.framing.longpoll import poll_body
from server.transports.streaming import send_deadline
from server.validation import parse_after, parse_timeout

log = logging.getLogger("tokenwire.transport")


def poll_batch(events: Sequence[Event]) -> bytes:
    """The answer to a poll that got ``events``: it depends on them only (they follow the
    poll's ``after``; ``done`` is whether the last is terminal), so it can be shared."""
    return poll_body(events, events[0].seq - 1, events[-1].terminal)


async def poll(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    settings = request.app[SETTINGS]
    after = parse_after(request.query.get("after"))
    timeout = parse_timeout(
        request.query.get("timeout"), settings.poll_timeout_s, settings.max_poll_timeout_s
    )
    stream = await hub.lookup(request.match_info["id"])
    hub.touch(stream)
    metrics = request.app[METRICS]
    async with metrics.reading("poll"), hub.subscribe(stream, after, "poll") as sub:
        events = await sub.next_batch(timeout)
        # Pollers of a stream woken by the same append share one body (fan-out).
        body = sub.framed(poll_batch, events) if events else poll_body(events, after, sub.finished)
    metrics.sent("poll", len(events), len(body))
    resp = web.Response(
        body=body,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
    try:
        async with send_deadline(request.transport, len(body), settings.send_timeout_s or None):
            await resp.prepare(request)
            await resp.write_eof()
    except TimeoutError:
        log.info("dropping a poll client of %s: send timed out", stream.id)
        if request.transport is not None:
            request.transport.abort()
    return resp
