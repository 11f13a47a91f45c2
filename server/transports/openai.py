"""OpenAI-compatible routes: ``POST /v1/chat/completions``, ``GET /v1/models[/{model}]``.

A chat completion is an ordinary tokenwire stream read from the start by the request that
created it; its headers wait for the first event, so a generation that fails before its
first token is answered with an HTTP status.
"""

from __future__ import annotations

import time

from aiohttp import web

from server.appkeys import HUB, METRICS, SETTINGS
from server.chat_request import ChatRequest, model_ids, parse_chat_body
from server.errors import GenerationError, ModelNotFound
from server.events import Event
from server.framing import openai as framing
from server.framing.sse import PING
from server.hub import StreamRecord, Subscription
from server.transports.streaming import StreamFormat, client_address, pump, read_json
from wire import Dialect

TRANSPORT: Dialect = "openai"

#: Ends the stream of a reader that fell behind what the log retains (never silently).
GONE = framing.error_frame(
    GenerationError("gone", "the reader fell behind what the stream's log retains")
)

#: ``created`` of the listed models: when this process started serving.
STARTED = int(time.time())


def _headers(stream: StreamRecord) -> dict[str, str]:
    # X-Request-Id is what the SDK exposes as ``_request_id`` on a response object.
    return {
        "Tokenwire-Stream": stream.id,
        "X-Request-Id": stream.id,
        "Location": f"/api/streams/{stream.id}",
    }


def _client_gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


async def chat_completions(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    chat = parse_chat_body(await read_json(request), request.app[SETTINGS], hub.sources)
    stream = await hub.start(chat.create, client_address(request))
    reading = request.app[METRICS].reading(TRANSPORT)
    async with reading, hub.subscribe(stream.id, -1, TRANSPORT) as sub:
        if chat.stream:
            return await _stream(request, chat, stream, sub)
        return await _complete(request, chat, stream, sub)


async def _first_batch(
    request: web.Request, stream: StreamRecord, sub: Subscription
) -> list[Event]:
    """The stream's first events, or ``[]`` after ``heartbeat_s`` with none.

    Raises:
        GenerationError: The stream ended before its first token (answered as a status).
    """
    batch = await sub.next_batch(request.app[SETTINGS].heartbeat_s or None)
    if len(batch) == 1 and batch[0].terminal:
        end = framing.outcome(stream.id, batch[0])
        if isinstance(end, GenerationError):
            raise end
    return batch


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
    stream_format = StreamFormat(
        transport=TRANSPORT,
        content_type="text/event-stream; charset=utf-8",
        frame=framer.frames,
        heartbeat=PING,
        preamble=lambda settings: b"",
        created=lambda data: b"",
        gone=GONE,
        shared=False,  # the chunk template is this request's (its id, model, created)
    )
    first = await _first_batch(request, stream, sub)
    prefix = framer.role() + framer.frames(first)
    request.app[METRICS].sent(TRANSPORT, len(first), len(prefix))
    return await pump(request, sub, stream_format, prefix, headers=_headers(stream))


async def _complete(
    request: web.Request, chat: ChatRequest, stream: StreamRecord, sub: Subscription
) -> web.StreamResponse:
    heartbeat = request.app[SETTINGS].heartbeat_s or None
    events: list[Event] = []
    while not sub.finished:
        events.extend(await sub.next_batch(heartbeat))
        if _client_gone(request):
            # Nobody will read the answer: stop reading, and the grace period cancels the
            # stream. 499 (nginx's "client closed request") only shows in the access log.
            return web.Response(status=499)
    end = framing.outcome(stream.id, events[-1])
    if isinstance(end, GenerationError):
        raise end
    body = framing.completion(
        stream_id=stream.id,
        created=int(stream.created_at),
        model=chat.model,
        text="".join(framing.token_texts(events)),
        finish_reason=end,
        prompt_tokens=chat.prompt_tokens,
        completion_tokens=events[-1].seq,
    )
    request.app[METRICS].sent(TRANSPORT, len(events), len(body))
    return web.Response(body=body, content_type="application/json", headers=_headers(stream))


async def list_models(request: web.Request) -> web.Response:
    body = framing.model_list(model_ids(request.app[HUB].sources), STARTED)
    return web.Response(body=body, content_type="application/json")


async def retrieve_model(request: web.Request) -> web.Response:
    model = request.match_info["model"]
    if model not in model_ids(request.app[HUB].sources):
        raise ModelNotFound(model)
    return web.Response(body=framing.model_body(model, STARTED), content_type="application/json")
