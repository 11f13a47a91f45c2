"""``GET /openapi.json``: an OpenAPI 3.2 document of the HTTP API, as this server is set up.

It is built from the settings and the enabled sources, so its limits are the ones the
server enforces (``prompt`` length, ``max_tokens``, pace params, the long-poll ``timeout``),
its ``source`` and ``model`` values are the ones it serves, and it declares the bearer
token only when ``auth_token`` is set. Every response a route can give is described,
errors included; ``tests/test_openapi.py`` checks real answers against it (and runs
schemathesis on a live server).

OpenAPI 3.2 because it describes streams: a ``text/event-stream`` or ``application/x-ndjson``
answer has an ``itemSchema`` for each of its events (for SSE: the ``event``/``id``/``data``
fields, with ``data`` holding JSON of :data:`EVENT`'s shape, via ``contentMediaType`` and
``contentSchema``). The WebSocket (``GET /api/ws``) is described only as the upgrade; its
messages are in ``docs/protocol.md``. The demo page and its files are not part of the API.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

import server
from server.chat import IGNORED_FIELDS, SAMPLING_FIELDS, model_ids
from server.hub import READ_LIMIT
from server.keys import HUB, SETTINGS
from server.settings import Settings
from server.sources.base import CHAT_ROLES, TokenSource
from server.validation import MAX_AFTER
from wire import EVENT_TYPES, READERS, TRANSPORTS

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def _json_string(schema: Schema) -> Schema:
    """A string holding JSON of ``schema``'s shape (an SSE ``data`` field)."""
    return {"type": "string", "contentMediaType": "application/json", "contentSchema": schema}


def _object(properties: Mapping[str, Schema], *, optional: tuple[str, ...] = ()) -> Schema:
    """A closed object whose properties are all required but ``optional``."""
    return {
        "type": "object",
        "properties": dict(properties),
        "required": [k for k in properties if k not in optional],
        "additionalProperties": False,
    }


STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
STREAM_ID: Schema = {"type": "string", "description": "a stream id (URL-safe)"}

TOKEN_EVENT = _object(
    {
        "stream": STRING,
        "seq": {"type": "integer", "minimum": 0},
        "type": {"const": "token"},
        "text": {"type": "string", "minLength": 1},
        "t": {"type": "integer", "description": "server time.time_ns() when logged"},
    }
)
DONE_EVENT = _object(
    {
        "stream": STRING,
        "seq": {"type": "integer", "minimum": 0},
        "type": {"const": "done"},
        "finish_reason": {"enum": ["stop", "length", "cancelled"]},
        "tokens": {"type": "integer", "minimum": 0},
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "t": INTEGER,
    }
)
ERROR_EVENT = _object(
    {
        "stream": STRING,
        "seq": {"type": "integer", "minimum": 0},
        "type": {"const": "error"},
        "code": STRING,
        "message": STRING,
        "t": INTEGER,
    }
)
#: One event of a stream, as every transport carries it.
EVENT: Schema = {
    "oneOf": [_ref("TokenEvent"), _ref("DoneEvent"), _ref("ErrorEvent")],
    "discriminator": {
        "propertyName": "type",
        "mapping": {
            "token": "#/components/schemas/TokenEvent",
            "done": "#/components/schemas/DoneEvent",
            "error": "#/components/schemas/ErrorEvent",
        },
    },
}
#: ``{"type":"created","stream":id}``, first of a create-and-stream answer (not in the log).
CREATED_MESSAGE = _object({"type": {"const": "created"}, "stream": STREAM_ID})
#: One SSE event of a tokenwire stream: a logged event (with its seq as ``id``), or the
#: ``created`` control message (no ``id``).
SSE_EVENT: Schema = {
    "type": "object",
    "oneOf": [
        {
            "properties": {
                "event": {"enum": list(EVENT_TYPES)},
                "id": {"type": "string", "pattern": "^(0|[1-9][0-9]*)$"},
                "data": _json_string(_ref("Event")),
            },
            "required": ["event", "id", "data"],
        },
        {
            "properties": {
                "event": {"const": "created"},
                "data": _json_string(_ref("CreatedMessage")),
            },
            "required": ["event", "data"],
        },
    ],
}
#: One NDJSON line of a tokenwire stream (an empty line is a heartbeat, not an item).
NDJSON_LINE: Schema = {"oneOf": [_ref("Event"), _ref("CreatedMessage")]}

