"""Logs in Redis Streams, shared by every tokenwire process that names the same Redis.

Keys (one hash tag per stream, so Redis Cluster keeps a stream's keys on one shard)::

    tw:{ID}:log   a Redis Stream; event ``seq`` is entry id ``seq+1``-0 (ids must be above
                  0-0), fields ``d`` (the JSON line) and, on every event but a
                  ``token``, ``e`` (its type); trimmed exactly at ``max_events`` (``MAXLEN``)
    tw:{ID}:m     a hash: ``state`` = ``open`` | ``closed``

**Writing.** Appends go to per-log queues; one *flusher* task sends what every log has
queued in one round trip on its own connection, one :data:`APPEND` script call per log
(its XADDs, one exact trim, the TTLs, the closed state: atomic, so a batch is in the log
whole or not at all), or one plain ``XADD`` for a batch of one event that neither opens
nor ends its log. At a pace, the events of all the streams a process runs share a
round trip; at full speed each call carries many events.

Both keys expire: ``open_ttl_s`` after creation (a generation that never ends, because
its process died, cannot keep them forever) and ``retention_s`` after the terminal
event. ``after=SEQ`` is one ``XRANGE (SEQ+1-0 + COUNT n``; the first id returned says
whether ``after`` fell out of the trimmed window (``410 gone``).

**How readers wait.** A process has a bounded pool of connections for commands and one
more connection for its *tail*: one task that runs ``XREAD BLOCK`` over every stream that
a local reader waits on, from the last entry the process knows. What the tail reads goes
into a small per-stream cache (the last :data:`CACHE` events) and wakes the local readers
of that stream, which take their batch from the cache: 1,000 readers of one stream on a
process cost one Redis read per new batch, not 1,000. The process that runs a stream's
generation puts what it appends into the same cache, so its own readers cost no read at
all. A reader that must wait on a stream the tail is not blocked on yet makes the tail
start over (``CLIENT UNBLOCK``); a stream stays watched for :data:`WATCH_S` after a
local reader last read it. A lost wake-up cannot strand a reader, because every wait on
a log another process writes has a timeout after which the reader looks at the log
again.

**On a Redis Cluster** (``redis+cluster://``) one XREAD may only name keys of one slot,
so the tail is different: each stream has a *news* channel, ``tw:{ID}:n`` (sharded
pub/sub, Redis >= 7.0: it lives on the shard of the stream's slot), on which the writer
publishes the last seq of each batch in the round trip that appends it. The tail holds one
pub/sub connection per cluster master and ``SSUBSCRIBE``s (one slot per command) to the
news of the streams its readers wait on; news, or the confirmation of a new subscription
(then nothing appended since can be missed), makes it read what is new with one
``XRANGE`` per stream, all of them in one pipeline that the cluster client splits by node.

Redis errors become :class:`~server.errors.StoreUnavailable` (503 ``store_unavailable``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisClusterException, RedisError, ResponseError

from server.errors import StoreUnavailable, StreamGone, UnknownStream
from server.events import Event, EventType
from server.settings import cluster_url
from server.store.base import LogStore

log = logging.getLogger("tokenwire.store")


class WaitingCluster(RedisCluster):
    """A Redis Cluster client whose commands wait for a connection, like the one-Redis
    client's ``BlockingConnectionPool``: redis-py's cluster pool has no waiting, and past
    ``max_connections`` per node its commands fail (200 concurrent pipelines on 16
    connections: ``AttributeError`` inside redis-py 8.1). At most ``limit`` commands and
    pipelines run at once; each node's pool is sized above that, so it never runs out
    (a command or a pipeline holds at most one connection per node)."""

    def __init__(self, *args: Any, limit: int, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "max_connections": limit + PUBSUB_HEADROOM})
        self.limit = asyncio.Semaphore(limit)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.limit:
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> Any:
        if transaction or shard_hint:
            return super().pipeline(transaction, shard_hint)
        return _WaitingPipeline(self)  # type: ignore[abstract]


class _WaitingPipeline(ClusterPipeline):
    async def execute(
        self, raise_on_error: bool = True, allow_redirections: bool = True
    ) -> list[Any]:
        assert isinstance(self.cluster_client, WaitingCluster)
        async with self.cluster_client.limit:
            return await super().execute(raise_on_error, allow_redirections)


#: Connections per cluster node beyond ``limit``: the registry's cancel listener (pub/sub).
PUBSUB_HEADROOM = 4

#: A client of one Redis, or of a Redis Cluster (the same commands, routed by key slot).
RedisClient = aioredis.Redis | RedisCluster
#: What Redis trouble raises (the cluster client's own errors are not ``RedisError``s).
REDIS_ERRORS = (RedisError, RedisClusterException)

#: Events a process keeps per stream for its local readers (the tail's last batches).
CACHE = 1024
#: Events a generation may queue before its append waits for them to be written.
WRITE_BATCH = 256
#: A round trip of the flusher that takes longer fails (its logs' appends raise).
WRITE_TIMEOUT_S = 5.0
#: How long the tail blocks in one XREAD (ms); it starts over sooner when keys change.
TAIL_BLOCK_MS = 5_000
#: A reader with no time limit still looks at the log again this often (a lost wake-up).
RECHECK_S = 5.0
#: The tail keeps watching a stream this long after a local reader last read it (s).
WATCH_S = 1.0
#: A stream's local state is dropped this long after its last local reader left.
IDLE_S = 10.0

#: Append a batch of events to a log, atomically: ``KEYS`` the log and its meta hash,
#: ``ARGV`` the trim length, a TTL in ms to set on the log (0: none), 1 if the batch ends
#: the log (the meta hash says ``closed`` and gets the TTL too), the first entry id's
#: number (``seq+1``), then per event its JSON line and its type (empty for a token).
#: One call per log and round trip instead of one XADD per event; the batch's last XADD
#: trims the log exactly (the script is atomic: nobody sees it longer meanwhile). A batch
#: after the first meets a log no longer in Redis (a restart without persistence, an
#: eviction) with an error reply: the log is not made again without its start or its TTL.
APPEND = """
local id = tonumber(ARGV[4])
if id > 1 and redis.call('EXISTS', KEYS[1]) == 0 then
  return redis.error_reply('GONE the log is no longer in Redis')
