"""The registry's and admission's Redis scripts on a real ``redis-server`` (issue 16):
what must hold whatever order the processes' commands reach Redis in.

Each test plays the processes' commands in the one order that used to break a promise.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from server.errors import StoreUnavailable
from server.events import PartEncoder, TokenEncoder, error_event
from server.store.redis import APPEND, RedisStore
from server.streams.record import StreamRecord
from server.streams.redis_registry import RedisRegistry, lease_key, status_key


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    s = RedisStore(redis_url, 3, retention_s=60, open_ttl_s=600)
    await s.start()
    yield s
    await s.aclose()


@pytest.fixture
def registry(store: RedisStore) -> RedisRegistry:
    return RedisRegistry(store.redis, "a", ttl_s=600, retention_s=60, max_events=3)


async def log_of(store: RedisStore, sid: str, after: int = -1) -> list[tuple[int, str]]:
    """Every event after ``after``, as reads show it: a read may answer from the owner's
    cache first (what it wrote), the next one from Redis (what another process added)."""
    out: list[tuple[int, str]] = []
    for _ in range(10):
        events = await store.read(sid, after, limit=100, wait=0)
        if not events:
            return out
        out += [(e.seq, e.type) for e in events]
        after = events[-1].seq
    raise AssertionError(f"more than 10 reads of {sid}")


async def written(store: RedisStore, sid: str, n: int) -> None:
    token = TokenEncoder(sid)
    for seq in range(n):
        await store.append(sid, token(seq, f"t{seq}"))
    await store.settle(sid)


async def test_a_slow_owner_cannot_append_after_producer_lost(
    store: RedisStore, registry: RedisRegistry
) -> None:
    """The owner's lease lapsed (it was paused), another process ended the log with
    ``producer_lost``; then the owner wakes and sends a batch of two tokens. The first
    XADD fails (its id is taken); the second used to succeed: a token after the end."""
    await store.open("s")
    await written(store, "s", 2)
    assert await registry.end_open_log("s", "producer_lost", "lost") == 2
    token = TokenEncoder("s")
    await store.append("s", token(2, "late"))
    await store.append("s", token(3, "later"))  # (queued: one batch with the one above)
    with pytest.raises(StoreUnavailable):
        await store.settle("s")
    assert await log_of(store, "s") == [(0, "token"), (1, "token"), (2, "error")]


async def test_producer_lost_never_follows_the_owners_final_event(
    store: RedisStore, registry: RedisRegistry
) -> None:
    """The owner's final XADD reached Redis, its ``closed`` not yet (a pipeline is not a
    transaction): the script must see the final event and append nothing."""
    await store.open("s")
    await written(store, "s", 2)
    done = b'{"stream":"s","seq":2,"type":"done"}'
    await store.redis.xadd(RedisStore.log_key("s"), {"d": done, "e": "done"}, id="3-0")
    assert await registry.end_open_log("s", "producer_lost", "lost") == -1
    assert await log_of(store, "s") == [(0, "token"), (1, "token"), (2, "done")]


async def test_producer_lost_follows_a_typed_part(
    store: RedisStore, registry: RedisRegistry
) -> None:
    """A typed part's entry has an ``e`` field too (its type): it is not an end."""
    await store.open("s")
    await written(store, "s", 1)
    part = b'{"stream":"s","seq":1,"type":"reasoning","text":"hm"}'
    await store.redis.xadd(RedisStore.log_key("s"), {"d": part, "e": "reasoning"}, id="2-0")
    assert await registry.end_open_log("s", "producer_lost", "lost") == 2
    assert await log_of(store, "s") == [(0, "token"), (1, "reasoning"), (2, "error")]


async def test_producer_lost_keeps_the_logs_trim(
    store: RedisStore, registry: RedisRegistry
) -> None:
    await store.open("s")
    await written(store, "s", 5)
    assert await registry.end_open_log("s", "producer_lost", "lost") == 5
    assert await store.redis.xlen(RedisStore.log_key("s")) == 3
    assert await log_of(store, "s", after=2) == [(3, "token"), (4, "token"), (5, "error")]


async def test_a_reader_leaving_after_the_record_expired_leaves_no_key(
    store: RedisStore, registry: RedisRegistry
) -> None:
    view = StreamRecord(id="s", source="synthetic", client="c", max_tokens=5, unpaced=False)
    await registry.reader(view, "sse", -1)
    assert await store.redis.exists(status_key("s")) == 0


