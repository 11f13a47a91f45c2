"""Caps across processes on a real ``redis-server`` (issue 16): admission is one Lua
script over the cluster's totals, a process's own writes never race each other, and a
dead process's share stops counting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from server.errors import ServerBusy
from server.settings import Settings
from server.streams.record import StreamRecord
from server.streams.redis_admission import NODES, TOTAL, RedisAdmission


def capped(**caps: float) -> Settings:
    return Settings(**{"max_live_streams": 100, "max_streams_per_client": 100, **caps})


def record(sid: str, client: str = "c", pace: float = 10.0) -> StreamRecord:
    return StreamRecord(
        id=sid, source="synthetic", client=client, max_tokens=9, unpaced=False, pace=pace
    )


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    r = aioredis.Redis.from_url(redis_url)
    yield r
    await r.aclose()


async def test_a_renewal_never_undoes_an_admission_in_flight(redis: aioredis.Redis) -> None:
    """Process x renews its counts while one of its admissions is in flight; the renewal
    used to write the counts from before the admission, so y took a slot over the cap."""
    x, y = (RedisAdmission(capped(max_live_streams=1), redis, n) for n in ("x", "y"))
    await x.renew()
    await y.renew()
    await asyncio.gather(x.enter(record("s1")), x.renew())
    with pytest.raises(ServerBusy) as refused:
        await y.enter(record("s2"))
    assert refused.value.message == "1 streams are live; the server limit is 1"
    assert await redis.hgetall(TOTAL) == {b"live": b"1", b"c:c": b"1", b"pace": b"10"}


async def test_counts_return_to_nothing(redis: aioredis.Redis) -> None:
    x = RedisAdmission(capped(), redis, "x")
    await x.renew()
    streams = [record(f"s{i}", client=f"c{i % 2}", pace=0.1) for i in range(5)]
    for s in streams:
        await x.enter(s)
    assert await redis.hgetall(TOTAL) == {
        b"live": b"5",
        b"c:c0": b"3",
        b"c:c1": b"2",
        b"pace": b"0.5",
    }
    await x.renew()  # (rewriting the share changes no total)
    assert (await redis.hgetall(TOTAL))[b"live"] == b"5"
    for s in streams:
        await x.leave(s)
    assert await redis.hgetall(TOTAL) == {b"live": b"0", b"pace": b"0"}
    await x.aclose()
    assert await redis.zrange(NODES, 0, -1) == []


async def test_a_dead_process_stops_counting(redis: aioredis.Redis) -> None:
    x, y = (RedisAdmission(capped(max_live_streams=1), redis, n) for n in ("x", "y"))
    x.ttl_ms = 200  # (x then "dies": it never renews)
    await x.enter(record("s1"))
    with pytest.raises(ServerBusy):
        await y.enter(record("s2"))
    await asyncio.sleep(0.3)
    await y.renew()  # reaps x
    await y.enter(record("s2"))
    assert await redis.hgetall(TOTAL) == {b"live": b"1", b"c:c": b"1", b"pace": b"10"}
    assert [m.decode().split("|")[0] for m in await redis.zrange(NODES, 0, -1)] == ["y"]


async def test_racing_admissions_of_many_processes_take_exactly_the_free_slots(
    redis: aioredis.Redis,
) -> None:
    procs = [RedisAdmission(capped(max_live_streams=5), redis, f"p{i}") for i in range(4)]
    tries = [p.enter(record(f"s{i}-{j}")) for i, p in enumerate(procs) for j in range(10)]
    outcomes = await asyncio.gather(*tries, procs[0].renew(), return_exceptions=True)
    admitted = [o for o in outcomes[:-1] if o is None]
    refused = [o for o in outcomes[:-1] if isinstance(o, ServerBusy)]
    assert (len(admitted), len(refused)) == (5, 35)
    assert sum(p.live for p in procs) == 5
    assert (await redis.hgetall(TOTAL))[b"live"] == b"5"
