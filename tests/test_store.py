"""The log stores (memory and Redis, one contract): append, read from any position, wait,
evict, drop; and the memory store's compaction of closed logs."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest

from server.errors import StreamGone, UnknownStream
from server.events import Event, TokenEncoder, done_event, error_event, token_event
from server.framing.ndjson import ndjson_lines
from server.framing.sse import sse_frames
from server.hub import StreamRecord, Subscription
from server.store.base import LogStore
from server.store.memory import MemoryStore
from server.store.redis import RedisStore

MakeStore = Callable[[int], Awaitable[LogStore]]


@pytest.fixture
async def make_store(store_url: str) -> AsyncIterator[MakeStore]:
    """Stores of the kind the test is parametrized with (the contract is the same)."""
    stores: list[LogStore] = []

    async def make(cap: int) -> LogStore:
        store: LogStore
        if store_url == "memory":
            store = MemoryStore(cap)
        else:
            store = RedisStore(store_url, cap, retention_s=60, open_ttl_s=600)
        await store.start()
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.aclose()


async def filled(n: int, cap: int = 100, close: bool = True) -> MemoryStore:
    store = MemoryStore(cap)
    await fill(store, "s", n, close)
    return store


async def fill(store: LogStore, sid: str, n: int, close: bool = True) -> LogStore:
    await store.open(sid)
    for i in range(n):
        await store.append(sid, token_event(sid, i, f"t{i}"))
    if close:
        await store.append(sid, done_event(sid, n, "stop", n, ""))
    return store


async def test_read_from_any_position(make_store: MakeStore) -> None:
    store = await fill(await make_store(100), "s", 10)
    assert [e.seq for e in await store.read("s", -1, limit=100, wait=0)] == list(range(11))
    assert [e.seq for e in await store.read("s", 4, limit=3, wait=0)] == [5, 6, 7]
    assert await store.read("s", 10, limit=5, wait=None) == []  # closed: no wait


@pytest.mark.parametrize("n", [9, 10, 16, 17, 40, 1000])
async def test_eviction_keeps_exactly_the_last_cap_events(make_store: MakeStore, n: int) -> None:
    cap = 8
    store = await fill(await make_store(cap), "s", n)
    first = n + 1 - cap
    got = await store.read("s", first - 1, limit=100, wait=0)
    assert [e.seq for e in got] == list(range(first, n + 1))
    with pytest.raises(StreamGone) as info:
        await store.read("s", first - 2, limit=100, wait=0)
    assert str(info.value) == (
        f"events after seq {first - 2} are no longer retained; the oldest retained seq is {first}"
    )


async def test_waiting_readers_wake_on_append_and_time_out(make_store: MakeStore) -> None:
    store = await fill(await make_store(100), "s", 2, close=False)
    readers = [asyncio.create_task(store.read("s", 1, limit=10, wait=5)) for _ in range(50)]
    await asyncio.sleep(0.05)
    await store.append("s", token_event("s", 2, "x"))
    results = await asyncio.gather(*readers)
    assert all([e.seq for e in r] == [2] for r in results)
    assert await store.read("s", 2, limit=10, wait=0.01) == []


async def test_a_cancelled_reader_does_not_disturb_the_others(make_store: MakeStore) -> None:
    store = await fill(await make_store(100), "s", 1, close=False)
    a = asyncio.create_task(store.read("s", 0, limit=10, wait=5))
    b = asyncio.create_task(store.read("s", 0, limit=10, wait=5))
    await asyncio.sleep(0.05)
    a.cancel()
    await store.append("s", token_event("s", 1, "y"))
    assert [e.seq for e in await b] == [1]


async def test_readers_that_stop_waiting_leave_nothing_behind() -> None:
    """A timed-out or cancelled wait removes its future: an idle log does not grow."""
    store = await filled(1, close=False)
    log = store._logs["s"]
    for _ in range(20):
        assert await store.read("s", 0, limit=10, wait=0.001) == []
    cancelled = [asyncio.create_task(store.read("s", 0, limit=10, wait=None)) for _ in range(5)]
    waiting = asyncio.create_task(store.read("s", 0, limit=10, wait=None))
    await asyncio.sleep(0)
    assert len(log.waiters) == 6
    for task in cancelled:
        task.cancel()
    await asyncio.gather(*cancelled, return_exceptions=True)
    assert len(log.waiters) == 1
    await store.append("s", token_event("s", 1, "z"))
    assert [e.seq for e in await waiting] == [1]
    assert log.waiters == []


async def test_wait_limits_share_one_timer_and_end_in_order() -> None:
    """Waits of several lengths: each ends at its own limit (the short first), news ends a
    wait early, and every ended wait leaves the store's deadlines empty."""
    store = await filled(1, close=False)
    loop = asyncio.get_running_loop()
    start = loop.time()
    ended: dict[str, float] = {}

    async def reader(name: str, wait: float) -> list[int]:
        events = await store.read("s", 0, limit=10, wait=wait)
        ended[name] = loop.time() - start
        return [e.seq for e in events]

    long = asyncio.create_task(reader("long", 5.0))
    short = asyncio.create_task(reader("short", 0.05))
    middle = asyncio.create_task(reader("middle", 0.2))
    assert await short == []
    assert await middle == []
    assert not long.done()
    assert ended["short"] < ended["middle"]
    assert ended["short"] >= 0.05 - 0.002
    assert ended["middle"] >= 0.2 - 0.002
    await store.append("s", token_event("s", 1, "z"))
    assert await long == [1]
    assert ended["long"] < 5.0
    assert store._deadlines._groups == {}
    # A shorter wait after a longer one re-arms the timer earlier; a cancelled one leaves.
    slow = asyncio.create_task(store.read("s", 1, limit=10, wait=5.0))
    gone = asyncio.create_task(store.read("s", 1, limit=10, wait=3.0))
    await asyncio.sleep(0)
    gone.cancel()
    t0 = loop.time()
    assert await store.read("s", 1, limit=10, wait=0.03) == []
    assert loop.time() - t0 < 1.0
    assert not slow.done()
    slow.cancel()
    await asyncio.gather(slow, gone, return_exceptions=True)
    assert store._deadlines._groups == {}


