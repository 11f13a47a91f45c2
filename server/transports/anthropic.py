"""Anthropic's Messages route: ``POST /v1/messages``.

A message is an ordinary tokenwire stream read from the start by the request that created
it (:mod:`server.transports.dialect`); errors take Anthropic's shape.
"""

from __future__ import annotations

from aiohttp import web

from server.appkeys import HUB, METRICS, SETTINGS
from server.errors import GenerationError
from server.framing import anthropic as framing
from server.messages_request import parse_messages_body
from server.transports.dialect import (
    CLIENT_LEFT,
    json_answer,
    sse_format,
    stream_answer,
    whole_answer,
)
from server.transports.streaming import client_address, read_json
from wire import Dialect

TRANSPORT: Dialect = "anthropic"

#: Ends the stream of a reader that fell behind what the log retains (never silently).
GONE = framing.error_frame(
    GenerationError("gone", "the reader fell behind what the stream's log retains")
)


async def create_message(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    req = parse_messages_body(await read_json(request), request.app[SETTINGS], hub.sources)
    stream = await hub.start(req.create, client_address(request))
    framer = framing.MessageFramer(
        stream_id=stream.id,
        model=req.model,
        input_tokens=req.input_tokens,
        typed=req.typed,
        thinking=req.thinking,
    )
    async with (
        request.app[METRICS].reading(TRANSPORT),
        hub.subscribe(stream.id, -1, TRANSPORT) as sub,
    ):
        if req.stream:
            stream_format = sse_format(TRANSPORT, framer.frames, framing.PING, GONE)
            return await stream_answer(request, stream, sub, stream_format, framer.start())
        answer = await whole_answer(request, stream, sub)
    if answer is None:
        return web.Response(status=CLIENT_LEFT)
    events, end = answer
    body = framer.message_of(events, end)
    request.app[METRICS].sent(TRANSPORT, len(events), len(body))
    return json_answer(body, stream)
