"""Anthropic's Messages route: ``POST /v1/messages``.

A message is an ordinary tokenwire stream read from the start by the request that created
it, like a chat completion (:mod:`server.transports.openai`): its headers wait for the
first event, so a generation that fails before its first token is answered with a status
(in Anthropic's error shape).
"""

from __future__ import annotations

from aiohttp import web

from server.appkeys import HUB, METRICS, SETTINGS
from server.errors import GenerationError
from server.framing import anthropic as framing
from server.framing.openai import outcome, token_texts
from server.messages_request import parse_messages_body
from server.transports.openai import first_batch, read_to_end, stream_headers
from server.transports.streaming import StreamFormat, client_address, pump, read_json
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
        stream_id=stream.id, model=req.model, input_tokens=req.input_tokens
    )
    async with hub.subscribe(stream.id, -1, TRANSPORT) as sub:
        if req.stream:
            first = await first_batch(request, stream, sub)
            prefix = framer.start() + framer.frames(first)
            request.app[METRICS].sent(TRANSPORT, len(first), len(prefix))
            stream_format = StreamFormat(
                transport=TRANSPORT,
                content_type="text/event-stream; charset=utf-8",
                frame=framer.frames,
                heartbeat=framing.PING,
                preamble=lambda settings: b"",
                created=lambda data: b"",
                gone=GONE,
                shared=False,  # the frames are this request's (its model, its id)
            )
            return await pump(request, sub, stream_format, prefix, headers=stream_headers(stream))
        events = await read_to_end(request, sub)
    if events is None:
        return web.Response(status=499)
    end = outcome(stream.id, events[-1])
    if isinstance(end, GenerationError):
        raise end
    body = framer.message("".join(token_texts(events)), end, events[-1].seq)
    request.app[METRICS].sent(TRANSPORT, len(events), len(body))
    return web.Response(body=body, content_type="application/json", headers=stream_headers(stream))
