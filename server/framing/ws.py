"""WebSocket framing: each event is one text message holding its JSON (sent as it is);
the messages outside any log are built here. What clients send: :mod:`server.ws_commands`."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

import orjson

from server.errors import ApiError
from server.events import Event

_HEAD_LEN2 = struct.Struct("!BBH").pack
_HEAD_LEN8 = struct.Struct("!BBQ").pack


def ws_text_frame(data: bytes) -> bytes:
    """``data`` as one final, unmasked, uncompressed text frame (RFC 6455, 5.2): the bytes a
    server's ``send_frame(data, TEXT)`` puts on the wire without permessage-deflate."""
    n = len(data)
    if n < 126:
        return b"\x81%c%s" % (n, data)
    if n < 65536:
        return _HEAD_LEN2(0x81, 126, n) + data
    return _HEAD_LEN8(0x81, 127, n) + data


def ws_text_frames(events: Iterable[Event]) -> bytes:
    """A batch of events, one text message each, for one write."""
    return b"".join([ws_text_frame(e.data) for e in events])


def ws_error(err: ApiError, stream: str | None = None, op: str | None = None) -> str:
    """An error message that is not part of any log (bad request on the socket)."""
    body: dict[str, Any] = {"type": "error", "code": err.code, "message": err.message}
    if stream is not None:
        body["stream"] = stream
    if op is not None:
        body["op"] = op
    if err.retry_after is not None:
        # The WebSocket counterpart of ``Retry-After`` (a cap refused ``generate``).
        body["retry_after"] = max(1, round(err.retry_after))
    return orjson.dumps(body).decode()
