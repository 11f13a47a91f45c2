"""WebSocket framing: each event is one text message holding its JSON.

Client messages are parsed and validated here too, without I/O: ``parse_client_message``
turns a text frame into a typed command or raises ``BadRequest``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from server.errors import ApiError, BadRequest, InvalidField
from server.events import Event
from server.validation import MAX_AFTER


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


@dataclass(frozen=True, slots=True)
class Auth:
    """``{"op":"auth","token":...}``: a browser's way to authenticate a socket (it cannot
    set ``Authorization`` on the handshake)."""

    token: str = field(repr=False)


ClientMessage = Generate | Subscribe | Cancel | Auth


def parse_client_message(text: str) -> ClientMessage:
    """Parse one client text message; raise ``BadRequest`` with a clear message if bad."""
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise BadRequest("message is not valid JSON", code="bad_json") from None
    if not isinstance(msg, dict):
        raise BadRequest("message must be a JSON object", code="bad_json")
    op = msg.get("op")
    if op == "auth":
        token = msg.get("token")
        if not isinstance(token, str):
            raise InvalidField("token", "must be a string")
        return Auth(token)
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
        if isinstance(after, bool) or not isinstance(after, int) or not -1 <= after <= MAX_AFTER:
            raise InvalidField("after", "must be an integer >= -1")
        return Subscribe(stream, after)
    raise BadRequest(
        "op must be one of 'generate', 'subscribe', 'cancel', 'auth'", code="unknown_op"
    )
