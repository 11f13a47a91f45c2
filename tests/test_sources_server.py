"""The real sources behind the real server: openai (via the SDK and a stand-in) and hf."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.conftest import MakeServer, base_url, create
from tests.openai_standin import Behavior, OpenAIStandIn
from tests.readers import TRANSPORTS, read, text_of

PIECES = ["Hel", "lo", ", ", "세계", " 🚀", "\r\n", "data: x", "\\"]


@pytest.fixture
async def standin() -> AsyncIterator[OpenAIStandIn]:
    async with OpenAIStandIn() as s:
        yield s


async def test_openai_source_over_all_transports(
    make_server: MakeServer, session: aiohttp.ClientSession, standin: OpenAIStandIn
) -> None:
    standin.behavior = Behavior(pieces=[*PIECES[:3], "", None, *PIECES[3:]], finish_reason="stop")
    srv = await make_server(source="openai", base_url=standin.url, api_key="sk-test", model="m1")
    base = base_url(srv)
    sid = await create(session, srv, prompt="say hello", max_tokens=50, source="openai")
    results = await asyncio.gather(*(read(session, base, t, sid) for t in TRANSPORTS))
    for events in results:
        assert events == results[0]
    events = results[0]
    assert [e["text"] for e in events[:-1]] == PIECES
    done = events[-1]
    assert {k: done[k] for k in ("type", "seq", "finish_reason", "tokens", "sha256")} == {
        "type": "done",
        "seq": len(PIECES),
        "finish_reason": "stop",
        "tokens": len(PIECES),
        "sha256": hashlib.sha256("".join(PIECES).encode()).hexdigest(),
    }
    body = standin.requests[-1].body
    assert body["model"] == "m1"
    assert body["messages"] == [{"role": "user", "content": "say hello"}]
    assert body["max_tokens"] == 50
    assert body["stream"] is True
    assert standin.requests[-1].authorization == "Bearer sk-test"


async def test_openai_upstream_error_becomes_error_event(
    make_server: MakeServer, session: aiohttp.ClientSession, standin: OpenAIStandIn
) -> None:
    standin.behavior = Behavior(pieces=["a", "b", "c"], error_after=2)
    srv = await make_server(source="openai", base_url=standin.url, api_key="k")
    sid = await create(session, srv, source="openai")
    events = await read(session, base_url(srv), "sse", sid)
    assert [e["type"] for e in events] == ["token", "token", "error"]
    assert text_of(events) == "ab"
    err = events[-1]
    assert err["seq"] == 2
    assert err["code"] == "upstream_error"
    assert err["message"].startswith("upstream error event: ")


async def test_openai_http_error_before_stream(
    make_server: MakeServer, session: aiohttp.ClientSession, standin: OpenAIStandIn
) -> None:
    standin.behavior = Behavior(status=429)
    srv = await make_server(source="openai", base_url=standin.url, api_key="k")
    sid = await create(session, srv, source="openai")
    events = await read(session, base_url(srv), "chunked", sid)
    assert len(events) == 1
    assert events[0]["seq"] == 0
    assert events[0]["code"] == "upstream_error"
    assert events[0]["message"].startswith("upstream answered HTTP 429 (rate_limit_exceeded): ")


async def test_cancel_closes_the_upstream_stream(
    make_server: MakeServer, session: aiohttp.ClientSession, standin: OpenAIStandIn
) -> None:
    standin.behavior = Behavior(pieces=["x"] * 10_000, delay=0.01)
    srv = await make_server(source="openai", base_url=standin.url, api_key="k")
    base = base_url(srv)
    sid = await create(session, srv, source="openai", max_tokens=4096)
    await read(session, base, "ws", sid, limit=3)
    async with session.delete(f"{base}/api/streams/{sid}") as resp:
        assert resp.status == 204
    record = standin.requests[-1]
    async with asyncio.timeout(10):
        await record.disconnect_seen.wait()
    events = await read(session, base, "poll", sid)
    assert events[-1]["finish_reason"] == "cancelled"
    assert record.disconnected is True
    assert record.pieces_written < 10_000
