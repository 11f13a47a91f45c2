"""OpenAI's Responses API format for ``/v1/responses``: log events in, bytes out.

A response is one tokenwire stream. Its events are SSE ``event: <type>`` / ``data: <json>``
blocks (no ``id:``, no ``retry:``: the SDK fails on an empty event once an id was set, so
the heartbeat is the comment ``: ping``). The SDK reads the JSON ``type``.

Sequence numbers are derived from the log's ``seq``, so every read of a response, first or
resumed, numbers its events the same (:data:`OPENING` is the one offset)::

    sequence_number  event                                   from
    0                response.created                        (the stream exists)
    1                response.in_progress
    2                response.output_item.added   (message)
    3                response.content_part.added  (output_text)
    k + 4            response.output_text.delta              token event, seq k
    n + 4 ...        output_text.done, content_part.done,    done event, seq n
                     output_item.done, response.completed
                     (``response.incomplete`` after max_output_tokens)
    n + 4            response.failed                         error event / cancelled

The text of the ``*.done`` events and of the response object is the tokens' JSON string
literals joined, never decoded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal

import msgspec

from server.errors import GenerationError
from server.events import Event, token_text_json
from server.framing.openai import outcome
from server.framing.sse import sse_control

#: Events before the first token's delta (created, in_progress, output_item.added,
#: content_part.added): a token at log ``seq`` k is ``sequence_number`` k + OPENING.
OPENING: Final = 4

ResponseStatus = Literal["in_progress", "completed", "incomplete", "failed", "cancelled"]

#: The stream's ending, as a response's status and its closing event type.
_CLOSING: Final[dict[str, tuple[ResponseStatus, str]]] = {
    "stop": ("completed", "response.completed"),
    "length": ("incomplete", "response.incomplete"),
}

_encode = msgspec.json.Encoder().encode


def sequence_number(seq: int) -> int:
    """The ``sequence_number`` of the first event a log event at ``seq`` becomes."""
    return seq + OPENING


def response_id(stream_id: str) -> str:
    """``resp_<stream id>``: the response's id (what ``retrieve``/``cancel`` take)."""
    return f"resp_{stream_id}"


def stream_of(resp_id: str) -> str:
    """The stream id inside a response id (a bare stream id is taken as it is)."""
    return resp_id.removeprefix("resp_")


def message_id(stream_id: str) -> str:
    """The id of the response's one output message."""
    return f"msg_{stream_id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseMeta:
    """What a response object says beside its output (from the request that created it)."""

    stream_id: str
    created_at: int
    model: str
    max_output_tokens: int
    input_tokens: int
    background: bool = False
    instructions: str | None = None
    temperature: float | None = None
    top_p: float | None = None


def _event(type_: str, body: bytes) -> bytes:
    """One SSE event: ``event: <type>`` and ``data: {"type":...,<body>}``."""
    return sse_control(type_, b'{"type":"%s",%s}' % (type_.encode(), body))


def error_frame(code: str, message: str, sequence: int | None) -> bytes:
    """An ``error`` event (a reader that fell behind the log gets one with no number)."""
    return _event(
        "error",
        b'"sequence_number":%s,"code":%s,"message":%s,"param":null'
        % (b"null" if sequence is None else b"%d" % sequence, _encode(code), _encode(message)),
    )


