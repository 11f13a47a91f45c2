"""The registry shared by processes, in Redis: any process answers for any stream.

Per stream (hash tag ``{ID}``, like the log's keys)::

    tw:{ID}:s     a hash: the record's fields (source, client, max_tokens, created_at,
                  state, tokens, final_seq, finish_reason, finished_at, node, and ``lease``:
                  the owner's instance), what dialects noted (``x:NAME``), the open readers
                  of every process by transport (``r:sse``, ...), by process
                  (``n:NODE|INSTANCE``) and both (``t:sse:NODE|INSTANCE``: a dead
                  process's are taken out), and ``seen``: when a reader anywhere last left or
                  polled (Unix time); expires with the log (``retention_s`` after the end)
    tw:{ID}:gone  a tombstone: why the stream is gone (410); written with the record, it
                  outlives it by a day (so a stream whose owner died answers 410 too)

The process that made a stream keeps its record (and its generation task); the others
build a view of it from the hash when asked. A cancel from another process is a message
on ``tw:cancel`` that the owner acts on. Every script names every key it touches in KEYS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

import orjson
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from server.errors import StoreUnavailable, StreamGone, UnknownStream
from server.store.redis import REDIS_ERRORS, RedisClient
from server.streams.record import StreamRecord
from server.streams.registry import EXPIRED, MemoryRegistry
from wire import READERS

log = logging.getLogger("tokenwire.registry")

CANCEL_CHANNEL = "tw:cancel"
#: How long a tombstone outlives its stream's record.
TOMBSTONE_S = 86_400
#: A process renews its lease every LEASE_S / 3; a stream whose owner's lease lapsed ends
#: with ``producer_lost``.
LEASE_S = 3.0
#: A running stream's ``tokens`` in its hash is at most this far behind its generation
#: (s): every PROGRESS_S each process writes the counts of its running streams that
#: moved, in one round trip (at a pace, one write per stream per batch cost Redis as
#: much as the append itself).
PROGRESS_S = 0.25
#: The highest entry id: once a log has its lost-producer event, no id is free above it.
LAST_ID = "18446744073709551615-18446744073709551615"

#: Append an ``error``/``producer_lost`` event to a log that is still open, and close it,
#: atomically (so exactly once, whichever processes notice the loss, and never after the
#: owner's own final event, even one whose ``closed`` has not reached the meta hash yet).
#: Then no entry id is left above it, so an owner that was only slow cannot append after
#: it. KEYS: log, meta, status. ARGV: the event's JSON before and after its seq, the
#: retention (ms), now (s), max_log_events. Returns the seq, or -1 if already closed.
PRODUCER_LOST = (
    """
if redis.call('HGET', KEYS[2], 'state') ~= 'open' then return -1 end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local seq = 0
if #last > 0 then
  local fields = last[1][2]
  for i = 1, #fields, 2 do
    if fields[i] == 'e' and (fields[i + 1] == 'done' or fields[i + 1] == 'error') then
      return -1
    end
  end
  seq = tonumber(string.match(last[1][1], '^(%d+)'))
end
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[5], seq + 1 .. '-0',
           'd', ARGV[1] .. seq .. ARGV[2], 'e', 'error')
redis.call('XSETID', KEYS[1], '"""
    + LAST_ID
    + """')
redis.call('HSET', KEYS[2], 'state', 'closed')
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HSET', KEYS[3], 'state', 'error', 'tokens', seq, 'final_seq', seq,
             'finished_at', ARGV[4])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return seq
"""
)

#: Count a reader in or out, only while the record exists (a reader leaving after the
#: record expired must not leave a hash without expiry behind): by transport (``r:T``),
#: by process (``n:PROCESS``) and both (``t:T:PROCESS``, to take a dead process's out).
#: KEYS: status. ARGV: the transport, the process, +1/-1, now (s).
READER = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'r:' .. ARGV[1], ARGV[3])
for _, f in ipairs({'n:' .. ARGV[2], 't:' .. ARGV[1] .. ':' .. ARGV[2]}) do
  if redis.call('HINCRBY', KEYS[1], f, ARGV[3]) <= 0 then redis.call('HDEL', KEYS[1], f) end
