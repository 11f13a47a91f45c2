"""bench/pace.py end to end, tiny: every part answers, every stream whole, no failure."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.lab import REPO


@pytest.mark.parametrize("transport", ["sse", "chunked", "ws", "poll"])
def test_pace_driver_reports_every_part(transport: str) -> None:
    argv = [
        *(sys.executable, "-m", "bench.pace", "--transport", transport),
        *("--streams", "3", "--pace", "50", "--warmup", "0.2", "--window", "0.6"),
        *("--setups", "8", "--light", "2"),
    ]
    out = subprocess.run(argv, cwd=REPO, capture_output=True, timeout=120, check=True)
    doc = json.loads(out.stdout)
    assert doc["transport"] == transport
    assert doc["paced"]["failures"] == 0
    assert doc["paced"]["started"] == 3
    assert doc["paced"]["tokens_per_s"] > 0
    assert doc["paced"]["cpu_ms_per_1k"] is not None
    assert doc["setup"]["failures"] == 0
    assert doc["light"]["failures"] == 0
    assert doc["light"]["first_token_p50_us"] is not None
    assert doc["light"]["samples"] > 0
    if transport == "poll":
        assert doc["paced"]["polls_per_s"] > 0
        assert doc["paced"]["cpu_us_per_poll"] is not None
    else:
        assert "polls_per_s" not in doc["paced"]
