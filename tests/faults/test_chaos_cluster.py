"""``bench/chaos.py --cluster 3`` on a small plan: three tokenwire processes on one real
``redis-server`` (both started by the bench on free loopback ports); each stream is created
on one process, read through cuts on another and resumed after the caller's stops on a
third, chosen by the seed; every transport and ``/v1``, Python and JS clients. Every stream
ends with exactly the server's text and every ``seq`` once (the bench's own checks, against
the log read back without a proxy and the synthetic source's text).
"""

from __future__ import annotations

import json
from pathlib import Path

from bench import chaos

STREAMS = 3
TOKENS = 100
SEED = 16


def test_every_stream_exactly_once_across_processes(tmp_path: Path) -> None:
    plan = chaos.make_plan(chaos.KINDS, STREAMS, TOKENS, 3, 2, SEED, 3)
    # The plan moves streams between processes: read elsewhere than created, and resumed
    # elsewhere than read, on every kind but /v1 (its resume is the move).
    moved = [s for s in plan if s.kind != "py-openai" and s.create_node != s.read_node]
    assert len(moved) >= len(chaos.KINDS)
    assert sum(s.resume_node != s.read_node for s in plan if s.client_cuts) >= len(chaos.KINDS)
    out = tmp_path / "chaos.json"
    argv = ["--streams", str(STREAMS), "--tokens", str(TOKENS), "--seed", str(SEED)]
    assert (
        chaos.main([*argv, "--cluster", "3", "--timeout", "60", "--plain", "--json", str(out)]) == 0
    )
    rows = {r["kind"]: r for r in json.loads(out.read_text())}
    assert list(rows) == [*chaos.KINDS, "total"]
    for kind in chaos.KINDS:
        row = rows[kind]
        assert row["failures"] == [], row
        assert (row["streams"], row["tokens"]) == (STREAMS, STREAMS * TOKENS), row
        assert (row["losses"], row["duplicates"], row["wire_dups"], row["failed"]) == (0, 0, 0, 0)
        assert row["server_cuts"] >= 1, row
    assert rows["total"]["reconnects"] >= len(chaos.KINDS)
    assert rows["total"]["client_cuts"] >= len(chaos.KINDS)
