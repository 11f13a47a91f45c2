"""``python -m bench.idle_memory``: a few idle streams against a real server; the report's
shape, never how much memory anything took."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench import idle_memory, runner


def test_idle_streams_are_measured(capsys: pytest.CaptureFixture[str]) -> None:
    assert idle_memory.main(["--streams", "20", "--wait-s", "5"]) == 0
    out = capsys.readouterr().out
    assert re.fullmatch(r"20 idle sse streams: server RSS \+-?\d+\.\d KiB per stream\n", out), out


def test_tokenwire_and_the_aiohttp_peer_in_one_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json = tmp_path / "idle.json"
    argv = ["--streams", "4", "--wait-s", "5", "--peers", "aiohttp", "--repeat", "2"]
    assert idle_memory.main([*argv, "--json", str(out_json)]) == 0
    out = capsys.readouterr().out.splitlines()
    line = r"%s4 idle sse streams: server RSS \+-?\d+\.\d KiB per stream"
    runs = [line % "", line % "aiohttp peer: "] * 2
    assert [bool(re.fullmatch(r, o)) for r, o in zip(runs, out[:4], strict=True)] == [True] * 4
    assert out[4] == ""
    assert re.fullmatch(
        r"medians of 2, 4 idle sse streams \(load average \d+\.\d\d -> \d+\.\d\d\):", out[5]
    ), out[5]
    assert out[6:8] == ["| target | KiB per idle stream | tokenwire / target |", "|---|---|---|"]
    assert re.fullmatch(r"\| tokenwire \| -?\d+\.\d \| 1\.00 \|", out[8]), out[8]
    assert re.fullmatch(r"\| aiohttp \| -?\d+\.\d \| (-?\d+\.\d\d|-) \|", out[9]), out[9]
    assert len(out) == 10
    report = json.loads(out_json.read_text())
    assert sorted(report) == [
        "load_average",
        "ratio_tokenwire_over_peer",
        "repeat",
        "streams",
        "targets",
        "transport",
        "wait_s",
    ]
    assert (report["streams"], report["transport"], report["wait_s"], report["repeat"]) == (
        4,
        "sse",
        5.0,
        2,
    )
    assert sorted(report["load_average"]) == ["after", "before"]
    assert [len(report["load_average"][k]) for k in ("before", "after")] == [3, 3]
    assert list(report["targets"]) == ["tokenwire", "aiohttp"]
    for figures in report["targets"].values():
        assert sorted(figures) == ["kib_per_stream", "median_kib_per_stream", "opened"]
        assert figures["opened"] == [4, 4]
        assert len(figures["kib_per_stream"]) == 2
        assert isinstance(figures["median_kib_per_stream"], float)
    assert list(report["ratio_tokenwire_over_peer"]) == ["aiohttp"]


def test_unknown_peers_and_trace_with_peers_are_refused() -> None:
    with pytest.raises(SystemExit, match=r"--peers: unknown peer 'nginx' \(known: aiohttp, "):
        idle_memory.main(["--streams", "1", "--peers", "aiohttp,nginx"])
    with pytest.raises(SystemExit, match=r"--trace measures tokenwire alone: leave out --peers"):
        idle_memory.main(["--streams", "1", "--peers", "aiohttp", "--trace"])


def test_wait_is_within_the_sources_ttft_cap() -> None:
    with pytest.raises(SystemExit, match=r"--wait-s: from 0 to 10"):
        idle_memory.main(["--streams", "1", "--wait-s", "11"])


def test_race_scenarios_need_peers() -> None:
    with pytest.raises(SystemExit, match=r"--scenario paced is a scenario of the peer race"):
        runner.main(["--quick", "--scenario", "paced"])
