"""WebSocket framing: each event is one text message holding its JSON.

Client messages are parsed and validated here too, without I/O: ``parse_client_message``
turns a text frame into a typed command or raises ``BadRequest``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from server.errors import ApiError, BadRequest, InvalidField
from server.events import Event


def ws_message(event: Event) -> str:
    return event.data.decode()


def ws_error(err: ApiError, stream: str | None = None, op: str | None = None) -> str:
    """An error message that is not part of any log (bad request on the socket)."""
    body: dict[str, Any] = {"type": "error", "code": err.code, "message": err.message}
    if stream is not None:
        body["stream"] = stream
    if op is not None:
        body["op"] = op
    return orjson.dumps(body).decode()


@dataclass(frozen=True, slots=True)
class Generate:
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Subscribe:
    stream: str
    after: int


@dataclass(frozen=True, slots=True)
class Cancel:
    stream: str


ClientMessage = Generate | Subscribe | Cancel


def parse_client_message(text: str) -> ClientMessage:
    """Parse one client text message; raise ``BadRequest`` with a clear message if bad."""
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise BadRequest("message is not valid JSON", code="bad_json") from None
    if not isinstance(msg, dict):
        raise BadRequest("message must be a JSON object", code="bad_json")
    op = msg.get("op")
    if op == "generate":
        body = {k: v for k, v in msg.items() if k != "op"}
        return Generate(body)
    if op in ("subscribe", "cancel"):
        stream = msg.get("stream")
        if not isinstance(stream, str) or not stream:
            raise InvalidField("stream", "must be a non-empty string")
        if op == "cancel":
            return Cancel(stream)
        after = msg.get("after", -1)
        if after is None:
            after = -1
        if isinstance(after, bool) or not isinstance(after, int) or after < -1:
            raise InvalidField("after", "must be an integer >= -1")
        return Subscribe(stream, after)
    raise BadRequest("op must be one of 'generate', 'subscribe', 'cancel'", code="unknown_op")
