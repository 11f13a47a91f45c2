"""Anthropic's Messages API format for ``/v1/messages``: log events in, bytes out.

A streamed message is SSE ``event: <type>`` / ``data: <json>`` blocks (the SDK routes by
the ``event:`` name and skips ``ping``)::

    message_start                      (the stream exists; usage.input_tokens)
    content_block_start  index 0       {"type":"text","text":""}
    ping
    content_block_delta  index 0       one per token event: {"type":"text_delta","text":…}
    content_block_stop   index 0       ┐
    message_delta                      │ the done event: stop_reason end_turn (stop) or
    message_stop                       ┘ max_tokens (length), usage.output_tokens

A request that asked for typed parts (``thinking`` or ``tools``) opens each block at its
first part instead (``content_block_start`` then, before the first block only, ``ping``):
a ``thinking`` block (``thinking_delta``s, then a ``signature_delta`` carrying the
sha256 of its text), a ``tool_use`` block per tool call (``input_json_delta``s), a text
block; a block closes when the kind or the call changes, and a stream that made tool
calls stops with ``tool_use``. Reasoning is sent only when ``thinking`` was enabled.

A stream that ends without an answer (an error event, or cancelled) ends with one
``event: error`` carrying Anthropic's error body instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any, Final

import msgspec

from server.errors import ApiError, GenerationError
from server.events import Event, token_text_json
from server.framing.openai import outcome
from server.framing.parts import Block, PartKind, fold, parsed_arguments, piece
from server.framing.sse import sse_control

#: Anthropic's stop reasons for tokenwire's ``done`` reasons (``cancelled`` is an error).
STOP_REASONS: Final[dict[str, str]] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
}

#: The heartbeat: an event the SDK skips.
PING: Final = sse_control("ping", b'{"type":"ping"}')

_encode = msgspec.json.Encoder().encode


def message_id(stream_id: str) -> str:
    """``msg_<stream id>``: the message's id."""
    return f"msg_{stream_id}"


def error_frame(err: ApiError) -> bytes:
    """The in-band error that ends a stream: ``event: error`` and Anthropic's error body."""
    return sse_control("error", _encode(err.anthropic_body()))


def signature(thinking: str) -> str:
    """A thinking block's ``signature``: the sha256 of its text (hex)."""
    return hashlib.sha256(thinking.encode()).hexdigest()


def _stop(index: int) -> bytes:
    return sse_control("content_block_stop", b'{"type":"content_block_stop","index":%d}' % index)


