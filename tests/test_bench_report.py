"""``tokenwire bench``: the report's figures from exact inputs, and ``bench --quick`` end
to end (a fresh server per transport, Locust as a subprocess, summary.json, CSVs, plots,
report.html). The checks are on counts and on the figures being there, never on speed.
"""

from __future__ import annotations

import csv
import dataclasses
import html
import json
import re
from pathlib import Path
from typing import Any

import pytest

from bench.report import (
    Load,
    Metric,
    RunResult,
    Sample,
    result_from_run,
    stress_row,
    verdict,
)
from bench.stats import histogram_percentile
from tokenwire.cli import main


def entry(method: str, name: str, hist: dict[str, int], **over: Any) -> dict[str, Any]:
    n = sum(hist.values())
    return {
        "method": method,
        "name": name,
        "num_requests": n,
        "num_none_requests": 0,
        "num_failures": 0,
        "total_response_time": sum(float(k) * v for k, v in hist.items()),
        "max_response_time": max(map(float, hist), default=0),
        "total_content_length": 0,
        "response_times": hist,
        "start_time": 100.0,
        "last_request_timestamp": 110.0,
        **over,
    }


def test_percentile_is_nearest_rank_over_buckets() -> None:
    hist = {0.3: 50, 1.0: 40, 12.0: 9, 250.0: 1}
    got = [histogram_percentile(hist, q) for q in (50, 90, 95, 99, 100)]
    assert got == [0.3, 1.0, 12.0, 12.0, 250.0]
    assert histogram_percentile({}, 50) is None


def run_of(**over: Any) -> RunResult:
    entries = [
        entry("SSE", "ttft", {"210": 4}, total_content_length=400),
        entry("SSE", "itl", {"50": 36}, total_content_length=3600),
        entry("SSE", "transport_latency", {"0.4": 30, "2.5": 10}),
        entry("SSE", "stream_total", {"2200": 4}, total_content_length=4100),
        entry("POST", "/api/sse", {"3": 4}),
        entry("WS", "itl", {"50": 999}),  # another user class: not SSE's
    ]
    samples = [
        Sample(t=0, server_cpu_s=1.0, server_rss=50 * 2**20, client_cpu_s=0.5, machine_busy_s=10),
        Sample(t=2, server_cpu_s=1.1, server_rss=52 * 2**20, client_cpu_s=1.0, machine_busy_s=11),
        Sample(t=4, server_cpu_s=1.2, server_rss=51 * 2**20, client_cpu_s=1.5, machine_busy_s=12.5),
    ]
    for sample, opened in zip(samples, (0, 4, 2), strict=True):
        sample.open_streams = opened
    args: dict[str, Any] = {
        "scenario": "streams",
        "transport": "sse",
        "label": "SSE",
        "entries": entries,
        "failures": [],
        "samples": samples,
        "load": Load(users=4, spawn_rate=4, run_s=2, tokens=10, pace=5, ttft_ms=200),
        "exit_code": 0,
        "wall_s": 5,
        "tokens_generated": 40,
    }
    return result_from_run(**(args | over))


def test_figures_of_one_run() -> None:
    r = run_of()
    assert (r.streams, r.failed_streams, r.tokens, r.tokens_generated) == (4, 0, 40, 40)
    assert r.http_requests == 4
    assert r.bytes_per_token == pytest.approx(4100 / 40)
    assert r.tokens_per_s == pytest.approx(40 / 10)  # first token to the last stream's end
    assert r.server_cpu_s == pytest.approx(0.2)
    assert r.server_cpu_pct == pytest.approx(5.0)  # 0.2 s over 4 s
    assert r.cpu_ms_per_1k_tokens == pytest.approx(5000.0)  # 200 ms for 40 tokens
    assert r.client_cpu_pct == pytest.approx(25.0)
    assert r.other_cpu_pct == pytest.approx(32.5)  # 2.5 s busy - 0.2 server - 1.0 Locust
    assert (r.rss_base_mib, r.rss_peak_mib, r.open_streams_peak) == (50, 52, 4)
    assert r.kib_per_open_stream == pytest.approx(512.0)  # 2 MiB / 4 users' streams
    lat = r.metric("transport_latency")
    assert lat is not None
    assert (lat.p50, lat.p95, lat.max) == (0.4, 2.5, 2.5)
    assert r.ttft_hist == {210.0: 4}


def test_verdict_of_a_stress_step() -> None:
    # 10 tokens at 5/s after 200 ms: 2.0 s; streams of 2.2 s are within 10%.
    assert verdict(run_of()) is None
    late = run_of()
    late.metrics["stream_total"] = Metric(4, 0, 0, 2500, 2500, 2500, 2500, 2500, 2500)
    assert verdict(late) == "behind pace: median stream 2.5 s, pace allows 2.0 s"
    slow = run_of()
    slow.metrics["transport_latency"] = Metric(4, 0, 0, 900, 500, 900, 1200, 1500, 1500)
    assert verdict(slow) == "behind pace: p95 transport latency 1.2 s"
    failing = run_of(failures=[{"type": "SSE", "name": "stream_total", "error": "E"}])
    failing.failed_streams = 3
    assert verdict(failing) == "3 failed streams (E)"
    load = Load(users=100, spawn_rate=4, run_s=2, tokens=10, pace=5, ttft_ms=200)
    held, broke = run_of(load=load), run_of(load=dataclasses.replace(load, users=200))
    broke.verdict = "3 failed streams (E)"
    assert stress_row("sse", [held, broke])[:4] == ["sse", "100", "200", "3 failed streams (E)"]