class ResponseFramer:
    """Frames one stream's log as Responses events, and builds the response object.

    It keeps the text's JSON literals as they pass (every read starts from the log's
    start, so a resumed read can say the whole text in its ``*.done`` events) and writes
    only the events numbered above ``starting_after``.
    """

    __slots__ = (
        "_delta_head",
        "_delta_tail",
        "_ending",
        "_pieces",
        "meta",
        "starting_after",
    )

    def __init__(self, meta: ResponseMeta, starting_after: int = -1) -> None:
        self.meta = meta
        self.starting_after = starting_after
        self._pieces: list[bytes] = []
        self._ending: tuple[ResponseStatus, Event] | None = None
        item = _encode(message_id(meta.stream_id))
        self._delta_head = (
            b"event: response.output_text.delta\n"
            b'data: {"type":"response.output_text.delta","sequence_number":'
        )
        self._delta_tail = b',"item_id":%s,"output_index":0,"content_index":0,"delta":' % item

    # -- the response object -----------------------------------------------------------

    @property
    def status(self) -> ResponseStatus:
        return "in_progress" if self._ending is None else self._ending[0]

    @property
    def output_tokens(self) -> int:
        return len(self._pieces)

    def text_json(self) -> bytes:
        """The text so far, one JSON string literal (the pieces' insides joined)."""
        return b'"%s"' % b"".join(p[1:-1] for p in self._pieces)

    def _part(self) -> bytes:
        return b'{"type":"output_text","annotations":[],"logprobs":[],"text":%s}' % (
            self.text_json()
        )

    def _item(self) -> bytes:
        status = self.status
        item_status = status if status in ("in_progress", "completed") else "incomplete"
        return b'{"id":%s,"type":"message","status":"%s","content":[%s],"role":"assistant"}' % (
            _encode(message_id(self.meta.stream_id)),
            item_status.encode(),
            self._part(),
        )

    def response(self, *, opening: bool = False) -> bytes:
        """The response object: as it was created (``opening``: no output yet), or with
        the output so far (``status`` ``in_progress`` until the stream ended)."""
        meta = self.meta
        status: ResponseStatus = "in_progress" if opening else self.status
        error: dict[str, str] | None = None
        incomplete: dict[str, str] | None = None
        usage: dict[str, Any] | None = None
        if not opening and self._ending is not None:
            end = outcome(meta.stream_id, self._ending[1])
            if isinstance(end, GenerationError) and end.code != "cancelled":
                error = {"code": "server_error", "message": f"{end.code}: {end.message}"}
            if status == "incomplete":
                incomplete = {"reason": "max_output_tokens"}
            usage = {
                "input_tokens": meta.input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": self.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": meta.input_tokens + self.output_tokens,
            }
        return _encode(
            {
                "id": response_id(meta.stream_id),
                "object": "response",
                "created_at": meta.created_at,
                "status": status,
                "background": meta.background,
                "error": error,
                "incomplete_details": incomplete,
                "instructions": meta.instructions,
                "max_output_tokens": meta.max_output_tokens,
                "model": meta.model,
                "output": [] if opening else [msgspec.Raw(self._item())],
                "parallel_tool_calls": True,
                "previous_response_id": None,
                "reasoning": {"effort": None, "summary": None},
                "store": True,
                "temperature": meta.temperature,
                "text": {"format": {"type": "text"}},
                "tool_choice": "auto",
                "tools": [],
                "top_p": meta.top_p,
                "truncation": "disabled",
                "usage": usage,
                "metadata": {},
            }
        )

    # -- the events ----------------------------------------------------------------------

    def _numbered(self, sequence: int, type_: str, body: bytes) -> bytes:
        if sequence <= self.starting_after:
            return b""
        return _event(type_, b'"sequence_number":%d,%s' % (sequence, body))

    def opening(self) -> bytes:
        """The events before the first token (those above ``starting_after``)."""
        item = _encode(message_id(self.meta.stream_id))
        created = b'"response":%s' % self.response(opening=True)
        return b"".join(
            (
                self._numbered(0, "response.created", created),
                self._numbered(1, "response.in_progress", created),
                self._numbered(
                    2,
                    "response.output_item.added",
                    b'"output_index":0,"item":{"id":%s,"type":"message","status":"in_progress",'
                    b'"content":[],"role":"assistant"}' % item,
                ),
                self._numbered(
                    3,
                    "response.content_part.added",
                    b'"item_id":%s,"output_index":0,"content_index":0,"part":{"type":"output_text",'
                    b'"annotations":[],"logprobs":[],"text":""}' % item,
                ),
            )
        )

    def _closing(self, event: Event) -> bytes:
        end = outcome(self.meta.stream_id, event)
        first = sequence_number(event.seq)
        if isinstance(end, GenerationError):
            status: ResponseStatus = "cancelled" if end.code == "cancelled" else "failed"
            self._ending = (status, event)
            return self._numbered(first, "response.failed", b'"response":%s' % self.response())
        status, closing = _CLOSING[end]
        self._ending = (status, event)
        where = b'"item_id":%s,"output_index":0,"content_index":0' % _encode(
            message_id(self.meta.stream_id)
        )
        return b"".join(
            (
                self._numbered(
                    first,
                    "response.output_text.done",
                    b'%s,"text":%s,"logprobs":[]' % (where, self.text_json()),
                ),
                self._numbered(
                    first + 1, "response.content_part.done", b'%s,"part":%s' % (where, self._part())
                ),
                self._numbered(
                    first + 2,
                    "response.output_item.done",
                    b'"output_index":0,"item":%s' % self._item(),
                ),
                self._numbered(first + 3, closing, b'"response":%s' % self.response()),
            )
        )

    def frames(self, events: Iterable[Event]) -> bytes:
        """A batch of log events as one write (the events above ``starting_after``)."""
        out: list[bytes] = []
        for event in events:
            if event.type == "token":
                text = token_text_json(event)
                self._pieces.append(text)
                sequence = sequence_number(event.seq)
                if sequence > self.starting_after:
                    out.append(
                        b'%s%d%s%s,"logprobs":[]}\n\n'
                        % (self._delta_head, sequence, self._delta_tail, text)
                    )
                continue
            out.append(self._closing(event))
        return b"".join(out)
