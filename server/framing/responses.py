"""OpenAI's Responses API format for ``/v1/responses``: log events in, bytes out.

A response is one tokenwire stream. Its events are SSE ``event: <type>`` / ``data: <json>``
blocks (no ``id:``, no ``retry:``: the SDK fails on an empty event once an id was set, so
the heartbeat is the comment ``: ping``). The SDK reads the JSON ``type``.

The output is a list of items, opened as the log's parts come (a ``message`` for answer
text, a ``reasoning`` item, a ``function_call`` per tool call) and closed when the kind
changes or the stream ends. A request that asked for no typed parts opens its message
before the first token, as always; one that did opens each item at its first part::

    sequence_number  event
    0                response.created
    1                response.in_progress
    ...              per item: output_item.added (+ content_part.added for a message),
                     its deltas (output_text / reasoning_text / function_call_arguments),
                     its closing (*.done, content_part.done, output_item.done)
    ...              response.completed (also after tool calls) / response.incomplete
                     (max_output_tokens) / response.failed (error event / cancelled)

``sequence_number`` counts the events the fold of the log has produced; every read folds
from the log's start, so a resumed read (``starting_after``) numbers them as the first
did. For a text-only response a token at log ``seq`` k is still k + :data:`OPENING`.

The text of the ``*.done`` events and of the response object is the pieces' JSON string
literals joined, never decoded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import msgspec

from server.errors import GenerationError
from server.events import Event, token_text_json
from server.framing.openai import outcome
from server.framing.parts import PartKind, piece
from server.framing.sse import sse_control
from server.sources.base import Tool

#: Events before the first token's delta of a text-only response (created, in_progress,
#: output_item.added, content_part.added): a token at log ``seq`` k is k + OPENING.
OPENING: Final = 4

ResponseStatus = Literal["in_progress", "completed", "incomplete", "failed", "cancelled"]
ItemStatus = Literal["in_progress", "completed", "incomplete"]

#: The stream's ending, as a response's status and its closing event type.
_CLOSING: Final[dict[str, tuple[ResponseStatus, str]]] = {
    "stop": ("completed", "response.completed"),
    "tool_calls": ("completed", "response.completed"),
    "length": ("incomplete", "response.incomplete"),
}

_encode = msgspec.json.Encoder().encode


def sequence_number(seq: int) -> int:
    """The ``sequence_number`` of a text-only response's token at log ``seq``."""
    return seq + OPENING


def response_id(stream_id: str) -> str:
    """``resp_<stream id>``: the response's id (what ``retrieve``/``cancel`` take)."""
    return f"resp_{stream_id}"


def stream_of(resp_id: str) -> str:
    """The stream id inside a response id (a bare stream id is taken as it is)."""
    return resp_id.removeprefix("resp_")


def message_id(stream_id: str) -> str:
    """The id of the response's first output message."""
    return f"msg_{stream_id}"


def tool_object(tool: Tool) -> dict[str, Any]:
    """A function tool as a response object lists it."""
    return {
        "type": "function",
        "name": tool.name,
        "description": tool.description or None,
        "parameters": dict(tool.parameters),
        "strict": None,
    }


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
    #: The request asked for typed parts (reasoning or tools): items open at their parts.
    typed: bool = False
    reasoning_effort: str | None = None
    #: The request's tools as the object lists them (:func:`tool_object`): plain JSON, so
    #: the meta survives its round trip through a record's note.
    tools: tuple[dict[str, Any], ...] = ()
    #: ``tool_choice`` as the request gave it (echoed in the object).
    tool_choice: Any = "auto"


def _event(type_: str, body: bytes) -> bytes:
    """One SSE event: ``event: <type>`` and ``data: {"type":...,<body>}``."""
    return sse_control(type_, b'{"type":"%s",%s}' % (type_.encode(), body))


@dataclass(slots=True)
class _Item:
    """One output item: its kind, place, id, and its pieces as JSON string literals."""

    kind: PartKind
    output_index: int
    id: bytes  # JSON
    pieces: list[bytes] = field(default_factory=list)
    call_id: bytes = b'""'  # JSON
    name: bytes = b'""'  # JSON
    status: ItemStatus = "in_progress"

    def joined(self) -> bytes:
        """The pieces as one JSON string literal (their insides joined)."""
        return b'"%s"' % b"".join(p[1:-1] for p in self.pieces)

    def where(self) -> bytes:
        return b'"item_id":%s,"output_index":%d' % (self.id, self.output_index)

    def part(self) -> bytes:
        return b'{"type":"output_text","annotations":[],"logprobs":[],"text":%s}' % self.joined()

    def body(self, status: ItemStatus, *, opening: bool = False) -> bytes:
        """The item object (``opening``: as ``output_item.added`` shows it)."""
        if self.kind == "text":
            return b'{"id":%s,"type":"message","status":"%s","content":[%s],"role":"assistant"}' % (
                self.id,
                status.encode(),
                b"" if opening else self.part(),
            )
        if self.kind == "reasoning":
            content = b"" if opening else b'{"type":"reasoning_text","text":%s}' % self.joined()
            return b'{"id":%s,"type":"reasoning","summary":[],"content":[%s],"status":"%s"}' % (
                self.id,
                content,
                status.encode(),
            )
        return (
            b'{"id":%s,"type":"function_call","status":"%s","arguments":%s,"call_id":%s,'
            b'"name":%s}'
            % (
                self.id,
                status.encode(),
                b'""' if opening else self.joined(),
                self.call_id,
                self.name,
            )
        )


