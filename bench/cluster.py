"""Redis store beside the memory store, and what fan-out costs Redis (issue 16).

1. **throughput**: one process, ``--streams`` unpaced streams of ``--tokens`` tokens at
   once, each created and read in one ``POST /api/sse``; delivered tokens/s with the
   memory store, then with Redis (the same run, so the ratio is what to read).
2. **fan-out**: two processes on one Redis; one paced stream read by ``--readers``
   SSE readers spread over both; Redis commands per event from ``INFO commandstats``
   (all commands, both processes, divided by the events and by the processes).

It starts its own ``redis-server`` on a free loopback port in a temporary directory.
``python -m bench.cluster --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.lab import Server, free_port, spawn_server, stop_server, wait_ready
from bench.stats import print_table

#: What writing and tailing the log costs per event (XADD, its TTL, the tails' XREAD);
#: the rest is per reader (lookup, counting it in and out, its first range read).
LOG_COMMANDS = ("xadd", "xread", "pexpire")


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            shutil.which("redis-server") or "/usr/bin/redis-server",
            *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)),
            *("--save", "", "--appendonly", "no", "--logfile", str(directory / "redis.log")),
        ],
        stdin=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(200):
        if subprocess.run(
            ["redis-cli", "-p", str(port), "ping"], capture_output=True, check=False
        ).stdout.startswith(b"PONG"):
            return proc, url
        time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def commandstats(port: str) -> dict[str, int]:
    out = subprocess.run(
        ["redis-cli", "-p", port, "info", "commandstats"], capture_output=True, check=True
    ).stdout.decode()
    calls = {}
    for line in out.splitlines():
        if line.startswith("cmdstat_"):
            name, _, rest = line.partition(":")
            calls[name[8:]] = int(rest.split(",")[0].split("=")[1])
    return calls


async def sse_tokens(session: aiohttp.ClientSession, url: str, **kw: Any) -> int:
    """Read one SSE response to its end; the number of token events."""
    n = 0
    async with session.request(kw.pop("method", "GET"), url, **kw) as resp:
        assert resp.status == 200, await resp.text()
        async for line in resp.content:
            if line.startswith(b"data: ") and b'"type":"token"' in line:
                n += 1
    return n


async def throughput(base: str, streams: int, tokens: int) -> float:
    body = {"prompt": "x", "max_tokens": tokens, "params": {"tokens_per_s": 0, "ttft_ms": 0}}
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        t0 = time.perf_counter()
        counts = await asyncio.gather(
            *(
                sse_tokens(session, f"{base}/api/sse", method="POST", json=body)
                for _ in range(streams)
            )
        )
        elapsed = time.perf_counter() - t0
    assert all(c == tokens for c in counts), counts
    return sum(counts) / elapsed


async def fanout(bases: list[str], readers: int, tokens: int, rate: float) -> int:
    body = {"prompt": "fan", "max_tokens": tokens, "params": {"tokens_per_s": rate, "ttft_ms": 500}}
    timeout = aiohttp.ClientTimeout(total=600)
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=conn) as session:
        async with session.post(f"{bases[0]}/api/streams", json=body) as resp:
            sid = (await resp.json())["id"]
        counts = await asyncio.gather(
            *(
                sse_tokens(session, f"{bases[i % len(bases)]}/api/streams/{sid}/sse")
                for i in range(readers)
            )
        )
    assert all(c == tokens for c in counts), counts
    return tokens + 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.split("\n")[0])
    p.add_argument("--streams", type=int, default=100, help="throughput: streams at once (100)")
    p.add_argument("--tokens", type=int, default=2000, help="throughput: tokens each (2000)")
    p.add_argument("--readers", type=int, default=1000, help="fan-out: readers (1000)")
    p.add_argument("--fan-tokens", type=int, default=200, help="fan-out: tokens (200)")
    p.add_argument("--rate", type=float, default=20, help="fan-out: tokens/s (20)")
    p.add_argument("--json", help="write the figures here too")
    args = p.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="tokenwire-cluster-"))
    redis_proc, url = start_redis(directory)
    port = url.rsplit(":", 1)[1].split("/")[0]
    figures: dict[str, Any] = {}
    servers: list[Server] = []
    try:
        for store in ("memory", url):
            server = spawn_server(args.streams, args.tokens, 0, ["--store", store])
            servers.append(server)
            wait_ready(server, 30)
            kind = "memory" if store == "memory" else "redis"
            figures[f"{kind}_tokens_per_s"] = round(
                asyncio.run(throughput(server.base, args.streams, args.tokens))
            )
            stop_server(server)
        figures["redis_over_memory"] = round(
            figures["redis_tokens_per_s"] / figures["memory_tokens_per_s"], 2
        )
        pair = [spawn_server(10, 10_000, 0, ["--store", url]) for _ in range(2)]
        servers += pair
        for server in pair:
            wait_ready(server, 30)
        before = commandstats(port)
        events = asyncio.run(
            fanout([s.base for s in pair], args.readers, args.fan_tokens, args.rate)
        )
        after = commandstats(port)
        calls = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        calls = {k: v for k, v in calls.items() if v and k != "info"}
        total = sum(calls.values())
        figures["fanout_readers"] = args.readers
        figures["fanout_events"] = events
        figures["fanout_redis_commands"] = calls
        log = sum(calls.get(k, 0) for k in LOG_COMMANDS)
        figures["fanout_commands_per_event"] = round(total / events, 2)
        figures["fanout_log_commands_per_event_per_process"] = round(log / events / len(pair), 2)
        figures["fanout_other_commands_per_reader"] = round((total - log) / args.readers, 2)
    finally:
        for server in servers:
            stop_server(server)
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(directory, ignore_errors=True)
    print_table("Redis store", ["figure", "value"], [[k, str(v)] for k, v in figures.items()])
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
