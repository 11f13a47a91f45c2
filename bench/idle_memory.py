"""Memory per idle open stream: ``python -m bench.idle_memory [--streams N] [--trace]
[--peers aiohttp,fastapi] [--repeat N] [--json PATH]``.

Spawns ``tokenwire serve`` (or, with ``--trace``, the same under ``tracemalloc``), opens
``--streams`` create-and-stream requests over ``--transport`` whose first token waits
``--wait-s`` (so every stream is open and idle), and reports the server's RSS growth per
stream. With ``--trace`` the server also compares ``tracemalloc`` snapshots taken before and
after the streams opened, and the report lists where the bytes went, grouped by the deepest
frame in ``server/`` (else the library that allocated). docs/bench.md, "Memory per idle open
stream".

With ``--peers`` the same idle streams are opened, in the same run, on tokenwire and on each
named peer of the race (``bench.peers.PEERS``; each speaks the same create body, whose
``ttft_ms`` keeps the stream idle after its preamble), alternating target by target for
``--repeat`` rounds, each measurement on a fresh server process (RSS of its process tree).
It reports the medians, the ratio tokenwire / peer and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil

from bench.lab import REPO, free_port, raise_nofile
from bench.peers import PEERS, write_pieces

TOKENWIRE = "tokenwire"

#: Run inside the server process with ``--trace``: tracemalloc, and a snapshot per SIGUSR1;
#: the second one is compared with the first and written as JSON to argv[1].
_TRACED_SERVER = """
import gc, json, os, signal, sys, tracemalloc
from collections import Counter
tracemalloc.start(12)
out, snaps = sys.argv[1], []
def snapshot(*_):
    gc.collect()
    snaps.append(tracemalloc.take_snapshot())
    if len(snaps) < 2:
        return
    where = Counter()
    for s in snaps[1].compare_to(snaps[0], "traceback"):
        frames = [f.filename for f in s.traceback]
        ours = [f"{f.filename.split('/server/', 1)[1]}:{f.lineno}"
                for f in s.traceback if "/server/" in f.filename]
        if ours:
            key = "server/" + ours[-1]
        else:
            last = frames[-1]
            key = next((lib for lib in ("aiohttp", "asyncio", "multidict", "yarl")
                        if f"/{lib}/" in last), last.rsplit("/", 1)[-1])
        where[key] += s.size_diff
    with open(out + ".part", "w") as f:
        json.dump(where.most_common(), f)
    os.replace(out + ".part", out)
signal.signal(signal.SIGUSR1, snapshot)
sys.argv = [sys.argv[0], *sys.argv[2:]]
from tokenwire.cli import main
main(sys.argv[1:])
"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.idle_memory", description=__doc__)
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--transport", choices=("sse", "chunked"), default="sse")
    p.add_argument(
        "--wait-s", type=float, default=10.0, help="the streams' ttft, idle time (at most 10)"
    )
    p.add_argument("--trace", action="store_true", help="where the bytes go (tracemalloc)")
    p.add_argument("--top", type=int, default=15, help="--trace: places listed")
    p.add_argument(
        "--peers",
        default="",
        help=f"also measure these peers in the same run, comma-separated ({', '.join(PEERS)})",
    )
    p.add_argument("--repeat", type=int, default=1, help="rounds over the targets (medians)")
    p.add_argument("--json", type=Path, help="write the figures as JSON here")
    return p.parse_args(argv)


def tree_rss(proc: psutil.Process) -> int:
    """RSS of a server's process tree (a gunicorn master and its workers, say)."""
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return int(total)


async def open_idle_streams(
    base: str, ns: argparse.Namespace, proc: psutil.Process
) -> tuple[float, int]:
    """RSS growth per stream (bytes) once ``ns.streams`` idle streams are open, and how
    many opened."""
    body = orjson.dumps(
        {
            "prompt": "idle",
            "max_tokens": 10,
            "params": {"tokens_per_s": 1, "ttft_ms": 1000 * ns.wait_s},
        }
    )
    warm = orjson.dumps(
        {"prompt": "warm", "max_tokens": 5, "params": {"tokens_per_s": 0, "ttft_ms": 0}}
    )
    headers = {"Content-Type": "application/json"}
    url = f"{base}/api/{ns.transport}"
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(3):  # the first requests' imports and caches are not per stream
            async with session.post(url, data=warm, headers=headers) as resp:
                await resp.read()
        await asyncio.sleep(0.5)
        rss0 = tree_rss(proc)
        responses: list[aiohttp.ClientResponse] = []

        async def one() -> None:
            resp = await session.post(url, data=body, headers=headers)
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {(await resp.read())[:200]!r}")
            await resp.content.readany()  # the preamble: the stream is open
            responses.append(resp)

        try:
            await asyncio.gather(*(one() for _ in range(ns.streams)))
            await asyncio.sleep(1.0)
            grown = (tree_rss(proc) - rss0) / ns.streams
            if ns.trace:
                proc.send_signal(signal.SIGUSR1)
        finally:
            for r in responses:
                r.close()
        return float(grown), len(responses)


