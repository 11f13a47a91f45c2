"""``python -m bench.cluster`` on a tiny plan (seconds): every part runs against its own
redis-server and tokenwire processes, every stream arrives whole (the cells check them
with ``StreamCheck``), and the figures are there. Never a check on speed."""

from __future__ import annotations

import json
from pathlib import Path

from bench.cluster import main


def test_bench_cluster_tiny_plan(tmp_path: Path) -> None:
    out = tmp_path / "cluster.json"
    argv = [
        *("--transports", "sse,ws", "--streams", "3", "--tokens", "20", "--repeat", "1"),
        *("--paced-streams", "4", "--paced-tokens", "5", "--pace", "50"),
        *("--readers", "4", "--fan-tokens", "5", "--rate", "50", "--json", str(out)),
    ]
    assert main(argv) == 0
    figures = json.loads(out.read_text())
    assert list(figures["cells"]) == ["sse", "ws", "paced sse"]
    for cell in figures["cells"].values():
        for store in ("memory", "redis"):
            assert cell[store]["failures"] == 0
            assert cell[store]["runs"] == 1
            assert cell[store]["tokens_per_s"] > 0
            assert cell[store]["server_cpu_ms_per_1k"] is not None
        assert cell["memory"]["redis_cpu_ms_per_1k"] is None
        assert cell["redis"]["redis_cpu_ms_per_1k"] is not None
    assert figures["cells"]["paced sse"]["redis"]["p50_ms"] is not None
    for kind in ("python", "hiredis"):
        assert figures[f"store_append_us_per_event_{kind}"] > 0
        assert figures[f"store_range_read_us_per_event_{kind}"] > 0
    for store in ("memory", "redis"):
        assert figures[f"pacedstore_{store}_p50_ms"] > 0
        assert figures[f"pacedstore_{store}_cpu_ms_per_1k"] > 0
    assert figures["pacedstore_memory_redis_commands_per_event"] is None
    # 4 logs of 6 events: at least one script call per batch, each batch at most 6 events.
    assert figures["pacedstore_redis_redis_commands_per_event"] >= 1 / 6
    # One stream of 5 tokens and its done event, 4 readers over 2 processes.
    assert (figures["fanout_events"], figures["fanout_readers"]) == (6, 4)
    assert figures["fanout_redis_commands"]["evalsha"] >= 1
    assert figures["fanout_log_commands_per_event_per_process"] > 0
