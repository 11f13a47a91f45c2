"""The JS client across processes (issue 16): three real ``tokenwire serve --store redis``
processes on the session's real ``redis-server``; the JS client (Node, through
``bench/chaos.mjs``) creates each stream on a, reads it on b through a cutting proxy,
stops, and resumes on c through another; every transport, both SSE readers.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import aiohttp
import pytest

from bench import chaos
from bench.cutproxy import CutProxy
from server.sources.synthetic import synthetic_text
from tests.readers import read
from tests.test_cluster import Node, status

TOKENS = 60
STOP_AT = 20  # the caller stops after this seq and resumes on c
PARAMS = {"tokens_per_s": 200, "ttft_ms": 0, "jitter": 0, "corpus": chaos.CORPUS}


async def created(session: aiohttp.ClientSession, base: str) -> int:
    """The streams this process generated (its own ``/metrics``)."""
    async with session.get(f"{base}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    name = 'tokenwire_streams_created_total{source="synthetic"} '
    lines = [line for line in text.splitlines() if line.startswith(name)]
    return int(float(lines[0].removeprefix(name))) if lines else 0


@pytest.fixture
async def three(redis_url: str, session: aiohttp.ClientSession) -> AsyncIterator[list[str]]:
    started = [Node(redis_url, name) for name in ("a", "b", "c")]
    try:
        for node in started:
            await node.ready(session)
        yield [node.base for node in started]
    finally:
        for node in started:
            node.stop()


async def test_js_client_creates_on_a_reads_on_b_resumes_on_c(
    three: list[str], session: aiohttp.ClientSession
) -> None:
    a, b, c = three
    specs = [
        chaos.Spec(kind, kind, f"js across {kind}", TOKENS, [300], False, [STOP_AT])
        for kind in chaos.JS_KINDS
    ]
    async with (
        CutProxy(chaos.port_of(b), [300], shared=True) as b0,
        CutProxy(chaos.port_of(b), [300], shared=True) as b1,
        CutProxy(chaos.port_of(b), [300], shared=True) as b2,
        CutProxy(chaos.port_of(b), [300], shared=True) as b3,
        CutProxy(chaos.port_of(b), [300], shared=True) as b4,
        CutProxy(chaos.port_of(c), [300], shared=True) as c0,
        CutProxy(chaos.port_of(c), [300], shared=True) as c1,
        CutProxy(chaos.port_of(c), [300], shared=True) as c2,
        CutProxy(chaos.port_of(c), [300], shared=True) as c3,
        CutProxy(chaos.port_of(c), [300], shared=True) as c4,
    ):
        on_b, on_c = [b0, b1, b2, b3, b4], [c0, c1, c2, c3, c4]
        routes = {
            s.key: chaos.Route(create_url=a, resume_url=on_c[i].url) for i, s in enumerate(specs)
        }
        outs = await chaos.read_js(
            [(s, on_b[i].url) for i, s in enumerate(specs)], PARAMS, 20, routes
        )
    assert [out.key for out in outs] == list(chaos.JS_KINDS)
    # Every stream was generated on a, none on b or c.
    assert [await created(session, base) for base in three] == [len(specs), 0, 0]
    for i, (spec, out) in enumerate(zip(specs, outs, strict=True)):
        # One cut landed on b before the stop, one on c after it.
        assert (on_b[i].cut_count, on_c[i].cut_count) == (1, 1), spec.kind
        assert out.error is None, (spec.kind, out.error)
        assert out.client_cuts == 1
        assert out.reconnects >= 1, spec.kind  # the cuts, within b's and c's reads
        assert out.seqs == list(range(TOKENS + 1)), spec.kind
        text = "".join(synthetic_text(spec.prompt, 0, TOKENS, chaos.CORPUS))
        assert out.text == text, spec.kind
        assert out.done is not None
        assert out.done["finish_reason"] == "length"
        assert out.done["sha256"] == hashlib.sha256(text.encode()).hexdigest()
        assert out.id is not None
        # The same log and the same status from every process.
        log = await read(session, a, "chunked", out.id)
        assert [e["seq"] for e in log] == out.seqs
        assert "".join(e["text"] for e in log if e["type"] == "token") == text
        statuses = [await status(session, base, out.id) for base in three]
        assert statuses[0] == statuses[1] == statuses[2]
        assert (statuses[0]["state"], statuses[0]["tokens"]) == ("done", TOKENS)