def server_command(target: str, ns: argparse.Namespace, port: int, tmp: Path) -> list[str]:
    if target != TOKENWIRE:
        pieces = tmp / "pieces.json"
        if not pieces.exists():
            write_pieces(pieces)
        return PEERS[target]("127.0.0.1", port, pieces)
    serve = [
        *("serve", "--host", "127.0.0.1", "--port", str(port)),
        *("--max-live-streams", str(2 * ns.streams)),
        *("--max-streams-per-client", str(2 * ns.streams)),
        *("--heartbeat-s", "60"),
    ]
    if ns.trace:
        return [sys.executable, "-c", _TRACED_SERVER, str(tmp / "where.json"), *serve]
    return [sys.executable, "-m", "tokenwire", *serve]


def measure(target: str, ns: argparse.Namespace, tmp: Path) -> tuple[float, int, list[Any]]:
    """One fresh server of ``target``: RSS growth per idle stream, streams opened, and (with
    ``--trace``) where the bytes went."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    traced = tmp / "where.json"
    log_path = tmp / f"{target}.server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            server_command(target, ns, port, tmp),
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    why = f"{target}: the server did not start (log: {log_path})"
                    raise SystemExit(why) from None
                time.sleep(0.2)
        proc = psutil.Process(server.pid)
        if ns.trace:
            proc.send_signal(signal.SIGUSR1)
            time.sleep(1.0)
        grown, opened = asyncio.run(open_idle_streams(base, ns, proc))
        where: list[Any] = []
        if ns.trace:
            for _ in range(600):  # the comparison takes a while under tracemalloc
                if traced.exists():
                    where = json.loads(traced.read_text())
                    break
                time.sleep(0.5)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return grown, opened, where


def kib(value: float) -> float:
    return round(value / 1024, 2)


def main(argv: Sequence[str] | None = None) -> int:
    ns = parse_args(argv)
    if not 0 < ns.wait_s <= 10:
        raise SystemExit("--wait-s: from 0 to 10 (the synthetic source's ttft_ms cap)")
    if ns.streams < 1 or ns.repeat < 1:
        raise SystemExit("--streams and --repeat: at least 1")
    peers = [name for name in ns.peers.split(",") if name]
    if bad := [name for name in peers if name not in PEERS]:
        raise SystemExit(f"--peers: unknown peer {bad[0]!r} (known: {', '.join(PEERS)})")
    if peers and ns.trace:
        raise SystemExit("--trace measures tokenwire alone: leave out --peers")
    targets = [TOKENWIRE, *dict.fromkeys(peers)]
    raise_nofile(2 * ns.streams + 100)
    tmp = Path(tempfile.mkdtemp(prefix="tokenwire-idle-memory-"))
    load_before = os.getloadavg()
    grown: dict[str, list[float]] = {t: [] for t in targets}
    opened: dict[str, list[int]] = {t: [] for t in targets}
    where: list[Any] = []
    note = " (under tracemalloc: RSS includes its own bookkeeping)" if ns.trace else ""
    for _ in range(ns.repeat):
        for target in targets:
            try:
                g, n, where = measure(target, ns, tmp)
            except (RuntimeError, aiohttp.ClientError) as e:
                print(f"idle memory: {target}: a stream did not open: {e}", file=sys.stderr)
                return 1
            grown[target].append(g)
            opened[target].append(n)
            name = "" if target == TOKENWIRE else f"{target} peer: "
            print(
                f"{name}{n} idle {ns.transport} streams: server RSS +{g / 1024:.1f} KiB "
                f"per stream{note}",
                flush=True,
            )
    load_after = os.getloadavg()
    medians = {t: statistics.median(grown[t]) for t in targets}
    ratios = {
        p: round(medians[TOKENWIRE] / medians[p], 2) if medians[p] > 0 else None
        for p in targets[1:]
    }
    if len(targets) > 1 or ns.repeat > 1:
        print(
            f"\nmedians of {ns.repeat}, {ns.streams} idle {ns.transport} streams "
            f"(load average {load_before[0]:.2f} -> {load_after[0]:.2f}):"
        )
        print("| target | KiB per idle stream | tokenwire / target |")
        print("|---|---|---|")
        for t in targets:
            ratio = "1.00" if t == TOKENWIRE else f"{ratios[t]:.2f}" if ratios[t] else "-"
            print(f"| {t} | {kib(medians[t]):.1f} | {ratio} |")
    if where:
        total = sum(size for _, size in where)
        print(f"traced: {total / ns.streams / 1000:.2f} KB per stream; the largest places:")
        for place, size in where[: ns.top]:
            print(f"  {size / ns.streams:8.0f} B  {place}")
    if ns.json is not None:
        report = {
            "streams": ns.streams,
            "transport": ns.transport,
            "wait_s": ns.wait_s,
            "repeat": ns.repeat,
            "load_average": {"before": list(load_before), "after": list(load_after)},
            "targets": {
                t: {
                    "kib_per_stream": [kib(g) for g in grown[t]],
                    "median_kib_per_stream": kib(medians[t]),
                    "opened": opened[t],
                }
                for t in targets
            },
            "ratio_tokenwire_over_peer": ratios,
        }
        ns.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(REPO))
    sys.exit(main())
