"""The event: one JSON line (``token``, ``reasoning``, ``tool_call``, ``done``, ``error``),
encoded once, framed per transport.

Encoded with msgspec, not orjson (orjson 3.13 gives each small ``bytes`` a ~4 KiB
allocation); ``Event`` is a NamedTuple so the garbage collector can untrack it.
"""

from __future__ import annotations

import time
import typing
from typing import Any, Final, Literal, NamedTuple

import msgspec

EventType = Literal["token", "reasoning", "tool_call", "done", "error"]
#: The content events (one ``seq`` space): answer text, reasoning text, tool-call pieces.
CONTENT_TYPES: Final[tuple[EventType, ...]] = ("token", "reasoning", "tool_call")
DoneReason = Literal["stop", "length", "tool_calls", "cancelled"]
DONE_REASONS: Final[tuple[DoneReason, ...]] = typing.get_args(DoneReason)


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(dict[str, Any]).decode


class Event(NamedTuple):
    """One logged event: its sequence number, its type and its encoded JSON (no newline)."""

    seq: int
    type: EventType
    data: bytes

    @property
    def terminal(self) -> bool:
        """``done`` and ``error`` are always the last event of a stream."""
        return self.type == "done" or self.type == "error"


_new_event = tuple.__new__  # Event(...) without the NamedTuple's Python-level __new__


def token_event(stream: str, seq: int, text: str) -> Event:
    return TokenEncoder(stream)(seq, text)


class TokenEncoder:
    """Builds one stream's token events: the bytes msgspec gives for
    ``{"stream": stream, "seq": seq, "type": "token", "text": text, "t": time_ns}``, with the
    stream id encoded once per stream instead of a dict encoded per token (every token's
    path: about half the cost)."""

    __slots__ = ("_prefix",)

    def __init__(self, stream: str) -> None:
        self._prefix = b'{"stream":%s,"seq":' % _encode(stream)

    def __call__(self, seq: int, text: str) -> Event:
        data = self._prefix + b'%d,"type":"token","text":%s,"t":%d}' % (
            seq,
            _encode(text),
            time.time_ns(),
        )
        return _new_event(Event, (seq, "token", data))


class PartEncoder(TokenEncoder):
    """A stream's events of every content type: ``token`` as :class:`TokenEncoder` (the
    call), and the typed parts (``reasoning``, ``tool_call``) beside it, with the same
    prefix and field order (``stream``, ``seq``, ``type``, the part's fields, ``t``)."""

    __slots__ = ()

    def reasoning(self, seq: int, text: str) -> Event:
        data = self._prefix + b'%d,"type":"reasoning","text":%s,"t":%d}' % (
            seq,
            _encode(text),
            time.time_ns(),
        )
        return _new_event(Event, (seq, "reasoning", data))

    def tool_call(
        self, seq: int, index: int, args: str, call_id: str | None = None, name: str | None = None
    ) -> Event:
        """A call's first event names it (``id``, ``name``, and its first ``args`` piece,
        often ``""``); the later ones carry only the next piece of its argument JSON."""
        opening = (
            b""
            if call_id is None
            else b'"id":%s,"name":%s,'
            % (
                _encode(call_id),
                _encode(name or ""),
            )
        )
        data = self._prefix + b'%d,"type":"tool_call","index":%d,%s"args":%s,"t":%d}' % (
            seq,
            index,
            opening,
            _encode(args),
            time.time_ns(),
        )
        return _new_event(Event, (seq, "tool_call", data))


def token_text_json(event: Event) -> bytes:
    """A token event's ``text`` as its JSON string literal (quotes included), sliced out of
    the encoded line without decoding it: ``text`` follows the id, the seq and the type
    (none of which can hold ``"text":``), and only the integer ``t`` follows it."""
    data = event.data
    return data[data.index(b'"text":') + 7 : data.rindex(b',"t":')]


def event_fields(event: Event) -> dict[str, Any]:
    """An event's JSON, decoded: the one place the server reads back what it encoded.

    Only the ``/v1`` dialect needs it: a terminal event's ``finish_reason`` or error
    ``code``/``message`` (once per stream), and the token texts of a non-streamed answer
    (once per answer). The streamed tokens are spliced (:func:`token_text_json`), not
    decoded.
    """
    return _decode(event.data)


def done_event(
    stream: str,
    seq: int,
    reason: DoneReason,
    tokens: int,
    sha256: str,
    parts: dict[str, Any] | None = None,
) -> Event:
    """``tokens`` and ``sha256`` cover the answer text; ``parts`` (only when the stream had
    reasoning or tool calls) the digests of the rest (see docs/protocol.md)."""
    fields: dict[str, Any] = {
        "stream": stream,
        "seq": seq,
        "type": "done",
        "finish_reason": reason,
        "tokens": tokens,
        "sha256": sha256,
    }
    if parts:
        fields["parts"] = parts
    fields["t"] = time.time_ns()
    return Event(seq, "done", _encode(fields))


def error_event(stream: str, seq: int, code: str, message: str) -> Event:
    return Event(
        seq,
        "error",
        _encode(
            {
                "stream": stream,
                "seq": seq,
                "type": "error",
                "code": code,
                "message": message,
                "t": time.time_ns(),
            }
        ),
    )


def end_message(stream: str) -> bytes:
    """WebSocket answer to a subscribe past the last event of a finished stream (no seq)."""
    return _encode({"type": "end", "stream": stream})


def created_message(stream: str) -> bytes:
    """The control message that tells a create-and-stream client its stream id (no seq)."""
    return _encode({"type": "created", "stream": stream})
