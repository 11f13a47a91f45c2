"""The OpenAPI 3.2.0 document of the HTTP API, as this server is set up.

Built from the settings, the enabled sources and the route table (:mod:`server.routes`), so
its limits, sources and models are the ones the server enforces and serves. 3.2 because its
``itemSchema`` describes each event of a streamed answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import server
from server.chat_request import IGNORED_FIELDS, SAMPLING_FIELDS, model_ids
from server.events import DONE_REASONS
from server.framing.openai import FINISH_REASONS
from server.hub import READ_LIMIT, STREAM_STATES
from server.security import needs_token
from server.settings import Settings
from server.sources.base import CHAT_ROLES, REASONING_EFFORTS, TokenSource
from server.validation import (
    MAX_AFTER,
    MAX_SCHEMA_DEPTH,
    MAX_TOOLS,
    POSITION_PATTERN,
    TOOL_NAME_PATTERN,
)
from wire import EVENT_TYPES, READERS, TRANSPORTS

Schema = dict[str, Any]


def ref(name: str) -> Schema:
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
REASONING_EVENT = _object(
    {
        "stream": STRING,
        "seq": {"type": "integer", "minimum": 0},
        "type": {"const": "reasoning"},
        "text": {"type": "string", "minLength": 1},
        "t": INTEGER,
    }
)
TOOL_CALL_EVENT = _object(
    {
        "stream": STRING,
        "seq": {"type": "integer", "minimum": 0},
        "type": {"const": "tool_call"},
        "index": {"type": "integer", "minimum": 0},
        "id": {"type": "string", "description": "only on a call's first event"},
        "name": {"type": "string", "description": "only on a call's first event"},
        "args": {"type": "string", "description": "the next piece of the argument JSON"},
        "t": INTEGER,
    },
    optional=("id", "name"),
)
SHA256: Schema = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
DONE_PARTS = _object(
    {
        "reasoning": _object({"tokens": {"type": "integer", "minimum": 1}, "sha256": SHA256}),
        "tool_calls": {
            "type": "array",
            "items": _object(
                {
                    "index": {"type": "integer", "minimum": 0},
                    "id": STRING,
                    "name": STRING,
                    "sha256": SHA256,
                }
            ),
        },
    },
    optional=("reasoning", "tool_calls"),
)
DONE_EVENT = _object(
    {
        "stream": STRING,
        "seq": {"type": "integer", "minimum": 0},
        "type": {"const": "done"},
        "finish_reason": {"enum": list(DONE_REASONS)},
        "tokens": {"type": "integer", "minimum": 0},
        "sha256": SHA256,
        "parts": DONE_PARTS,
        "t": INTEGER,
    },
    optional=("parts",),
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
    "oneOf": [
        ref("TokenEvent"),
        ref("ReasoningEvent"),
        ref("ToolCallEvent"),
        ref("DoneEvent"),
        ref("ErrorEvent"),
    ],
    "discriminator": {
        "propertyName": "type",
        "mapping": {
            "token": "#/components/schemas/TokenEvent",
            "reasoning": "#/components/schemas/ReasoningEvent",
            "tool_call": "#/components/schemas/ToolCallEvent",
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
                "data": _json_string(ref("Event")),
            },
            "required": ["event", "id", "data"],
        },
        {
            "properties": {
                "event": {"const": "created"},
                "data": _json_string(ref("CreatedMessage")),
            },
            "required": ["event", "data"],
        },
    ],
}
#: One NDJSON line of a tokenwire stream (an empty line is a heartbeat, not an item).
NDJSON_LINE: Schema = {"oneOf": [ref("Event"), ref("CreatedMessage")]}

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


#: A function the model may call (``tools`` of the create body).
TOOL = _object(
    {
        "name": {"type": "string", "pattern": f"^{TOOL_NAME_PATTERN}$"},
        "description": _nullable(STRING),
        "parameters": _nullable(
            {
                "type": "object",
                "properties": {"type": {"const": "object"}},
                "description": "the JSON Schema of the arguments (an object; at most "
                f"{MAX_SCHEMA_DEPTH} levels deep)",
            }
        ),
    },
    optional=("description", "parameters"),
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
                "reasoning_effort": _nullable(
                    {
                        "enum": list(REASONING_EFFORTS),
                        "description": "stream reasoning first (the source must support it)",
                    }
                ),
                "tools": _nullable(
                    {
                        "type": "array",
                        "items": TOOL,
                        "maxItems": MAX_TOOLS,
                        "description": "the functions offered, each `name` once",
                    }
                ),
                "tool_choice": _nullable(
                    {
                        "type": "string",
                        "description": "the name of a tool in `tools` that the model must call",
                    }
                ),
            },
            optional=("max_tokens", "source", "params", "reasoning_effort", "tools", "tool_choice"),
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
        "tools": nullable(
            {
                "type": "array",
                "items": _object(
                    {
                        "type": {"const": "function"},
                        "function": _object(
                            {
                                "name": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"},
                                "description": nullable(STRING),
                                "parameters": nullable({"type": "object"}),
                                "strict": flag,
                            },
                            optional=("description", "parameters", "strict"),
                        ),
                    }
                ),
            }
        ),
        "tool_choice": nullable(
            {
                "anyOf": [
                    {"enum": ["none", "auto", "required"]},
                    _object({"type": {"const": "function"}, "function": _object({"name": STRING})}),
                ]
            }
        ),
        "reasoning_effort": nullable(
            {"enum": ["none", "minimal", "low", "medium", "high", "xhigh", "max"]}
        ),
        **{name: {"description": "accepted and ignored"} for name in sorted(IGNORED_FIELDS)},
    }
    return {
        "description": "OpenAI's Chat Completions body; `null` means absent. The fields "
        "accepted only with the value that asks for nothing (`stop: []`, ...) are listed in "
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
#: A tool call as a whole message and as a chunk's delta (``server/framing/openai.py``).
_TOOL_CALL = _object(
    {
        "id": STRING,
        "type": {"const": "function"},
        "function": _object({"name": STRING, "arguments": STRING}),
    }
)
_TOOL_CALL_DELTA = _object(
    {
        "index": INTEGER,
        "id": STRING,
        "type": {"const": "function"},
        "function": _object({"name": STRING, "arguments": STRING}, optional=("name",)),
    },
    optional=("id", "type"),
)


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
        "message": _object(
            {
                "role": {"const": "assistant"},
                "content": {"type": ["string", "null"]},
                "reasoning_content": STRING,
                "tool_calls": {"type": "array", "items": _TOOL_CALL},
            },
            optional=("reasoning_content", "tool_calls"),
        ),
        "finish_reason": {"enum": list(FINISH_REASONS.values())},
    },
    _USAGE,
    chunk=False,
)
CHAT_CHUNK = _chat_object(
    "chat.completion.chunk",
    {
        "delta": _object(
            {
                "role": {"const": "assistant"},
                "content": STRING,
                "reasoning_content": STRING,
                "tool_calls": {"type": "array", "items": _TOOL_CALL_DELTA, "maxItems": 1},
            },
            optional=("role", "content", "reasoning_content", "tool_calls"),
        ),
        "finish_reason": {"enum": [*FINISH_REASONS.values(), None]},
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


ANTHROPIC_ERROR = _object(
    {
        "type": {"const": "error"},
        "error": _object({"type": STRING, "message": STRING}),
    }
)
#: OpenAI's Responses object (the fields tokenwire fills; ``server/framing/responses.py``).
RESPONSE = {
    "type": "object",
    "required": ["id", "object", "created_at", "status", "model", "output"],
    "properties": {
        "id": {"type": "string", "pattern": "^resp_"},
        "object": {"const": "response"},
        "created_at": INTEGER,
        "status": {"enum": ["in_progress", "completed", "incomplete", "failed", "cancelled"]},
        "model": STRING,
        "output": {"type": "array"},
    },
}
#: Anthropic's message object (``server/framing/anthropic.py``).
MESSAGE = {
    "type": "object",
    "required": ["id", "type", "role", "model", "content", "stop_reason", "usage"],
    "properties": {
        "id": {"type": "string", "pattern": "^msg_"},
        "type": {"const": "message"},
        "role": {"const": "assistant"},
        "content": {"type": "array"},
        "stop_reason": {"enum": ["end_turn", "max_tokens", "tool_use"]},
    },
}
#: One SSE event of a dialect that names its events: ``event:`` and one JSON ``data:``
#: whose ``type`` is the event's (never an ``id:``).
NAMED_SSE_EVENT: Schema = {
    "type": "object",
    "required": ["event", "data"],
    "not": {"required": ["id"]},
    "properties": {"event": STRING, "data": _json_string({"type": "object"})},
}


def _dialect_body(required: tuple[str, ...], models: Schema) -> Schema:
    """A dialect's body as its checks read it (``server/responses_request.py``,
    ``server/messages_request.py``): the required fields, the models; any other field is
    checked by the route."""
    return {
        "type": "object",
        "required": list(required),
        "properties": {"model": models, "stream": {"type": ["boolean", "null"]}},
    }


def _schemas(settings: Settings, sources: Mapping[str, TokenSource]) -> dict[str, Schema]:
    links = _object({name: STRING for name in (*TRANSPORTS, "self")})
    return {
        "TokenEvent": TOKEN_EVENT,
        "ReasoningEvent": REASONING_EVENT,
        "ToolCallEvent": TOOL_CALL_EVENT,
        "DoneEvent": DONE_EVENT,
        "ErrorEvent": ERROR_EVENT,
        "Event": EVENT,
        "CreatedMessage": CREATED_MESSAGE,
        "Error": ERROR,
        "OpenAIError": OPENAI_ERROR,
        "AnthropicError": ANTHROPIC_ERROR,
        "ResponsesBody": _dialect_body(("model", "input"), {"enum": model_ids(sources)}),
        "Response": RESPONSE,
        "MessagesBody": _dialect_body(
            ("model", "messages", "max_tokens"), {"enum": model_ids(sources)}
        ),
        "Message": MESSAGE,
        "CreateBody": _create_body(settings, sources),
        "Created": _object({"id": STREAM_ID, "links": links}),
        "StreamStatus": _object(
            {
                "id": STREAM_ID,
                "state": {"enum": list(STREAM_STATES)},
                "source": STRING,
                "tokens": {"type": "integer", "minimum": 0},
                "max_tokens": {"type": "integer", "minimum": 1},
                "finish_reason": {"enum": [*DONE_REASONS, None]},
                "created_at": {"type": "number"},
                "finished_at": {"type": ["number", "null"]},
                "subscribers": _object({t: {"type": "integer", "minimum": 0} for t in READERS}),
            }
        ),
        "PollAnswer": _object(
            {
                "events": {"type": "array", "items": ref("Event"), "maxItems": READ_LIMIT},
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
            {"object": {"const": "list"}, "data": {"type": "array", "items": ref("Model")}}
        ),
    }


# --- responses ---


def header(*, required: bool = False, description: str | None = None) -> Schema:
    """A string response header."""
    out: Schema = {"schema": STRING}
    if required:
        out["required"] = True
    if description is not None:
        out["description"] = description
    return out


STREAM_HEADERS = {
    "Tokenwire-Stream": header(required=True, description="the stream id"),
    "Location": header(required=True, description="/api/streams/{id}"),
}
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "string", "pattern": "^[0-9]+$"}}}
#: Status, what it means, and its headers: the errors a route can answer.
_ERRORS: dict[str, tuple[str, dict[str, Any]]] = {
    "400": ("A field is missing, of the wrong type or out of range; a body that is not JSON", {}),
    "401": (
        "No or a wrong bearer token",
        {"WWW-Authenticate": header(required=True)},
    ),
    "403": ("The page's Origin or the Host is not allowed", {}),
    "404": ("No such stream, model or route", {}),
    "410": ("The stream expired, or the position is older than the retained log", {}),
    "408": ("The body did not arrive within body_timeout_s", {}),
    "413": ("The body or the prompt is too large", {}),
    "415": (
        "A Content-Encoding the server does not decode",
        {"Accept-Encoding": header(required=True)},
    ),
    "416": ("The position is past the last event the stream has appended", {}),
    "426": ("Not a WebSocket handshake", {"Upgrade": header(required=True)}),
    "429": ("This client address has its maximum of live streams", _RETRY_AFTER),
    "503": ("A server-wide limit is reached, or the server is shutting down", _RETRY_AFTER),
}


def errors(*statuses: str, openai: bool = False, anthropic: bool = False) -> dict[str, Any]:
    """The error answers of a route, in its dialect's shape."""
    schema = ref("AnthropicError" if anthropic else "OpenAIError" if openai else "Error")
    out = {}
    for status in statuses:
        description, headers = _ERRORS[status]
        out[status] = {
            "description": description,
            "headers": headers,
            "content": {"application/json": {"schema": schema}},
        }
    return out


