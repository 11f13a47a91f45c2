"""The hub: one generation task per stream writing its log, any number of readers.

Subscribers read the log from any position (fan-out, late join and resume are one
mechanism); a sweeper cancels abandoned streams and forgets expired ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
import typing
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from server.errors import (
    PositionOutOfRange,
    ServerBusy,
    SourceError,
    StreamGone,
    TooManyStreams,
    UnknownStream,
)
from server.events import DoneReason, Event, TokenEncoder, done_event, error_event
from server.metrics import Metrics
from server.settings import Settings
from server.sources.base import Finish, GenerationRequest, TokenSource
from server.store.base import LogStore
from server.validation import CreateRequest, parse_create_body
from wire import READERS, Reader

log = logging.getLogger("tokenwire.hub")

StreamState = Literal["running", "done", "error"]
STREAM_STATES: Final[tuple[StreamState, ...]] = typing.get_args(StreamState)
CancelReason = Literal["cancelled", "abandoned", "shutdown"]

#: How many expired stream ids are remembered to answer 410 instead of 404.
TOMBSTONES = 100_000
#: Largest batch one read hands to a transport (so at most this many events in one poll).
READ_LIMIT = 512


@dataclass(slots=True, eq=False)
class StreamRecord:
    """What the hub knows about one stream (the events themselves live in the store)."""

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
    subscribers: Counter[Reader] = field(default_factory=Counter)
    last_present: float = field(default_factory=time.monotonic)
    cancel_reason: CancelReason | None = None
    task: asyncio.Task[None] | None = None
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


class Subscription:
    """One reader's position in one stream's log.

    ``await sub.next_batch(wait)`` returns the next events (``[]`` when ``wait`` seconds
    passes with none); ``sub.finished`` turns true once the terminal event was returned.
    """

    __slots__ = ("after", "finished", "stream", "_store")

    def __init__(self, store: LogStore, stream: StreamRecord, after: int) -> None:
        self._store = store
        self.stream = stream
        self.after = after
        self.finished = stream.delivered(after)

    async def next_batch(self, wait: float | None) -> list[Event]:
        if self.finished:
            return []
        events = await self._store.read(self.stream.id, self.after, limit=READ_LIMIT, wait=wait)
        if events:
            self.after = events[-1].seq
            self.finished = events[-1].terminal
        elif self.stream.delivered(self.after):
            self.finished = True
        return events

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


class Hub:
    """Owns the streams of this process: creation, caps, cancellation, subscriptions."""

    def __init__(
        self,
        settings: Settings,
        store: LogStore,
        sources: Mapping[str, TokenSource],
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.store = store
        self.sources = dict(sources)
        self.metrics = metrics
        self.streams: dict[str, StreamRecord] = {}
        self._tombstones: OrderedDict[str, None] = OrderedDict()
        self._per_client: Counter[str] = Counter()
        self._live = 0
        self._unpaced = 0
        self._pace = 0.0  # the sum of the live streams' requested paces
        self._subs_by_transport: Counter[Reader] = Counter()
        self.closing = False
        metrics.bind_live(lambda: self._live, lambda t: self._subs_by_transport[t])

    # ----- creation -----

    async def create(self, body: Any, client: str) -> StreamRecord:
        """Validate a create body, check the caps and start the one generation."""
        self._check_open()
        return await self.start(parse_create_body(body, self.settings, self.sources), client)

    async def start(self, parsed: CreateRequest, client: str) -> StreamRecord:
        """Check the caps and start the one generation of an already validated request."""
        self._check_open()
        s = self.settings
        if self._live >= s.max_live_streams:
            raise ServerBusy(
                f"{self._live} streams are live; the server limit is {s.max_live_streams}",
                code="too_many_streams",
                retry_after=5,
            )
        if self._per_client[client] >= s.max_streams_per_client:
            raise TooManyStreams(
                f"this client has {self._per_client[client]} live streams; "
                f"the limit per client is {s.max_streams_per_client}",
                retry_after=5,
            )
        unpaced = parsed.source.is_unpaced(parsed.request.params)
        if unpaced and self._unpaced >= s.max_unpaced_streams:
            raise ServerBusy(
                f"{self._unpaced} unpaced streams (tokens_per_s=0) are live; "
                f"the limit is {s.max_unpaced_streams}",
                code="too_many_unpaced_streams",
                retry_after=5,
            )
        pace = parsed.source.requested_pace(parsed.request.params)
        if s.max_total_tokens_per_s and self._pace + pace > s.max_total_tokens_per_s:
            raise ServerBusy(
                f"the live streams ask for {self._pace:.10g} tokens/s; {pace:.10g} more would "
                f"pass the server's limit of {s.max_total_tokens_per_s:.10g}",
                code="pace_budget_exceeded",
                retry_after=5,
            )
        stream_id = secrets.token_urlsafe(12)
        stream = StreamRecord(
            id=stream_id,
            source=parsed.source.name,
            client=client,
            max_tokens=parsed.request.max_tokens,
            unpaced=unpaced,
            pace=pace,
        )
        await self.store.open(stream_id)
        self.streams[stream_id] = stream
        self._live += 1
        self._per_client[client] += 1
        self._unpaced += unpaced
        self._pace += pace
        self.metrics.streams_created.labels(stream.source).inc()
        stream.task = asyncio.create_task(
            self._generate(stream, parsed.source, parsed.request), name=f"generate-{stream_id}"
        )
        log.debug("> created %s source=%s client=%s", stream_id, stream.source, client)
        return stream

    def _check_open(self) -> None:
        if self.closing:
            raise ServerBusy("the server is shutting down", code="shutting_down", retry_after=5)

    async def _generate(
        self, stream: StreamRecord, source: TokenSource, req: GenerationRequest
    ) -> None:
        digest = hashlib.sha256()
        token_event = TokenEncoder(stream.id)
        append = self.store.append
        seq = 0
        final: Event
        reason: DoneReason = "stop"
        try:
            async with asyncio.timeout(self.settings.generation_timeout_s or None):
                agen = source.stream(req)
                try:
                    async for item in agen:
                        if isinstance(item, Finish):
                            reason = item.reason
                            break
                        if not item:
                            continue
                        digest.update(item.encode())
                        await append(stream.id, token_event(seq, item))
                        seq += 1
                        stream.tokens = seq
                        if seq >= req.max_tokens:  # even if a source overruns
                            reason = "length"
                            break
                finally:
                    await agen.aclose()  # type: ignore[attr-defined]
            final = done_event(stream.id, seq, reason, seq, digest.hexdigest())
        except asyncio.CancelledError:
            if stream.cancel_reason is None:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            if stream.cancel_reason == "shutdown":
                final = error_event(stream.id, seq, "shutdown", "the server is shutting down")
            else:
                reason = "cancelled"
                final = done_event(stream.id, seq, reason, seq, digest.hexdigest())
        except TimeoutError:
            final = error_event(
                stream.id,
                seq,
                "generation_timeout",
                f"generation took longer than {self.settings.generation_timeout_s:g} s",
            )
        except SourceError as e:
            final = error_event(stream.id, seq, e.code, e.message)
        except Exception as e:
            log.exception("source %s failed on stream %s", source.name, stream.id)
            final = error_event(stream.id, seq, "source_error", f"{type(e).__name__}: {e}")
        self.metrics.tokens_generated.inc(seq)
        await self.store.append(stream.id, final)
        self._finish(stream, final, reason)

    def _finish(self, stream: StreamRecord, final: Event, reason: DoneReason) -> None:
        stream.final_seq = final.seq
        stream.state = "done" if final.type == "done" else "error"
        stream.finished_at = time.time()
        if final.type == "done":
            stream.finish_reason = reason
        self._live -= 1
        self._per_client[stream.client] -= 1
        if not self._per_client[stream.client]:
            del self._per_client[stream.client]
        self._unpaced -= stream.unpaced
        self._pace = self._pace - stream.pace if self._live else 0.0  # (no float drift at rest)
        self.metrics.streams_finished.labels(stream.state).inc()
        log.debug("> finished %s state=%s tokens=%d", stream.id, stream.state, stream.tokens)

    # ----- lookup, cancel -----

    def get(self, stream_id: str) -> StreamRecord:
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id in self._tombstones:
                raise StreamGone(f"stream {stream_id!r} has expired")
            raise UnknownStream(stream_id)
        return stream

    def cancel(self, stream_id: str, reason: CancelReason = "cancelled") -> StreamRecord:
        """Stop a running stream's source; it ends with ``done``/``cancelled``. Idempotent."""
        stream = self.get(stream_id)
        if stream.state == "running" and stream.cancel_reason is None and stream.task is not None:
            stream.cancel_reason = reason
            stream.task.cancel()
            log.debug("> cancel %s (%s)", stream_id, reason)
        return stream

    async def wait_finished(self, stream_id: str) -> None:
        stream = self.get(stream_id)
        if stream.task is not None:
            await asyncio.shield(stream.task)

    # ----- subscribers -----

    @contextlib.asynccontextmanager
    async def subscribe(
        self, stream_id: str, after: int, transport: Reader
    ) -> AsyncIterator[Subscription]:
        """Count a reader on ``transport`` while it reads the stream from ``after``."""
        stream = self.get(stream_id)
        # Fail fast (410) if the asked position is already evicted.
        await self.store.read(stream_id, after, limit=1, wait=0)
        if after >= 0:
            await self._check_appended(stream_id, after)
        stream.subscribers[transport] += 1
        self._subs_by_transport[transport] += 1
        try:
            yield Subscription(self.store, stream, after)
        finally:
            stream.subscribers[transport] -= 1
            self._subs_by_transport[transport] -= 1
            stream.last_present = time.monotonic()
            if not stream.total_subscribers:
                stream.framed.clear()  # nobody shares it: a retained stream keeps no frames

    async def _check_appended(self, stream_id: str, after: int) -> None:
        """416 unless the log has appended ``after`` (a reader can only have seen a seq
        that exists): a position past the end would otherwise wait for nothing."""
        try:
            appended = await self.store.read(stream_id, after - 1, limit=1, wait=0)
        except StreamGone:
            return  # older than the retained window: it was appended
        if not appended:
            raise PositionOutOfRange(
                f"position {after} is past the end of stream {stream_id!r}: no event with "
                "that seq has been appended (resume from the last seq you received)"
            )

    def touch(self, stream: StreamRecord) -> None:
        """A long-poll client is present between its polls."""
        stream.last_present = time.monotonic()

    # ----- background upkeep -----

    def sweep(self) -> None:
        """Cancel abandoned streams; forget finished ones past retention."""
        now_mono = time.monotonic()
        now = time.time()
        grace = self.settings.grace_s
        expired: list[str] = []
        for stream in self.streams.values():
            if stream.state == "running":
                if (
                    stream.cancel_reason is None
                    and stream.total_subscribers == 0
                    and now_mono - stream.last_present >= grace
                ):
                    self.cancel(stream.id, "abandoned")
            elif (
                stream.finished_at is not None
                and now - stream.finished_at >= self.settings.retention_s
            ):
                expired.append(stream.id)
        for stream_id in expired:
            del self.streams[stream_id]
            self._tombstones[stream_id] = None
            if len(self._tombstones) > TOMBSTONES:
                self._tombstones.popitem(last=False)
            asyncio.get_running_loop().create_task(self.store.drop(stream_id))

    async def run_sweeper(self) -> None:
        period = max(0.05, min(1.0, self.settings.grace_s / 4, self.settings.retention_s / 4))
        while True:
            await asyncio.sleep(period)
            self.sweep()

    async def shutdown(self) -> None:
        """End every live stream with a final ``error``/``shutdown`` event."""
        self.closing = True
        tasks = []
        for stream in list(self.streams.values()):
            if stream.state == "running" and stream.task is not None:
                self.cancel(stream.id, "shutdown")
                tasks.append(stream.task)
        if tasks:
            await asyncio.wait(tasks, timeout=self.settings.shutdown_timeout_s)
        for source in self.sources.values():
            try:
                await source.aclose()
            except Exception:
                log.exception("closing source %s", source.name)

    @property
    def live(self) -> int:
        return self._live