ERROR = _object({"error": _object({"code": STRING, "message": STRING})})
OPENAI_ERROR = _object(
    {
        "error": _object(
            {
                "message": STRING,
                "type": {"enum": ["invalid_request_error", "requests", "server_error"]},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            }
        )
    }
)


def _create_body(settings: Settings, sources: Mapping[str, TokenSource]) -> Schema:
    params = _source_params(sources)
    return {
        "description": "`null` means absent (the default)",
        **_object(
            {
                "prompt": {"type": "string", "maxLength": settings.max_prompt_chars},
                "max_tokens": _nullable(
                    {"type": "integer", "minimum": 1, "maximum": settings.max_tokens_cap}
                ),
                "source": _nullable({"enum": list(sources)}),
                "params": _nullable(params),
            },
            optional=("max_tokens", "source", "params"),
        ),
    }


def _source_params(sources: Mapping[str, TokenSource]) -> Schema:
    """A closed object of the one enabled source's params (each source declares them)."""
    if len(sources) == 1:
        (source,) = sources.values()
        return {
            "type": "object",
            "properties": {p.name: p.schema() for p in source.params},
            "additionalProperties": False,
        }
    return {"type": "object", "description": "the source's params (docs/protocol.md)"}


def _chat_body(settings: Settings, sources: Mapping[str, TokenSource]) -> Schema:
    nullable = _nullable
    max_tokens = nullable({"type": "integer", "minimum": 1, "maximum": settings.max_tokens_cap})
    part = _object({"type": {"const": "text"}, "text": STRING})
    message = _object(
        {
            "role": {"enum": list(CHAT_ROLES)},
            "content": {"anyOf": [STRING, {"type": "array", "items": part, "minItems": 1}]},
            "name": nullable(STRING),
        },
        optional=("name",),
    )
    flag = nullable({"type": "boolean"})
    fields: dict[str, Schema] = {
        "model": {"enum": model_ids(sources)},
        "messages": {"type": "array", "items": message, "minItems": 1},
        "max_tokens": max_tokens,
        "max_completion_tokens": max_tokens,
        **{field.name: nullable(field.schema()) for field in SAMPLING_FIELDS},
        "n": nullable({"const": 1}),
        "stream": flag,
        "stream_options": nullable(
            _object(
                {"include_usage": flag, "include_obfuscation": flag},
                optional=("include_usage", "include_obfuscation"),
            )
        ),
        "params": nullable(_source_params(sources)),
        **{name: {"description": "accepted and ignored"} for name in sorted(IGNORED_FIELDS)},
    }
    return {
        "description": "OpenAI's Chat Completions body; `null` means absent. The fields "
        "accepted only with the value that asks for nothing (`tools: []`, ...) are listed in "
        "docs/protocol.md; any other field is 400.",
        **_object(fields, optional=tuple(k for k in fields if k not in ("model", "messages"))),
        "not": {"required": ["max_tokens", "max_completion_tokens"]},
        # stream_options only with "stream": true
        "if": {
            "properties": {"stream_options": {"type": "object"}},
            "required": ["stream_options"],
        },
        "then": {"properties": {"stream": {"const": True}}, "required": ["stream"]},
    }


_USAGE = _object({"prompt_tokens": INTEGER, "completion_tokens": INTEGER, "total_tokens": INTEGER})


def _chat_object(kind: str, choice: Mapping[str, Schema], usage: Schema, *, chunk: bool) -> Schema:
    """``chat.completion`` or ``chat.completion.chunk``: one choice (none in the usage chunk)."""
    return _object(
        {
            "id": {"type": "string", "pattern": "^chatcmpl-"},
            "object": {"const": kind},
            "created": INTEGER,
            "model": STRING,
            "choices": {
                "type": "array",
                "minItems": 0 if chunk else 1,
                "maxItems": 1,
                "items": _object({"index": {"const": 0}, **choice, "logprobs": {"type": "null"}}),
            },
            "usage": usage,
        },
        optional=("usage",) if chunk else (),
    )


