"""A stream's content as parts: answer text, reasoning, tool calls (sans-I/O).

The log carries three kinds of content in one ``seq`` order (docs/protocol.md, "Typed
parts"): ``token`` (answer text), ``reasoning`` and ``tool_call`` (a call's first event
names it, the next ones carry pieces of its argument JSON). :class:`PartReader` turns those
events into parts, event by event: :class:`Text`, :class:`Reasoning`, :class:`ToolCall` (a
piece of a call's arguments, as it came) and, once a call's arguments are complete (the
next call starts, another kind of content comes, or ``done``), :class:`ToolCallDone` with
the joined arguments parsed. ``Stream.parts()`` reads a stream through one;
``clients/js/parts.js`` is the twin.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from clients.errors import InvalidToolCall

#: ``finish_reason`` values that may cut a call's arguments short.
CUT = ("length", "cancelled")


@dataclass(frozen=True, slots=True)
class Text:
    """A piece of the answer (a ``token`` event's text)."""

    text: str
    type: ClassVar[str] = "text"

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "text": self.text}


@dataclass(frozen=True, slots=True)
class Reasoning:
    """A piece of reasoning (a ``reasoning`` event's text)."""

    text: str
    type: ClassVar[str] = "reasoning"

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "text": self.text}


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A piece of a tool call as it came: ``arguments`` is this event's piece of the
    argument JSON (the call's first event: often ``""``). ``id`` and ``name`` are the
    call's (``None`` when the reader started inside the call and never saw them)."""

    index: int
    id: str | None
    name: str | None
    arguments: str
    type: ClassVar[str] = "tool_call"

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "index": self.index, "id": self.id, "name": self.name,
                "arguments": self.arguments}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ToolCallDone:
    """A tool call whose arguments are complete: ``arguments`` is their whole JSON text,
    ``parsed`` its ``json.loads``."""

    index: int
    id: str
    name: str
    arguments: str
    parsed: Any
    type: ClassVar[str] = "tool_call_done"

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "index": self.index, "id": self.id, "name": self.name,
                "arguments": self.arguments, "parsed": self.parsed}  # fmt: skip


Part = Text | Reasoning | ToolCall | ToolCallDone


@dataclass(slots=True)
class _Call:
    index: int
    id: str | None
    name: str | None
    #: False when the reader started inside the call: its arguments are a tail only.
    whole: bool
    pieces: list[str] = field(default_factory=list)


def _no_constant(name: str) -> Any:
    """``NaN`` and ``Infinity`` are not JSON (``JSON.parse`` refuses them too)."""
    raise ValueError(f"{name} is not JSON")


class PartReader:
    """Turns a stream's events into :data:`Part` objects, one event at a time (feed each
    event once, in ``seq`` order: the resume loop drops repeats before).

    A call is complete when the next call starts, another kind of content comes, or the
    stream ends with ``done``: then a :class:`ToolCallDone` follows its last piece. Its
    arguments must be JSON, else :class:`~clients.errors.InvalidToolCall`; except when
    ``done`` says ``length`` or ``cancelled``, which may cut the open call short: it then
    ends without a ``ToolCallDone`` if its text does not parse. A call the reader joined in
    the middle (a read from a position) never gets one either.
    """

    def __init__(self) -> None:
        self._calls: dict[int, _Call] = {}
        self._open: _Call | None = None
        self._reasoning: list[str] = []

    @property
    def reasoning(self) -> str:
        """The reasoning text so far."""
        return "".join(self._reasoning)

    @property
    def tool_calls(self) -> list[ToolCall]:
        """Every call so far, in index order, with the argument text received so far."""
        return [
            ToolCall(c.index, c.id, c.name, "".join(c.pieces))
            for _, c in sorted(self._calls.items())
        ]

    def feed(self, ev: Mapping[str, Any]) -> list[Part]:
        """The parts one event makes (none for an event that is not content or ``done``)."""
        kind = ev.get("type")
        if kind == "tool_call":
            index = int(ev["index"])
            out: list[Part] = []
            if self._open is not None and self._open.index != index:
                out += self._close(cut=False)
            call = self._calls.get(index)
            if call is None:
                call = _Call(index, ev.get("id"), ev.get("name"), whole="id" in ev)
                self._calls[index] = call
            call.pieces.append(ev["args"])
            self._open = call
            out.append(ToolCall(index, call.id, call.name, ev["args"]))
            return out
        if kind == "token":
            return [*self._close(cut=False), Text(ev["text"])]
        if kind == "reasoning":
            self._reasoning.append(ev["text"])
            return [*self._close(cut=False), Reasoning(ev["text"])]
        if kind == "done":
            return self._close(cut=ev.get("finish_reason") in CUT)
        return []

    def _close(self, *, cut: bool) -> list[Part]:
        call, self._open = self._open, None
        if call is None or not call.whole:
            return []
        arguments = "".join(call.pieces)
        try:
            parsed = json.loads(arguments, parse_constant=_no_constant)
        except ValueError as e:
            if cut:
                return []
            raise InvalidToolCall(call.index, call.id, call.name, arguments, str(e)) from None
        return [ToolCallDone(call.index, call.id or "", call.name or "", arguments, parsed)]
