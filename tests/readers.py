"""Test-side readers for the four transports, over real sockets (aiohttp client): the
bytes go to the clients' decoders; these only assert the responses' headers and status.

Each returns the decoded events (dicts) in arrival order. ``limit=N`` cuts the
connection from the client side after N log events, for resume tests.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson

from clients.decoders import NDJSONDecoder, SSEDecoder
from wire import TERMINAL, TRANSPORTS

__all__ = ["TRANSPORTS", "read", "text_of"]


async def read_sse(
    session: aiohttp.ClientSession,
    url: str,
    *,
    after: int | None = None,
    last_event_id: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    params = {} if after is None else {"after": str(after)}
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    out: list[dict[str, Any]] = []
    async with session.get(url, params=params, headers=headers) as resp:
        assert resp.status == 200, (resp.status, await resp.text())
        assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        dec = SSEDecoder()
        async for chunk in resp.content.iter_any():
            for msg in dec.feed(chunk):
                ev = orjson.loads(msg.data)
                assert msg.event == ev["type"]
                assert msg.last_event_id == str(ev["seq"])
                out.append(ev)
                if ev["type"] in TERMINAL or (limit is not None and len(out) >= limit):
                    return out
    return out


async def read_chunked(
    session: aiohttp.ClientSession, url: str, *, after: int | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    params = {} if after is None else {"after": str(after)}
    out: list[dict[str, Any]] = []
    async with session.get(url, params=params) as resp:
        assert resp.status == 200, (resp.status, await resp.text())
        assert resp.headers["Content-Type"] == "application/x-ndjson; charset=utf-8"
        assert resp.headers["Transfer-Encoding"] == "chunked"
        dec = NDJSONDecoder()
        async for chunk in resp.content.iter_any():
            for ev in dec.feed(chunk):
                out.append(ev)
                if ev["type"] in TERMINAL or (limit is not None and len(out) >= limit):
                    return out
    return out


async def read_poll(
    session: aiohttp.ClientSession,
    url: str,
    *,
    after: int | None = None,
    limit: int | None = None,
    poll_timeout: float = 5,
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    pos = -1 if after is None else after
    for _ in range(10_000):
        async with session.get(
            url, params={"after": str(pos), "timeout": str(poll_timeout)}
        ) as resp:
            assert resp.status == 200, (resp.status, await resp.text())
            body = orjson.loads(await resp.read())
        for ev in body["events"]:
            out.append(ev)
            if limit is not None and len(out) >= limit:
                return out
        assert body["next"] == (body["events"][-1]["seq"] if body["events"] else pos)
        pos = body["next"]
        if body["done"]:
            return out
    raise AssertionError("poll loop did not finish")


async def read_ws(
    session: aiohttp.ClientSession,
    url: str,
    stream_id: str,
    *,
    after: int | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with session.ws_connect(url) as ws:
        msg: dict[str, Any] = {"op": "subscribe", "stream": stream_id}
        if after is not None:
            msg["after"] = after
        await ws.send_str(orjson.dumps(msg).decode())
        async for m in ws:
            assert m.type == aiohttp.WSMsgType.TEXT, m
            ev = orjson.loads(m.data)
            assert "seq" in ev, ev
            out.append(ev)
            if ev["type"] in TERMINAL or (limit is not None and len(out) >= limit):
                return out
    return out


async def read(
    session: aiohttp.ClientSession,
    base: str,
    transport: str,
    stream_id: str,
    *,
    after: int | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Read one stream over ``transport`` from ``after`` until its terminal event."""
    s = f"{base}/api/streams/{stream_id}"
    if transport == "sse":
        coro = read_sse(session, f"{s}/sse", after=after, limit=limit)
    elif transport == "chunked":
        coro = read_chunked(session, f"{s}/chunked", after=after, limit=limit)
    elif transport == "poll":
        coro = read_poll(session, f"{s}/poll", after=after, limit=limit)
    elif transport == "ws":
        coro = read_ws(session, f"{base}/api/ws", stream_id, after=after, limit=limit)
    else:
        raise ValueError(transport)
    async with asyncio.timeout(30):
        return await coro


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["text"] for e in events if e["type"] == "token")


async def native_text(base: str, stream_id: str) -> str:
    """A stream's text, read over every transport (it must be the same over all four)."""
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(*(read(session, base, t, stream_id) for t in TRANSPORTS))
    texts = {text_of(events) for events in results}
    assert len(texts) == 1, texts
    return texts.pop()
