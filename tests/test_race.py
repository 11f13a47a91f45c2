"""The peer race (``tokenwire bench --peers``, ``bench/race.py``): the quick race end to end
against real servers (tokenwire, Express, and whichever Python peers exist), and the
harness's parts on exact inputs. Never how fast anything was."""

from __future__ import annotations

import dataclasses
import html
import json
import re
import sys
from pathlib import Path

import pytest

from bench import race, runner
from bench.peers import PEERS
from wire import TRANSPORTS

SCENARIOS = [*TRANSPORTS, race.FANOUT, race.FAIR]


def test_quick_race_every_cell_whole(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "race"
    assert runner.main(["--peers", "--quick", "--plain", "--out", str(out)]) == 0
    doc = json.loads((out / "race.json").read_text())
    meta = doc["meta"]
    targets = meta["targets"]
    assert targets[:1] == ["tokenwire"]
    assert "express" in targets
    # Every peer either ran or is listed as skipped, with the reason.
    assert sorted([*targets[1:], *meta["skipped"]]) == sorted(PEERS)
    assert all(meta["skipped"].values())
    # Every exit code is recorded; the Python peers' own tests check how they stop.
    assert sorted(meta["exit_codes"]) == sorted(targets)
    assert (meta["exit_codes"]["tokenwire"], meta["exit_codes"]["express"]) == (0, 0)
    plan = race.PLANS["quick"]
    cells = {(c["target"], c["scenario"]): c for c in doc["cells"]}
    assert sorted(cells) == sorted((t, s) for t in targets for s in SCENARIOS)
    for (target, scenario), cell in cells.items():
        if scenario == race.FANOUT:
            streams, tokens = plan.readers, plan.fanout_tokens
        elif scenario == race.FAIR:
            streams, tokens = plan.fair_streams, plan.fair_tokens
        else:
            streams, tokens = plan.concurrency, plan.tokens
        assert cell["failures"] == 0, cell
        assert (cell["streams"], cell["tokens"], cell["tokens_expected"]) == (
            streams,
            streams * tokens,
            streams * tokens,
        ), cell
        assert len(cell["runs"]) == plan.repeat == 1
        assert cell["tokens_per_s"] > 0
        assert cell["cpu_ms_per_1k"] is not None
        if target == "tokenwire":
            assert cell["tokens_per_s_ratio"] is None
        else:
            tw = cells[("tokenwire", scenario)]
            assert cell["tokens_per_s_ratio"] == pytest.approx(
                tw["tokens_per_s"] / cell["tokens_per_s"]
            )
    # The realistic pace: Locust on every target, tokenwire's with the probe's figures.
    assert plan.paced is not None
    paced = {(c["target"], c["transport"]): c for c in doc["paced"]}
    assert sorted(paced) == sorted((t, tr) for t in targets for tr in plan.paced.transports)
    for (target, _), cell in paced.items():
        assert cell["failed_streams"] == 0, cell
        assert cell["streams"] >= plan.paced.users, cell
        assert cell["tokens"] == cell["streams"] * plan.paced.tokens, cell
        run = cell["runs"][0]
        assert run["exit_code"] == 0
        assert (out / run["files"]["html"]).exists()
        if target == "tokenwire":
            assert run["server_latency_us"]["n"] > 0
            assert run["first_token_us"]["n"] == cell["streams"]
        else:
            assert run["server_latency_us"] == run["first_token_us"] == {}
    for png in ("race.png", "paced.png", "ratios.png"):
        assert (out / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "servers" / "express.server.log").exists()
    assert (out / "servers" / "tokenwire.server.log").exists()
    printed = capsys.readouterr().out
    assert "the peer race" in printed
    assert "tokenwire / peer" in printed
    # Every goal and warning is printed and goes into the report, which loads nothing.
    assert doc["goals"]
    assert doc["warnings"]
    report = (out / "report.html").read_text()
    for line in (*doc["goals"], *doc["warnings"]):
        assert line in printed
        assert html.escape(line) in report
    assert "data:image/png;base64," in report
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", report)
    for name, why in meta["skipped"].items():
        assert f"peer {name}: skipped, {why}" in printed


def test_a_peer_that_cannot_run_says_why(tmp_path: Path) -> None:
    assert race.missing([sys.executable, "-m", "bench.peers.nope_peer"]) == (
        "module bench.peers.nope_peer is missing"
    )
    assert race.missing([sys.executable, "-m", "bench.race"]) is None
    script = tmp_path / "server.js"
    assert race.missing(["node", str(script)]) == f"{script} is missing"
    script.write_text("")
    assert race.missing(["node", str(script)]) == (
        f"{tmp_path}/node_modules is missing (make express-deps)"
    )
    assert race.missing(["no-such-node-here", str(script)]) == "no-such-node-here is not installed"
    assert race.missing(PEERS["express"]("127.0.0.1", 1, tmp_path)) is None


def test_peer_names() -> None:
    assert race.peer_names("all") == list(PEERS)
    assert race.peer_names("express, flask") == ["express", "flask"]
    with pytest.raises(SystemExit, match="nginx"):
        race.peer_names("express,nginx")


def test_medians_sums_and_ratios() -> None:
    def run(tps: float, cpu_s: float, tokens: int, failures: int = 0) -> race.RaceRun:
        return race.RaceRun(
            streams=2,
            tokens=tokens,
            tokens_expected=100,
            wall_s=1.0,
            tokens_per_s=tps,
            server_cpu_s=cpu_s,
            cpu_window_s=2.0,
            failures=failures,
            failure_kinds={"a gap": failures} if failures else {},
            failure_examples={"a gap": "a gap: seq 5"} if failures else {},
        )

    tw = race.aggregate(
        "tokenwire", "sse", [run(300, 0.1, 100), run(100, 0.3, 100), run(200, 0.2, 100)]
    )
    peer = race.aggregate("express", "sse", [run(100, 0.4, 100), run(50, 0.4, 98, failures=1)])
    assert (tw.tokens_per_s, tw.cpu_ms_per_1k, tw.server_cpu_pct) == (200, 2000, 10)
    assert (tw.streams, tw.tokens, tw.tokens_expected, tw.failures) == (6, 300, 300, 0)
    assert (peer.tokens_per_s, peer.failures, peer.tokens) == (75, 1, 198)
    assert peer.failure_kinds == {"a gap": 1}
    assert peer.cpu_ms_per_1k == pytest.approx((4000 + 4000 * 100 / 98) / 2)
    race.add_ratios([tw, peer])
    assert (tw.tokens_per_s_ratio, tw.cpu_ratio) == (None, None)
    assert peer.tokens_per_s_ratio == pytest.approx(200 / 75)
    assert peer.cpu_ratio == pytest.approx(2000 / peer.cpu_ms_per_1k)


def test_jain_index_and_fairness_window() -> None:
    from bench.stats import jain_index

    assert jain_index([5, 5, 5, 5]) == 1.0
    assert jain_index([4, 0, 0, 0]) == 0.25
    assert jain_index([1, 3]) == pytest.approx(16 / 20)
    assert jain_index([]) is None


def test_a_cells_time_limit_grows_with_its_tokens() -> None:
    full = race.PLANS["full"]
    big = dataclasses.replace(full, readers=1000, fanout_tokens=1000, tokens=2000)
    assert big.timeout_s(race.FANOUT) == 1000 * 1000 / race.SLOWEST_TOKENS_PER_S
    assert big.timeout_s("sse") == 100 * 2000 / race.SLOWEST_TOKENS_PER_S
    assert race.PLANS["quick"].timeout_s("sse") == race.PLANS["quick"].cell_timeout_s


def test_peers_flag_refuses_locust_options() -> None:
    with pytest.raises(SystemExit, match="--host"):
        runner.main(["--peers", "--quick", "--host", "http://127.0.0.1:1"])