async def test_a_pushing_reader_takes_tokens_without_waking(make_store: MakeStore) -> None:
    """``read_pushing``: the memory store offers each new token to ``push`` in the
    appender's step; taken tokens do not end the read, a declined one does (returned as a
    read returns it), and so does the terminal event (never pushed). Other stores read."""
    store = await fill(await make_store(100), "s", 1, close=False)
    took: list[int] = []
    decline = {3}

    def push(event: Event) -> bool:
        if event.seq in decline:
            return False
        took.append(event.seq)
        return True

    def read() -> asyncio.Task[list[Event]]:
        after = took[-1] if took else 0
        return asyncio.create_task(store.read_pushing("s", after, limit=10, wait=5, push=push))

    pushing = isinstance(store, MemoryStore)
    reader = read()
    await asyncio.sleep(0.05)
    await store.append("s", token_event("s", 1, "a"))
    if not pushing:  # a plain read: the news ends it
        assert [e.seq for e in await reader] == [1]
        return
    await store.append("s", token_event("s", 2, "b"))
    assert took == [1, 2]
    assert not reader.done()
    await store.append("s", token_event("s", 3, "c"))
    assert [e.seq for e in await reader] == [3]
    took.append(3)
    reader = read()
    await asyncio.sleep(0.05)
    await store.append("s", done_event("s", 4, "stop", 4, ""))
    assert [e.type for e in await reader] == ["done"]
    assert took == [1, 2, 3]
    assert store._logs["s"].waiters == []  # type: ignore[attr-defined]


async def test_a_pushing_readers_time_limit_counts_from_its_last_token() -> None:
    """A heartbeat is for silence: a wait that took a token 0.15 s in ends ``wait`` after
    that token, not after the wait began."""
    store = await filled(1, close=False)
    loop = asyncio.get_running_loop()
    reader = asyncio.create_task(
        store.read_pushing("s", 0, limit=10, wait=0.2, push=lambda e: True)
    )
    start = loop.time()
    await asyncio.sleep(0.15)
    await store.append("s", token_event("s", 1, "a"))
    pushed = loop.time()
    assert await reader == []
    assert loop.time() - pushed >= 0.2 - 0.002
    assert loop.time() - start >= 0.35 - 0.002
    assert store._deadlines._groups == {}
    assert store._logs["s"].waiters == []


async def test_append_rules_and_unknown_and_drop(make_store: MakeStore) -> None:
    store = await fill(await make_store(100), "s", 3)
    with pytest.raises(RuntimeError, match="is closed"):
        await store.append("s", token_event("s", 4, "late"))
    await fill(store, "s2", 1, close=False)
    with pytest.raises(RuntimeError, match="expected seq 1, got 5"):
        await store.append("s2", token_event("s2", 5, "gap"))
    with pytest.raises(UnknownStream):
        await store.read("x", -1, limit=1, wait=0)
    with pytest.raises(UnknownStream):
        await store.append("x", token_event("x", 0, "nobody opened it"))
    waiter = asyncio.create_task(store.read("s2", 0, limit=1, wait=5))
    await asyncio.sleep(0.05)
    await store.drop("s2")
    with pytest.raises(StreamGone, match="has expired"):
        await waiter


