"""OpenAI Responses routes: ``POST /v1/responses``, ``GET /v1/responses/{id}`` (the object,
or with ``stream=true`` its events after ``starting_after``), ``POST .../cancel``.

A response is an ordinary tokenwire stream (``resp_<stream id>``); every read of it
subscribes from the log's start, so a resumed read numbers its events as the first one
did (:mod:`server.framing.responses`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

import orjson
from aiohttp import web

from server.appkeys import HUB, METRICS, SETTINGS
from server.errors import InvalidField, StreamGone, UnknownStream
from server.framing import responses as framing
from server.framing.sse import PING
from server.hub import StreamRecord
from server.responses_request import ResponsesRequest, parse_responses_body
from server.transports.dialect import (
    CLIENT_LEFT,
    json_answer,
    read_to_end,
    sse_format,
    stream_answer,
    stream_headers,
    whole_answer,
)
from server.transports.streaming import StreamFormat, client_address, pump, read_json
from server.validation import parse_after
from wire import Dialect

TRANSPORT: Dialect = "responses"

log = logging.getLogger("tokenwire.transport")

#: The note on a response's record that keeps what its request said (model, instructions,
#: ...), so that its object says it on every read, on every process; a stream created
#: with ``POST /api/streams`` has none and is described from its record.
NOTE: Final = "responses"

#: Ends the stream of a reader that fell behind what the log retains (never silently).
GONE = framing.error_frame("gone", "the reader fell behind what the stream's log retains", None)

#: Background responses' readers (a reader keeps its stream from being abandoned while
#: nobody else reads it); referenced here so they are not collected while they run.
_KEEPERS: set[asyncio.Task[None]] = set()


def _meta(stream: StreamRecord) -> framing.ResponseMeta:
    noted = stream.notes.get(NOTE)
    if noted is not None:
        return framing.ResponseMeta(**orjson.loads(noted))
    return framing.ResponseMeta(
        stream_id=stream.id,
        created_at=int(stream.created_at),
        model=stream.source,
        max_output_tokens=stream.max_tokens,
        input_tokens=0,
    )


def _format(framer: framing.ResponseFramer) -> StreamFormat:
    # The framer keeps the text so far and this reader's position: never shared.
    return sse_format(TRANSPORT, framer.frames, PING, GONE)


async def _keep(request: web.Request, stream_id: str) -> None:
    """Read the stream to its end (the reader that keeps a background response running)."""
    try:
        async with request.app[HUB].subscribe(stream_id, -1, TRANSPORT) as sub:
            while not sub.finished:
                await sub.next_batch(None)
    except (StreamGone, UnknownStream):  # expired or evicted first: nothing left to keep
        log.info("background reader of %s: the stream is gone", stream_id)


def _keep_in_background(request: web.Request, stream_id: str) -> None:
    task = asyncio.get_running_loop().create_task(_keep(request, stream_id))
    _KEEPERS.add(task)
    task.add_done_callback(_KEEPERS.discard)


async def create_response(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    req = parse_responses_body(await read_json(request), request.app[SETTINGS], hub.sources)
    stream = await hub.start(req.create, client_address(request))
    meta = _new_meta(req, stream)
    await hub.note(stream, NOTE, orjson.dumps(meta))
    if req.background:
        _keep_in_background(request, stream.id)
    framer = framing.ResponseFramer(meta)
    if req.background and not req.stream:
        return json_answer(framer.response(opening=True), stream)
    async with (
        request.app[METRICS].reading(TRANSPORT),
        hub.subscribe(stream.id, -1, TRANSPORT) as sub,
    ):
        if req.stream:
            return await stream_answer(request, stream, sub, _format(framer), framer.opening())
        answer = await whole_answer(request, stream, sub)
    if answer is None:
        return web.Response(status=CLIENT_LEFT)
    framer.frames(answer[0])
    return json_answer(framer.response(), stream)


def _new_meta(req: ResponsesRequest, stream: StreamRecord) -> framing.ResponseMeta:
    return framing.ResponseMeta(
        stream_id=stream.id,
        created_at=int(stream.created_at),
        model=req.model,
        max_output_tokens=stream.max_tokens,
        input_tokens=req.input_tokens,
        background=req.background,
        instructions=req.instructions,
        temperature=req.temperature,
        top_p=req.top_p,
        typed=req.reasoning_effort is not None or bool(req.tools.offered),
        reasoning_effort=req.reasoning_effort,
        tools=tuple(framing.tool_object(t) for t in req.tools.tools),
        tool_choice=req.tool_choice,
    )


def _stream_flag(raw: str | None) -> bool:
    if raw in (None, "false"):
        return False
    if raw == "true":
        return True
    raise InvalidField("stream", "must be true or false")


async def retrieve_response(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    stream = await hub.lookup(framing.stream_of(request.match_info["response_id"]))
    streamed = _stream_flag(request.query.get("stream"))
    starting_after = parse_after(request.query.get("starting_after"), "starting_after")
    framer = framing.ResponseFramer(_meta(stream), starting_after)
    async with (
        request.app[METRICS].reading(TRANSPORT),
        hub.subscribe(stream.id, -1, TRANSPORT) as sub,
    ):
        if streamed:
            return await pump(
                request, sub, _format(framer), framer.opening(), headers=stream_headers(stream)
            )
        # The output so far: what the log holds now, without waiting for more.
        while not sub.finished and (batch := await sub.next_batch(0)):
            framer.frames(batch)
    return json_answer(framer.response(), stream)


async def cancel_response(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    stream = await hub.cancel(framing.stream_of(request.match_info["response_id"]))
    framer = framing.ResponseFramer(_meta(stream))
    async with (
        request.app[METRICS].reading(TRANSPORT),
        hub.subscribe(stream.id, -1, TRANSPORT) as sub,
    ):
        events = await read_to_end(request, sub)  # a cancelled stream ends at once
    if events is None:
        return web.Response(status=CLIENT_LEFT)
    framer.frames(events)
    return json_answer(framer.response(), stream)
