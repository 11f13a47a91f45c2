"""tokenwire on a real Redis Cluster (three masters, ``tests/redis_cluster.py``):
``--store redis+cluster://HOST:PORT`` (one startup node; the client finds the others).

On a cluster one command may only name keys of one slot, so the store's tail waits on
each stream's sharded pub/sub news instead of one XREAD over every stream (the module
docstring of ``server/store/redis.py``, ``docs/scaling.md``). Here: a lean subset of the
store's and the transports' contract tests collected again with the cluster as their
store, and real ``tokenwire serve`` processes on the cluster: create on A, read and
resume on B on every transport for streams on every master, ``producer_lost`` after a
SIGKILL of the owner, the caps across processes, and the one-line errors at start.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from server.events import done_event, token_event
from server.store.redis import RedisStore
from tests.readers import TRANSPORTS, read
from tests.redis_cluster import RedisCluster, command
from tests.redis_server import free_port
from tests.test_cluster import REPO, SLOW, Node, check_caps_across, create_on, same_status, status

# The store's and the transports' contract on the cluster: these tests are collected
# again here, where ``store_url`` and ``server_store`` name the cluster.
from tests.test_lifecycle import (  # noqa: F401
    test_cancel_by_delete_stops_the_source,
    test_finished_stream_expires_after_retention,
)
from tests.test_store import (  # noqa: F401
    make_store,
    test_a_cancelled_reader_does_not_disturb_the_others,
    test_append_rules_and_unknown_and_drop,
    test_eviction_keeps_exactly_the_last_cap_events,
    test_read_from_any_position,
)
from tests.test_transports import (  # noqa: F401
    test_gone_for_an_evicted_position,
    test_resume_after_client_cut,
    test_same_stream_over_all_four_transports_at_once,
)


@pytest.fixture
def store_url(cluster_url: str) -> str:
    return cluster_url


@pytest.fixture
def server_store(cluster_url: str) -> str:
    return cluster_url


@asynccontextmanager
async def nodes_on(
    url: str, session: aiohttp.ClientSession, names: str, *extra: str
) -> AsyncIterator[list[Node]]:
    started = [Node(url, name, *extra) for name in names]
    try:
        for node in started:
            await node.ready(session)
        yield started
    finally:
        for node in started:
            node.stop()


async def one_stream_per_master(
    session: aiohttp.ClientSession, cluster: RedisCluster, base: str, **body: Any
) -> dict[int, str]:
    """Streams created on ``base`` until each master holds one (by ``CLUSTER KEYSLOT``
    of the log's key); the others are cancelled."""
    found: dict[int, str] = {}
    for _ in range(60):
        sid = await create_on(session, base, **body)
        master = cluster.master_of(RedisStore.log_key(sid))
        if master in found:
            async with session.delete(f"{base}/api/streams/{sid}") as resp:
                assert resp.status == 204
            continue
        found[master] = sid
        if len(found) == len(cluster.ports):
            return found
    raise AssertionError(f"60 streams landed on only {sorted(found)}")


async def test_created_on_a_read_and_resumed_on_b_on_every_master_and_transport(
    redis_cluster: RedisCluster, cluster_url: str, session: aiohttp.ClientSession
) -> None:
    async with nodes_on(cluster_url, session, "ab", "--grace-s", "30") as (a, b):
        body = {"prompt": "sharded", "max_tokens": 24, "params": SLOW}
        streams = await one_stream_per_master(session, redis_cluster, a.base, **body)
        assert sorted(streams) == sorted(redis_cluster.ports)

        async def cut_and_resume(sid: str, transport: str) -> list[dict[str, Any]]:
            head = await read(session, b.base, transport, sid, limit=5)
            head = head[:5]
            assert [e["seq"] for e in head] == list(range(5))
            return head + await read(session, b.base, transport, sid, after=4)

        jobs = [(sid, t) for sid in streams.values() for t in TRANSPORTS]
        results = await asyncio.gather(*(cut_and_resume(sid, t) for sid, t in jobs))
        for sid in streams.values():
            whole = await read(session, a.base, "sse", sid)  # the owner's own log
            assert [e["seq"] for e in whole] == list(range(25))
            assert whole[-1]["type"] == "done"
            assert whole[-1]["finish_reason"] == "length"
            for (of, transport), events in zip(jobs, results, strict=True):
                if of == sid:
                    assert events == whole, transport
            st = await same_status(session, [a.base, b.base], sid)
            assert (st["state"], st["tokens"]) == ("done", 24)


async def test_owner_killed_on_a_cluster_ends_with_producer_lost_on_every_transport(
    cluster_url: str, session: aiohttp.ClientSession
) -> None:
    async with nodes_on(cluster_url, session, "ab", "--grace-s", "30") as (a, b):
        sid = await create_on(session, a.base, prompt="killed", max_tokens=2000, params=SLOW)
        head = await read(session, b.base, "sse", sid, limit=5)
        readers = [asyncio.create_task(read(session, b.base, t, sid)) for t in TRANSPORTS]
        await asyncio.sleep(0.3)
        a.stop(signal.SIGKILL)
        results = await asyncio.gather(*readers)  # (each reader has its own time limit)
        for events in results:
            assert [e["seq"] for e in events] == list(range(len(events)))
            assert events[:5] == head
            last = events[-1]
            assert (last["type"], last["code"], last["message"]) == (
                "error",
                "producer_lost",
                "the process that generated this stream (a) was lost",
            )
        assert all(events == results[0] for events in results)
        st = await status(session, b.base, sid)
        assert (st["state"], st["tokens"]) == ("error", results[0][-1]["seq"])


async def test_delete_on_b_stops_the_generation_on_a_on_a_cluster(
    cluster_url: str, session: aiohttp.ClientSession
) -> None:
    async with nodes_on(cluster_url, session, "ab", "--grace-s", "30") as (a, b):
        sid = await create_on(session, a.base, prompt="cancel", max_tokens=2000, params=SLOW)
        head = await read(session, b.base, "ws", sid, limit=3)
        async with session.delete(f"{b.base}/api/streams/{sid}") as resp:
            assert resp.status == 204
        events = await read(session, b.base, "sse", sid)
        assert events[:3] == head[:3]
        assert [e["seq"] for e in events] == list(range(len(events)))
        assert (events[-1]["type"], events[-1]["finish_reason"]) == ("done", "cancelled")
        assert len(events) < 200


async def test_readers_go_on_whole_when_the_news_connections_are_killed(
    redis_cluster: RedisCluster, cluster_url: str, session: aiohttp.ClientSession
) -> None:
    """Every master kills its pub/sub clients mid-stream (``CLIENT KILL TYPE pubsub``):
    B's tail subscribes again (a re-subscription is news: what came meanwhile is read),
    and its readers get every seq once."""
    async with nodes_on(cluster_url, session, "ab", "--grace-s", "30") as (a, b):
        body = {"prompt": "killed news", "max_tokens": 120, "params": SLOW}
        streams = await one_stream_per_master(session, redis_cluster, a.base, **body)
        readers = [
            asyncio.create_task(read(session, b.base, t, sid))
            for sid in streams.values()
            for t in ("sse", "ws")
        ]
        await asyncio.sleep(0.5)
        for port in redis_cluster.ports:
            assert command(port, "CLIENT", "KILL", "TYPE", "pubsub").startswith(b":")
        channels = {port: RedisStore.news_channel(sid) for port, sid in streams.items()}
        for _ in range(200):  # until b subscribed again on every master (the streams run 3 s)
            again = [
                command(port, "PUBSUB", "SHARDNUMSUB", chan).endswith(b":1\r\n")
                for port, chan in channels.items()
            ]
            if all(again):
                break
            await asyncio.sleep(0.01)
        assert all(again), again
        results = await asyncio.gather(*readers)
        for events in results:
            assert [e["seq"] for e in events] == list(range(121))
            assert (events[-1]["type"], events[-1]["finish_reason"]) == ("done", "length")


async def test_caps_hold_across_processes_on_a_cluster(
    cluster_url: str, session: aiohttp.ClientSession
) -> None:
    args = ("--max-live-streams", "2", "--grace-s", "60")  # (nobody reads the streams)
    async with nodes_on(cluster_url, session, "ab", *args) as (a, b):
        await check_caps_across(session, a, b)


async def test_readers_of_another_process_cost_one_read_per_batch_and_a_connection_per_master(
    redis_cluster: RedisCluster, cluster_url: str
) -> None:
    """200 readers of one stream on store B wait while store A appends 6 batches: B reads
    each batch once (plus once when its news subscription is confirmed), over at most
    one news connection per master."""
    writer = RedisStore(cluster_url, 100, retention_s=60, open_ttl_s=600)
    reader = RedisStore(cluster_url, 100, retention_s=60, open_ttl_s=600)
    await writer.start()
    await reader.start()
    try:
        sid = "fan"
        await writer.open(sid)
        await writer.append(sid, token_event(sid, 0, "t0"))
        await writer.settle(sid)
        got: list[list[int]] = [[] for _ in range(200)]

        async def follow(mine: list[int]) -> None:
            after = 0
            while True:
                events = await reader.read(sid, after, limit=100, wait=30)
                assert events, "a reader timed out"
                mine += [e.seq for e in events]
                after = events[-1].seq
                if events[-1].terminal:
                    return

        tasks = [asyncio.create_task(follow(mine)) for mine in got]
        for _ in range(200):  # until every reader waits at the head
            if sum(len(w.waiters) for w in reader._local.values()) == 200:
                break
            await asyncio.sleep(0.01)
        start = reader.commands["tail"]
        for batch in range(6):
            for i in range(3):
                seq = 1 + batch * 3 + i
                await writer.append(sid, token_event(sid, seq, f"t{seq}"))
            await writer.settle(sid)
            for _ in range(500):  # until every reader has the batch
                if all(mine and mine[-1] == seq for mine in got):
                    break
                await asyncio.sleep(0.01)
        await writer.append(sid, done_event(sid, 19, "stop", 19, ""))
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        assert all(mine == list(range(1, 20)) for mine in got)
        assert reader.commands["tail"] - start <= 6 + 1 + 1  # batches, the end, the confirmation
        assert len(reader._news) <= len(redis_cluster.ports)
    finally:
        await writer.aclose()
        await reader.aclose()


def serve(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "tokenwire", "serve", "--port", str(free_port()), *args],
        cwd=REPO,
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_a_cluster_unreachable_at_start_is_one_line_and_exit_1() -> None:
    port = free_port()
    proc = serve("--store", f"redis+cluster://127.0.0.1:{port}")
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert "Traceback" not in err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(f"tokenwire: Redis at redis+cluster://127.0.0.1:{port} does not answer: ")
    )


def test_a_cluster_database_other_than_0_is_refused_in_one_line() -> None:
    proc = serve("--store", "redis+cluster://127.0.0.1:7000/3")
    assert proc.returncode == 1
    assert proc.stderr.decode() == (
        "tokenwire: a Redis Cluster has only database 0: store "
        "'redis+cluster://127.0.0.1:7000/3' names another\n"
    )
