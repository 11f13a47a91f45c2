"""In-process log store: one growable list per stream, and the futures of its waiting readers.

Appending costs O(1) plus one ``set_result`` per reader that is waiting for news (each
has its own future, so cancelling one reader never touches another). A wait with a time
limit is one ``call_later`` handle, not an ``asyncio.timeout`` block and a ``shield``: the
read is on every token's path, once per reader. Reading is a list slice from the reader's
position.
"""

from __future__ import annotations

import asyncio
import contextlib

from server.errors import StreamGone, UnknownStream
from server.events import Event
from server.store.base import LogStore


def _expire(fut: asyncio.Future[bool]) -> None:
    if not fut.done():
        fut.set_result(True)  # timed out


class _Log:
    __slots__ = ("base", "closed", "events", "start", "waiters")

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.start = 0  # index in ``events`` of the oldest retained event
        self.base = 0  # seq of ``events[0]``
        self.closed = False
        #: Readers waiting for news; each future's result says whether its wait timed out.
        self.waiters: list[asyncio.Future[bool]] = []

    @property
    def first_seq(self) -> int:
        return self.base + self.start

    @property
    def next_seq(self) -> int:
        return self.base + len(self.events)

    def forget(self, fut: asyncio.Future[bool]) -> None:
        """Drop a reader that stopped waiting (timed out or cancelled) before any news."""
        with contextlib.suppress(ValueError):
            self.waiters.remove(fut)

    def wake(self) -> None:
        if self.waiters:
            waiters, self.waiters = self.waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(False)


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
        events = log.events
        if event.seq != log.base + len(events):
            raise RuntimeError(f"log {stream_id}: expected seq {log.next_seq}, got {event.seq}")
        events.append(event)
        if len(events) - log.start > self.max_events:
            log.start += 1
            if log.start * 2 > len(events):  # compact: amortised O(1) per append
                del events[: log.start]
                log.base += log.start
                log.start = 0
        if event.type != "token":  # terminal
            log.closed = True
        if log.waiters:
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
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[bool] = loop.create_future()
            log.waiters.append(fut)
            timer = None if wait is None else loop.call_later(wait, _expire, fut)
            try:
                timed_out = await fut
            except asyncio.CancelledError:
                log.forget(fut)
                raise
            finally:
                if timer is not None:
                    timer.cancel()
            if timed_out:
                log.forget(fut)
                return []
            # Woken by an append: let the tasks that are ready this round (the generator
            # among them) run first, so that what they append joins this batch. Under
            # load that turns many one-event writes into fewer larger ones.
            await asyncio.sleep(0)
            if self._logs.get(stream_id) is not log:
                raise StreamGone(f"stream {stream_id!r} has expired")

    async def drop(self, stream_id: str) -> None:
        log = self._logs.pop(stream_id, None)
        if log is not None:
            log.closed = True
            log.wake()

    def __len__(self) -> int:
        return len(self._logs)
