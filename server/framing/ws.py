"""WebSocket framing: each event is one text message holding its JSON (sent as it is);
the messages outside any log are built here. What clients send: :mod:`server.ws_commands`."""

from __future__ import annotations

from typing import Any

import orjson

from server.errors import ApiError


def ws_error(err: ApiError, stream: str | None = None, op: str | None = None) -> str:
    """An error message that is not part of any log (bad request on the socket)."""
    body: dict[str, Any] = {"type": "error", "code": err.code, "message": err.message}
    if stream is not None:
        body["stream"] = stream
    if op is not None:
        body["op"] = op
    return orjson.dumps(body).decode()