end
for i = 5, #ARGV, 2 do
  local add = {'XADD', KEYS[1]}
  if i + 2 > #ARGV then  -- the last: trim once, after the whole batch is in
    add[3], add[4], add[5] = 'MAXLEN', '=', ARGV[1]
  end
  add[#add + 1] = string.format('%d-0', id)
  add[#add + 1] = 'd'
  add[#add + 1] = ARGV[i]
  if ARGV[i + 1] ~= '' then
    add[#add + 1] = 'e'
    add[#add + 1] = ARGV[i + 1]
  end
  redis.call(unpack(add))
  id = id + 1
end
if ARGV[2] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  if ARGV[3] == '1' then
    redis.call('HSET', KEYS[2], 'state', 'closed')
    redis.call('PEXPIRE', KEYS[2], ARGV[2])
  end
end
return id
"""
APPEND_SHA = hashlib.sha1(APPEND.encode()).hexdigest()


def _pack(commands: Sequence[Sequence[bytes | str | int]]) -> bytes:
    """Commands in the Redis protocol, for the flusher's own connection (it packs them
    itself: redis-py's packing and per-reply timeouts cost more than the rest of an
    append)."""
    chunks: list[bytes] = []
    for command in commands:
        chunks.append(b"*%d\r\n" % len(command))
        for arg in command:
            b = arg if isinstance(arg, bytes) else str(arg).encode()
            chunks.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(chunks)


#: The ``e`` field's values: every type but ``token`` (the most common, so left out).
_TYPES: dict[bytes, EventType] = {
    t.encode(): t for t in ("reasoning", "tool_call", "done", "error")
}


def _entry_id(seq: int) -> str:
    return f"{seq + 1}-0"


def _seq(entry_id: bytes) -> int:
    return int(entry_id.partition(b"-")[0]) - 1


def _slot(stream_id: str) -> int:
    """The Cluster slot of a stream's keys and news channel (their hash tag)."""
    return key_slot(RedisStore.news_channel(stream_id).encode())


def _event(entry_id: bytes, fields: dict[bytes, bytes]) -> Event:
    kind = fields.get(b"e")
    return Event(_seq(entry_id), "token" if kind is None else _TYPES[kind], fields[b"d"])


class _Local:
    """What this process holds of one stream: recent events, and the readers waiting."""

    __slots__ = ("cache", "closed", "dropped", "keep", "last_seq", "used", "waiters")

    def __init__(self, last_seq: int, keep: int) -> None:
        self.cache: list[Event] = []  # contiguous, ending at ``last_seq``
        self.keep = keep  # never more than the log retains (what it trimmed is gone)
        self.last_seq = last_seq  # the highest seq this process knows exists (-1: none)
        self.closed = False
        self.dropped = False
        self.waiters: list[asyncio.Future[None]] = []
        self.used = time.monotonic()

    def add(self, events: Sequence[Event]) -> None:
        events = [e for e in events if e.seq > self.last_seq]
        if not events:
            return
        if events[0].seq != self.last_seq + 1:
            self.cache = []  # a jump: what was cached is no longer contiguous with it
        self.cache.extend(events)
        if len(self.cache) > self.keep:
            del self.cache[: -min(self.keep, CACHE)]
        self.last_seq = events[-1].seq
        if events[-1].terminal:
            self.closed = True
        self.wake()

    def cached(self, after: int, limit: int) -> list[Event] | None:
        """Events after ``after`` from the cache, or None if it cannot tell."""
        cache = self.cache
        if not cache or not cache[0].seq <= after + 1 <= self.last_seq:
            return None
        i = after + 1 - cache[0].seq
        return cache[i : i + limit]

    def wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)


class _Writer:
    """The events of one log waiting to be written (the store's flusher writes them)."""

    __slots__ = ("busy", "error", "idle", "pending")

    def __init__(self) -> None:
        self.pending: list[Event] = []
        self.busy = False  # a batch of this log is in flight (the next waits for it)
        self.error: StoreUnavailable | None = None
        self.idle = asyncio.Event()
        self.idle.set()


class RedisStore(LogStore):
    """Logs in Redis Streams (see the module); ``max_connections`` bounds the pool;
    ``linger_s``: the flusher waits that long before each round trip."""

    def __init__(
        self,
        url: str,
        max_events: int,
        *,
        retention_s: float,
        open_ttl_s: float,
        max_connections: int = 16,
        linger_s: float = 0.0,
    ) -> None:
        if max_events < 1:
            raise ValueError("max_events must be >= 1")
        self.url = url
        self.max_events = max_events
        #: How long the flusher waits before each round trip (more events share it).
        self.linger_s = linger_s
        self._keep = min(2 * CACHE, max_events)  # events a local cache holds at most
        self.retention_ms = max(1000, int(retention_s * 1000))
        self.open_ttl_ms = max(1000, int(open_ttl_s * 1000))
        cluster = cluster_url(url)
        self.redis: RedisClient
        self._tail_redis: aioredis.Redis | None = None
        if cluster is not None:
            # ``max_connections`` per cluster node (the client finds the other nodes).
            self.redis = WaitingCluster.from_url(
                cluster, limit=max_connections, socket_connect_timeout=2
            )
        else:
            pool = aioredis.BlockingConnectionPool.from_url(
                url, max_connections=max_connections, timeout=5, socket_connect_timeout=2
            )
            self.redis = aioredis.Redis.from_pool(pool)  # closes it at aclose
            # The tail's own connection: a blocking read holds it for the whole wait.
            self._tail_redis = aioredis.Redis.from_url(
                url, single_connection_client=True, socket_connect_timeout=2, socket_timeout=None
            )
        #: On a cluster: each master's pub/sub connection for news, by node name.
        self._news: dict[str, tuple[aioredis.Redis, PubSub, asyncio.Task[None]]] = {}
        self._subscribed: dict[str, str] = {}  # stream -> the node its news come from
        self._newsworthy: set[str] = set()  # streams with news the tail has not read yet
        self._tail_id: int | None = None
        self._tail_task: asyncio.Task[None] | None = None
        self._tail_blocked = False
        self._unblocking: asyncio.Task[None] | None = None
        self._keys_changed = asyncio.Event()
        self._watched: set[str] = set()  # the streams of the tail's current XREAD
        self._local: dict[str, _Local] = {}
        self._next: dict[str, int] = {}  # the next seq of each log this process writes
        self._writers: dict[str, _Writer] = {}  # each log's queue of events to write
        self._ready: dict[str, _Writer] = {}  # logs with events to write, none in flight
        self._flusher: asyncio.Task[None] | None = None
        #: Called with each log's id as its batch goes out: Redis commands (argument
        #: lists) to send in the same round trip (the registry's progress of a stream).
        self.on_write: Callable[[str], Sequence[Sequence[bytes | str | int]]] | None = None
        #: The flusher's own connection (no pool: one round trip at a time, no per-reply
        #: timeout), opened at start and again after it failed.
        self._write_conn: Any = None
        #: Redis commands sent, by kind (for the benchmarks: reads per event).
        self.commands = {"append": 0, "range": 0, "tail": 0}

    @staticmethod
    def log_key(stream_id: str) -> str:
        return f"tw:{{{stream_id}}}:log"

    @staticmethod
    def meta_key(stream_id: str) -> str:
        return f"tw:{{{stream_id}}}:m"

    @staticmethod
    def news_channel(stream_id: str) -> str:
        """The sharded pub/sub channel of a stream's news (on a cluster)."""
        return f"tw:{{{stream_id}}}:n"

    @property
    def cluster(self) -> bool:
        return isinstance(self.redis, RedisCluster)

    # ----- lifecycle -----

    async def start(self) -> None:
        try:
            await self.redis.ping()
            if self._tail_redis is not None:
                self._tail_id = int(await self._tail_redis.client_id())
                self._write_conn = self._new_write_conn()
                await self._write_conn.connect()  # (the first batch does not wait for it)
        except (*REDIS_ERRORS, OSError) as e:
            raise StoreUnavailable(f"Redis at {self.url} does not answer: {e}") from None
        tail = self._tail if self._tail_redis is not None else self._tail_news
        self._tail_task = asyncio.create_task(tail(), name="tokenwire-redis-tail")

    async def aclose(self) -> None:
        if self._tail_task is not None:
            self._tail_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tail_task
        for local in self._local.values():
            local.wake()
        await self._close_news()
        if self._tail_redis is not None:
            await self._tail_redis.aclose()
        if self._write_conn is not None:
            await self._write_conn.disconnect()
        await self.redis.aclose()

    # ----- writing -----

    async def open(self, stream_id: str) -> None:
        meta = self.meta_key(stream_id)
        try:
            async with self.redis.pipeline(transaction=False) as p:
                p.hset(meta, "state", "open")
                p.pexpire(meta, self.open_ttl_ms)
                await p.execute()
        except REDIS_ERRORS as e:
            raise StoreUnavailable(f"Redis: {e}") from None
        self._next[stream_id] = 0
        self._writers[stream_id] = _Writer()
        # The writer feeds this cache from the first event, so readers here (the one
        # that created the stream, most often) read from it even while they lag behind.
        self._local.setdefault(stream_id, _Local(-1, self._keep))

    async def append(self, stream_id: str, event: Event) -> None:
        """Queue the event; the store's flusher sends what every log has queued in one
        pipeline per round trip (one round trip carries the events of all the streams
        this process writes). Returns at once while fewer than :data:`WRITE_BATCH`
        events wait (a terminal event waits until all is written). Local readers see an
        event once Redis has it, like every other process's readers."""
        expected = self._next.get(stream_id)
        if expected is None:
            if await self._exists(stream_id):
                raise RuntimeError(f"log {stream_id} is closed")
            raise UnknownStream(stream_id)
        if event.seq != expected:
            raise RuntimeError(f"log {stream_id}: expected seq {expected}, got {event.seq}")
        writer = self._writers[stream_id]
        if writer.error is not None:
            raise writer.error
        writer.pending.append(event)
        self._next[stream_id] = event.seq + 1
        writer.idle.clear()
        if not writer.busy:
            self._ready[stream_id] = writer
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        if len(writer.pending) >= WRITE_BATCH or event.terminal:
            await asyncio.shield(writer.idle.wait())  # a cancel never cuts a batch in two
            if writer.error is not None:
                raise writer.error
        if event.terminal:
            del self._next[stream_id]
            del self._writers[stream_id]

    async def settle(self, stream_id: str) -> int:
        writer = self._writers.get(stream_id)
        if writer is None:
            raise UnknownStream(stream_id)
        await writer.idle.wait()
        if writer.error is not None:
            raise writer.error
        return self._next[stream_id]

    async def _flush(self) -> None:
        """Write what the logs have queued, all of them in one pipeline per round trip,
        until nothing waits. A log's next batch waits for its previous one (order)."""
        flight: list[tuple[str, _Writer, list[Event]]] = []
        try:
            while self._ready:
                if self.linger_s:
                    await asyncio.sleep(self.linger_s)
                ready, self._ready = self._ready, {}
                flight = []
                for sid, writer in ready.items():
                    if writer.pending and writer.error is None:
                        writer.busy = True
                        flight.append((sid, writer, writer.pending))
                        writer.pending = []
                    else:
                        writer.idle.set()
                if not flight:
                    continue
                try:
                    failed = await self._send(flight)
                except REDIS_ERRORS as e:
                    failed = [e] * len(flight)
                for (sid, writer, batch), error in zip(flight, failed, strict=True):
                    if error is None:
                        local = self._local.get(sid)
                        if local is not None:
                            local.add(batch)
                    else:
                        writer.error = StoreUnavailable(f"Redis: {error}")
                        writer.pending = []
                    self._finish(sid, writer)
                flight = []
        finally:
            self._flusher = None
            for sid, writer, _ in flight:  # cancelled in flight (the store closes)
                if writer.busy:
                    writer.error = writer.error or StoreUnavailable("Redis: the store closed")
                    self._finish(sid, writer)

    def _finish(self, stream_id: str, writer: _Writer) -> None:
        """A log's batch is written (or failed): its next batch, or it is idle."""
        writer.busy = False
        if writer.pending and writer.error is None and self._writers.get(stream_id) is writer:
            self._ready[stream_id] = writer
            return
        writer.pending = []
        writer.idle.set()
        if writer.error is not None:
            local = self._local.get(stream_id)
            if local is not None:
                local.wake()

    async def _send(
        self, flight: Sequence[tuple[str, _Writer, list[Event]]]
    ) -> list[Exception | None]:
        """One round trip of one :data:`APPEND` script call per log (or one ``XADD``
        for a batch of one event in the middle of its log), on a cluster the batch's
        news, and the hook's commands (what failed, per log). After a Redis restart the
        script is loaded again and the logs it missed sent again (a ``NOSCRIPT`` reply
        means the call did nothing). On one Redis the flusher's own connection carries
        it (:meth:`_round_trip`); on a cluster a pipeline, which the client splits by
        node."""
        todo = list(range(len(flight)))
        out: list[Exception | None] = [None] * len(flight)
        cluster = self.cluster
        for attempt in range(2):
            commands: list[Sequence[bytes | str | int]] = []
            at: list[int] = []  # where each log's reply is among the replies
            for i in todo:
                sid, _, batch = flight[i]
                last = batch[-1]
                ttl = (
                    self.retention_ms
                    if last.terminal
                    else self.open_ttl_ms
                    if batch[0].seq == 0
                    else 0
                )
                args: list[bytes | str | int]
                if len(batch) == 1 and not ttl:
                    # One event that neither opens nor ends the log (at a pace, most
                    # batches): a plain XADD is atomic by itself, and the script's own
                    # cost in Redis was twice the XADD's.
                    # (NOMKSTREAM: a log no longer in Redis, lost in a restart without
                    # persistence or evicted, is not made again without its start or TTL)
                    args = ["XADD", self.log_key(sid), "NOMKSTREAM", "MAXLEN", "="]
                    args.append(self.max_events)
                    args += (_entry_id(last.seq), "d", last.data)
                    if last.type != "token":
                        args += ("e", last.type)
                else:
                    # (EVALSHA by name: a cluster pipeline refuses its evalsha method)
                    args = ["EVALSHA", APPEND_SHA, 2, self.log_key(sid), self.meta_key(sid)]
                    args += (self.max_events, ttl, int(last.terminal), batch[0].seq + 1)
                    for event in batch:
                        args += (event.data, b"" if event.type == "token" else event.type)
                at.append(len(commands))
                commands.append(args)
                if cluster:  # (the news of the batch, for the other processes' tails)
                    commands.append(("SPUBLISH", self.news_channel(sid), last.seq))
                if self.on_write is not None and attempt == 0:
                    commands += self.on_write(sid)
            if cluster:
                async with self.redis.pipeline(transaction=False) as p:
                    for command in commands:
                        p.execute_command(*command)
                    replies = await p.execute(raise_on_error=False)
            else:
                replies = await self._round_trip(_pack(commands), len(commands))
            self.commands["append"] += 1
            missing = []
            for i, reply in zip(todo, [replies[k] for k in at], strict=True):
                if isinstance(reply, NoScriptError) and attempt == 0:
                    missing.append(i)
                elif isinstance(reply, RedisError):
                    out[i] = reply
                elif reply is None:  # (the plain XADD's answer for a log not in Redis)
                    out[i] = ResponseError("GONE the log is no longer in Redis")
            if not missing:
                break
            await self.redis.script_load(APPEND)
            todo = missing
        return out

    async def _round_trip(self, packed: bytes, n: int) -> list[Any]:
        """Send ``n`` packed commands on the flusher's own connection and read their
        replies (an error reply is returned, not raised). One timeout for the whole round
        trip, none per reply; a connection that failed or timed out mid-way is closed (what
        it had sent is unknown) and reopened by the next round trip."""
        conn = self._write_conn
        if conn is None:
            conn = self._write_conn = self._new_write_conn()
        replies: list[Any] = []
        try:
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await conn.send_packed_command(packed, check_health=False)
                for _ in range(n):
                    try:
                        replies.append(await conn.read_response())
                    except ResponseError as e:
                        replies.append(e)
        except BaseException as e:
            self._write_conn = None
            await conn.disconnect(nowait=True)
            if isinstance(e, (TimeoutError, OSError)):
                raise RedisConnectionError(f"writing to Redis: {e or 'timed out'}") from None
            raise
        return replies

    def _new_write_conn(self) -> Any:
        assert isinstance(self.redis, aioredis.Redis)  # (one Redis, not a cluster)
        pool = self.redis.connection_pool
        return pool.connection_class(**{**pool.connection_kwargs, "socket_timeout": None})

    async def _exists(self, stream_id: str) -> bool:
        try:
            return bool(await self.redis.exists(self.meta_key(stream_id)))
        except REDIS_ERRORS as e:
            raise StoreUnavailable(f"Redis: {e}") from None

    # ----- reading -----

    async def _range(
        self, stream_id: str, after: int, limit: int
    ) -> tuple[list[Event], bytes | None]:
        """Events after ``after`` (at most ``limit``) and the log's state (None: no log)."""
        start = "-" if after < 0 else "(" + _entry_id(after)
        try:
            async with self.redis.pipeline(transaction=False) as p:
                p.xrange(self.log_key(stream_id), start, "+", count=limit)
                p.hget(self.meta_key(stream_id), "state")
                entries, state = await p.execute()
        except REDIS_ERRORS as e:
            raise StoreUnavailable(f"Redis: {e}") from None
        self.commands["range"] += 1
        return [_event(i, f) for i, f in entries], state

    async def read(
        self, stream_id: str, after: int, *, limit: int, wait: float | None
    ) -> list[Event]:
        loop = asyncio.get_running_loop()
        deadline = None if wait is None else loop.time() + wait
        look = False  # look at the log in Redis even if the local state says "nothing new"
        while True:
            local = self._local.get(stream_id)
            if local is not None:
                if local.dropped:
                    raise StreamGone(f"stream {stream_id!r} has expired")
                local.used = time.monotonic()
                hit = local.cached(after, limit)
                if hit:
                    return hit
                if local.closed and after >= local.last_seq:
                    return []
            if local is None or after < local.last_seq or look or wait == 0:
                # Waiting readers at the head of a stream skip this: the tail reads for them.
                events, state = await self._range(stream_id, after, limit)
                if events:
                    if events[0].seq != after + 1:
                        raise StreamGone(
                            f"events after seq {after} are no longer retained; "
                            f"the oldest retained seq is {events[0].seq}"
                        )
                    return events
                if state is None:
                    if local is not None or stream_id in self._next:
                        raise StreamGone(f"stream {stream_id!r} has expired")
                    raise UnknownStream(stream_id)
                if state == b"closed" or wait == 0:
                    return []
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return []
            outcome = await self._wait(stream_id, after, remaining)
            if outcome == "timeout":
                return []
            look = outcome == "recheck"

    async def _wait(self, stream_id: str, after: int, limit_s: float | None) -> str:
        """Wait for news of ``stream_id`` past ``after``: ``"news"``, ``"timeout"`` when
        ``limit_s`` passed, or ``"recheck"`` after :data:`RECHECK_S` with no limit."""
        local = self._local.get(stream_id)
        if local is None:
            local = self._local[stream_id] = _Local(after, self._keep)
        elif local.last_seq > after:
            return "news"  # arrived meanwhile
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        local.waiters.append(fut)
        fed = self._feeds(stream_id)
        if not fed and not local.closed and stream_id not in self._watched:
            self._watch_changed()
        # (a log this process writes wakes its readers itself: no wake-up to lose)
        limit = limit_s if limit_s is not None else None if fed else RECHECK_S
        try:
            async with asyncio.timeout(limit):
                await fut
        except TimeoutError:
            with contextlib.suppress(ValueError):
                local.waiters.remove(fut)
            return "recheck" if limit_s is None else "timeout"
        except asyncio.CancelledError:
            with contextlib.suppress(ValueError):
                local.waiters.remove(fut)
            raise
        if local.dropped:
            raise StreamGone(f"stream {stream_id!r} has expired")
        # Let what else is ready (the generation, on this process) join this batch.
        await asyncio.sleep(0)
        return "news"

    def _watch_changed(self) -> None:
        """A stream gained its first waiter: the tail must block on it too."""
        self._keys_changed.set()
        if self._tail_blocked and self._unblocking is None:
            self._unblocking = asyncio.get_running_loop().create_task(self._unblock())

    async def _unblock(self) -> None:
        """``CLIENT UNBLOCK`` the tail, so that it starts over with the new keys. Its XREAD
        may not have reached Redis yet (then nothing is blocked): try again until it has,
        or until the tail is no longer blocked."""
        try:
            for _ in range(500):
                if not self._tail_blocked:
                    return
                if await self.redis.client_unblock(self._tail_id):  # type: ignore[arg-type]
                    return
                await asyncio.sleep(0.002)
        except REDIS_ERRORS as e:
            log.warning("Redis: unblocking the tail: %s", e)
        finally:
            self._unblocking = None

    def _watch_list(self) -> dict[str, str]:
        """The streams the tail must watch, each with the last entry id known here."""
        now = time.monotonic()
        return {
            sid: _entry_id(local.last_seq)
            for sid, local in self._local.items()
            # (the logs this process writes feed their readers themselves, unless
            # the writing failed: then another process may end the log; a log read
            # a moment ago stays watched, so that its readers, back for the next
            # batch, do not make the tail start over every time)
            if (local.waiters or now - local.used < WATCH_S)
            and not local.closed
            and self._feeds(sid) is False
        }

    async def _tail(self) -> None:
        """Read every watched stream in one XREAD BLOCK; feed caches and wake readers."""
        assert self._tail_redis is not None
        while True:
            self._keys_changed.clear()
            self._forget_idle()
            watched = self._watch_list()
            self._watched = set(watched)
            if not watched:
                await self._keys_changed.wait()
                continue
            self._tail_blocked = True
            try:
                reply = await self._tail_redis.xread(
                    {self.log_key(sid): last for sid, last in watched.items()},
                    count=CACHE,
                    block=TAIL_BLOCK_MS,
                )
            except (*REDIS_ERRORS, OSError) as e:
                self._tail_blocked = False
                self._watched = set()
                log.warning("Redis tail read failed: %s", e)
                for local in self._local.values():
                    local.wake()  # readers look again (and get store_unavailable)
                await asyncio.sleep(0.5)
                continue
            self._tail_blocked = False
            self.commands["tail"] += 1
            got = cast(list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]], reply or [])
            for key, entries in got:
                sid = key.decode().split("{", 1)[1].rsplit("}", 1)[0]
                fed = self._local.get(sid)
                if fed is not None:
                    fed.add([_event(i, f) for i, f in entries])

    async def _tail_news(self) -> None:
        """On a cluster: keep the news subscriptions to the watched streams, and read
        what is new in the streams with news (one pipeline of XRANGEs per round)."""
        while True:
            self._keys_changed.clear()
            self._forget_idle()
            watched = self._watch_list()
            self._watched = set(watched)
            try:
                await self._subscribe(watched)
                news, self._newsworthy = self._newsworthy, set()
                await self._read_news([sid for sid in news if sid in watched])
            except (*REDIS_ERRORS, OSError) as e:
                log.warning("Redis tail (cluster news) failed: %s", e)
                await self._close_news()
                for local in self._local.values():
                    local.wake()  # readers look again (and get store_unavailable)
                await asyncio.sleep(0.5)
                continue
            if not self._newsworthy:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(TAIL_BLOCK_MS / 1000):
                        await self._keys_changed.wait()

    async def _subscribe(self, watched: Mapping[str, str]) -> None:
        """``SSUBSCRIBE`` to the news of new watched streams, ``SUNSUBSCRIBE`` from the
        rest: on each stream's master, one command per slot (a command's channels must
        share a slot). A subscription's confirmation counts as news (see
        :meth:`_listen_news`), so what was appended before it is read too."""
        assert isinstance(self.redis, RedisCluster)
        plan: dict[tuple[str, bool, int], list[str]] = {}
        for sid in watched.keys() - self._subscribed.keys():
            node = self.redis.get_node_from_key(self.news_channel(sid))
            if node is None:
                raise RedisClusterException(f"no cluster node serves stream {sid}'s slot")
            self._subscribed[sid] = node.name
            plan.setdefault((node.name, True, _slot(sid)), []).append(sid)
        for sid in self._subscribed.keys() - watched.keys():
            name = self._subscribed.pop(sid)
            if name in self._news:
                plan.setdefault((name, False, _slot(sid)), []).append(sid)
        for (name, on, _), sids in plan.items():
            channels = [self.news_channel(sid) for sid in sids]
            if on:
                pubsub = self._news_pubsub(name)
                await pubsub.ssubscribe(*channels)
                entry = self._news.get(name)
                if entry is None or entry[1] is not pubsub:
                    self._lost_news(name)  # (its listener failed meanwhile: again)
                elif entry[2].done():  # (its first subscription: start listening)
                    self._news[name] = (entry[0], pubsub, self._listen_task(name, pubsub))
            elif (entry := self._news.get(name)) is not None:
                await entry[1].sunsubscribe(*channels)

    def _lost_news(self, name: str, stream_id: str | None = None) -> None:
        """The news of the streams subscribed on node ``name`` (or of one of them) no
        longer come: the tail subscribes to them again."""
        for sid in [s for s, n in self._subscribed.items() if n == name]:
            if stream_id is None or sid == stream_id:
                del self._subscribed[sid]
        self._keys_changed.set()

    def _news_pubsub(self, name: str) -> PubSub:
        entry = self._news.get(name)
        if entry is None:
            assert isinstance(self.redis, RedisCluster)
            node = self.redis.get_node(node_name=name)
            assert node is not None
            client = aioredis.Redis(
                host=node.host, port=int(node.port), socket_connect_timeout=2, socket_timeout=None
            )
            idle: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            idle.set_result(None)
            entry = (client, client.pubsub(), cast(asyncio.Task[None], idle))
            self._news[name] = entry
        return entry[1]

    def _listen_task(self, name: str, pubsub: PubSub) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(
            self._listen_news(name, pubsub), name=f"tokenwire-redis-news-{name}"
        )

    async def _listen_news(self, name: str, pubsub: PubSub) -> None:
        """Note the streams with news (or a new subscription) and stir the tail."""
        try:
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is None or message.get("channel") is None:
                    continue
                kind = message["type"]
                channel = bytes(message["channel"]).decode()
                sid = channel.split("{", 1)[1].rsplit("}", 1)[0]
                if kind in ("smessage", "ssubscribe"):
                    self._newsworthy.add(sid)
                    self._keys_changed.set()
                elif kind == "sunsubscribe" and self._subscribed.get(sid) == name:
                    # (not asked for: the slot moved to another master)
                    self._lost_news(name, sid)
        except (*REDIS_ERRORS, OSError) as e:
            # (a lost connection, or a slot that moved: subscribe again, from scratch)
            log.warning("Redis news from %s: %s", name, e)
            entry = self._news.pop(name, None)
            self._lost_news(name)
            if entry is not None:
                with contextlib.suppress(*REDIS_ERRORS, OSError):
                    await entry[1].aclose()  # type: ignore[no-untyped-call]
                    await entry[0].aclose()
            for local in self._local.values():
                local.wake()

    async def _read_news(self, sids: Sequence[str]) -> None:
        """What is new in each stream past what this process knows, in one pipeline."""
        sids = [sid for sid in sids if sid in self._local]
        if not sids:
            return
        async with self.redis.pipeline(transaction=False) as p:
            for sid in sids:
                last = self._local[sid].last_seq
                p.xrange(self.log_key(sid), "(" + _entry_id(last), "+", count=CACHE)
            replies = await p.execute()
        self.commands["tail"] += 1
        for sid, entries in zip(sids, replies, strict=True):
            local = self._local.get(sid)
            if local is None or not entries:
                continue
            local.add([_event(i, f) for i, f in entries])
            if len(entries) == CACHE:
                self._newsworthy.add(sid)  # (more than one reply holds: read on)

    async def _close_news(self) -> None:
        news, self._news = self._news, {}
        self._subscribed.clear()
        for client, pubsub, task in news.values():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, *REDIS_ERRORS, OSError):
                await task
            with contextlib.suppress(*REDIS_ERRORS, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
                await client.aclose()

    def _feeds(self, stream_id: str) -> bool:
        """Whether this process writes the log (and so feeds its local readers)."""
        writer = self._writers.get(stream_id)
        return writer is not None and writer.error is None

    def _forget_idle(self) -> None:
        now = time.monotonic()
        idle = [
            sid
            for sid, local in self._local.items()
            if not local.waiters and now - local.used > IDLE_S
        ]
        for sid in idle:
            del self._local[sid]

    # ----- dropping, sizes -----

    async def drop(self, stream_id: str) -> None:
        self._next.pop(stream_id, None)
        self._ready.pop(stream_id, None)
        writer = self._writers.pop(stream_id, None)
        if writer is not None:
            writer.pending = []
            if not writer.busy:
                writer.idle.set()
        local = self._local.pop(stream_id, None)
        if local is not None:
            local.dropped = True
            local.wake()
        try:
            await self.redis.delete(self.log_key(stream_id), self.meta_key(stream_id))
        except REDIS_ERRORS as e:
            log.warning("dropping %s: %s", stream_id, e)

    async def retained(self, stream_id: str) -> tuple[int, int]:
        key = self.log_key(stream_id)
        try:
            async with self.redis.pipeline(transaction=False) as p:
                p.xlen(key)
                p.memory_usage(key)
                n, nbytes = await p.execute()
        except ResponseError:
            return 0, 0
        except REDIS_ERRORS as e:
            raise StoreUnavailable(f"Redis: {e}") from None
        return int(n), int(nbytes or 0)
