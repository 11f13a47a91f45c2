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

A stream that ends without an answer (an error event, or cancelled) ends with one
``event: error`` carrying Anthropic's error body instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import msgspec

from server.errors import ApiError, GenerationError
from server.events import Event, token_text_json
from server.framing.openai import outcome
from server.framing.sse import sse_control

#: Anthropic's stop reasons for tokenwire's ``done`` reasons (``cancelled`` is an error).
STOP_REASONS: Final[dict[str, str]] = {"stop": "end_turn", "length": "max_tokens"}

#: The heartbeat: an event the SDK skips.
PING: Final = sse_control("ping", b'{"type":"ping"}')

_encode = msgspec.json.Encoder().encode


def message_id(stream_id: str) -> str:
    """``msg_<stream id>``: the message's id."""
    return f"msg_{stream_id}"


def error_frame(err: ApiError) -> bytes:
    """The in-band error that ends a stream: ``event: error`` and Anthropic's error body."""
    return sse_control("error", _encode(err.anthropic_body()))


class MessageFramer:
    """Frames one stream's log as Messages events; a token's text is spliced in as the
    JSON string its event already holds."""

    __slots__ = ("_delta_head", "input_tokens", "model", "stream_id")

    def __init__(self, *, stream_id: str, model: str, input_tokens: int) -> None:
        self.stream_id = stream_id
        self.model = model
        self.input_tokens = input_tokens
        self._delta_head = (
            b"event: content_block_delta\n"
            b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":'
        )

    def start(self) -> bytes:
        """``message_start``, the text block's ``content_block_start`` and a ``ping``."""
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
        return b"".join(
            (
                sse_control("message_start", b'{"type":"message_start","message":%s}' % message),
                sse_control(
                    "content_block_start",
                    b'{"type":"content_block_start","index":0,'
                    b'"content_block":{"type":"text","text":""}}',
                ),
                PING,
            )
        )

    def frames(self, events: Iterable[Event]) -> bytes:
        """A batch of log events as one write; the terminal event ends the message."""
        out: list[bytes] = []
        for event in events:
            if event.type == "token":
                out.append(b"%s%s}}\n\n" % (self._delta_head, token_text_json(event)))
                continue
            end = outcome(self.stream_id, event)
            if isinstance(end, GenerationError):
                out.append(error_frame(end))
                continue
            out.append(
                sse_control("content_block_stop", b'{"type":"content_block_stop","index":0}')
            )
            out.append(
                sse_control(
                    "message_delta",
                    b'{"type":"message_delta","delta":{"stop_reason":"%s","stop_sequence":null},'
                    b'"usage":{"output_tokens":%d}}' % (STOP_REASONS[end].encode(), event.seq),
                )
            )
            out.append(sse_control("message_stop", b'{"type":"message_stop"}'))
        return b"".join(out)

    def message(self, text: str, stop: str, output_tokens: int) -> bytes:
        """The non-streamed answer: one ``message`` object (``stop`` a ``done`` reason)."""
        return _encode(
            {
                "id": message_id(self.stream_id),
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": STOP_REASONS[stop],
                "stop_sequence": None,
                "usage": {"input_tokens": self.input_tokens, "output_tokens": output_tokens},
            }
        )
