"""Pure decoders for the wire formats: bytes in, events out, no I/O.

``SSEDecoder`` follows the WHATWG "Server-sent events" parsing rules; ``NDJSONDecoder``
splits newline-delimited JSON across arbitrary chunk boundaries. Both are incremental:
feed them chunks as they arrive, in any sizes, and they return complete items.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson


def ws_frame_header(n: int) -> int:
    """Header bytes of an unmasked server-to-client WebSocket frame with ``n`` payload bytes
    (RFC 6455 section 5.2: 7-bit, 16-bit or 64-bit payload length)."""
    return 2 if n < 126 else 4 if n < 65536 else 10


@dataclass(frozen=True, slots=True)
class SSEMessage:
    """One dispatched SSE event (WHATWG ``MessageEvent`` fields)."""

    event: str
    data: str
    last_event_id: str
    retry: int | None = None


class SSEDecoder:
    """Incremental WHATWG SSE parser.

    Lines end with CR, LF or CRLF (a CRLF split across two chunks is one line end); one
    leading BOM is stripped; lines starting with ``:`` are comments; ``data`` lines are
    joined with LF; an ``id`` containing NUL is ignored; ``retry`` is taken only if all
    digits; an event whose data buffer is empty dispatches nothing; an unterminated last
    event is dropped (never returned).

    ``last_event_id`` is the spec's "last event ID string": an ``id`` takes effect when its
    event is dispatched (with or without data), so after a cut inside an event it is still
    the id of the last complete one, the right position to resume from. ``retry`` is the
    reconnection time in milliseconds (``None`` until the stream sets one).

    ``on_line``, if given, is called with every line as the decoder splits it (without its
    line end; a blank line ends an event): the client's ``tap`` sees the wire through it.
    """

    def __init__(self, *, on_line: Callable[[str], object] | None = None) -> None:
        self._on_line = on_line
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buf = ""
        self._first = True
        self._after_cr = False
        self._data: list[str] = []
        self._event = ""
        self._id = ""  # the last event ID buffer
        self.last_event_id = ""
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[SSEMessage]:
        text = self._utf8.decode(chunk)
        if self._first and text:
            if text.startswith("\ufeff"):
                text = text[1:]
            self._first = False
        if not text:
            return []  # keep a pending CR: the LF of its CRLF may be in the next chunk
        if self._after_cr and text.startswith("\n"):
            text = text[1:]  # the LF of a CRLF split across chunks
        self._after_cr = False
        self._buf += text
        out: list[SSEMessage] = []
        start = 0
        buf = self._buf
        n = len(buf)
        while True:
            cr = buf.find("\r", start)
            lf = buf.find("\n", start)
            if cr < 0 and lf < 0:
                break
            if cr >= 0 and (lf < 0 or cr < lf):
                end = cr
                if cr + 1 < n:
                    nxt = cr + 2 if buf[cr + 1] == "\n" else cr + 1
                else:
                    nxt = cr + 1
                    self._after_cr = True
            else:
                end, nxt = lf, lf + 1
            msg = self._line(buf[start:end])
            if msg is not None:
                out.append(msg)
            start = nxt
        self._buf = buf[start:]
        return out

    def _line(self, line: str) -> SSEMessage | None:
        if self._on_line is not None:
            self._on_line(line)
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\x00" not in value:
                self._id = value
        elif name == "retry":
            if value.isascii() and value.isdigit():
                self.retry = int(value)
        return None

    def _dispatch(self) -> SSEMessage | None:
        self.last_event_id = self._id
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return SSEMessage(event or "message", "\n".join(data), self.last_event_id, self.retry)


class NDJSONDecoder:
    """Incremental newline-delimited JSON: returns one object per complete line.

    Empty lines (heartbeats) are skipped. Bytes are split at LF only, so a multi-byte
    UTF-8 character cut across chunks is joined before decoding.

    ``on_line``, if given, is called with every complete line (decoded, without its LF,
    blank ones included) before it is parsed: the client's ``tap`` sees the wire through it.
    """

    def __init__(self, *, on_line: Callable[[str], object] | None = None) -> None:
        self._buf = b""
        self._on_line = on_line

    def feed(self, chunk: bytes) -> list[Any]:
        buf = self._buf + chunk
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        if self._on_line is not None:
            for line in lines:
                self._on_line(line.decode(errors="replace"))
        return [orjson.loads(line) for line in lines if line.strip()]

    @property
    def pending(self) -> bytes:
        """Bytes of an unterminated last line (dropped if the stream ends here)."""
        return self._buf