end
redis.call('HSET', KEYS[1], 'seen', ARGV[4])
return 1
"""

#: Record a stream's end, unless another process ended its log first (``producer_lost``
#: while this owner was paused past its lease): that end stands, and is returned for the
#: owner to adopt. KEYS: status, tombstone. ARGV: the record's expiry (ms), the
#: tombstone's, its text, then the record's fields and values.
FINISHED = """
local state = redis.call('HGET', KEYS[1], 'state')
if state and state ~= 'running' then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  return redis.call('HMGET', KEYS[1], 'state', 'final_seq', 'finished_at')
end
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
return false
"""

#: Write a running stream's ``tokens`` only while its record says ``running`` (never over
#: the end another write recorded). KEYS: status. ARGV: the count.
PROGRESS = """
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
return redis.call('HSET', KEYS[1], 'tokens', ARGV[1])
"""

#: Take the readers of a dead process out of a stream's counts (once, whichever
#: processes notice). KEYS: status. ARGV: the process, then every transport's name.
DROP_READERS = """
for i = 2, #ARGV do
  local f = 't:' .. ARGV[i] .. ':' .. ARGV[1]
  local n = tonumber(redis.call('HGET', KEYS[1], f))
  if n then
    redis.call('HINCRBY', KEYS[1], 'r:' .. ARGV[i], -n)
    redis.call('HDEL', KEYS[1], f)
  end
