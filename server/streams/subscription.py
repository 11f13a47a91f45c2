"""Subscriptions: one reader's position in one stream's log, counted on the stream while open."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence

from server.errors import StoreUnavailable, StreamGone
from server.events import Event
from server.store.base import LogStore
from server.streams.record import StreamRecord
from wire import Reader

#: Largest batch one read hands to a transport (so at most this many events in one poll).
READ_LIMIT = 512


class Subscription:
    """One reader's position in one stream's log.

    ``await sub.next_batch(wait)`` returns the next events (``[]`` when ``wait`` seconds
    passes with none); ``sub.finished`` turns true once the terminal event was returned.
    """

    __slots__ = ("after", "finished", "stream", "_push", "_store")

    def __init__(self, store: LogStore, stream: StreamRecord, after: int) -> None:
        self._store = store
        self.stream = stream
        self.after = after
        self.finished = stream.delivered(after)
        self._push: Callable[[Event], bool] | None = None

    async def next_batch(
        self, wait: float | None, push: Callable[[Event], bool] | None = None
    ) -> list[Event]:
        """With ``push``, and a paced stream: while this waits, each new token is offered
        to ``push(event)``, synchronously in the generation's step; a ``True`` means the
        reader wrote it (the position moves past it) and this keeps waiting. One task step
        per token instead of two (see ``LogStore.read_pushing``). ``push`` must not await
        and must write nothing when it returns ``False``.
        """
        if self.finished:
            return []
        if push is not None and not self.stream.unpaced:
            # An unpaced stream appends in bursts: its reader writes them as one batch.
            self._push = push
            events = await self._store.read_pushing(
                self.stream.id, self.after, limit=READ_LIMIT, wait=wait, push=self._take
            )
        else:
            events = await self._store.read(self.stream.id, self.after, limit=READ_LIMIT, wait=wait)
        if events:
            self.after = events[-1].seq
            self.finished = events[-1].terminal
        elif self.stream.delivered(self.after):
            self.finished = True
        return events

    async def logged(self) -> list[Event]:
        """The events the log already holds after the position, without waiting for any:
        ``[]`` when there are none, or when the read fails (the reader's next read meets
        that). The stream's count says whether any was appended: a read only then."""
        stream = self.stream
        if self.finished or not (stream.tokens or stream.final_seq is not None):
            return []
        with contextlib.suppress(StreamGone, StoreUnavailable):
            return await self.next_batch(0)
        return []

    def _take(self, event: Event) -> bool:
        push = self._push
        if push is not None and push(event):
            self.after = event.seq
            return True
        return False

    def framed(self, frame: Callable[[Sequence[Event]], bytes], batch: Sequence[Event]) -> bytes:
        """``frame(batch)``, built once for all the readers of the stream that read this
        same batch (fan-out: readers woken by the same append slice the same events).

        ``frame`` must depend on the events only (a module-level framing function).
        """
        key = (batch[0].seq, batch[-1].seq)  # a log never changes what a seq holds
        cached = self.stream.framed.get(frame)
        if cached is not None and cached[0] == key:
            return cached[1]
        data = frame(batch)
        self.stream.framed[frame] = (key, data)
        return data


def subscription(
    store: LogStore, stream: StreamRecord, after: int, reader: Reader
) -> contextlib.AbstractAsyncContextManager[Subscription]:
    """A reader of ``stream`` from ``after``, counted on the stream (as ``reader``) while open.

    Fails fast (``StreamGone``, 410) if the asked position is already evicted.
    """
    return _Subscribing(store, stream, after, reader)


class _Subscribing:
    """:func:`subscription`'s context: a small object, not a suspended generator held by
    every open stream for its whole life."""

    __slots__ = ("after", "reader", "store", "stream")

    def __init__(self, store: LogStore, stream: StreamRecord, after: int, reader: Reader) -> None:
        self.store = store
        self.stream = stream
        self.after = after
        self.reader = reader

    async def __aenter__(self) -> Subscription:
        stream = self.stream
        await self.store.read(stream.id, self.after, limit=1, wait=0)
        stream.subscribers[self.reader] += 1
        return Subscription(self.store, stream, self.after)

    async def __aexit__(self, *exc: object) -> None:
        stream = self.stream
        stream.subscribers[self.reader] -= 1
        stream.last_present = time.monotonic()
        if not stream.total_subscribers:
            stream.framed.clear()  # nobody shares it: a retained stream keeps no frames
