"""What the server knows about one stream (its events live in the log store)."""

from __future__ import annotations

import asyncio
import time
import typing
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from server.events import DoneReason, Event
from wire import READERS, Reader

StreamState = Literal["running", "done", "error"]
STREAM_STATES: Final[tuple[StreamState, ...]] = typing.get_args(StreamState)
CancelReason = Literal["cancelled", "abandoned", "shutdown"]


@dataclass(slots=True, eq=False)
class StreamRecord:
    """One stream's state, its readers here, and its generation task (if it runs here)."""

    id: str
    source: str
    client: str
    max_tokens: int
    unpaced: bool
    #: The tokens/s the request asked for (0: unpaced, or the source keeps its own pace).
    pace: float = 0.0
    created_at: float = field(default_factory=time.time)
    state: StreamState = "running"
    tokens: int = 0
    final_seq: int | None = None
    finish_reason: str | None = None
    finished_at: float | None = None
    #: Open readers by the name each transport gave (for the status; transports count
    #: their process-wide totals themselves).
    subscribers: Counter[Reader] = field(default_factory=Counter)
    last_present: float = field(default_factory=time.monotonic)
    cancel_reason: CancelReason | None = None
    task: asyncio.Task[None] | None = None
    #: What a dialect noted about the stream (the Responses request's metadata, ...), by
    #: name: shared with every process with the record (:meth:`StreamRegistry.note`).
    notes: dict[str, bytes] = field(default_factory=dict)
    #: Per framing function, the last batch it framed: ``((first seq, last seq), bytes)``.
    framed: dict[Callable[[Sequence[Event]], bytes], tuple[tuple[int, int], bytes]] = field(
        default_factory=dict
    )

    def delivered(self, after: int) -> bool:
        """True if the stream has ended and a reader at ``after`` has its last event."""
        return self.final_seq is not None and after >= self.final_seq

    @property
    def total_subscribers(self) -> int:
        return sum(self.subscribers.values())

    def finish(self, final: Event, reason: DoneReason) -> None:
        """Record the terminal event the generation appended."""
        self.final_seq = final.seq
        self.state = "done" if final.type == "done" else "error"
        self.finished_at = time.time()
        if final.type == "done":
            self.finish_reason = reason

    def status(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "source": self.source,
            "tokens": self.tokens,
            "max_tokens": self.max_tokens,
            "finish_reason": self.finish_reason,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "subscribers": {t: self.subscribers.get(t, 0) for t in READERS},
        }
