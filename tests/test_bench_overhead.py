"""``bench/overhead.py`` end to end on a tiny plan: every transport, exact token counts.

It spawns its own server (``python -m tokenwire serve``) and reads real streams; the test checks
that the figures are there and the counts exact, never how fast anything was.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import overhead


def test_overhead_runs_every_transport(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "overhead.json"
    argv = ["--concurrency", "1,4", "--tokens", "30", "--cell-tokens", "120", "--no-warmup"]
    assert overhead.main([*argv, "--plain", "--json", str(out)]) == 0
    cells = json.loads(out.read_text())["cells"]
    transports = ["sse", "ws", "poll", "chunked", "openai", "responses", "anthropic"]
    assert [(c["transport"], c["concurrency"]) for c in cells] == [
        (t, c) for c in (1, 4) for t in transports
    ]
    for cell in cells:
        # 1 lane x 4 streams, or 4 lanes x 1 stream: 120 tokens either way.
        assert (cell["streams"], cell["tokens"], cell["failures"]) == (4, 120, 0), cell
        assert cell["tokens_per_stream"] == 30
        assert cell["bytes_per_token"] > cell["overhead_bytes_per_token"] > 0
        assert cell["server_cpu_s"] is not None
        # The dialects carry no server timestamp: no transport latency for them.
        assert (cell["p50_ms"] is None) == (
            cell["transport"] in ("openai", "responses", "anthropic")
        )
    table = capsys.readouterr().out
    assert "tokenwire transport overhead" in table
    assert "openai" in table