def error_frame(code: str, message: str, sequence: int | None) -> bytes:
    """An ``error`` event (a reader that fell behind the log gets one with no number)."""
    return _event(
        "error",
        b'"sequence_number":%s,"code":%s,"message":%s,"param":null'
        % (b"null" if sequence is None else b"%d" % sequence, _encode(code), _encode(message)),
    )


class ResponseFramer:
    """Frames one stream's log as Responses events, and builds the response object.

    It keeps every item's pieces as they pass (every read starts from the log's start, so
    a resumed read can say whole texts in its ``*.done`` events) and writes only the
    events numbered above ``starting_after``.
    """

    __slots__ = (
        "_count",
        "_delta_head",
        "_ending",
        "_items",
        "_reasoning",
        "_tokens",
        "meta",
        "starting_after",
    )

    def __init__(self, meta: ResponseMeta, starting_after: int = -1) -> None:
        self.meta = meta
        self.starting_after = starting_after
        self._items: list[_Item] = []
        self._ending: tuple[ResponseStatus, Event] | None = None
        self._tokens = 0  # every content event (output_tokens)
        self._reasoning = 0  # the reasoning events among them
        self._count = 2  # the next sequence_number: created and in_progress come first
        self._delta_head = (
            b"event: response.output_text.delta\n"
            b'data: {"type":"response.output_text.delta","sequence_number":'
        )
        if not meta.typed:
            self._open("text")  # the message opens before the first token (2, 3)

    # -- the response object -----------------------------------------------------------

    @property
    def status(self) -> ResponseStatus:
        return "in_progress" if self._ending is None else self._ending[0]

    @property
    def output_tokens(self) -> int:
        return self._tokens

    def text_json(self) -> bytes:
        """The answer text so far, one JSON string literal (the pieces' insides joined)."""
        return b'"%s"' % b"".join(i.joined()[1:-1] for i in self._items if i.kind == "text")

    def _item_status(self, item: _Item) -> ItemStatus:
        if item.status != "in_progress" or self._ending is None:
            return item.status
        return "incomplete"  # still open when the response failed or was cancelled

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
                "output_tokens": self._tokens,
                "output_tokens_details": {"reasoning_tokens": self._reasoning},
                "total_tokens": meta.input_tokens + self._tokens,
            }
        output = [] if opening else [msgspec.Raw(i.body(self._item_status(i))) for i in self._items]
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
                "output": output,
                "parallel_tool_calls": True,
                "previous_response_id": None,
                "reasoning": {"effort": meta.reasoning_effort, "summary": None},
                "store": True,
                "temperature": meta.temperature,
                "text": {"format": {"type": "text"}},
                "tool_choice": meta.tool_choice,
                "tools": list(meta.tools),
                "top_p": meta.top_p,
                "truncation": "disabled",
                "usage": usage,
                "metadata": {},
            }
        )

    # -- the events ----------------------------------------------------------------------

    def _numbered(self, type_: str, body: bytes) -> bytes:
        """The next event (numbered whether or not this read writes it)."""
        sequence = self._count
        self._count += 1
        if sequence <= self.starting_after:
            return b""
        return _event(type_, b'"sequence_number":%d,%s' % (sequence, body))

    def _open(self, kind: PartKind, call_id: str = "", name: str = "") -> bytes:
        """Open the next output item: ``output_item.added`` (and a message's
        ``content_part.added``)."""
        index = len(self._items)
        sid = self.meta.stream_id
        if kind == "text":
            item_id = message_id(sid) if index == 0 else f"msg_{sid}_{index}"
        elif kind == "reasoning":
            item_id = f"rs_{sid}_{index}"
        else:
            item_id = f"fc_{sid}_{index}"
        item = _Item(kind, index, _encode(item_id), call_id=_encode(call_id), name=_encode(name))
        self._items.append(item)
        added = self._numbered(
            "response.output_item.added",
            b'"output_index":%d,"item":%s' % (index, item.body("in_progress", opening=True)),
        )
        if kind != "text":
            return added
        return added + self._numbered(
            "response.content_part.added",
            b'%s,"content_index":0,"part":{"type":"output_text","annotations":[],'
            b'"logprobs":[],"text":""}' % item.where(),
        )

    def _close(self, item: _Item, status: ItemStatus) -> bytes:
        """Close an item: its text's ``*.done`` (and a message's ``content_part.done``),
        then ``output_item.done``."""
        item.status = status
        where = item.where()
        if item.kind == "text":
            where += b',"content_index":0'
            out = self._numbered(
                "response.output_text.done",
                b'%s,"text":%s,"logprobs":[]' % (where, item.joined()),
            )
            out += self._numbered(
                "response.content_part.done", b'%s,"part":%s' % (where, item.part())
            )
        elif item.kind == "reasoning":
            out = self._numbered(
                "response.reasoning_text.done",
                b'%s,"content_index":0,"text":%s' % (where, item.joined()),
            )
        else:
            out = self._numbered(
                "response.function_call_arguments.done",
                b'%s,"arguments":%s' % (where, item.joined()),
            )
        return out + self._numbered(
            "response.output_item.done",
            b'"output_index":%d,"item":%s' % (item.output_index, item.body(status)),
        )

    def _current(self) -> _Item | None:
        item = self._items[-1] if self._items else None
        return item if item is not None and item.status == "in_progress" else None

    def _part(self, event: Event) -> bytes:
        """A reasoning or tool-call event: its item (opened, the previous one closed, if
        the kind or the call changed) and its delta."""
        p = piece(event)
        current = self._current()
        out = b""
        new_call = p.kind == "tool_call" and p.id is not None
        if current is None or current.kind != p.kind or new_call:
            if current is not None:
                out += self._close(current, "completed")
            out += self._open(p.kind, p.id or "", p.name or "")
            current = self._items[-1]
        text = _encode(p.text)
        if p.kind == "reasoning":
            self._reasoning += 1
        if not p.text:
            return out
        current.pieces.append(text)
        if p.kind == "reasoning":
            return out + self._numbered(
                "response.reasoning_text.delta",
                b'%s,"content_index":0,"delta":%s' % (current.where(), text),
            )
        return out + self._numbered(
            "response.function_call_arguments.delta", b'%s,"delta":%s' % (current.where(), text)
        )

    def opening(self) -> bytes:
        """The events before the first part (those above ``starting_after``): created,
        in_progress, and a text-only response's message item."""
        created = b'"response":%s' % self.response(opening=True)
        out = [
            _event("response.created", b'"sequence_number":0,%s' % created),
            _event("response.in_progress", b'"sequence_number":1,%s' % created),
        ]
        if not self.meta.typed:  # opened by __init__ as 2 and 3
            message = self._items[0]
            out.append(
                _event(
                    "response.output_item.added",
                    b'"sequence_number":2,"output_index":0,"item":%s'
                    % message.body("in_progress", opening=True),
                )
            )
            out.append(
                _event(
                    "response.content_part.added",
                    b'"sequence_number":3,%s,"content_index":0,"part":{"type":"output_text",'
                    b'"annotations":[],"logprobs":[],"text":""}' % message.where(),
                )
            )
        return b"".join(e for n, e in enumerate(out) if n > self.starting_after)

    def _closing(self, event: Event) -> bytes:
        end = outcome(self.meta.stream_id, event)
        if isinstance(end, GenerationError):
            status: ResponseStatus = "cancelled" if end.code == "cancelled" else "failed"
            self._ending = (status, event)
            return self._numbered("response.failed", b'"response":%s' % self.response())
        status, closing = _CLOSING[end]
        out = b""
        if not self._items:  # nothing came: the answer is an empty message
            out += self._open("text")
        current = self._current()
        if current is not None:
            out += self._close(current, "incomplete" if status == "incomplete" else "completed")
        self._ending = (status, event)
        return out + self._numbered(closing, b'"response":%s' % self.response())

    def frames(self, events: Iterable[Event]) -> bytes:
        """A batch of log events as one write (the events above ``starting_after``)."""
        out: list[bytes] = []
        for event in events:
            if event.terminal:
                out.append(self._closing(event))
                continue
            self._tokens += 1
            if event.type != "token":
                out.append(self._part(event))
                continue
            current = self._current()
            if current is None or current.kind != "text":
                if current is not None:
                    out.append(self._close(current, "completed"))
                out.append(self._open("text"))
                current = self._items[-1]
            text = token_text_json(event)
            current.pieces.append(text)
            sequence = self._count
            self._count += 1
            if sequence > self.starting_after:
                out.append(
                    b'%s%d,%s,"content_index":0,"delta":%s,"logprobs":[]}\n\n'
                    % (self._delta_head, sequence, current.where(), text)
                )
        return b"".join(out)
