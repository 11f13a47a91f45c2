"""``bench/chaos.py`` on a small plan: every transport and ``/v1``, Python and JS clients,
connections cut at random points from the server side (mid-frame, mid-character) and the
caller stopping and resuming; every stream ends with exactly the server's text and every
``seq`` once.

The bench spawns its own server (``python -m tokenwire serve``) and one cutting proxy per stream;
the JS streams run in one Node process. The checks are the bench's own (against the log
read back without the proxy, and against the synthetic source's text); this test asserts
its counts: streams, cuts that landed, and zero losses, duplicates and failures.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import chaos
from bench.cutproxy import CutProxy
from server.sources.synthetic import synthetic_text
from tests.conftest import MakeServer

STREAMS = 4
FAST = {"tokens_per_s": 200, "ttft_ms": 0}


def test_every_stream_exactly_once_through_cuts(tmp_path: Path) -> None:
    out = tmp_path / "chaos.json"
    argv = ["--streams", str(STREAMS), "--tokens", "120", "--seed", "11", "--timeout", "60"]
    assert chaos.main([*argv, "--plain", "--json", str(out)]) == 0
    rows = {r["kind"]: r for r in json.loads(out.read_text())}
    assert list(rows) == [*chaos.KINDS, "total"]
    for kind in chaos.KINDS:
        row = rows[kind]
        assert row["failures"] == [], row
        assert (row["streams"], row["tokens"]) == (STREAMS, STREAMS * 120), row
        assert (row["losses"], row["duplicates"], row["wire_dups"], row["failed"]) == (0, 0, 0, 0)
        # Every stream's plan has at least one cut within its first half (a mid-character
        # cut lands only if a multi-byte character follows).
        assert row["server_cuts"] >= 1, row
    # Most cuts make the client reconnect; some it never sees (aiohttp's client retries
    # an idempotent request whose kept-alive connection died before the answer).
    assert rows["total"]["server_cuts"] >= STREAMS * len(chaos.KINDS)
    assert rows["total"]["reconnects"] >= len(chaos.KINDS)
    # The plan (seed 11) cuts inside a multi-byte character on both chunked readers, and
    # has the callers stop and resume.
    assert rows["py-chunked"]["mid_char_cuts"] >= 1
    assert rows["js-chunked"]["mid_char_cuts"] >= 1
    assert rows["total"]["client_cuts"] >= len(chaos.KINDS)


# Cuts that once broke the JS client: (1) inside the body of the POST /api/streams answer
# (the create was not retried: TypeError "terminated" escaped); (2) inside the response
# headers of an EventSource request (Node 20's EventSource then goes CLOSED without an
# event, and the client waited forever).
@pytest.mark.parametrize(
    ("kind", "match", "cuts"),
    [
        pytest.param("js-sse-es", b"POST /api/streams", [300], id="sse-eventsource-create-body"),
        pytest.param("js-poll", b"POST /api/streams", [300], id="poll-create-body"),
        pytest.param("js-sse-es", b"/sse?", [51], id="sse-eventsource-headers"),
    ],
)
async def test_js_client_resumes_after_awkward_cuts(
    make_server: MakeServer, kind: str, match: bytes, cuts: list[int]
) -> None:
    srv = await make_server(sse_retry_ms=50)
    spec = chaos.Spec(kind, kind, "awkward", 60, cuts, False, [])
    async with CutProxy(srv.port or 0, list(cuts), match=match) as proxy:
        (out,) = await chaos.read_js([(spec, proxy.url)], FAST, 20)
    assert proxy.cut_count == len(cuts)
    assert out.error is None
    assert out.seqs == list(range(61))
    assert out.text == "".join(synthetic_text("awkward", 0, 60))
    assert out.reconnects >= 1