async def test_readers_of_the_same_batch_share_its_frame(make_store: MakeStore) -> None:
    """Fan-out: a batch is framed once per framing function; other batches are framed anew."""
    store = await fill(await make_store(100), "s", 5)
    stream = StreamRecord(id="s", source="synthetic", client="c", max_tokens=5, unpaced=True)
    calls: list[list[int]] = []

    def frame(events: Sequence[Event]) -> bytes:
        calls.append([e.seq for e in events])
        return sse_frames(events)

    a, b, c = (Subscription(store, stream, after) for after in (-1, -1, 2))
    batches = [await sub.next_batch(0) for sub in (a, b, c)]
    framed = [sub.framed(frame, batch) for sub, batch in zip((a, b, c), batches, strict=True)]
    assert framed[0] is framed[1]
    assert framed[0] == sse_frames(batches[0])
    assert framed[2] == sse_frames(batches[2])
    assert calls == [[0, 1, 2, 3, 4, 5], [3, 4, 5]]
    assert a.framed(ndjson_lines, batches[0]) == ndjson_lines(batches[0])


TEXTS = ["plain ", "", 'q"uote', "back\\slash", ',"t":1}', "naïve ✓ 😀", "\n\t", "x" * 300]


@pytest.mark.parametrize("cap", [4, 100])
async def test_a_closed_log_is_compacted_and_reads_back_the_same_bytes(cap: int) -> None:
    """Every position of a closed log reads back exactly what was appended, with any text
    (quotes, escapes, a text that looks like the ``t`` field, multi-byte), trimmed or not."""
    store = MemoryStore(cap)
    await store.open("s")
    appended = [TokenEncoder("s")(i, TEXTS[i % len(TEXTS)]) for i in range(len(TEXTS) * 2)]
    appended.append(error_event("s", len(appended), "source_error", "boom"))
    for e in appended:
        await store.append("s", e)
    log = store._logs["s"]
    assert log.compact is not None
    assert log.compact.head is not None
    assert log.events == []
    kept = appended[-cap:]
    for after in range(kept[0].seq - 1, len(appended)):
        for limit in (1, 3, 100):
            want = [e for e in kept if e.seq > after][:limit]
            assert await store.read("s", after, limit=limit, wait=None) == want
    with pytest.raises(StreamGone):
        await store.read("s", kept[0].seq - 2, limit=1, wait=0)
    assert await store.retained("s") == (len(kept), log.compact.nbytes())


async def test_lines_not_from_the_token_encoder_are_kept_whole() -> None:
    store = MemoryStore(100)
    await store.open("s")
    odd = [
        Event(0, "token", b'{"seq":0,"type":"token","text":"a"}'),
        Event(1, "token", b'{"x":1}'),
        done_event("s", 2, "stop", 2, ""),
    ]
    for e in odd:
        await store.append("s", e)
    assert store._logs["s"].compact.head is None  # type: ignore[union-attr]
    assert await store.read("s", -1, limit=10, wait=0) == odd
    empty = MemoryStore(100)
    await empty.open("e")
    await empty.append("e", done_event("e", 0, "cancelled", 0, ""))
    (only,) = await empty.read("e", -1, limit=10, wait=0)
    assert (only.seq, only.type) == (0, "done")
    assert await empty.read("e", 0, limit=10, wait=None) == []


async def test_a_finished_token_costs_about_20_bytes_and_the_count_is_honest() -> None:
    """Memory per event of a closed log, measured with tracemalloc, and what ``retained``
    reports (what the retained-memory bounds count) within 10% of it."""
    words = ["the ", "quick ", "brown ", "fox ", "jumps ", "over ", "lazy ", "dogs "]
    n_logs, n = 20, 1000
    store = MemoryStore(10_000)
    ids = [f"stream-{i:010d}" for i in range(n_logs)]
    for sid in ids:
        await store.open(sid)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for sid in ids:
            enc = TokenEncoder(sid)
            for i in range(n):
                await store.append(sid, enc(i, words[i % len(words)]))
            await store.append(sid, done_event(sid, n, "stop", n, "0" * 64))
        gc.collect()
        measured = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    reported = sum([(await store.retained(sid))[1] for sid in ids])
    assert measured / (n_logs * n) < 30  # a list of Event tuples: about 230 B per event
    assert abs(reported - measured) <= 0.1 * measured
