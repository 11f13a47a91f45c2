"""OpenAI-compatible routes: ``POST /v1/chat/completions``, ``GET /v1/models[/{model}]``.

A chat completion is an ordinary tokenwire stream read from the start by the request that
created it (:mod:`server.transports.dialect`).
"""

from __future__ import annotations

import time

from aiohttp import web

from server.appkeys import HUB, METRICS, SETTINGS
from server.chat_request import ChatRequest, model_ids, parse_chat_body
from server.errors import GenerationError, ModelNotFound
from server.framing import openai as framing
from server.framing.sse import PING
from server.hub import StreamRecord, Subscription
from server.transports.dialect import (
    CLIENT_LEFT,
    json_answer,
    sse_format,
    stream_answer,
    whole_answer,
)
from server.transports.streaming import client_address, read_json
from wire import Dialect

TRANSPORT: Dialect = "openai"

#: Ends the stream of a reader that fell behind what the log retains (never silently).
GONE = framing.error_frame(
    GenerationError("gone", "the reader fell behind what the stream's log retains")
)

#: ``created`` of the listed models: when this process started serving.
STARTED = int(time.time())


async def chat_completions(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    chat = parse_chat_body(await read_json(request), request.app[SETTINGS], hub.sources)
    stream = await hub.start(chat.create, client_address(request))
    reading = request.app[METRICS].reading(TRANSPORT)
    async with reading, hub.subscribe(stream.id, -1, TRANSPORT) as sub:
        if chat.stream:
            return await _stream(request, chat, stream, sub)
        return await _complete(request, chat, stream, sub)


async def _stream(
    request: web.Request, chat: ChatRequest, stream: StreamRecord, sub: Subscription
) -> web.StreamResponse:
    framer = framing.ChunkFramer(
        stream_id=stream.id,
        created=int(stream.created_at),
        model=chat.model,
        include_usage=chat.include_usage,
        prompt_tokens=chat.prompt_tokens,
    )
    stream_format = sse_format(TRANSPORT, framer.frames, PING, GONE)
    return await stream_answer(request, stream, sub, stream_format, framer.role())


async def _complete(
    request: web.Request, chat: ChatRequest, stream: StreamRecord, sub: Subscription
) -> web.StreamResponse:
    answer = await whole_answer(request, stream, sub)
    if answer is None:
        return web.Response(status=CLIENT_LEFT)
    events, end = answer
    body = framing.completion_of(
        events,
        stream_id=stream.id,
        created=int(stream.created_at),
        model=chat.model,
        finish_reason=end,
        prompt_tokens=chat.prompt_tokens,
    )
    request.app[METRICS].sent(TRANSPORT, len(events), len(body))
    return json_answer(body, stream)


async def list_models(request: web.Request) -> web.Response:
    body = framing.model_list(model_ids(request.app[HUB].sources), STARTED)
    return web.Response(body=body, content_type="application/json")


async def retrieve_model(request: web.Request) -> web.Response:
    model = request.match_info["model"]
    if model not in model_ids(request.app[HUB].sources):
        raise ModelNotFound(model)
    return web.Response(body=framing.model_body(model, STARTED), content_type="application/json")
