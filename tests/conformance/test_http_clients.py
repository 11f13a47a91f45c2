"""Chunked HTTP, long polling (and SSE) through HTTP clients nobody here wrote: ``curl -N``,
``httpx`` and ``requests`` (streaming reads). Each gets the exact text, every seq once.

The bytes they hand over are decoded with the clients' pure decoders (``NDJSONDecoder``,
``SSEDecoder``), fed in whatever chunks the client produced.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import httpx
import orjson
import pytest
import requests
from aiohttp.test_utils import TestServer

from clients.decoders import NDJSONDecoder, SSEDecoder
from server.sources.synthetic import synthetic_text
from tests.conftest import base_url, create

TOKENS = 60
Fetch = Callable[[str], Awaitable[list[bytes]]]


async def curl(url: str) -> list[bytes]:
    """``curl -sN``: the body as curl writes it to stdout (no buffering)."""
    exe = shutil.which("curl")
    assert exe is not None
    proc = await asyncio.create_subprocess_exec(
        exe, "-sSN", "--max-time", "30", url, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    chunks = []
    while chunk := await proc.stdout.read(65536):
        chunks.append(chunk)
    assert await proc.wait() == 0
    return chunks


async def with_httpx(url: str) -> list[bytes]:
    async with httpx.AsyncClient(timeout=30) as client, client.stream("GET", url) as resp:
        assert resp.status_code == 200
        return [chunk async for chunk in resp.aiter_raw()]


async def with_requests(url: str) -> list[bytes]:
    def get() -> list[bytes]:
        with requests.get(url, stream=True, timeout=30) as resp:
            assert resp.status_code == 200
            return list(resp.iter_content(chunk_size=None))

    return await asyncio.to_thread(get)


CLIENTS: dict[str, Fetch] = {"curl": curl, "httpx": with_httpx, "requests": with_requests}


def decode(transport: str, chunks: list[bytes]) -> list[dict[str, Any]]:
    if transport == "chunked":
        dec = NDJSONDecoder()
        return [ev for c in chunks for ev in dec.feed(c)]
    sse = SSEDecoder()
    return [orjson.loads(m.data) for c in chunks for m in sse.feed(c)]


async def poll(fetch: Fetch, url: str) -> list[dict[str, Any]]:
    """A long-poll loop with ``fetch``: ``after=next`` until ``done``."""
    events: list[dict[str, Any]] = []
    after = -1
    for _ in range(1000):
        body = orjson.loads(b"".join(await fetch(f"{url}?after={after}&timeout=5")))
        events += body["events"]
        after = body["next"]
        if body["done"]:
            return events
    raise AssertionError("the poll loop did not end")


@pytest.mark.parametrize("transport", ["chunked", "poll", "sse"])
@pytest.mark.parametrize("client", list(CLIENTS))
async def test_third_party_http_clients_read_exact_text(
    server: TestServer, session: aiohttp.ClientSession, client: str, transport: str
) -> None:
    prompt = f"{client} {transport}"
    sid = await create(
        session,
        server,
        prompt=prompt,
        max_tokens=TOKENS,
        params={"tokens_per_s": 300, "corpus": "hard-cases"},
    )
    url = f"{base_url(server)}/api/streams/{sid}/{transport}"
    fetch = CLIENTS[client]
    async with asyncio.timeout(40):
        if transport == "poll":
            events = await poll(fetch, url)
        else:
            events = decode(transport, await fetch(url))
    assert [e["seq"] for e in events] == list(range(TOKENS + 1))
    text = "".join(e["text"] for e in events[:-1])
    assert text == "".join(synthetic_text(prompt, 0, TOKENS, "hard-cases"))
    assert events[-1]["sha256"] == hashlib.sha256(text.encode()).hexdigest()