async def test_a_running_streams_tokens_are_written_when_they_moved_never_over_its_end(
    store: RedisStore, registry: RedisRegistry
) -> None:
    """The progress writer (every PROGRESS_S) writes the counts that moved, and none
    over an end: an owner that ends its stream between building the write and Redis
    running it (or another process that recorded ``producer_lost``) keeps its count."""
    store.on_write = registry.progress
    streams = [
        StreamRecord(id=sid, source="synthetic", client="c", max_tokens=9, unpaced=False)
        for sid in ("s", "t")
    ]
    for stream in streams:
        registry.add(stream)
        await registry.published(stream)
        await store.open(stream.id)
    token = TokenEncoder("s")
    for seq in range(4):
        await store.append("s", token(seq, "x"))
        streams[0].tokens = seq + 1  # (as the generation counts them)
    await store.settle("s")
    assert await store.redis.hget(status_key("s"), "tokens") == b"0"  # (not per batch)
    await registry.write_progress()
    assert [await store.redis.hget(status_key(sid), "tokens") for sid in ("s", "t")] == [b"4", b"0"]
    await store.redis.hset(status_key("t"), "state", "error")  # ended by another process
    streams[1].tokens = 7
    await registry.write_progress()
    assert await store.redis.hmget(status_key("t"), "state", "tokens") == [b"error", b"0"]
    streams[0].tokens = 5
    streams[0].state = "done"  # ended here: its end writes the final count, not the writer
    await registry.write_progress()
    assert await store.redis.hget(status_key("s"), "tokens") == b"4"


async def test_a_generation_longer_than_its_keys_first_expiry_keeps_them(
    redis_url: str,
) -> None:
    """Keys of a running stream expire ``ttl`` after creation unless pushed back: with no
    generation timeout a stream may run longer (its log then vanished mid-stream, and the
    next XADD made a new one without expiry)."""
    store = RedisStore(redis_url, 100, retention_s=60, open_ttl_s=1)
    await store.start()
    try:
        registry = RedisRegistry(store.redis, "a", ttl_s=1, retention_s=60)
        store.on_write = registry.progress
        stream = StreamRecord(id="s", source="synthetic", client="c", max_tokens=99, unpaced=False)
        registry.add(stream)
        await registry.published(stream)
        await store.open("s")
        token = TokenEncoder("s")
        for seq in range(25):  # 2.5 s: two and a half times the keys' first expiry
            await store.append("s", token(seq, "x"))
            stream.tokens = seq + 1
            await asyncio.sleep(0.1)
        await store.settle("s")
        assert await log_of(store, "s") == [(seq, "token") for seq in range(25)]
        for key in (RedisStore.log_key("s"), RedisStore.meta_key("s"), status_key("s")):
            assert 0 < await store.redis.pttl(key) <= 1000, key
    finally:
        await store.aclose()


async def test_a_dead_processs_readers_stop_counting(
    store: RedisStore, registry: RedisRegistry
) -> None:
    other = RedisRegistry(store.redis, "b", ttl_s=600, retention_s=60)
    await registry._renew()
    await other._renew()
    stream = StreamRecord(id="s", source="synthetic", client="c", max_tokens=9, unpaced=False)
    registry.add(stream)
    await registry.published(stream)
    await other.reader(await other.lookup("s"), "sse", +1)
    assert (await registry.status("s"))["subscribers"]["sse"] == 1
    assert await registry.present_elsewhere(stream, grace_s=0)
    await store.redis.delete(lease_key("b"))  # b is lost: its lease lapsed
    assert not await registry.present_elsewhere(stream, grace_s=0)
    assert (await registry.status("s"))["subscribers"]["sse"] == 0
    assert sorted(k for k in await store.redis.hkeys(status_key("s")) if k[:2] != b"x:") == sorted(
        k.encode() for k in (*registry._fields(stream), "r:sse", "seen")
    )


async def test_a_paused_owner_adopts_the_end_another_process_gave_its_stream(
    store: RedisStore, registry: RedisRegistry
) -> None:
    """The owner was paused past its lease; b ended the log with ``producer_lost`` at seq
    2. The owner wakes, its generation ends on the failed append with its own count (5):
    the record everywhere, its own included, must say where the log really ends."""
    other = RedisRegistry(store.redis, "b", ttl_s=600, retention_s=60)
    stream = StreamRecord(id="s", source="synthetic", client="c", max_tokens=9, unpaced=False)
    registry.add(stream)
    await registry.published(stream)
    await store.open("s")
    await written(store, "s", 2)
    assert await other.end_open_log("s", "producer_lost", "lost") == 2
    stream.tokens = 5
    stream.finish(error_event("s", 5, "store_unavailable", "gave up"), "stop")
    await registry.published(stream)
    assert (stream.state, stream.final_seq, stream.tokens) == ("error", 2, 2)
    view = await other.lookup("s")
    assert (view.state, view.final_seq, view.tokens) == ("error", 2, 2)