end
return redis.call('HDEL', KEYS[1], 'n:' .. ARGV[1])
"""


def lease_key(node: str) -> str:
    return f"tw:node:{node}"


def status_key(stream_id: str) -> str:
    return f"tw:{{{stream_id}}}:s"


def gone_key(stream_id: str) -> str:
    return f"tw:{{{stream_id}}}:gone"


def _text(raw: dict[bytes, bytes], name: str) -> str | None:
    value = raw.get(name.encode())
    return None if value is None or value == b"" else value.decode()


class RedisRegistry(MemoryRegistry):
    """Records of this process's streams in memory, every stream's state in Redis.

    ``ttl_s`` is how long a running stream's keys may live (the log's open expiry);
    ``max_events`` the log's trim (``max_log_events``).
    """

    def __init__(
        self,
        redis: RedisClient,
        node: str,
        ttl_s: float,
        retention_s: float,
        max_events: int = 10_000,
    ) -> None:
        super().__init__()
        self.redis = redis
        self.node = node
        #: This process among the processes that ever used the name ``node`` (a restarted
        #: process with the same ``--node-id`` does not renew its predecessor's lease).
        self.instance = secrets.token_hex(6)
        self.ttl_ms = max(1000, int(ttl_s * 1000))
        self.retention_ms = max(1000, int(retention_s * 1000))
        self.max_events = max_events
        self._lost = redis.register_script(PRODUCER_LOST)
        self._reader = redis.register_script(READER)
        self._drop_readers = redis.register_script(DROP_READERS)
        self._finished = redis.register_script(FINISHED)
        self._progress = redis.register_script(PROGRESS)
        self._lease: asyncio.Task[None] | None = None
        self.views: dict[str, StreamRecord] = {}  # other processes' streams read here
        self._listener: asyncio.Task[None] | None = None
        #: When each running stream's keys last had their expiry pushed back (monotonic).
        self._renewed: dict[str, float] = {}
        #: The ``tokens`` last written for each running stream of this process.
        self._written: dict[str, int] = {}
        self._progressing: asyncio.Task[None] | None = None

    @property
    def _me(self) -> str:
        return f"{self.node}|{self.instance}"

    async def start(self, on_cancel: Callable[[str], None]) -> None:
        await self._renew()
        self._lease = asyncio.create_task(self._keep_lease(), name="tokenwire-lease")
        self._listener = asyncio.create_task(self._listen(on_cancel), name="tokenwire-cancels")
        self._progressing = asyncio.create_task(self._keep_progress(), name="tokenwire-progress")

    async def _renew(self) -> None:
        try:
            await self.redis.set(lease_key(self.node), self.instance, px=int(LEASE_S * 1000))
        except REDIS_ERRORS as e:
            raise StoreUnavailable(f"Redis: {e}") from None

    async def _keep_lease(self) -> None:
        while True:
            await asyncio.sleep(LEASE_S / 3)
            try:
                await self._renew()
            except StoreUnavailable as e:
                log.warning("renewing the lease of %s: %s", self.node, e.message)

    async def _keep_progress(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_S)
            try:
                await self.write_progress()
            except REDIS_ERRORS as e:
                log.warning("Redis: writing the streams' progress: %s", e)

    async def write_progress(self) -> None:
        """Write the ``tokens`` of this process's running streams that moved since they
        were last written, in one round trip (one script call per stream: each call's
        key in its stream's slot; a stream's end writes its final count itself)."""
        moved = {
            sid: stream.tokens
            for sid, stream in self.records.items()
            if stream.state == "running" and self._written.get(sid) != stream.tokens
        }
        if not moved:
            return
        for attempt in range(2):
            async with self.redis.pipeline(transaction=False) as p:
                for sid, tokens in moved.items():
                    # (EVALSHA by name: a cluster pipeline refuses its evalsha method)
                    p.execute_command("EVALSHA", self._progress.sha, 1, status_key(sid), tokens)
                replies = await p.execute(raise_on_error=False)
            if attempt or not any(isinstance(r, NoScriptError) for r in replies):
                break
            await self.redis.script_load(PROGRESS)  # (Redis restarted: load it again)
        for sid, tokens in moved.items():
            if sid in self.records:
                self._written[sid] = tokens

    async def check_owners(self) -> None:
        """End the running streams read here whose owner's lease lapsed (``producer_lost``)."""
        running = [v for v in self.views.values() if v.state == "running"]
        for view in running:
            await self._refresh(view.id)

    async def _alive(self, node: str, instance: str | None) -> bool:
        """Whether the process ``node`` (that very instance, if known) holds its lease."""
        holder = cast(bytes | None, await self.redis.get(lease_key(node)))
        return holder is not None and (instance is None or holder == instance.encode())

    async def _owner_lost(self, stream_id: str, node: str, instance: str | None) -> bool:
        """If ``node`` lost its lease, end the stream with ``producer_lost``; True if so."""
        if await self._alive(node, instance):
            return False
        message = f"the process that generated this stream ({node}) was lost"
        seq = await self._end(stream_id, "producer_lost", message)
        if seq >= 0:
            log.warning("stream %s: its producer %s was lost (seq %s)", stream_id, node, seq)
        return True

    async def end_open_log(self, stream_id: str, code: str, message: str) -> int | None:
        try:
            return await self._end(stream_id, code, message)
        except REDIS_ERRORS as e:
            raise StoreUnavailable(f"Redis: {e}") from None

    async def _end(self, stream_id: str, code: str, message: str) -> int:
        """Append ``error``/``code`` at the next seq if the log is still open (the Lua
        script); its seq, or -1 if the log was closed already."""
        from server.store.redis import RedisStore

        head = b'{"stream":%s,"seq":' % orjson.dumps(stream_id)
        tail = b',"type":"error","code":%s,"message":%s,"t":%d}' % (
            orjson.dumps(code),
            orjson.dumps(message),
            time.time_ns(),
        )
        keys = [RedisStore.log_key(stream_id), RedisStore.meta_key(stream_id)]
        seq = await self._lost(
            keys=[*keys, status_key(stream_id)],
            args=[head, tail, self.retention_ms, repr(time.time()), self.max_events],
        )
        if int(seq) >= 0 and isinstance(self.redis, RedisCluster):
            # (on a cluster the other processes' tails wait for a stream's news)
            await self.redis.spublish(RedisStore.news_channel(stream_id), int(seq))
        own = self.records.get(stream_id)
        if own is not None and int(seq) >= 0:  # (its generation had given up on the store)
            own.state, own.final_seq, own.tokens = "error", int(seq), int(seq)
        return int(seq)

    async def _listen(self, on_cancel: Callable[[str], None]) -> None:
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(CANCEL_CHANNEL)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            sid = message["data"].decode()
                            if sid in self.records:
                                on_cancel(sid)
            except REDIS_ERRORS as e:
                log.warning("Redis: cancel messages: %s", e)
                await asyncio.sleep(0.5)

    async def aclose(self) -> None:
        for task in (self._listener, self._lease, self._progressing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        with contextlib.suppress(*REDIS_ERRORS):
            if await self._alive(self.node, self.instance):
                await self.redis.delete(lease_key(self.node))

    def _fields(self, stream: StreamRecord) -> Mapping[str | bytes, str | bytes | int | float]:
        return {
            "source": stream.source,
            "client": stream.client,
            "max_tokens": stream.max_tokens,
            "created_at": repr(stream.created_at),
            "state": stream.state,
            "tokens": stream.tokens,
            "final_seq": "" if stream.final_seq is None else stream.final_seq,
            "finish_reason": stream.finish_reason or "",
            "finished_at": "" if stream.finished_at is None else repr(stream.finished_at),
            "node": self.node,
            "lease": self.instance,
            **{f"x:{name}": value for name, value in stream.notes.items()},
        }

    async def published(self, stream: StreamRecord) -> None:
        # A finished stream's record expires with its log (retention_s); the tombstone
        # outlives both, so that every process answers 410 afterwards, owner dead or not.
        if stream.state != "running":
            await self._publish_end(stream)
            return
        ttl = self.ttl_ms
        self._renewed[stream.id] = time.monotonic()
        try:
            async with self.redis.pipeline(transaction=False) as p:
                p.hset(status_key(stream.id), mapping=self._fields(stream))  # type: ignore[arg-type]
                p.pexpire(status_key(stream.id), ttl)
                p.set(gone_key(stream.id), EXPIRED, px=ttl + TOMBSTONE_S * 1000)
                await p.execute()
        except REDIS_ERRORS as e:
            raise StoreUnavailable(f"Redis: {e}") from None

    async def _publish_end(self, stream: StreamRecord) -> None:
        self._renewed.pop(stream.id, None)
        self._written.pop(stream.id, None)
        fields = [x for kv in self._fields(stream).items() for x in kv]
        try:
            ended = await self._finished(
                keys=[status_key(stream.id), gone_key(stream.id)],
                args=[self.retention_ms, self.retention_ms + TOMBSTONE_S * 1000, EXPIRED, *fields],
            )
        except REDIS_ERRORS as e:
            raise StoreUnavailable(f"Redis: {e}") from None
        if ended:  # another process ended the log first: adopt its end
            state, final_seq, finished_at = (v.decode() if v else None for v in ended)
            stream.state = "error" if state == "error" else "done"
            if final_seq is not None:
                stream.final_seq = stream.tokens = int(final_seq)
            if finished_at is not None:
                stream.finished_at = float(finished_at)

    def progress(self, stream_id: str) -> list[tuple[str | int, ...]]:
        """The store's hook, as a batch of a stream goes out: a generation may run longer
        than its keys' first expiry (no generation_timeout_s), so once half of it has
        passed, commands that push it back, in the same round trip. (Its ``tokens`` are
        written every :data:`PROGRESS_S` by :meth:`write_progress`, not per batch.)"""
        stream = self.records.get(stream_id)
        if stream is None or stream.state != "running":
            return []
        now = time.monotonic()
        if now - self._renewed.setdefault(stream_id, now) < self.ttl_ms / 2000:
            return []
        from server.store.redis import RedisStore

        self._renewed[stream_id] = now
        ttl = self.ttl_ms
        return [
            ("PEXPIRE", RedisStore.log_key(stream_id), ttl),
            ("PEXPIRE", RedisStore.meta_key(stream_id), ttl),
            ("PEXPIRE", status_key(stream_id), ttl),
            ("PEXPIRE", gone_key(stream_id), ttl + TOMBSTONE_S * 1000),
        ]

    async def note(self, stream: StreamRecord, name: str, value: bytes) -> None:
        await super().note(stream, name, value)
        try:
            await self.redis.hset(status_key(stream.id), f"x:{name}", value)
        except REDIS_ERRORS as e:
            raise StoreUnavailable(f"Redis: {e}") from None

    async def _load(self, stream_id: str) -> dict[bytes, bytes]:
        try:
            raw = cast(dict[bytes, bytes], await self.redis.hgetall(status_key(stream_id)))
            if raw:
                return raw
            why = await self.redis.get(gone_key(stream_id))
        except REDIS_ERRORS as e:
            raise StoreUnavailable(f"Redis: {e}") from None
        self.views.pop(stream_id, None)
        if why is not None:
            raise StreamGone(f"stream {stream_id!r} {cast(bytes, why).decode()}")
        if self.expired(stream_id) is not None:
            raise StreamGone(f"stream {stream_id!r} {self.expired(stream_id)}")
        raise UnknownStream(stream_id)

    async def lookup(self, stream_id: str) -> StreamRecord:
        own = self.records.get(stream_id)
        if own is not None:
            return own
        return await self._refresh(stream_id)

    async def _refresh(self, stream_id: str) -> StreamRecord:
        raw = await self._load(stream_id)
        node = _text(raw, "node")
        # (never this process's own stream: lookup answers those from memory; the stream
        # of a predecessor with the same node id is another process's)
        if _text(raw, "state") == "running" and node is not None:
            try:
                if await self._owner_lost(stream_id, node, _text(raw, "lease")):
                    raw = await self._load(stream_id)
            except REDIS_ERRORS as e:
                raise StoreUnavailable(f"Redis: {e}") from None
        view = self.views.get(stream_id)
        if view is None:
            view = StreamRecord(
                id=stream_id,
                source=_text(raw, "source") or "",
                client=_text(raw, "client") or "",
                max_tokens=int(_text(raw, "max_tokens") or 0),
                unpaced=False,
                created_at=float(_text(raw, "created_at") or 0),
            )
        state = _text(raw, "state") or "running"
        view.state = state  # type: ignore[assignment]
        view.tokens = int(_text(raw, "tokens") or 0)
        final_seq = _text(raw, "final_seq")
        view.final_seq = None if final_seq is None else int(final_seq)
        view.finish_reason = _text(raw, "finish_reason")
        finished_at = _text(raw, "finished_at")
        view.finished_at = None if finished_at is None else float(finished_at)
        view.notes = {k[2:].decode(): v for k, v in raw.items() if k.startswith(b"x:")}
        return view

    async def status(self, stream_id: str) -> dict[str, Any]:
        stream = await self.lookup(stream_id)
        body = stream.status()
        try:
            raw = cast(dict[bytes, bytes], await self.redis.hgetall(status_key(stream_id)))
            if await self._drop_dead_readers(stream_id, raw):
                raw = cast(dict[bytes, bytes], await self.redis.hgetall(status_key(stream_id)))
        except REDIS_ERRORS as e:
            raise StoreUnavailable(f"Redis: {e}") from None
        body["subscribers"] = {t: max(0, int(raw.get(f"r:{t}".encode(), 0))) for t in READERS}
        return body

    async def _others_reading(self, raw: dict[bytes, bytes]) -> list[tuple[str, bool]]:
        """The other processes counted as reading in a record, and whether each is alive."""
        others = []
        for field, count in raw.items():
            if field.startswith(b"n:") and int(count) > 0:
                process = field[2:].decode()
                node, _, instance = process.rpartition("|")
                if instance != self.instance:
                    others.append((process, await self._alive(node, instance)))
        return others

    async def _drop_dead_readers(self, stream_id: str, raw: dict[bytes, bytes]) -> bool:
        """Take the readers of processes that lost their lease out of the counts."""
        dead = [p for p, alive in await self._others_reading(raw) if not alive]
        for process in dead:
            await self._drop_readers(keys=[status_key(stream_id)], args=[process, *READERS])
        return bool(dead)

    async def request_cancel(self, stream_id: str) -> None:
        try:
            await self.redis.publish(CANCEL_CHANNEL, stream_id)
        except REDIS_ERRORS as e:
            raise StoreUnavailable(f"Redis: {e}") from None

    async def reader(self, stream: StreamRecord, reader: str, delta: int) -> None:
        if stream.id not in self.records:
            if delta > 0:
                self.views[stream.id] = stream
            elif not stream.total_subscribers:
                self.views.pop(stream.id, None)
        try:
            await self._reader(
                keys=[status_key(stream.id)], args=[reader, self._me, delta, repr(time.time())]
            )
        except REDIS_ERRORS as e:
            log.warning("Redis: counting a reader of %s: %s", stream.id, e)

    async def present_elsewhere(self, stream: StreamRecord, grace_s: float) -> bool:
        """A reader in another process whose process still holds its lease (a killed
        process's readers do not keep a stream alive), or one that left within grace."""
        try:
            raw = cast(dict[bytes, bytes], await self.redis.hgetall(status_key(stream.id)))
            if time.time() - float(raw.get(b"seen", b"0")) < grace_s:
                return True
            others = await self._others_reading(raw)
            if any(alive for _, alive in others):
                return True
            await self._drop_dead_readers(stream.id, raw)
        except REDIS_ERRORS:
            return True  # do not cancel what cannot be checked
        return False

    def forget(self, stream_id: str, why: str = EXPIRED) -> None:
        super().forget(stream_id, why)
        self._renewed.pop(stream_id, None)
        self._written.pop(stream_id, None)
        task = asyncio.get_running_loop().create_task(self._bury(stream_id, why))
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _bury(self, stream_id: str, why: str) -> None:
        async with self.redis.pipeline(transaction=False) as p:
            p.delete(status_key(stream_id))
            p.set(gone_key(stream_id), why, ex=TOMBSTONE_S)
            await p.execute()
