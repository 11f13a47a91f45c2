"""In-process log store: one growable list per stream, and the futures of its waiting readers.

Appending costs O(1) plus one ``set_result`` per reader that is waiting for news (each
has its own future, so cancelling one reader never touches another). A wait's time limit
(the heartbeat) is an entry in :class:`_Deadlines`, one timer for every waiting reader of
the store: no timer per wait (nor an ``asyncio.timeout`` block and a ``shield``), since
the read is on every token's path, once per reader. Reading is a list slice from the reader's
position.

A closed log (its terminal event appended) is compacted: a list of ``Event`` tuples costs
about 290 B per token (tuple, int, bytes object, list slot), most of it the stream id, the
type and the timestamp repeated on every line. A compact log keeps only each token's
``text`` JSON (one joined ``bytes``), its timestamp (8 B) and an offset (4 B): about 20 B
per token of a short text. Reads rebuild the exact lines (the compaction checks that they
are the same bytes, and keeps the lines whole when they are not).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
from array import array
from collections.abc import Callable, Sequence

from server.errors import StreamGone, UnknownStream
from server.events import Event, EventType
from server.store.base import LogStore

#: A reader's time limit may end this much early: a loop's timers fire on the millisecond
#: (libuv's clock), and a deadline a fraction of one ahead would re-arm the timer for nothing.
_SLACK = 0.001


class _Deadlines:
    """The time limits of the readers waiting in one store: one loop timer for all of them.

    A timer per wait (``call_later``, then ``cancel`` when news comes first) was on every
    token's path, once per reader: at a realistic pace every read waits, and nearly every
    wait ends by news long before its limit (the heartbeat). Here a wait is an entry in a
    dict and one timer is armed at the earliest limit; news removes the entry (O(1)).

    Waits are grouped by their length, so that within a group the insertion order is the
    deadline order (the loop's clock is monotonic): the timer looks only at each group's
    oldest entries. Groups are few (the heartbeat, the long polls' timeouts).
    """

    __slots__ = ("_at", "_groups", "_loop", "_timer")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._groups: dict[float, dict[asyncio.Future[bool], float]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._at = math.inf

    def add(
        self,
        loop: asyncio.AbstractEventLoop,
        fut: asyncio.Future[bool],
        wait: float,
        at: float | None = None,
    ) -> None:
        """``fut`` gets ``True`` (timed out) ``wait`` seconds from now (or at loop time
        ``at``, which must not be later), unless done before.

        An ``at`` earlier than the group's newer entries fires when they do: at most
        ``wait`` late (a pushed reader's heartbeat, see :meth:`MemoryStore.read`).
        """
        if loop is not self._loop:  # a store used from another loop (tests): start afresh
            if self._timer is not None:
                self._timer.cancel()
            self._loop, self._groups, self._timer, self._at = loop, {}, None, math.inf
        deadline = loop.time() + wait if at is None else at
        group = self._groups.get(wait)
        if group is None:
            group = self._groups[wait] = {}
        group[fut] = deadline
        if deadline < self._at:
            self._arm(loop, deadline)

    def remove(self, fut: asyncio.Future[bool], wait: float) -> None:
        group = self._groups.get(wait)
        if group is not None and group.pop(fut, None) is not None and not group:
            del self._groups[wait]

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(at, self._fire)
        self._at = at

    def _fire(self) -> None:
        loop = self._loop
        assert loop is not None
        self._timer, self._at = None, math.inf
        due = loop.time() + _SLACK
        nearest = math.inf
        for wait, group in list(self._groups.items()):
            while group:
                fut, deadline = next(iter(group.items()))
                if deadline > due:
                    nearest = min(nearest, deadline)
                    break
                del group[fut]
                if not fut.done():
                    fut.set_result(True)  # timed out
            if not group:
                del self._groups[wait]
        if nearest < math.inf:
            self._arm(loop, nearest)


_new_event = tuple.__new__  # Event(...) without the NamedTuple's Python-level __new__
#: What an open log's event costs besides its line's length: the tuple, the int, the
#: ``bytes`` header and the list slot (tracemalloc: 232 B in all for a 95-byte line).
_EVENT_BYTES = 137


class _Compact:
    """A closed log's events ``first ... first+len-1`` in little memory (see the module).

    ``texts`` joins every event's payload and ``offsets[i]:offsets[i+1]`` is event ``i``'s
    part. With a ``head`` (the bytes every token line starts with), a token's part is its
    ``text`` JSON and ``stamps[i]`` its ``t``; without one, parts are whole lines, and
    ``kinds`` holds their types when not all are tokens (a stream with typed parts).
    """

    __slots__ = ("first", "head", "kinds", "last", "offsets", "stamps", "texts")

    def __init__(self, events: Sequence[Event]) -> None:
        self.first = events[0].seq
        self.last = events[-1]  # the terminal event, kept whole
        tokens = events[:-1]
        head = _token_head(tokens[0]) if tokens else None
        parts: list[bytes] = []
        stamps = array("q")
        if head is not None:
            for e in tokens:
                part = _split_token(head, e)
                if part is None:
                    head = None
                    break
                parts.append(part[0])
                stamps.append(part[1])
        self.kinds: tuple[EventType, ...] | None = None
        if head is None:
            parts = [e.data for e in tokens]
            stamps = array("q")
            if any(e.type != "token" for e in tokens):
                self.kinds = tuple(e.type for e in tokens)
        offsets = array("I", [0])
        n = 0
        for p in parts:
            n += len(p)
            offsets.append(n)
        self.head = head
        self.texts = b"".join(parts)
        self.offsets = offsets
        self.stamps = stamps

    def __len__(self) -> int:
        return len(self.offsets)  # the tokens, and the terminal event

    def nbytes(self) -> int:
        """What the compact form takes in memory (its objects and their buffers)."""
        return (
            sys.getsizeof(self)
            + sys.getsizeof(self.texts)
            + sys.getsizeof(self.offsets)
            + sys.getsizeof(self.stamps)
            + sys.getsizeof(self.last.data)
            + (sys.getsizeof(self.head) if self.head is not None else 0)
            + (sys.getsizeof(self.kinds) if self.kinds is not None else 0)
        )

    def slice(self, i: int, limit: int) -> list[Event]:
        """Events at indices ``i ... i+limit-1`` (the last index is the terminal event)."""
        n_tokens = len(self.offsets) - 1
        end = min(i + limit, n_tokens)
        texts, offsets, first = self.texts, self.offsets, self.first
        out: list[Event] = []
        if self.head is None:
            kinds = self.kinds
            for k in range(i, end):
                part = texts[offsets[k] : offsets[k + 1]]
                kind = "token" if kinds is None else kinds[k]
                out.append(_new_event(Event, (first + k, kind, part)))
        else:
            head, stamps = self.head, self.stamps
            for k in range(i, end):
                seq = first + k
                data = b"%s%d%s%s%s%d}" % (
                    head,
                    seq,
                    _TYPE_TEXT,
                    texts[offsets[k] : offsets[k + 1]],
                    _T,
                    stamps[k],
                )
                out.append(_new_event(Event, (seq, "token", data)))
        if i + limit > n_tokens:
            out.append(self.last)
        return out


_TYPE_TEXT = b',"type":"token","text":'
_T = b',"t":'


def _token_head(event: Event) -> bytes | None:
    """``{"stream":ID,"seq":`` as a token line begins (see ``TokenEncoder``)."""
    marker = b',"seq":'
    at = event.data.find(marker)
    return None if at < 0 else event.data[: at + len(marker)]


def _split_token(head: bytes, event: Event) -> tuple[bytes, int] | None:
    """A token line's ``text`` JSON and ``t``, if the line rebuilds from them exactly."""
    data = event.data
    lead = b"%s%d%s" % (head, event.seq, _TYPE_TEXT)
    if event.type != "token" or not data.startswith(lead):
        return None
    at = data.rfind(_T)
    if at < len(lead):
        return None
    try:
        stamp = int(data[at + len(_T) : -1])
    except ValueError:
        return None
    text = data[len(lead) : at]
    if b"%s%s%s%d}" % (lead, text, _T, stamp) != data:
        return None
    return text, stamp


class _Pusher:
    """A waiting reader that takes new tokens itself (:meth:`MemoryStore.read_pushing`):
    the appender offers each one to ``push``; the reader's task wakes (``fut``) only when it
    declines one, at the terminal event, or at its time limit."""

    __slots__ = ("after", "fut", "last", "push")

    def __init__(
        self, fut: asyncio.Future[bool], after: int, push: Callable[[Event], bool]
    ) -> None:
        self.fut = fut
        self.after = after
        self.push = push
        self.last: float | None = None  # loop time of the last token it took


class _Log:
    __slots__ = ("base", "closed", "compact", "events", "start", "waiters")

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.start = 0  # index in ``events`` of the oldest retained event
        self.base = 0  # seq of ``events[0]``
        self.closed = False
        #: The closed log's events (then ``events`` is empty and ``base`` the first seq).
        self.compact: _Compact | None = None
        #: Readers waiting for news; each future's result says whether its wait timed out.
        self.waiters: list[asyncio.Future[bool] | _Pusher] = []

    @property
    def first_seq(self) -> int:
        return self.base + self.start

    @property
    def next_seq(self) -> int:
        if self.compact is not None:
            return self.base + len(self.compact)
        return self.base + len(self.events)

    def close(self) -> None:
        """Compact the retained events (the last one is terminal)."""
        kept = self.events[self.start :]
        self.compact = _Compact(kept)
        self.base = kept[0].seq
        self.start = 0
        self.events = []
        self.closed = True

    def slice(self, i: int, limit: int) -> list[Event]:
        """Retained events from index ``i`` (``seq - base``), at most ``limit``."""
        if self.compact is not None:
            return self.compact.slice(i, limit)
        return self.events[i : i + limit]

    def forget(self, waiter: asyncio.Future[bool] | _Pusher) -> None:
        """Drop a reader that stopped waiting (timed out or cancelled) before any news."""
        with contextlib.suppress(ValueError):
            self.waiters.remove(waiter)

    def wake(self) -> None:
        if self.waiters:
            waiters, self.waiters = self.waiters, []
            for w in waiters:
                fut = w.fut if isinstance(w, _Pusher) else w
                if not fut.done():
                    fut.set_result(False)

    def offer(self, event: Event) -> None:
        """A new token: the pushers that take it keep waiting; every other reader wakes."""
        waiters, self.waiters = self.waiters, []
        kept = self.waiters
        for w in waiters:
            if isinstance(w, _Pusher):
                fut = w.fut
                if fut.done():
                    continue  # cancelled: its task forgets it
                if w.after + 1 == event.seq:
                    try:
                        taken = w.push(event)
                    except Exception:  # the reader's own write will meet it, in its task
                        taken = False
                    if taken:
                        w.after = event.seq
                        w.last = fut.get_loop().time()
                        kept.append(w)
                        continue
            else:
                fut = w
            if not fut.done():
                fut.set_result(False)


class MemoryStore(LogStore):
    """Logs in this process's memory; each keeps at most ``max_events`` events."""

    def __init__(self, max_events: int) -> None:
        if max_events < 1:
            raise ValueError("max_events must be >= 1")
        self.max_events = max_events
        self._logs: dict[str, _Log] = {}
        self._deadlines = _Deadlines()

    async def open(self, stream_id: str) -> None:
        self._logs[stream_id] = _Log()

    appends_now = True

    async def append(self, stream_id: str, event: Event) -> None:
        self.append_now(stream_id, event)

    def append_now(self, stream_id: str, event: Event) -> None:
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
        if event.type != "token" and event.terminal:
            log.close()
            if log.waiters:
                log.wake()
        elif log.waiters:
            log.offer(event)

    async def settle(self, stream_id: str) -> int:
        log = self._logs.get(stream_id)
        if log is None:
            raise UnknownStream(stream_id)
        return log.next_seq  # an append here never awaits: it cannot be interrupted

    async def read(
        self,
        stream_id: str,
        after: int,
        *,
        limit: int,
        wait: float | None,
        push: Callable[[Event], bool] | None = None,
    ) -> list[Event]:
        log = self._logs.get(stream_id)
        if log is None:
            raise UnknownStream(stream_id)
        at: float | None = None  # a pushed reader's time limit, from its last token
        while True:
            if after + 1 < log.first_seq:
                raise StreamGone(
                    f"events after seq {after} are no longer retained; "
                    f"the oldest retained seq is {log.first_seq}"
                )
            if after + 1 < log.next_seq:
                return log.slice(after + 1 - log.base, limit)
            if log.closed or wait == 0:
                return []
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[bool] = loop.create_future()
            waiter = fut if push is None else _Pusher(fut, after, push)
            log.waiters.append(waiter)
            if wait is not None:
                self._deadlines.add(loop, fut, wait, at)
            try:
                timed_out = await fut
            except asyncio.CancelledError:
                log.forget(waiter)
                raise
            finally:
                if wait is not None:
                    self._deadlines.remove(fut, wait)
            if isinstance(waiter, _Pusher):
                after = waiter.after  # the tokens it took
                last = waiter.last
                if timed_out and wait is not None and last is not None:
                    if last + wait > loop.time() + _SLACK:
                        log.forget(waiter)
                        at = last + wait
                        continue  # not silent for ``wait`` yet: wait the rest
            at = None
            if timed_out:
                log.forget(waiter)
                return []
            # Woken by an append. A writer that appends in bursts (unpaced: many events
            # this round) may append more in the tasks ready this round: let them run first,
            # so that what they append joins this batch (fewer, larger writes under load).
            # A paced writer appended one event and has nothing more this round: read it
            # now (a yield would be one more task step per token per reader for nothing).
            if log.next_seq > after + 2:
                await asyncio.sleep(0)
            if self._logs.get(stream_id) is not log:
                raise StreamGone(f"stream {stream_id!r} has expired")

    #: See :meth:`LogStore.read_pushing`: a paced stream's reader then costs no task step
    #: per token (the appender writes for it), only one per time limit and per token it
    #: declines (a write that could wait). The same coroutine as ``read`` (no extra frame
    #: held by every waiting reader).
    read_pushing = read

    async def drop(self, stream_id: str) -> None:
        log = self._logs.pop(stream_id, None)
        if log is not None:
            log.closed = True
            log.wake()

    async def retained(self, stream_id: str) -> tuple[int, int]:
        log = self._logs.get(stream_id)
        if log is None:
            raise UnknownStream(stream_id)
        if log.compact is not None:
            return len(log.compact), log.compact.nbytes()
        kept = log.events[log.start :]
        return len(kept), sum(_EVENT_BYTES + len(e.data) for e in kept)

    def __len__(self) -> int:
        return len(self._logs)
