"""Redis stops under a running generation (issue 16): the log still ends with its
``error``/``store_unavailable`` event once Redis answers again, however short
``retention_s`` is, so that its readers on every process end instead of waiting for the
log's open expiry (an hour)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import base_url, create, serving
from tests.redis_server import RedisServer

SLOW = {"ttft_ms": 0, "tokens_per_s": 20, "jitter": 0}


async def test_a_log_whose_generation_failed_ends_once_redis_is_back_past_retention(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """Owner ``a`` runs the generation, ``b`` reads it. Redis stops for longer than
    ``retention_s`` (so ``a`` has given up on the stream and forgotten it meanwhile),
    then starts again (persistence on): ``b``'s reader resumes and ends with every seq
    once, then ``error``/``store_unavailable`` (not ``producer_lost``: ``a`` is alive)."""
    redis = RedisServer(tmp_path, persist=True)
    redis.start()
    try:
        async with serving(redis.url) as make:
            a = await make(node_id="a", retention_s=0.2)
            b = await make(node_id="b", retention_s=0.2)
            sid = await create(session, a, prompt="outage", max_tokens=400, params=SLOW)
            events: list[dict[str, Any]] = []
            url = f"{base_url(b)}/api/streams/{sid}/poll"
            while len(events) < 3:  # (bounded: 20 tokens/s, each poll waits up to 2 s)
                async with session.get(
                    url, params={"after": str(len(events) - 1), "timeout": "2"}
                ) as resp:
                    assert resp.status == 200, await resp.text()
                    events += (await resp.json())["events"]
            redis.stop()
            # Longer than retention_s and a sweep: ``a``'s generation failed on the store,
            # and the stream was forgotten there, all while Redis was away (its lease, 3 s,
            # has not lapsed: ``a`` renews it once Redis is back).
            await asyncio.sleep(1.2)
            redis.start()
            done = False
            for _ in range(40):  # polls of at most 2 s (the open expiry is an hour)
                async with session.get(
                    url, params={"after": str(events[-1]["seq"]), "timeout": "2"}
                ) as resp:
                    if resp.status == 503:
                        assert (await resp.json())["error"]["code"] == "store_unavailable"
                        await asyncio.sleep(0.1)
                        continue
                    assert resp.status == 200, await resp.text()
                    answer = await resp.json()
                events += answer["events"]
                if answer["done"]:
                    done = True
                    break
            assert done, "the reader on b never got the log's end"
    finally:
        redis.stop()
    assert [e["seq"] for e in events] == list(range(len(events)))
    last = events[-1]
    assert (last["type"], last["code"], last["message"]) == (
        "error",
        "store_unavailable",
        "the store stopped answering while this stream was generated",
    )
    assert all(e["type"] == "token" for e in events[:-1])