CHAT_COMPLETION = _chat_object(
    "chat.completion",
    {
        "message": _object({"role": {"const": "assistant"}, "content": STRING}),
        "finish_reason": {"enum": ["stop", "length"]},
    },
    _USAGE,
    chunk=False,
)
CHAT_CHUNK = _chat_object(
    "chat.completion.chunk",
    {
        "delta": _object(
            {"role": {"const": "assistant"}, "content": STRING}, optional=("role", "content")
        ),
        "finish_reason": {"enum": ["stop", "length", None]},
    },
    _nullable(_USAGE),
    chunk=True,
)
#: One SSE event of a ``/v1`` stream: a chunk, the in-band error that ends a failed
#: stream, or the final ``[DONE]``. No ``event:`` or ``id:`` field is ever sent.
CHAT_SSE_EVENT: Schema = {
    "type": "object",
    "properties": {"event": {"const": "message"}},
    "required": ["data"],
    "not": {"required": ["id"]},
    "anyOf": [
        {"properties": {"data": {"const": "[DONE]"}}},
        {"properties": {"data": _json_string({"anyOf": [CHAT_CHUNK, OPENAI_ERROR]})}},
    ],
}
MODEL = _object(
    {"id": STRING, "object": {"const": "model"}, "created": INTEGER, "owned_by": STRING}
)


def _schemas(settings: Settings, sources: Mapping[str, TokenSource]) -> dict[str, Schema]:
    links = _object({name: STRING for name in (*TRANSPORTS, "self")})
    return {
        "TokenEvent": TOKEN_EVENT,
        "DoneEvent": DONE_EVENT,
        "ErrorEvent": ERROR_EVENT,
        "Event": EVENT,
        "CreatedMessage": CREATED_MESSAGE,
        "Error": ERROR,
        "OpenAIError": OPENAI_ERROR,
        "CreateBody": _create_body(settings, sources),
        "Created": _object({"id": STREAM_ID, "links": links}),
        "StreamStatus": _object(
            {
                "id": STREAM_ID,
                "state": {"enum": ["running", "done", "error"]},
                "source": STRING,
                "tokens": {"type": "integer", "minimum": 0},
                "max_tokens": {"type": "integer", "minimum": 1},
                "finish_reason": {"enum": ["stop", "length", "cancelled", None]},
                "created_at": {"type": "number"},
                "finished_at": {"type": ["number", "null"]},
                "subscribers": _object({t: {"type": "integer", "minimum": 0} for t in READERS}),
            }
        ),
        "PollAnswer": _object(
            {
                "events": {"type": "array", "items": _ref("Event"), "maxItems": READ_LIMIT},
                "next": {"type": "integer", "minimum": -1},
                "done": {"type": "boolean"},
            }
        ),
        "Info": _object(
            {
                "sources": {
                    "type": "array",
                    "items": _object(
                        {
                            "name": STRING,
                            "model": {"type": ["string", "null"]},
                            "default": {"type": "boolean"},
                            "params": {"type": "object"},
                        }
                    ),
                },
                "limits": _object(
                    {
                        "default_max_tokens": INTEGER,
                        "max_tokens": INTEGER,
                        "max_prompt_chars": INTEGER,
                        "max_ttft_ms": {"type": "number"},
                        "max_tokens_per_s": {"type": "number"},
                    }
                ),
                "auth": {"type": "boolean"},
            }
        ),
        "Health": _object(
            {"status": {"enum": ["ok", "closing"]}, "live_streams": {"type": "integer"}}
        ),
        "ChatBody": _chat_body(settings, sources),
        "ChatCompletion": CHAT_COMPLETION,
        "Model": MODEL,
        "ModelList": _object(
            {"object": {"const": "list"}, "data": {"type": "array", "items": _ref("Model")}}
        ),
    }


# --- responses ---

_HEADER_STRING = {"schema": STRING}
_STREAM_HEADERS = {
    "Tokenwire-Stream": {**_HEADER_STRING, "required": True, "description": "the stream id"},
    "Location": {**_HEADER_STRING, "required": True, "description": "/api/streams/{id}"},
}
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "string", "pattern": "^[0-9]+$"}}}
#: Status, what it means, and its headers: the errors a route can answer.
_ERRORS: dict[str, tuple[str, dict[str, Any]]] = {
    "400": ("A field is missing, of the wrong type or out of range; a body that is not JSON", {}),
    "401": (
        "No or a wrong bearer token",
        {"WWW-Authenticate": {**_HEADER_STRING, "required": True}},
    ),
    "403": ("The page's Origin or the Host is not allowed", {}),
    "404": ("No such stream, model or route", {}),
    "410": ("The stream expired, or the position is older than the retained log", {}),
    "413": ("The body or the prompt is too large", {}),
    "426": ("Not a WebSocket handshake", {"Upgrade": {**_HEADER_STRING, "required": True}}),
    "429": ("This client address has its maximum of live streams", _RETRY_AFTER),
    "503": ("A server-wide limit is reached, or the server is shutting down", _RETRY_AFTER),
}


