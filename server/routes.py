"""The route table: every API route once, with what ``/openapi.json`` says about it.

``create_app`` registers :data:`ROUTES`; :func:`document` walks the same list. (The demo
page and its files are not part of the API: ``create_app`` adds them itself.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from aiohttp import web

from server import openapi
from server.appkeys import HUB, SETTINGS
from server.errors import ApiError
from server.openapi import (
    NDJSON,
    NDJSON_LINE,
    NDJSON_TEXT,
    SSE,
    SSE_EVENT,
    SSE_TEXT,
    STREAM_HEADERS,
    STRING,
    dialect_responses,
    errors,
    header,
    json_answer,
    param_ref,
    ref,
    stream_answer,
    text_answer,
)
from server.rest import cancel_stream, create_stream, healthz, info, metrics, stream_status
from server.security import WEBSOCKET_PATH
from server.settings import Settings
from server.sources.base import TokenSource
from server.transports import anthropic, chunked, longpoll, responses, sse, ws
from server.transports import openai as v1
from server.validation import MAX_AFTER

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """One API route: what the router needs and what its OpenAPI operation says."""

    method: str
    #: The path as OpenAPI writes it (``{name}`` placeholders).
    path: str
    handler: Handler
    summary: str
    #: OpenAPI responses, by status.
    responses: Mapping[str, Any]
    #: OpenAPI parameters (usually ``param_ref(...)``s).
    parameters: tuple[Mapping[str, Any], ...] = ()
    #: The ``components/schemas`` name of the JSON request body.
    body: str | None = None
    #: The router's path, where it differs (a placeholder with a pattern).
    router_path: str | None = None
    #: A ``GET`` also answers ``HEAD``.
    allow_head: bool = False


_READ_ERRORS = ("400", "401", "403", "404", "410")
#: The reads that take a position (``after``, ``Last-Event-ID``).
_POSITION_ERRORS = (*_READ_ERRORS, "416")
_CREATE_ERRORS = ("400", "401", "403", "408", "413", "415", "429", "503")
_ID = (param_ref("id"),)
_RESPONSE_ID = {
    "name": "response_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^(resp_)?[A-Za-z0-9_-]{1,64}$"},
}
_ENDED = {"description": "The stream ended and nothing follows the position"}


async def openapi_document(request: web.Request) -> web.Response:
    doc = document(request.app[SETTINGS], request.app[HUB].sources)
    return web.Response(body=orjson.dumps(doc), content_type="application/json")


ROUTES: tuple[Route, ...] = (
    Route(
        method="POST",
        path="/api/streams",
        handler=create_stream,
        summary="Create a stream (start one generation)",
        responses={
            "201": json_answer("Created", ref("Created"), {"Location": header(required=True)}),
            **errors(*_CREATE_ERRORS),
        },
        body="CreateBody",
    ),
    Route(
        method="GET",
        path="/api/streams/{id}",
        handler=stream_status,
        summary="A stream's state",
        responses={"200": json_answer("The state", ref("StreamStatus")), **errors(*_READ_ERRORS)},
        parameters=_ID,
    ),
    Route(
        method="DELETE",
        path="/api/streams/{id}",
        handler=cancel_stream,
        summary="Cancel a stream (idempotent); it ends with done / cancelled",
        responses={"204": {"description": "Cancelled"}, **errors(*_READ_ERRORS)},
        parameters=_ID,
    ),
    Route(
        method="GET",
        path="/api/streams/{id}/sse",
        handler=sse.subscribe,
        summary="Read a stream as Server-Sent Events",
        responses={
            "200": stream_answer(SSE, SSE_EVENT, SSE_TEXT),
            "204": _ENDED,
            **errors(*_POSITION_ERRORS),
        },
        parameters=(*_ID, param_ref("after"), param_ref("lastEventId")),
    ),
    Route(
        method="GET",
        path="/api/streams/{id}/chunked",
        handler=chunked.subscribe,
        summary="Read a stream as chunked NDJSON",
        responses={
            "200": stream_answer(NDJSON, NDJSON_LINE, NDJSON_TEXT),
            "204": _ENDED,
            **errors(*_POSITION_ERRORS),
        },
        parameters=(*_ID, param_ref("after")),
    ),
    Route(
        method="GET",
        path="/api/streams/{id}/poll",
        handler=longpoll.poll,
        summary="One long poll: the events after `after`, or none after `timeout`",
        responses={"200": json_answer("A batch", ref("PollAnswer")), **errors(*_POSITION_ERRORS)},
        parameters=(*_ID, param_ref("after"), param_ref("timeout")),
    ),
    Route(
        method="POST",
        path="/api/sse",
        handler=sse.create_and_stream,
        summary="Create a stream and read it as Server-Sent Events (first: a `created` event)",
        responses={
            "200": stream_answer(SSE, SSE_EVENT, SSE_TEXT, STREAM_HEADERS),
            **errors(*_CREATE_ERRORS),
        },
        body="CreateBody",
    ),
    Route(
        method="POST",
        path="/api/chunked",
        handler=chunked.create_and_stream,
        summary="Create a stream and read it as NDJSON (first line: {type: created, stream})",
        responses={
            "200": stream_answer(NDJSON, NDJSON_LINE, NDJSON_TEXT, STREAM_HEADERS),
            **errors(*_CREATE_ERRORS),
        },
        body="CreateBody",
    ),
    Route(
        method="GET",
        path=WEBSOCKET_PATH,
        handler=ws.websocket,
        summary="The WebSocket (JSON messages, docs/protocol.md); a plain GET is 426",
        responses={
            "101": {"description": "Switching Protocols"},
            **errors("401", "403", "426"),
        },
    ),
    Route(
        method="GET",
        path="/api/info",
        handler=info,
        summary="Sources, limits and whether a token is needed",
        responses={"200": json_answer("Info", ref("Info")), **errors("403")},
    ),
    Route(
        method="GET",
        path="/healthz",
        handler=healthz,
        summary="Liveness",
        responses={"200": json_answer("Health", ref("Health")), **errors("403")},
        allow_head=True,
    ),
    Route(
        method="GET",
        path="/metrics",
        handler=metrics,
        summary="Prometheus metrics",
        responses={
            "200": text_answer("text/plain", "Prometheus text format"),
            **errors("401", "403"),
        },
        allow_head=True,
    ),
    Route(
        method="GET",
        path="/openapi.json",
        handler=openapi_document,
        summary="This document",
        responses={"200": json_answer("OpenAPI 3.2", {"type": "object"}), **errors("403")},
    ),
    # The OpenAI-compatible dialect, so the official SDKs and tools built on them work.
    Route(
        method="GET",
        path="/v1/models",
        handler=v1.list_models,
        summary="The models (OpenAI's shape)",
        responses={
            "200": json_answer("The list", ref("ModelList")),
            **errors("401", "403", openai=True),
        },
    ),
    Route(
        method="GET",
        path="/v1/models/{model}",
        router_path="/v1/models/{model:.+}",
        handler=v1.retrieve_model,
        summary="One model (OpenAI's shape)",
        responses={
            "200": json_answer("The model", ref("Model")),
            **errors("401", "403", "404", openai=True),
        },
        parameters=({"name": "model", "in": "path", "required": True, "schema": STRING},),
    ),
    Route(
        method="POST",
        path="/v1/chat/completions",
        handler=v1.chat_completions,
        summary="A chat completion (OpenAI's Chat Completions); with `stream`: SSE chunks",
        responses=openapi.CHAT_RESPONSES,
        body="ChatBody",
    ),
    # OpenAI's Responses API, with its resume (``starting_after``).
    Route(
        method="POST",
        path="/v1/responses",
        handler=responses.create_response,
        summary="A response (OpenAI's Responses API); with `stream`: SSE events; with "
        "`background`: answered at once, read or resumed with GET",
        responses=dialect_responses(
            "Response",
            "The response; with `stream: true` its events (`sequence_number` from 0)",
            statuses=("400", "401", "403", "404", "413", "429", "503"),
        ),
        body="ResponsesBody",
    ),
    Route(
        method="GET",
        path="/v1/responses/{response_id}",
        handler=responses.retrieve_response,
        summary="A response with its output so far; with `stream=true` its events after "
        "`starting_after`",
        responses={
            "200": {
                "description": "The response, or with `stream=true` its events",
                "headers": STREAM_HEADERS,
                "content": {
                    "application/json": {"schema": ref("Response")},
                    SSE: {"itemSchema": openapi.NAMED_SSE_EVENT},
                },
            },
            **errors(*_READ_ERRORS, openai=True),
        },
        parameters=(
            _RESPONSE_ID,
            {"name": "stream", "in": "query", "schema": {"enum": ["true", "false"]}},
            {
                "name": "starting_after",
                "in": "query",
                "description": "the events with a greater sequence_number",
                "schema": {"type": "integer", "minimum": -1, "maximum": MAX_AFTER},
            },
        ),
    ),
    Route(
        method="POST",
        path="/v1/responses/{response_id}/cancel",
        handler=responses.cancel_response,
        summary="Cancel a response (idempotent): the response as it ended",
        responses={
            "200": json_answer("The response", ref("Response"), STREAM_HEADERS),
            **errors("401", "403", "404", "410", openai=True),
        },
        parameters=(_RESPONSE_ID,),
    ),
    # Anthropic's Messages API.
    Route(
        method="POST",
        path="/v1/messages",
        handler=anthropic.create_message,
        summary="A message (Anthropic's Messages API); with `stream`: SSE events",
        responses=dialect_responses(
            "Message",
            "The message; with `stream: true` its events",
            anthropic=True,
            statuses=("400", "401", "403", "404", "413", "429", "503"),
        ),
        body="MessagesBody",
    ),
)

#: The routes that answer errors in Anthropic's shape (every other ``/v1/`` route: OpenAI's).
ANTHROPIC_PATHS: Final = frozenset({"/v1/messages"})


def error_body(err: ApiError, path: str) -> dict[str, Any]:
    """An error's JSON body in the shape of the dialect that ``path`` speaks."""
    if path in ANTHROPIC_PATHS:
        return err.anthropic_body()
    if path.startswith("/v1/"):
        return err.openai_body()
    return err.body()


def document(settings: Settings, sources: Mapping[str, TokenSource]) -> dict[str, Any]:
    """The OpenAPI document of a server with these settings and sources."""
    return openapi.build(settings, sources, ROUTES)
