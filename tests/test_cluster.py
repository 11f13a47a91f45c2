"""Several tokenwire processes on one Redis (issue 16): any process serves any stream.

Three real ``tokenwire serve --store redis://...`` processes on their own loopback ports
and the session's real ``redis-server``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis

from server.streams.redis_admission import TOTAL
from server.streams.redis_registry import PROGRESS_S
from tests.readers import read
from tests.redis_server import RedisServer, free_port
from wire import READERS

REPO = Path(__file__).resolve().parent.parent
SLOW = {"ttft_ms": 0, "tokens_per_s": 40, "jitter": 0}


class Node:
    def __init__(self, url: str, name: str, *extra: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                *("-m", "tokenwire", "serve", "--port", str(self.port), "--store", url),
                *("--node-id", name, "--grace-s", "1", *extra),
            ],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )

    async def ready(self, session: aiohttp.ClientSession) -> None:
        for _ in range(600):  # (generous: the machine may be busy)
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited: {self.output()}")
            try:
                async with session.get(f"{self.base}/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        raise RuntimeError("node never answered")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def nodes(redis_url: str) -> Iterator[list[Node]]:
    started = [Node(redis_url, name) for name in ("a", "b", "c")]
    yield started
    for node in started:
        node.stop()


@pytest.fixture
async def cluster(nodes: list[Node], session: aiohttp.ClientSession) -> list[str]:
    for node in nodes:
        await node.ready(session)
    return [node.base for node in nodes]


async def create_on(session: aiohttp.ClientSession, base: str, **body: object) -> str:
    async with session.post(f"{base}/api/streams", data=orjson.dumps(body)) as resp:
        assert resp.status == 201, await resp.text()
        return str((await resp.json())["id"])


async def status(session: aiohttp.ClientSession, base: str, sid: str) -> dict[str, object]:
    async with session.get(f"{base}/api/streams/{sid}") as resp:
        assert resp.status == 200, await resp.text()
        return dict(await resp.json())


async def same_status(
    session: aiohttp.ClientSession, bases: list[str], sid: str
) -> dict[str, object]:
    """The stream's status, the same on every process in ``bases`` (a reader that just left
    counts out a Redis round trip after its connection closed: asked again, bounded)."""
    for _ in range(100):
        statuses = [await status(session, base, sid) for base in bases]
        if all(st == statuses[0] for st in statuses):
            return statuses[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"the processes disagree on {sid}: {statuses}")


async def test_create_on_a_read_on_b_resume_on_c(
    cluster: list[str], session: aiohttp.ClientSession
) -> None:
    a, b, c = cluster
    sid = await create_on(session, a, prompt="cluster", max_tokens=30, params=SLOW)
    head = await read(session, b, "sse", sid, limit=10)
    assert [e["seq"] for e in head] == list(range(10))
    rest = await read(session, c, "chunked", sid, after=9)
    assert [e["seq"] for e in rest] == list(range(10, 31))
    assert rest[-1]["type"] == "done"
    assert rest[-1]["finish_reason"] == "length"
    whole = await read(session, b, "ws", sid)
    assert whole == head + rest
    polled = await read(session, c, "poll", sid)
    assert polled == whole
    st = await same_status(session, cluster, sid)
    assert st["state"] == "done"
    assert st["tokens"] == 30


async def test_cancel_from_b_stops_the_generation_on_a(
    cluster: list[str], session: aiohttp.ClientSession
) -> None:
    a, b, c = cluster
    sid = await create_on(session, a, prompt="cancel", max_tokens=2000, params=SLOW)
    head = await read(session, c, "sse", sid, limit=3)
    async with session.delete(f"{b}/api/streams/{sid}") as resp:
        assert resp.status == 204
    events = await read(session, c, "sse", sid)
    assert events[:3] == head
    assert events[-1]["type"] == "done"
    assert events[-1]["finish_reason"] == "cancelled"
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert len(events) < 200


async def test_owner_killed_mid_stream_ends_with_producer_lost_everywhere(
    nodes: list[Node], cluster: list[str], session: aiohttp.ClientSession
) -> None:
    a, b, c = cluster
    sid = await create_on(session, a, prompt="killed", max_tokens=2000, params=SLOW)
    head = await read(session, b, "sse", sid, limit=5)
    readers = [
        asyncio.create_task(read(session, base, transport, sid))
        for base, transport in ((b, "sse"), (c, "ws"), (c, "chunked"))
    ]
    await asyncio.sleep(0.3)
    nodes[0].stop(signal.SIGKILL)
    results = await asyncio.gather(*readers)  # (each reader has its own time limit)
    for events in results:
        assert [e["seq"] for e in events] == list(range(len(events)))
        assert events[:5] == head
        last = events[-1]
        assert last["type"] == "error"
        assert last["code"] == "producer_lost"
        assert last["message"] == "the process that generated this stream (a) was lost"
    assert results[0] == results[1] == results[2]
    for base in (b, c):
        st = await status(session, base, sid)
        assert st["state"] == "error"
        assert st["tokens"] == results[0][-1]["seq"]


async def test_unknown_everywhere_and_abandoned_when_nobody_reads(
    cluster: list[str], session: aiohttp.ClientSession
) -> None:
    a, b, _ = cluster
    async with session.get(f"{b}/api/streams/nosuchstream") as resp:
        assert resp.status == 404
        assert await resp.json() == {
            "error": {"code": "unknown_stream", "message": "no stream 'nosuchstream'"}
        }
    sid = await create_on(session, a, prompt="nobody", max_tokens=2000, params=SLOW)
    # A reader on b keeps it alive past a's grace (1 s) ...
    events = await read(session, b, "sse", sid, limit=60)
    assert [e["seq"] for e in events] == list(range(60))
    st = await status(session, b, sid)
    assert st["state"] == "running"
    # ... and once nobody reads anywhere, it is cancelled.
    for _ in range(200):
        st = await status(session, b, sid)
        if st["state"] != "running":
            break
        await asyncio.sleep(0.05)
    assert st["state"] == "done"
    assert st["finish_reason"] == "cancelled"


def test_redis_unreachable_at_start_is_one_line_and_exit_1() -> None:
    port = free_port()
    proc = subprocess.run(
        [
            sys.executable,
            *("-m", "tokenwire", "serve", "--port", str(free_port())),
            *("--store", f"redis://127.0.0.1:{port}/0"),
        ],
        cwd=REPO,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 1
    lines = proc.stderr.decode().strip().splitlines()
    assert lines[-1] == (
        f"tokenwire: Redis at redis://127.0.0.1:{port}/0 does not answer: "
        f"Error 111 connecting to 127.0.0.1:{port}. Connection refused."
    )
    assert "Traceback" not in proc.stderr.decode()


def test_workers_need_a_shared_store() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tokenwire", "serve", "--workers", "2"],
        cwd=REPO,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.decode() == (
        "tokenwire: workers > 1 needs a shared store (--store redis://HOST:PORT/DB): the "
        "memory store lives in one process, so a stream made on one worker would be "
        "unknown to the others\n"
    )


async def test_two_workers_serve_one_port(
    redis_server: RedisServer, redis_url: str, session: aiohttp.ClientSession
) -> None:
    node = Node(redis_url, "w", "--workers", "2")
    try:
        await node.ready(session)
        seen: set[str] = set()
        for _ in range(200):  # new connections: the kernel spreads them over the workers
            async with aiohttp.ClientSession() as fresh, fresh.get(f"{node.base}/metrics") as resp:
                text = await resp.text()
            seen.update(
                line.split('"')[1]
                for line in text.splitlines()
                if line.startswith("tokenwire_node{")
            )
            if len(seen) == 2:
                break
            await asyncio.sleep(0.05)  # (the other worker may still be starting)
        assert seen == {"w-0", "w-1"}
        sid = await create_on(session, node.base, prompt="workers", max_tokens=20, params=SLOW)
        events = [e async for e in _read_fresh(node.base, sid)]
        assert [e["seq"] for e in events] == list(range(21))
    finally:
        node.stop()
    assert node.proc.returncode == 0


async def _read_fresh(base: str, sid: str) -> AsyncIterator[dict[str, object]]:
    """Read the stream in polls, each on a new connection (so on either worker)."""
    after = -1
    for _ in range(200):
        async with (
            aiohttp.ClientSession() as fresh,
            fresh.get(
                f"{base}/api/streams/{sid}/poll", params={"after": str(after), "timeout": "5"}
            ) as resp,
        ):
            assert resp.status == 200, await resp.text()
            answer = await resp.json()
        for event in answer["events"]:
            yield event
            after = event["seq"]
        if answer["done"]:
            return
    raise AssertionError("the stream did not end")


async def check_caps_across(session: aiohttp.ClientSession, a: Node, b: Node) -> None:
    """``--max-live-streams 2`` on ``a`` and ``b`` (one stream each): both refuse a third
    with the cluster's count; once ``b`` is killed its stream stops counting (its lease
    lapses) and ``a`` admits one again."""
    await create_on(session, a.base, prompt="one", max_tokens=2000, params=SLOW)
    await create_on(session, b.base, prompt="two", max_tokens=2000, params=SLOW)
    for base in (a.base, b.base):
        async with session.post(
            f"{base}/api/streams", data=orjson.dumps({"prompt": "three"})
        ) as resp:
            assert resp.status == 503
            assert resp.headers["Retry-After"] == "5"
            assert await resp.json() == {
                "error": {
                    "code": "too_many_streams",
                    "message": "2 streams are live; the server limit is 2",
                }
            }
    b.stop(signal.SIGKILL)  # its stream stops counting once its lease lapses (3 s)
    for _ in range(200):
        async with session.post(
            f"{a.base}/api/streams", data=orjson.dumps({"prompt": "three"})
        ) as resp:
            if resp.status == 201:
                break
            assert resp.status == 503
        await asyncio.sleep(0.05)
    assert resp.status == 201


async def test_caps_count_every_process_and_a_dead_one_stops_counting(
    redis_url: str, session: aiohttp.ClientSession
) -> None:
    args = ("--max-live-streams", "2", "--grace-s", "60")  # (nobody reads the streams)
    a, b = (Node(redis_url, name, *args) for name in ("a", "b"))
    try:
        for node in (a, b):
            await node.ready(session)
        await check_caps_across(session, a, b)
    finally:
        a.stop()
        b.stop()


async def test_a_redis_restart_mid_stream_loses_and_duplicates_nothing(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """Redis (persistence on) stops and starts again mid-stream; a reader that resumes
    through the outage gets every seq once, then a terminal event (``done`` if the writes
    were retried past the outage, ``error``/``store_unavailable`` if the generation gave
    up meanwhile: appended once Redis is back)."""
    redis = RedisServer(tmp_path, persist=True)
    redis.start()
    node = Node(redis.url, "r", "--grace-s", "60")
    try:
        await node.ready(session)
        sid = await create_on(session, node.base, prompt="restart", max_tokens=120, params=SLOW)
        events = await read(session, node.base, "sse", sid, limit=5)
        redis.stop()
        await asyncio.sleep(0.5)
        redis.start()
        after = events[-1]["seq"]
        for _ in range(100):  # polls of at most 2 s
            async with session.get(
                f"{node.base}/api/streams/{sid}/poll", params={"after": str(after), "timeout": "2"}
            ) as resp:
                if resp.status == 503:
                    assert (await resp.json())["error"]["code"] == "store_unavailable"
                    await asyncio.sleep(0.1)
                    continue
                assert resp.status == 200, await resp.text()
                answer = await resp.json()
            events += answer["events"]
            if answer["events"]:
                after = answer["events"][-1]["seq"]
            if answer["done"]:
                break
        assert [e["seq"] for e in events] == list(range(len(events)))
        last = events[-1]
        if last["type"] == "done":
            assert last["tokens"] == 120
        else:
            assert (last["type"], last["code"]) == ("error", "store_unavailable")
    finally:
        node.stop()
        redis.stop()


# ----- correctness across processes (issue 16's review) -----


@contextlib.asynccontextmanager
async def started(
    redis_url: str, session: aiohttp.ClientSession, *extra: str
) -> AsyncIterator[list[Node]]:
    """Processes a, b, c with ``extra`` flags, answering."""
    started = [Node(redis_url, name, *extra) for name in ("a", "b", "c")]
    try:
        for node in started:
            await node.ready(session)
        yield started
    finally:
        for node in started:
            node.stop()


async def race_creates(
    session: aiohttp.ClientSession, bases: list[str], n: int, params: dict[str, object]
) -> tuple[list[str], list[tuple[int, object]]]:
    """``n`` creates at once, spread over ``bases``: the ids made, and the refusals."""

    async def one(base: str) -> tuple[int, object]:
        body = {"prompt": "race", "max_tokens": 2000, "params": params}
        async with session.post(f"{base}/api/streams", data=orjson.dumps(body)) as resp:
            return resp.status, await resp.json()

    answers = await asyncio.gather(*(one(bases[i % len(bases)]) for i in range(n)))
    made = [str(body["id"]) for status, body in answers if status == 201]  # type: ignore[index]
    return made, [(status, body) for status, body in answers if status != 201]


async def test_racing_creates_at_the_live_cap_admit_exactly_k(
    redis_url: str, session: aiohttp.ClientSession
) -> None:
    async with started(redis_url, session, "--max-live-streams", "4", "--grace-s", "60") as ns:
        made, refused = await race_creates(session, [n.base for n in ns], 30, SLOW)
        assert len(made) == 4
        assert (
            refused
            == [
                (
                    503,
                    {
                        "error": {
                            "code": "too_many_streams",
                            "message": "4 streams are live; the server limit is 4",
                        }
                    },
                )
            ]
            * 26
        )


async def test_racing_creates_at_the_client_cap_and_the_pace_budget(
    redis_url: str, session: aiohttp.ClientSession
) -> None:
    caps = ("--max-streams-per-client", "3", "--max-total-tokens-per-s", "100")
    async with started(redis_url, session, *caps, "--grace-s", "60") as ns:
        bases = [n.base for n in ns]
        made, refused = await race_creates(session, bases, 30, {**SLOW, "tokens_per_s": 10})
        assert len(made) == 3
        message = "this client has 3 live streams; the limit per client is 3"
        assert refused == [(429, {"error": {"code": "too_many_streams", "message": message}})] * 27
        for i, sid in enumerate(made):  # they end, and stop counting
            async with session.delete(f"{bases[i % 3]}/api/streams/{sid}") as resp:
                assert resp.status == 204
        for sid in made:
            await read(session, bases[0], "sse", sid)
        redis = aioredis.Redis.from_url(redis_url)
        try:  # (the owner uncounts a stream just after its last event)
            for _ in range(200):
                if await redis.hget(TOTAL, "live") == b"0":
                    break
                await asyncio.sleep(0.05)
        finally:
            await redis.aclose()
        made, refused = await race_creates(session, bases, 30, SLOW)  # 40 tokens/s each
        assert len(made) == 2
        message = (
            "the live streams ask for 80 tokens/s; 40 more would pass the server's limit of 100"
        )
        assert (
            refused == [(503, {"error": {"code": "pace_budget_exceeded", "message": message}})] * 28
        )


async def gone_everywhere(session: aiohttp.ClientSession, bases: list[str], sid: str) -> None:
    gone = {"error": {"code": "gone", "message": f"stream '{sid}' has expired"}}
    for base in bases:
        for path in ("", "/sse", "/poll"):
            async with session.get(f"{base}/api/streams/{sid}{path}") as resp:
                assert (resp.status, await resp.json()) == (410, gone), path


async def test_a_dead_owners_streams_answer_410_everywhere_after_retention(
    redis_url: str, session: aiohttp.ClientSession
) -> None:
    async with started(redis_url, session, "--retention-s", "1") as ns:
        a, b, c = (n.base for n in ns)
        finished = await create_on(session, a, prompt="short", max_tokens=5, params=SLOW)
        assert [e["seq"] for e in await read(session, b, "sse", finished)] == list(range(6))
        running = await create_on(session, a, prompt="long", max_tokens=2000, params=SLOW)
        await read(session, b, "sse", running, limit=3)
        ns[0].stop(signal.SIGKILL)
        events = await read(session, c, "sse", running)
        assert (events[-1]["type"], events[-1]["code"]) == ("error", "producer_lost")
        for _ in range(100):  # retention (1 s) after each end: then 410, not 404
            async with session.get(f"{b}/api/streams/{running}") as resp:
                if resp.status != 200:
                    break
            await asyncio.sleep(0.05)
        await gone_everywhere(session, [b, c], finished)
        await gone_everywhere(session, [b, c], running)


async def test_tokens_of_a_running_stream_reach_every_process(
    cluster: list[str], session: aiohttp.ClientSession
) -> None:
    a, b, c = cluster
    sid = await create_on(session, a, prompt="progress", max_tokens=2000, params=SLOW)
    await read(session, b, "sse", sid, limit=20)  # seq 0 ... 19 are in the log
    for base in (b, c):  # (the owner writes the counts every PROGRESS_S)
        for _ in range(100):
            st = await status(session, base, sid)
            if int(st["tokens"]) >= 20:  # type: ignore[call-overload]
                break
            await asyncio.sleep(PROGRESS_S / 5)
        assert st["state"] == "running"
        assert 20 <= int(st["tokens"]) <= 2000  # type: ignore[call-overload]


async def test_a_killed_readers_process_does_not_keep_a_stream_alive(
    nodes: list[Node], cluster: list[str], session: aiohttp.ClientSession
) -> None:
    a, b, c = cluster
    sid = await create_on(session, a, prompt="orphan", max_tokens=2000, params=SLOW)
    async with session.get(f"{b}/api/streams/{sid}/sse") as resp:
        assert resp.status == 200
        await resp.content.readline()  # (the reader is counted on b)
        nodes[1].stop(signal.SIGKILL)
    # b's lease lapses (3 s), then a's grace (1 s): abandoned, not kept for 50 s.
    for _ in range(300):
        st = await status(session, c, sid)
        if st["state"] != "running":
            break
        await asyncio.sleep(0.05)
    assert (st["state"], st["finish_reason"]) == ("done", "cancelled")
    assert st["subscribers"] == {t: 0 for t in READERS}  # (b's reader no longer counted)


async def test_a_restarted_node_id_does_not_hide_a_lost_producer(
    nodes: list[Node], cluster: list[str], session: aiohttp.ClientSession, redis_url: str
) -> None:
    a, b, _ = cluster
    sid = await create_on(session, a, prompt="reborn", max_tokens=2000, params=SLOW)
    await read(session, b, "sse", sid, limit=3)
    nodes[0].stop(signal.SIGKILL)
    reborn = Node(redis_url, "a")  # the same --node-id, another process
    try:
        await reborn.ready(session)
        for base in (reborn.base, b):  # (the reborn one must not take it for its own)
            events = await read(session, base, "sse", sid)
            assert [e["seq"] for e in events] == list(range(len(events)))
            assert (events[-1]["type"], events[-1]["code"]) == ("error", "producer_lost")
    finally:
        reborn.stop()


async def test_a_response_reads_the_same_on_every_process(
    cluster: list[str], session: aiohttp.ClientSession
) -> None:
    a, b, c = cluster
    body = {
        "model": "synthetic",
        "input": "hello",
        "instructions": "answer in one word",
        "temperature": 0.5,
        "top_p": 0.9,
        "max_output_tokens": 8,
        "params": {"ttft_ms": 0, "tokens_per_s": 0},
    }
    async with session.post(f"{a}/v1/responses", data=orjson.dumps(body)) as resp:
        assert resp.status == 200, await resp.text()
        made = await resp.json()
    assert (made["instructions"], made["temperature"], made["top_p"]) == (
        "answer in one word",
        0.5,
        0.9,
    )
    for base in (a, b, c):
        async with session.get(f"{base}/v1/responses/{made['id']}") as resp:
            assert resp.status == 200, await resp.text()
            assert await resp.json() == made