def csv_rows(path: Path) -> set[tuple[str, str]]:
    with path.open(newline="") as f:
        return {(row["Type"], row["Name"]) for row in csv.DictReader(f)}


def test_bench_quick_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--quick", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0, out
    summary = json.loads((tmp_path / "summary.json").read_text())
    streams = [r["transport"] for r in summary["streams"]]
    assert streams == ["sse", "ws", "poll", "chunked", "openai"]
    assert [r["transport"] for r in summary["fanout"]] == ["sse", "ws", "poll", "chunked"]
    for r in summary["streams"]:
        # Every token the server generated was received, in whole streams of 20.
        assert r["failed_streams"] == 0, r["failures"]
        assert r["exit_code"] == 0
        assert r["streams"] >= 6
        assert r["tokens"] == 20 * r["streams"] == r["tokens_generated"]
        assert r["bytes_per_token"] > 0
        assert r["server_cpu_s"] is not None
        assert r["cpu_ms_per_1k_tokens"] > 0
        assert r["open_streams_peak"] >= 1
        assert r["metrics"]["ttft"]["p50"] > 0
        assert ("transport_latency" in r["metrics"]) == (r["transport"] != "openai")
        label = r["label"]
        rows = csv_rows(tmp_path / "locust" / f"streams-{r['transport']}_stats.csv")
        assert {(label, "ttft"), (label, "itl"), (label, "stream_total")} <= rows
    for r in summary["fanout"]:
        # 6 subscribers of one generation of 20 tokens: 120 tokens received.
        assert (r["failed_streams"], r["streams"]) == (0, 6)
        assert (r["tokens"], r["tokens_generated"]) == (120, 20)
    for name in ("latency", "ttft", "bytes-per-token", "cpu-per-1k-tokens", "memory-per-stream"):
        png = tmp_path / "plots" / f"{name}.png"
        assert png.read_bytes().startswith(b"\x89PNG"), name
        assert png.stat().st_size > 5000, name
    report = (tmp_path / "report.html").read_text()
    # Styled, the plots embedded, nothing loaded from outside, every warning repeated.
    assert "<img alt='latency' src='data:image/png;base64," in report
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", report)
    assert "<style>" in report
    for warning in summary["meta"]["warnings"]:
        assert warning in out
        assert html.escape(warning) in report
    assert (tmp_path / "servers" / "streams-sse.server.log").exists()
    assert "tokenwire bench: streams" in out
    assert "tokenwire bench: fan-out" in out


def test_bench_against_a_cluster_with_distributed_locust(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--store redis --workers 2``: the server under test is two processes on one port
    and a redis-server the bench starts; ``--locust-workers 2``: Locust's master and two
    workers. Streams and the fan-out (subscribers spread over both processes) are whole."""
    argv = ["bench", "--quick", "--transports", "sse", "--run-time", "2", "--out", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--store", "redis", "--workers", "2", "--locust-workers", "2"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0, out
    summary = json.loads((tmp_path / "summary.json").read_text())
    meta = summary["meta"]
    assert (meta["store"], meta["workers"], meta["locust_workers"]) == ("redis", 2, 2)
    [streams] = summary["streams"]
    assert streams["failed_streams"] == 0, streams["failures"]
    assert streams["exit_code"] == 0
    assert streams["streams"] >= 6
    assert streams["tokens"] > 0
    assert streams["tokens_generated"] is None  # /metrics is one process's of two
    assert streams["server_cpu_s"] > 0  # the process tree's
    [fanout] = summary["fanout"]
    assert (fanout["failed_streams"], fanout["streams"], fanout["tokens"]) == (0, 6, 120)
    for name in ("streams-sse", "fanout-sse"):
        log = (tmp_path / "servers" / f"{name}.server.log").read_text()
        nodes = re.findall(r"tokenwire serving on \S+ \(node (\S+), store redis\)", log)
        assert len(set(nodes)) == 2, log
        locust_log = (tmp_path / "locust" / f"{name}.log").read_text()
        assert "2 workers connected" in locust_log
    assert "store redis, 2 process(es)" in out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--workers", "2"], "--workers > 1 needs a shared store (--store redis or redis://...)"),
        (
            ["--store", "mysql://x"],
            "--store is memory, redis or redis://HOST:PORT/DB; got 'mysql://x'",
        ),
        (
            ["--store", "redis", "--host", "http://127.0.0.1:1"],
            "--store and --workers apply to a spawned server, not --host",
        ),
        (["--workers", "0"], "--workers must be >= 1 and --locust-workers >= 0"),
    ],
)
def test_bench_cluster_flags_are_checked(flags: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--quick", *flags])
    assert exit_info.value.code == f"tokenwire bench: {message}"