async def test_one_event_batches_are_plain_xadds_with_the_same_log(
    store: RedisStore, redis_url: str
) -> None:
    """A batch of one event in the middle of its log is one XADD, not a script call: the
    log another process reads has the same seqs, types, bytes and exact trim (3 here),
    and the TTL the first batch set still holds."""

    async def calls() -> dict[str, int]:
        stats = await store.redis.info("commandstats")
        return {k: int(stats.get(f"cmdstat_{k}", {}).get("calls", 0)) for k in ("evalsha", "xadd")}

    await store.open("one")
    token = PartEncoder("one")
    events = [
        token(0, "a"),
        token.reasoning(1, "hm"),
        token(2, "b"),
        token(3, "c"),
        error_event("one", 4, "model_error", "boom"),
    ]
    before = await calls()
    for event in events:  # (settled one by one: every batch is one event)
        await store.append("one", event)
        if not event.terminal:
            await store.settle("one")
    after = await calls()
    # The first batch (it sets the TTL) and the last (it closes the log): the script,
    # whose XADDs Redis counts too; the three in between: one XADD each.
    assert {k: after[k] - before[k] for k in after} == {"evalsha": 2, "xadd": 5}
    other = RedisStore(redis_url, 3, retention_s=60, open_ttl_s=600)
    await other.start()
    try:
        got = await other.read("one", 1, limit=10, wait=0)
        assert [(e.seq, e.type, e.data) for e in got] == [
            (e.seq, e.type, e.data) for e in events[2:]
        ]
        assert await other.redis.xlen(RedisStore.log_key("one")) == 3
        assert 0 < await other.redis.pttl(RedisStore.log_key("one")) <= 60_000
        assert await other.redis.hget(RedisStore.meta_key("one"), "state") == b"closed"
    finally:
        await other.aclose()


async def test_a_lingering_writer_writes_the_same_log(redis_url: str) -> None:
    """``redis_write_linger_ms``: the flusher waits before each round trip, so events
    appended meanwhile share it; the log is the same, and the terminal append still
    returns once everything is written."""
    store = RedisStore(redis_url, 100, retention_s=60, open_ttl_s=600, linger_s=0.2)
    await store.start()
    try:
        await store.open("lingered")
        await store.redis.script_load(APPEND)  # (a NOSCRIPT retry would count as a trip)
        token = TokenEncoder("lingered")
        events = [token(seq, f"t{seq}") for seq in range(30)]
        events.append(error_event("lingered", 30, "model_error", "boom"))
        for event in events[:10]:
            await store.append("lingered", event)
            await asyncio.sleep(0)  # (without the wait, the flusher would send seq 0 now)
        assert await store.settle("lingered") == 10
        assert store.commands["append"] == 1  # all ten in one round trip
        for event in events[10:]:
            await store.append("lingered", event)
        log = await store.redis.xrange(RedisStore.log_key("lingered"))
        assert [(i, f[b"d"]) for i, f in log] == [
            (f"{e.seq + 1}-0".encode(), e.data) for e in events
        ]
    finally:
        await store.aclose()


@pytest.mark.parametrize("batch", [1, 2], ids=["plain XADD", "script"])
async def test_a_log_no_longer_in_redis_is_not_made_again(store: RedisStore, batch: int) -> None:
    """The log vanished mid-stream (a restart without persistence, an eviction): the
    owner's next batch, one event (the plain XADD) or more (the script), fails with
    ``store_unavailable`` and leaves no key behind, where it used to make a log again
    from the middle, with no start and no TTL (a key that never expired)."""
    await store.open("v")
    await written(store, "v", 2)
    await store.redis.delete(RedisStore.log_key("v"), RedisStore.meta_key("v"))
    token = TokenEncoder("v")
    for seq in range(2, 2 + batch):
        await store.append("v", token(seq, "late"))
    with pytest.raises(StoreUnavailable, match="no longer in Redis"):
        await store.settle("v")
    assert await store.redis.exists(RedisStore.log_key("v"), RedisStore.meta_key("v")) == 0
