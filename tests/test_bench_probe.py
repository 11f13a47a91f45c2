"""``bench/probe.py``: tokenwire served with the latency probe, a real server on a real
port, read by the bench's own readers. What the probe records (how many samples, from which
writes), never how long anything took."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from bench.lab import Server, spawn_server, stop_server, wait_ready
from bench.overhead import CellSpec, run_cell
from bench.probe import PATH, SAMPLE_EVERY


@pytest.fixture(scope="module")
def probed() -> Iterator[Server]:
    server = spawn_server(100, 4096, 1.0, [], module="bench.probe")
    try:
        wait_ready(server, 30.0)
        yield server
    finally:
        assert stop_server(server) == 0


def probe(base: str, method: str) -> dict[str, Any]:
    req = urllib.request.Request(f"{base}{PATH}", method=method)
    with urllib.request.urlopen(req, timeout=10) as resp:
        doc: dict[str, Any] = json.loads(resp.read())
    return doc


async def read(base: str, transport: str, streams: int, tokens: int) -> None:
    async with aiohttp.ClientSession() as session:
        spec = CellSpec(transport, streams, tokens, 1)
        r = await run_cell(session, base, spec, 200.0, 30, None, 0)
    assert (r.failures, r.tokens) == (0, streams * tokens)


@pytest.mark.parametrize("transport", ["sse", "chunked", "ws", "poll"])
async def test_on_it_records_every_new_stream_and_sampled_writes(
    probed: Server, transport: str
) -> None:
    assert probe(probed.base, "POST")["on"] is True
    await read(probed.base, transport, 3, 12)
    doc = probe(probed.base, "GET")
    # One first token per stream (long polling: the poll that got seq 0).
    assert len(doc["first_token_ns"]) == 3
    assert doc["writes"] >= 3
    assert doc["sampled"] == len(doc["latency_ns"]) >= 1
    assert doc["sampled"] <= doc["writes"] // SAMPLE_EVERY
    assert all(ns >= 0 for ns in [*doc["first_token_ns"], *doc["latency_ns"]])


async def test_off_nothing_is_wrapped(probed: Server) -> None:
    probe(probed.base, "POST")
    assert probe(probed.base, "DELETE")["on"] is False
    await read(probed.base, "sse", 2, 10)
    doc = probe(probed.base, "GET")
    assert (doc["writes"], doc["first_token_ns"], doc["latency_ns"]) == (0, [], [])
