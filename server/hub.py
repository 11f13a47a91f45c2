"""The hub: composes the stream parts (:mod:`server.streams`) behind what transports use.

A stream is admitted (caps), registered, and written by its one generation task; any
number of readers subscribe to its log from any position (fan-out, late join and resume
are one mechanism); a sweeper cancels abandoned streams and forgets expired ones. The
hub parses no request bodies (callers pass a validated :class:`CreateRequest`) and counts
no readers per transport (the transports count their own).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from server.errors import PositionOutOfRange, ServerBusy, StoreUnavailable, StreamGone
from server.events import error_event
from server.metrics import Metrics
from server.settings import Settings
from server.sources.base import TokenSource
from server.store.base import LogStore
from server.streams.admission import Admission
from server.streams.generation import generate
from server.streams.record import STREAM_STATES, CancelReason, StreamRecord, StreamState
from server.streams.registry import EXPIRED, MemoryRegistry, StreamRegistry
from server.streams.retention import Bound, Retention
from server.streams.subscription import READ_LIMIT, Subscription, subscription
from server.streams.sweeper import Sweeper
from server.validation import CreateRequest
from wire import Reader

__all__ = [
    "READ_LIMIT",
    "STREAM_STATES",
    "CancelReason",
    "Hub",
    "StreamRecord",
    "StreamState",
    "Subscription",
]

log = logging.getLogger("tokenwire.hub")


def build_admission(settings: Settings, store: LogStore) -> Admission:
    """With a Redis store the caps count every process's streams; else this one's."""
    from server.store.redis import RedisStore

    if isinstance(store, RedisStore):
        from server.streams.redis_admission import RedisAdmission

        return RedisAdmission(settings, store.redis, settings.node)
    return Admission(settings)


def build_registry(settings: Settings, store: LogStore) -> StreamRegistry:
    """A Redis store shares its streams' records too; the memory store keeps them here."""
    from server.store.redis import RedisStore

    if isinstance(store, RedisStore):
        from server.streams.redis_registry import RedisRegistry

        registry = RedisRegistry(
            store.redis,
            settings.node,
            ttl_s=store.open_ttl_ms / 1000,
            retention_s=settings.retention_s,
            max_events=store.max_events,
        )
        store.on_write = registry.progress  # a running stream's tokens, with its batches
        return registry
    return MemoryRegistry()


#: How often a log whose generation failed on the store is tried again (s): its readers
#: end this soon after the store answers again.
END_RETRY_S = 0.5

#: Why a stream forgotten to bound retained memory is gone (``max_retained_*``).
EVICTED = "was forgotten early: the server's bound on memory for finished streams was reached"


