"""What a WebSocket client sends: one JSON text message, parsed into a command.

Pure, like :mod:`server.validation`: ``parse_client_message`` takes the text of a message
and returns a :data:`ClientMessage` or raises ``BadRequest``/``InvalidField`` with the exact
message the client gets back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from server.errors import BadRequest, InvalidField
from server.validation import after_value


@dataclass(frozen=True, slots=True)
class Generate:
    """``{"op":"generate", ...create body}``: every field of ``POST /api/streams``
    (``reasoning_effort``, ``tools`` and ``tool_choice`` included), checked by
    :func:`server.validation.parse_create_body` with the same messages."""

    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Subscribe:
    """``{"op":"subscribe","stream":id,"after":seq}``."""

    stream: str
    after: int


@dataclass(frozen=True, slots=True)
class Cancel:
    """``{"op":"cancel","stream":id}``."""

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
        return Subscribe(stream, after_value(msg.get("after")))
    raise BadRequest(
        "op must be one of 'generate', 'subscribe', 'cancel', 'auth'", code="unknown_op"
    )