def json_answer(description: str, schema: Schema, headers: dict[str, Any] | None = None) -> Schema:
    return {
        "description": description,
        "headers": headers or {},
        "content": {"application/json": {"schema": schema}},
    }


def text_answer(media_type: str, description: str, headers: dict[str, Any] | None = None) -> Schema:
    return {
        "description": description,
        "headers": headers or {},
        "content": {media_type: {"schema": STRING}},
    }


def stream_answer(
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
SSE_TEXT = "Server-Sent Events: `id:` (the seq), `event:` (the type), `data:` (the Event)"
NDJSON_TEXT = "one Event per line; an empty line is a heartbeat"


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
            "schema": {"type": "string", "pattern": f"^(|{POSITION_PATTERN})$"},
        },
    }


def param_ref(name: str) -> Schema:
    """A reference to one of the :func:`_parameters`."""
    return {"$ref": f"#/components/parameters/{name}"}


#: The answers of ``POST /v1/chat/completions``.
CHAT_RESPONSES: Schema = {
    "200": {
        "description": "The answer; with `stream: true` an SSE stream of "
        "chat.completion.chunk objects ending with `data: [DONE]`",
        "headers": STREAM_HEADERS,
        "content": {
            "application/json": {"schema": ref("ChatCompletion")},
            SSE: {"itemSchema": CHAT_SSE_EVENT},
        },
    },
    **errors("400", "401", "403", "404", "408", "413", "415", "429", "503", openai=True),
    **{
        status: {
            "description": "The generation ended without an answer",
            "content": {"application/json": {"schema": ref("OpenAIError")}},
        }
        for status in ("409", "500", "502", "504")
    },
}