class Hub:
    """Owns the streams of this process: creation, cancellation, subscriptions."""

    def __init__(
        self,
        settings: Settings,
        store: LogStore,
        sources: Mapping[str, TokenSource],
        metrics: Metrics,
        registry: StreamRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.sources = dict(sources)
        self.metrics = metrics
        self.registry = registry if registry is not None else build_registry(settings, store)
        self.admission = build_admission(settings, store)
        self.retention = Retention(settings)
        self.sweeper = Sweeper(settings, self.registry, self.retention, self._cancel, self._forget)
        self.closing = False
        self._drops: set[asyncio.Task[None]] = set()
        metrics.bind_live(lambda: self.admission.live)
        metrics.node.labels(settings.node).set(1)
        kept = self.retention
        metrics.bind_retained(lambda: len(kept), lambda: kept.events, lambda: kept.nbytes)

    @property
    def streams(self) -> Mapping[str, StreamRecord]:
        """The records by id (for tests and tools; the memory registry only)."""
        assert isinstance(self.registry, MemoryRegistry)
        return self.registry.mapping()

    @property
    def live(self) -> int:
        return self.admission.live

    # ----- creation -----

    async def start(self, parsed: CreateRequest, client: str) -> StreamRecord:
        """Check the caps and start the one generation of a validated request."""
        if self.closing:
            raise ServerBusy("the server is shutting down", code="shutting_down", retry_after=5)
        source, params = parsed.source, parsed.request.params
        unpaced = source.is_unpaced(params)
        pace = source.requested_pace(params)
        stream = StreamRecord(
            id=secrets.token_urlsafe(12),
            source=source.name,
            client=client,
            max_tokens=parsed.request.max_tokens,
            unpaced=unpaced,
            pace=pace,
        )
        await self.admission.enter(stream)
        try:
            await self.store.open(stream.id)
            self.registry.add(stream)
            await self.registry.published(stream)
        except BaseException:
            await self.admission.leave(stream)
            raise
        self.metrics.streams_created.labels(stream.source).inc()
        stream.task = asyncio.create_task(self._run(stream, parsed), name=f"generate-{stream.id}")
        log.debug("> created %s source=%s client=%s", stream.id, stream.source, client)
        return stream

    async def _run(self, stream: StreamRecord, parsed: CreateRequest) -> None:
        try:
            final, reason = await generate(
                stream,
                parsed.source,
                parsed.request,
                self.store,
                self.settings.generation_timeout_s,
            )
        except StoreUnavailable as e:
            # The shared store stopped answering: the generation ends here, and its log
            # gets its final event once the store is back (readers were cut; they resume).
            log.warning("stream %s: %s", stream.id, e.message)
            final, reason = error_event(stream.id, stream.tokens, e.code, e.message), "stop"
            task = asyncio.get_running_loop().create_task(self._end_when_back(stream.id))
            self._drops.add(task)
            task.add_done_callback(self._drops.discard)
        self.metrics.tokens_generated.inc(final.seq)
        stream.finish(final, reason)
        with contextlib.suppress(StoreUnavailable):
            await self.admission.leave(stream)
        with contextlib.suppress(StoreUnavailable):
            await self.registry.published(stream)
        self.metrics.streams_finished.labels(stream.state).inc()
        log.debug("> finished %s state=%s tokens=%d", stream.id, stream.state, stream.tokens)
        try:
            events, nbytes = await self.store.retained(stream.id)
        except StoreUnavailable:
            events, nbytes = stream.tokens + 1, 0
        assert stream.finished_at is not None
        kept = self.retention.add(stream.id, stream.client, stream.finished_at, events, nbytes)
        for victim, bound in kept:
            self._forget(victim, bound)

    async def _end_when_back(self, stream_id: str) -> None:
        """Append ``error``/``store_unavailable`` to a log whose generation failed on the
        store, as soon as the store answers again: tried every :data:`END_RETRY_S` for
        as long as the store may keep the log open (``log_open_ttl_s``), not only for
        ``retention_s``: the stream's readers on every process (cut while the store was
        away) end with this event within :data:`END_RETRY_S` of the store answering
        again, however short the retention (issue 16)."""
        message = "the store stopped answering while this stream was generated"
        for _ in range(max(1, int(self.settings.log_open_ttl_s / END_RETRY_S))):
            try:
                await self.registry.end_open_log(stream_id, "store_unavailable", message)
                return
            except StoreUnavailable:
                await asyncio.sleep(END_RETRY_S)

    def _forget(self, stream_id: str, bound: Bound) -> None:
        """Forget a finished stream and drop its log: its reads now answer ``410 gone``."""
        self.registry.forget(stream_id, EXPIRED if bound == "retention_s" else EVICTED)
        self.metrics.streams_forgotten.labels(bound).inc()
        task = asyncio.get_running_loop().create_task(self.store.drop(stream_id))
        self._drops.add(task)
        task.add_done_callback(self._drops.discard)

    # ----- lookup, cancel -----

    def get(self, stream_id: str) -> StreamRecord:
        """A record of this process; 410 if it expired, 404 if it never existed here."""
        return self.registry.get(stream_id)

    async def lookup(self, stream_id: str) -> StreamRecord:
        """The stream's record, whichever process made it; 410 if expired, 404 if never."""
        return await self.registry.lookup(stream_id)

    async def status(self, stream_id: str) -> dict[str, Any]:
        """``GET /api/streams/{id}``: the same answer on every process."""
        return await self.registry.status(stream_id)

    async def note(self, stream: StreamRecord, name: str, value: bytes) -> None:
        """Keep what a dialect knows about a stream with its record, on every process."""
        await self.registry.note(stream, name, value)

    async def cancel(self, stream_id: str, reason: CancelReason = "cancelled") -> StreamRecord:
        """Stop a running stream's source (in whichever process runs it); it ends with
        ``done``/``cancelled``. Idempotent."""
        stream = await self.registry.lookup(stream_id)
        if stream.task is not None:
            self._cancel(stream, reason)
        elif stream.state == "running":
            await self.registry.request_cancel(stream_id)
        return stream

    def _cancel_here(self, stream_id: str) -> None:
        stream = self.registry.find(stream_id)
        if stream is not None:
            self._cancel(stream, "cancelled")

    def _cancel(self, stream: StreamRecord, reason: CancelReason) -> None:
        if stream.state == "running" and stream.cancel_reason is None and stream.task is not None:
            stream.cancel_reason = reason
            stream.task.cancel()
            log.debug("> cancel %s (%s)", stream.id, reason)

    async def wait_finished(self, stream_id: str) -> None:
        stream = self.registry.get(stream_id)
        if stream.task is not None:
            await asyncio.shield(stream.task)

    # ----- readers -----

    @contextlib.asynccontextmanager
    async def subscribe(
        self, stream_id: str, after: int, reader: Reader
    ) -> AsyncIterator[Subscription]:
        """A reader of the stream from ``after``, shown as ``reader`` in its status."""
        stream = await self.registry.lookup(stream_id)
        if after >= 0:
            await self._check_appended(stream_id, after)
        counted = False
        try:
            async with subscription(self.store, stream, after, reader) as sub:
                await self.registry.reader(stream, reader, +1)
                counted = True
                yield sub
        finally:
            if counted:  # (after the local count went down)
                await self.registry.reader(stream, reader, -1)

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

    async def open(self) -> None:
        """Connect the store and the registry (before requests are served)."""
        await self.store.start()
        await self.registry.start(self._cancel_here)
        await self.admission.start()

    async def aclose(self) -> None:
        await self.admission.aclose()
        await self.registry.aclose()
        await self.store.aclose()

    async def sweep(self) -> None:
        await self.sweeper.sweep()

    async def run_sweeper(self) -> None:
        await self.sweeper.run()

    async def shutdown(self) -> None:
        """End every live stream with a final ``error``/``shutdown`` event."""
        self.closing = True
        tasks = []
        for stream in self.registry:
            if stream.state == "running" and stream.task is not None:
                self._cancel(stream, "shutdown")
                tasks.append(stream.task)
        if tasks:
            await asyncio.wait(tasks, timeout=self.settings.shutdown_timeout_s)
        for source in self.sources.values():
            try:
                await source.aclose()
            except Exception:
                log.exception("closing source %s", source.name)
