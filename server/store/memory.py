"""In-process log store: one growable list per stream, a shared wake-up future per log.

Appending costs O(1) whatever the number of readers: readers waiting for news all await
the same future, which is resolved and replaced on each append. Reading is a list slice
from the reader's position.
"""

from __future__ import annotations

import asyncio

from server.errors import StreamGone, UnknownStream
from server.events import Event
from server.store.base import LogStore


class _Log:
    __slots__ = ("base", "closed", "events", "start", "waiter")

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.start = 0  # index in ``events`` of the oldest retained event
        self.base = 0  # seq of ``events[0]``
        self.closed = False
        self.waiter: asyncio.Future[None] | None = None

    @property
    def first_seq(self) -> int:
        return self.base + self.start

    @property
    def next_seq(self) -> int:
        return self.base + len(self.events)

    def wake(self) -> None:
        if self.waiter is not None:
            if not self.waiter.done():
                self.waiter.set_result(None)
            self.waiter = None


class MemoryStore(LogStore):
    """Logs in this process's memory; each keeps at most ``max_events`` events."""

    def __init__(self, max_events: int) -> None:
        if max_events < 1:
            raise ValueError("max_events must be >= 1")
        self.max_events = max_events
        self._logs: dict[str, _Log] = {}

    async def open(self, stream_id: str) -> None:
        self._logs[stream_id] = _Log()

    async def append(self, stream_id: str, event: Event) -> None:
        log = self._logs.get(stream_id)
        if log is None:
            raise UnknownStream(stream_id)
        if log.closed:
            raise RuntimeError(f"log {stream_id} is closed")
        if event.seq != log.next_seq:
            raise RuntimeError(f"log {stream_id}: expected seq {log.next_seq}, got {event.seq}")
        log.events.append(event)
        if len(log.events) - log.start > self.max_events:
            log.start += 1
            if log.start * 2 > len(log.events):  # compact: amortised O(1) per append
                del log.events[: log.start]
                log.base += log.start
                log.start = 0
        if event.terminal:
            log.closed = True
        log.wake()

    async def read(
        self, stream_id: str, after: int, *, limit: int, wait: float | None
    ) -> list[Event]:
        log = self._logs.get(stream_id)
        if log is None:
            raise UnknownStream(stream_id)
        while True:
            if after + 1 < log.first_seq:
                raise StreamGone(
                    f"events after seq {after} are no longer retained; "
                    f"the oldest retained seq is {log.first_seq}"
                )
            i = after + 1 - log.base
            if i < len(log.events):
                return log.events[i : i + limit]
            if log.closed or wait == 0:
                return []
            if log.waiter is None:
                log.waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(wait):
                    await asyncio.shield(log.waiter)
            except TimeoutError:
                return []
            if self._logs.get(stream_id) is not log:
                raise StreamGone(f"stream {stream_id!r} has expired")

    async def drop(self, stream_id: str) -> None:
        log = self._logs.pop(stream_id, None)
        if log is not None:
            log.closed = True
            log.wake()

    def __len__(self) -> int:
        return len(self._logs)
