"""Memory per idle open stream: ``python -m bench.idle_memory [--streams N] [--trace]``.

Spawns ``tokenwire serve`` (or, with ``--trace``, the same under ``tracemalloc``), opens
``--streams`` create-and-stream requests over ``--transport`` whose first token waits
``--wait-s`` (so every stream is open and idle), and reports the server's RSS growth per
stream. With ``--trace`` the server also compares ``tracemalloc`` snapshots taken before and
after the streams opened, and the report lists where the bytes went, grouped by the deepest
frame in ``server/`` (else the library that allocated). docs/bench.md, "Memory per idle open
stream".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
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
    return p.parse_args(argv)


async def open_idle_streams(base: str, ns: argparse.Namespace, proc: psutil.Process) -> float:
    """RSS growth per stream (bytes) once ``ns.streams`` idle streams are open."""
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
        rss0 = proc.memory_info().rss
        responses: list[aiohttp.ClientResponse] = []

        async def one() -> None:
            resp = await session.post(url, data=body, headers=headers)
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {(await resp.read())[:200]!r}")
            await resp.content.readany()  # the preamble: the stream is open
            responses.append(resp)

        await asyncio.gather(*(one() for _ in range(ns.streams)))
        await asyncio.sleep(1.0)
        grown = (proc.memory_info().rss - rss0) / ns.streams
        if ns.trace:
            proc.send_signal(signal.SIGUSR1)
        for r in responses:
            r.close()
        return float(grown)


def main(argv: Sequence[str] | None = None) -> int:
    ns = parse_args(argv)
    if not 0 < ns.wait_s <= 10:
        raise SystemExit("--wait-s: from 0 to 10 (the synthetic source's ttft_ms cap)")
    raise_nofile(2 * ns.streams + 100)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    serve = [
        *("serve", "--host", "127.0.0.1", "--port", str(port)),
        *("--max-live-streams", str(2 * ns.streams)),
        *("--max-streams-per-client", str(2 * ns.streams)),
        *("--heartbeat-s", "60"),
    ]
    tmp = Path(tempfile.mkdtemp(prefix="tokenwire-idle-memory-"))
    traced = tmp / "where.json"
    if ns.trace:
        cmd = [sys.executable, "-c", _TRACED_SERVER, str(traced), *serve]
    else:
        cmd = [sys.executable, "-m", "tokenwire", *serve]
    with (tmp / "server.log").open("wb") as log:
        server = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    why = f"the server did not start (log: {tmp / 'server.log'})"
                    raise SystemExit(why) from None
                time.sleep(0.2)
        proc = psutil.Process(server.pid)
        if ns.trace:
            proc.send_signal(signal.SIGUSR1)
            time.sleep(1.0)
        try:
            grown = asyncio.run(open_idle_streams(base, ns, proc))
        except (RuntimeError, aiohttp.ClientError) as e:
            print(f"idle memory: a stream did not open: {e}", file=sys.stderr)
            return 1
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
    note = " (under tracemalloc: RSS includes its own bookkeeping)" if ns.trace else ""
    print(
        f"{ns.streams} idle {ns.transport} streams: server RSS +{grown / 1024:.1f} KiB "
        f"per stream{note}"
    )
    if where:
        total = sum(size for _, size in where)
        print(f"traced: {total / ns.streams / 1000:.2f} KB per stream; the largest places:")
        for place, size in where[: ns.top]:
            print(f"  {size / ns.streams:8.0f} B  {place}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(REPO))
    sys.exit(main())
