"""Typed parts as the dialects read them: which item/block a content event belongs to, and
the fold of a whole answer (the non-streamed answers of every dialect).

Sans-I/O: log events in, plain values out (docs/protocol.md, "Typed parts").
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from server.events import Event, event_fields

PartKind = Literal["text", "reasoning", "tool_call"]


def part_kind(event: Event) -> PartKind:
    """The kind of a content event (``token`` is answer text)."""
    return "text" if event.type == "token" else event.type  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Piece:
    """A decoded typed event: its kind, its text (reasoning) or argument piece (a call),
    and for a call its index and, on its first event, its id and name."""

    kind: PartKind
    text: str
    index: int = -1
    id: str | None = None
    name: str | None = None


def piece(event: Event) -> Piece:
    """A ``reasoning`` or ``tool_call`` event, decoded (tokens are spliced, never this)."""
    fields = event_fields(event)
    if event.type == "tool_call":
        return Piece(
            "tool_call",
            str(fields["args"]),
            int(fields["index"]),
            fields.get("id"),
            fields.get("name"),
        )
    return Piece(part_kind(event), str(fields["text"]))


@dataclass(slots=True)
class Block:
    """One run of a kind in the answer (a dialect's item or content block): answer text,
    reasoning, or one tool call (``index``, ``id``, ``name``, its argument pieces)."""

    kind: PartKind
    pieces: list[str] = field(default_factory=list)
    index: int = -1
    id: str = ""
    name: str = ""

    @property
    def text(self) -> str:
        """The joined pieces (a call's argument JSON)."""
        return "".join(self.pieces)


def fold(events: Iterable[Event]) -> list[Block]:
    """The content events of an answer as blocks, in order: a block starts when the kind
    changes or a new tool call ``index`` starts."""
    blocks: list[Block] = []
    for event in events:
        if event.terminal:
            continue
        if event.type == "token":
            text = str(event_fields(event)["text"])
            if not blocks or blocks[-1].kind != "text":
                blocks.append(Block("text"))
            blocks[-1].pieces.append(text)
            continue
        p = piece(event)
        last = blocks[-1] if blocks else None
        if last is None or last.kind != p.kind or last.index != p.index:
            last = Block(p.kind, index=p.index, id=p.id or "", name=p.name or "")
            blocks.append(last)
        last.pieces.append(p.text)
    return blocks


def joined(blocks: Iterable[Block], kind: PartKind) -> str:
    """All the text of one kind (the answer, or the reasoning), blocks joined."""
    return "".join(b.text for b in blocks if b.kind == kind)


def parsed_arguments(arguments: str) -> Any:
    """A call's argument JSON, parsed; the text itself if it is not JSON (a source's
    broken arguments reach the client as they are, never as a 500)."""
    try:
        return json.loads(arguments) if arguments else {}
    except ValueError:
        return arguments