#: A generation that ended without an answer before its first event.
_NO_ANSWER = ("409", "500", "502", "504")


def dialect_responses(
    schema: str, description: str, *, anthropic: bool = False, statuses: tuple[str, ...] = ()
) -> Schema:
    """The answers of a dialect's create route: the object, or with ``stream: true`` its
    named SSE events; its errors in the dialect's shape."""
    error = ref("AnthropicError" if anthropic else "OpenAIError")
    return {
        "200": {
            "description": description,
            "headers": STREAM_HEADERS,
            "content": {
                "application/json": {"schema": ref(schema)},
                SSE: {"itemSchema": NAMED_SSE_EVENT},
            },
        },
        **errors(*statuses, openai=not anthropic, anthropic=anthropic),
        **{
            status: {
                "description": "The generation ended without an answer",
                "content": {"application/json": {"schema": error}},
            }
            for status in _NO_ANSWER
        },
    }


class DocumentedRoute(Protocol):
    """What the document needs of a route (``server.routes.Route``)."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def summary(self) -> str: ...
    @property
    def responses(self) -> Mapping[str, Any]: ...
    @property
    def parameters(self) -> Sequence[Mapping[str, Any]]: ...
    @property
    def body(self) -> str | None: ...


def _operation(route: DocumentedRoute) -> Schema:
    op: Schema = {"summary": route.summary, "responses": dict(route.responses)}
    if route.parameters:
        op["parameters"] = list(route.parameters)
    if route.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": ref(route.body)}},
        }
    if not needs_token(route.path):
        op["security"] = []
    return op


def _paths(routes: Iterable[DocumentedRoute]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return paths


def build(
    settings: Settings, sources: Mapping[str, TokenSource], routes: Iterable[DocumentedRoute]
) -> dict[str, Any]:
    """The OpenAPI 3.2.0 document of a server with these settings, sources and routes."""
    doc: dict[str, Any] = {
        "openapi": "3.2.0",
        "info": {
            "title": "tokenwire",
            "version": server.__version__,
            "description": "One generation, one log, four transports. The wire contract is "
            "docs/protocol.md; errors are {error: {code, message}} (OpenAI's shape under /v1).",
        },
        "paths": _paths(routes),
        "components": {
            "schemas": _schemas(settings, sources),
            "parameters": _parameters(settings),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
    if settings.auth_token is not None:
        doc["security"] = [{"bearer": []}]
    return doc
