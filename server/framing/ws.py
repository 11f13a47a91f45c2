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


def ws_close_frame(code: int, reason: bytes = b"") -> bytes:
    """A server's close frame (unmasked) with ``code`` and ``reason`` (at most 123 bytes)."""
    payload = code.to_bytes(2, "big") + reason[:123]
    return b"\x88%c%s" % (len(payload), payload)


class ClientFrameScan:
    """Walks the frames a client sends (headers only; payloads are skipped, not copied) and
    tells whether each is masked, as RFC 6455 §5.1 requires of every client frame.

    ``feed(data)`` returns False at the first unmasked frame (the server must then close
    with 1002); True while every frame so far was masked.
    """

    __slots__ = ("_head", "_skip")

    def __init__(self) -> None:
        self._head = b""  # an incomplete frame header
        self._skip = 0  # payload bytes of the current frame still to come

    def feed(self, data: bytes) -> bool:
        view = memoryview(data)
        if self._skip:
            n = min(self._skip, len(view))
            self._skip -= n
            view = view[n:]
        while len(view):
            head = self._head + bytes(view[:14])  # 14: the longest header
            if len(head) < 2:
                self._head = head
                return True
            if not head[1] & 0x80:
                return False
            size = head[1] & 0x7F
            extra = 2 if size == 126 else 8 if size == 127 else 0
            need = 2 + extra + 4
            if len(head) < need:
                self._head = head
                return True
            if extra:
                size = int.from_bytes(head[2 : 2 + extra], "big")
            used = need - len(self._head)  # header bytes taken from this chunk
            self._head = b""
            view = view[used:]
            n = min(size, len(view))
            view = view[n:]
            self._skip = size - n
        return True


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