def _errors(*statuses: str, openai: bool = False) -> dict[str, Any]:
    schema = _ref("OpenAIError" if openai else "Error")
    out = {}
    for status in statuses:
        description, headers = _ERRORS[status]
        out[status] = {
            "description": description,
            "headers": headers,
            "content": {"application/json": {"schema": schema}},
        }
    return out


def _json(description: str, schema: Schema, headers: dict[str, Any] | None = None) -> Schema:
    return {
        "description": description,
        "headers": headers or {},
        "content": {"application/json": {"schema": schema}},
    }


def _text(media_type: str, description: str, headers: dict[str, Any] | None = None) -> Schema:
    return {
        "description": description,
        "headers": headers or {},
        "content": {media_type: {"schema": STRING}},
    }


def _stream(
    media_type: str, item: Schema, description: str, headers: dict[str, Any] | None = None
) -> Schema:
    """A streamed answer: ``item`` describes each of its events (OpenAPI 3.2)."""
    return {
        "description": description,
        "headers": headers or {},
        "content": {media_type: {"itemSchema": item}},
    }


SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
_SSE_TEXT = "Server-Sent Events: `id:` (the seq), `event:` (the type), `data:` (the Event)"
_NDJSON_TEXT = "one Event per line; an empty line is a heartbeat"


def _parameters(settings: Settings) -> dict[str, Schema]:
    return {
        "id": {"name": "id", "in": "path", "required": True, "schema": STREAM_ID},
        "after": {
            "name": "after",
            "in": "query",
            "description": "events with seq > after; -1 (or absent): from the start",
            "schema": {"type": "integer", "minimum": -1, "maximum": MAX_AFTER},
        },
        "timeout": {
            "name": "timeout",
            "in": "query",
            "description": f"seconds to wait for an event (default {settings.poll_timeout_s:g})",
            "schema": {"type": "number", "minimum": 0, "maximum": settings.max_poll_timeout_s},
        },
        "lastEventId": {
            "name": "Last-Event-ID",
            "in": "header",
            "description": "what a reconnecting EventSource sends; wins over `after`",
            "schema": {"type": "string", "pattern": "^(|-1|0|[1-9][0-9]{0,15})$"},
        },
    }


def _param(name: str) -> Schema:
    return {"$ref": f"#/components/parameters/{name}"}


def _operation(
    summary: str,
    responses: dict[str, Any],
    *,
    parameters: list[Schema] | None = None,
    body: str | None = None,
    open_route: bool = False,
) -> Schema:
    op: Schema = {"summary": summary, "responses": responses}
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(body)}},
        }
    if open_route:
        op["security"] = []
    return op