class MessageFramer:
    """Frames one stream's log as Messages events; a token's text is spliced in as the
    JSON string its event already holds."""

    __slots__ = (
        "_blocks",
        "_delta_head",
        "_kind",
        "_thought",
        "input_tokens",
        "model",
        "stream_id",
        "thinking",
        "typed",
    )

    def __init__(
        self,
        *,
        stream_id: str,
        model: str,
        input_tokens: int,
        typed: bool = False,
        thinking: bool = False,
    ) -> None:
        self.stream_id = stream_id
        self.model = model
        self.input_tokens = input_tokens
        #: The request asked for typed parts: blocks open at their first part.
        self.typed = typed
        #: Thinking was enabled: reasoning becomes thinking blocks (else it is not sent).
        self.thinking = thinking
        self._blocks = 0  # blocks opened so far
        #: The open block's kind (and call index), or None.
        self._kind: tuple[PartKind, int] | None = None
        self._thought: Any = None  # the open thinking block's digest
        self._delta_head = b""
        if not typed:
            self._blocks, self._kind = 1, ("text", -1)  # opened by start()
            self._delta_head = self._text_head(0)

    @staticmethod
    def _text_head(index: int) -> bytes:
        return (
            b"event: content_block_delta\n"
            b'data: {"type":"content_block_delta","index":%d,"delta":{"type":"text_delta",'
            b'"text":' % index
        )

    def start(self) -> bytes:
        """``message_start`` (and, for a request without typed parts, the text block's
        ``content_block_start`` and a ``ping``)."""
        message = _encode(
            {
                "id": message_id(self.stream_id),
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": self.input_tokens, "output_tokens": 0},
            }
        )
        out = sse_control("message_start", b'{"type":"message_start","message":%s}' % message)
        if self.typed:
            return out
        return out + self._block_start(0, b'{"type":"text","text":""}') + PING

    @staticmethod
    def _block_start(index: int, block: bytes) -> bytes:
        return sse_control(
            "content_block_start",
            b'{"type":"content_block_start","index":%d,"content_block":%s}' % (index, block),
        )

    def _delta(self, delta: bytes) -> bytes:
        return sse_control(
            "content_block_delta",
            b'{"type":"content_block_delta","index":%d,"delta":%s}' % (self._blocks - 1, delta),
        )

    def _close(self) -> bytes:
        """Close the open block (a thinking block's signature first)."""
        if self._kind is None:
            return b""
        out = b""
        if self._kind[0] == "reasoning":
            out = self._delta(
                b'{"type":"signature_delta","signature":"%s"}' % self._thought.hexdigest().encode()
            )
        self._kind = None
        return out + _stop(self._blocks - 1)

    def _open(self, kind: PartKind, index: int = -1, call_id: str = "", name: str = "") -> bytes:
        """Close the open block and open the next one (a ``ping`` after the first)."""
        out = self._close()
        if kind == "text":
            block = b'{"type":"text","text":""}'
            self._delta_head = self._text_head(self._blocks)
        elif kind == "reasoning":
            block = b'{"type":"thinking","thinking":"","signature":""}'
            self._thought = hashlib.sha256()
        else:
            block = b'{"type":"tool_use","id":%s,"name":%s,"input":{}}' % (
                _encode(call_id),
                _encode(name),
            )
        out += self._block_start(self._blocks, block)
        if self._blocks == 0:
            out += PING
        self._blocks += 1
        self._kind = (kind, index)
        return out

    def _part(self, event: Event) -> bytes:
        p = piece(event)
        if p.kind == "reasoning" and not self.thinking:
            return b""
        out = b""
        if self._kind is None or self._kind[0] != p.kind or p.id is not None:
            out = self._open(p.kind, p.index, p.id or "", p.name or "")
        if not p.text:
            return out
        if p.kind == "reasoning":
            self._thought.update(p.text.encode())
            delta = b'{"type":"thinking_delta","thinking":%s}' % _encode(p.text)
        else:
            delta = b'{"type":"input_json_delta","partial_json":%s}' % _encode(p.text)
        return out + self._delta(delta)

    def frames(self, events: Iterable[Event]) -> bytes:
        """A batch of log events as one write; the terminal event ends the message."""
        out: list[bytes] = []
        for event in events:
            if event.type == "token":
                if self._kind is None or self._kind[0] != "text":
                    out.append(self._open("text"))
                out.append(b"%s%s}}\n\n" % (self._delta_head, token_text_json(event)))
                continue
            if not event.terminal:
                out.append(self._part(event))
                continue
            end = outcome(self.stream_id, event)
            if isinstance(end, GenerationError):
                out.append(error_frame(end))
                continue
            if self._blocks == 0:  # nothing came: the answer is an empty text block
                out.append(self._open("text"))
            out.append(self._close())
            out.append(
                sse_control(
                    "message_delta",
                    b'{"type":"message_delta","delta":{"stop_reason":"%s","stop_sequence":null},'
                    b'"usage":{"output_tokens":%d}}' % (STOP_REASONS[end].encode(), event.seq),
                )
            )
            out.append(sse_control("message_stop", b'{"type":"message_stop"}'))
        return b"".join(out)

    def content(self, blocks: list[Block]) -> list[dict[str, Any]]:
        """The non-streamed answer's content blocks, in order (thinking only if enabled;
        an empty text block if there is nothing else)."""
        out: list[dict[str, Any]] = []
        for b in blocks:
            if b.kind == "text":
                out.append({"type": "text", "text": b.text})
            elif b.kind == "reasoning":
                if self.thinking:
                    text = b.text
                    out.append({"type": "thinking", "thinking": text, "signature": signature(text)})
            else:
                out.append(
                    {
                        "type": "tool_use",
                        "id": b.id,
                        "name": b.name,
                        "input": parsed_arguments(b.text),
                    }
                )
        return out or [{"type": "text", "text": ""}]

    def message_of(self, events: list[Event], stop: str) -> bytes:
        """The non-streamed answer of a whole stream's events (the last one its ``done``)."""
        return self._message(self.content(fold(events)), stop, events[-1].seq)

    def message(self, text: str, stop: str, output_tokens: int) -> bytes:
        """The non-streamed answer: one ``message`` object (``stop`` a ``done`` reason)."""
        return self._message([{"type": "text", "text": text}], stop, output_tokens)

    def _message(self, content: list[dict[str, Any]], stop: str, output_tokens: int) -> bytes:
        return _encode(
            {
                "id": message_id(self.stream_id),
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": content,
                "stop_reason": STOP_REASONS[stop],
                "stop_sequence": None,
                "usage": {"input_tokens": self.input_tokens, "output_tokens": output_tokens},
            }
        )
