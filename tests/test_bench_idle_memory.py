"""``python -m bench.idle_memory``: a few idle streams against a real server; the report's
shape, never how much memory anything took."""

from __future__ import annotations

import re

import pytest

from bench import idle_memory, runner


def test_idle_streams_are_measured(capsys: pytest.CaptureFixture[str]) -> None:
    assert idle_memory.main(["--streams", "20", "--wait-s", "5"]) == 0
    out = capsys.readouterr().out
    assert re.fullmatch(r"20 idle sse streams: server RSS \+-?\d+\.\d KiB per stream\n", out), out


def test_wait_is_within_the_sources_ttft_cap() -> None:
    with pytest.raises(SystemExit, match=r"--wait-s: from 0 to 10"):
        idle_memory.main(["--streams", "1", "--wait-s", "11"])


def test_race_scenarios_need_peers() -> None:
    with pytest.raises(SystemExit, match=r"--scenario paced is a scenario of the peer race"):
        runner.main(["--quick", "--scenario", "paced"])