def _paths() -> dict[str, Any]:
    read_errors = ("400", "401", "403", "404", "410")
    create_errors = ("400", "401", "403", "413", "429", "503")
    stream_id_param = [_param("id")]
    return {
        "/api/streams": {
            "post": _operation(
                "Create a stream (start one generation)",
                {
                    "201": _json(
                        "Created",
                        _ref("Created"),
                        {"Location": {**_HEADER_STRING, "required": True}},
                    ),
                    **_errors(*create_errors),
                },
                body="CreateBody",
            )
        },
        "/api/streams/{id}": {
            "get": _operation(
                "A stream's state",
                {"200": _json("The state", _ref("StreamStatus")), **_errors(*read_errors)},
                parameters=stream_id_param,
            ),
            "delete": _operation(
                "Cancel a stream (idempotent); it ends with done / cancelled",
                {"204": {"description": "Cancelled"}, **_errors(*read_errors)},
                parameters=stream_id_param,
            ),
        },
        "/api/streams/{id}/sse": {
            "get": _operation(
                "Read a stream as Server-Sent Events",
                {
                    "200": _stream(SSE, SSE_EVENT, _SSE_TEXT),
                    "204": {"description": "The stream ended and nothing follows the position"},
                    **_errors(*read_errors),
                },
                parameters=[*stream_id_param, _param("after"), _param("lastEventId")],
            )
        },
        "/api/streams/{id}/chunked": {
            "get": _operation(
                "Read a stream as chunked NDJSON",
                {
                    "200": _stream(NDJSON, NDJSON_LINE, _NDJSON_TEXT),
                    "204": {"description": "The stream ended and nothing follows the position"},
                    **_errors(*read_errors),
                },
                parameters=[*stream_id_param, _param("after")],
            )
        },
        "/api/streams/{id}/poll": {
            "get": _operation(
                "One long poll: the events after `after`, or none after `timeout`",
                {"200": _json("A batch", _ref("PollAnswer")), **_errors(*read_errors)},
                parameters=[*stream_id_param, _param("after"), _param("timeout")],
            )
        },
        "/api/sse": {
            "post": _operation(
                "Create a stream and read it as Server-Sent Events (first: a `created` event)",
                {
                    "200": _stream(SSE, SSE_EVENT, _SSE_TEXT, _STREAM_HEADERS),
                    **_errors(*create_errors),
                },
                body="CreateBody",
            )
        },
        "/api/chunked": {
            "post": _operation(
                "Create a stream and read it as NDJSON (first line: {type: created, stream})",
                {
                    "200": _stream(NDJSON, NDJSON_LINE, _NDJSON_TEXT, _STREAM_HEADERS),
                    **_errors(*create_errors),
                },
                body="CreateBody",
            )
        },
        "/api/ws": {
            "get": _operation(
                "The WebSocket (JSON messages, docs/protocol.md); a plain GET is 426",
                {
                    "101": {"description": "Switching Protocols"},
                    **_errors("401", "403", "426"),
                },
            )
        },
        "/api/info": {
            "get": _operation(
                "Sources, limits and whether a token is needed",
                {"200": _json("Info", _ref("Info")), **_errors("403")},
                open_route=True,
            )
        },
        "/healthz": {
            "get": _operation(
                "Liveness",
                {"200": _json("Health", _ref("Health")), **_errors("403")},
                open_route=True,
            )
        },
        "/metrics": {
            "get": _operation(
                "Prometheus metrics",
                {"200": _text("text/plain", "Prometheus text format"), **_errors("401", "403")},
            )
        },
        "/openapi.json": {
            "get": _operation(
                "This document",
                {"200": _json("OpenAPI 3.2", {"type": "object"}), **_errors("403")},
                open_route=True,
            )
        },
        "/v1/models": {
            "get": _operation(
                "The models (OpenAI's shape)",
                {"200": _json("The list", _ref("ModelList")), **_errors("401", "403", openai=True)},
            )
        },
        "/v1/models/{model}": {
            "get": _operation(
                "One model (OpenAI's shape)",
                {
                    "200": _json("The model", _ref("Model")),
                    **_errors("401", "403", "404", openai=True),
                },
                parameters=[{"name": "model", "in": "path", "required": True, "schema": STRING}],
            )
        },
        "/v1/chat/completions": {
            "post": _operation(
                "A chat completion (OpenAI's Chat Completions); with `stream`: SSE chunks",
                {
                    "200": {
                        "description": "The answer; with `stream: true` an SSE stream of "
                        "chat.completion.chunk objects ending with `data: [DONE]`",
                        "headers": _STREAM_HEADERS,
                        "content": {
                            "application/json": {"schema": _ref("ChatCompletion")},
                            SSE: {"itemSchema": CHAT_SSE_EVENT},
                        },
                    },
                    **_errors("400", "401", "403", "404", "413", "429", "503", openai=True),
                    **{
                        status: {
                            "description": "The generation ended without an answer",
                            "content": {"application/json": {"schema": _ref("OpenAIError")}},
                        }
                        for status in ("409", "500", "502", "504")
                    },
                },
                body="ChatBody",
            )
        },
    }


def build(settings: Settings, sources: Mapping[str, TokenSource]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of a server with these settings and sources."""
    doc: dict[str, Any] = {
        "openapi": "3.2.0",
        "info": {
            "title": "tokenwire",
            "version": server.__version__,
            "description": "One generation, one log, four transports. The wire contract is "
            "docs/protocol.md; errors are {error: {code, message}} (OpenAI's shape under /v1).",
        },
        "paths": _paths(),
        "components": {
            "schemas": _schemas(settings, sources),
            "parameters": _parameters(settings),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
    if settings.auth_token is not None:
        doc["security"] = [{"bearer": []}]
    return doc


async def document(request: web.Request) -> web.Response:
    doc = build(request.app[SETTINGS], request.app[HUB].sources)
    return web.Response(body=orjson.dumps(doc), content_type="application/json")
