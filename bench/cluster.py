"""Redis store beside the memory store, and what fan-out costs Redis (issue 16).

1. **throughput**: one process per store, ``--streams`` unpaced streams of ``--tokens``
   tokens at once per transport (``--transports``); delivered tokens/s, server CPU per
   1,000 tokens (tokenwire's, and ``redis-server``'s with the Redis store). The stores
   alternate cell by cell over ``--repeat`` rounds (the same load on both), medians.
2. **paced**: ``--paced-streams`` SSE streams at ``--pace`` tokens/s at once, per store:
   transport latency p50/p99 (client receive time minus the event's ``t``), server CPU
   (and Redis CPU) per 1,000 tokens.
3. **store**: the Redis store alone (``RedisStore``, no server): its append path at full
   speed (``--streams`` logs of ``--tokens`` events at once) and its range reads (the
   same logs read back in pages of 512 by another store, as a process that does not run
   the streams reads them), Python CPU per event, with hiredis and with redis-py's own
   reply parser.
4. **pacedstore**: the stores alone (no server, no HTTP), ``--paced-streams`` logs
   appended at ``--pace`` events/s each (phases spread), one local reader per log:
   the store's latency (append to the reader's wake-up) p50/p99, this process's CPU
   (and ``redis-server``'s) per 1,000 events, Redis commands and the writer's round
   trips per event: what the Redis store adds at a pace.
5. **fan-out**: two processes on one Redis; one paced stream read by ``--readers``
   SSE readers spread over both; Redis commands per event from ``INFO commandstats``
   (all commands, both processes, divided by the events and by the processes).

Streams are read and checked as in ``bench/overhead.py`` (the clients' decoders and
:class:`clients.check.StreamCheck`: a gap, a duplicate or a wrong digest is a failure).
It starts its own ``redis-server`` on a free loopback port in a temporary directory.
``--repo DIR`` runs the servers from another checkout (an A/B of two versions of the code:
``git archive main | tar -x -C DIR``); ``python DIR2/bench/cluster.py`` with
``PYTHONPATH=DIR`` does the same for the in-process parts (store, pacedstore).
``python -m bench.cluster --help``; docs/bench.md, "The Redis store".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.lab import (
    REPO,
    Server,
    process_usage,
    raise_nofile,
    spawn_server,
    start_redis,
    stop_server,
    wait_ready,
)
from bench.overhead import CellResult, CellSpec, parse_transports, run_cell
from bench.stats import print_table

#: What writing and tailing the log costs per event: the append script's calls
#: (``evalsha``) and the XADDs and TTLs it runs (Redis counts those too), the tails'
#: XREAD; the rest is per reader (lookup, counting it in and out, its first range read).
LOG_COMMANDS = ("evalsha", "xadd", "xtrim", "xread", "pexpire")
STORES = ("memory", "redis")
#: A cell that takes longer is cut: its unfinished streams count as failures ("cell timeout").
CELL_TIMEOUT_S = 180.0


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


async def cell(
    base: str, spec: CellSpec, rate: float, server_pid: int | None, redis_pid: int | None, run: int
) -> tuple[CellResult, float | None]:
    """One cell (``bench.overhead.run_cell``) and the Redis server's CPU seconds in it."""
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        r0, _ = process_usage(redis_pid)
        result = await run_cell(session, base, spec, rate, CELL_TIMEOUT_S, server_pid, run)
        r1, _ = process_usage(redis_pid)
    return result, None if r0 is None or r1 is None else r1 - r0


def per_1k(cpu_s: float | None, tokens: int) -> float | None:
    """CPU ms per 1,000 tokens."""
    return None if cpu_s is None or not tokens else round(1e6 * cpu_s / tokens, 1)


def median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 2) if known else None


def measure_cells(
    servers: dict[str, Server],
    redis_pid: int,
    specs: list[tuple[str, CellSpec, float]],
    repeat: int,
) -> dict[str, dict[str, Any]]:
    """Every (name, spec, rate) on both stores, the stores alternating cell by cell, for
    ``repeat`` rounds; per name and store the medians (failures summed)."""
    runs: dict[tuple[str, str], list[tuple[CellResult, float | None]]] = {}
    for rep in range(repeat):
        for name, spec, rate in specs:
            for store in STORES if rep % 2 == 0 else STORES[::-1]:
                server = servers[store]
                rpid = redis_pid if store == "redis" else None
                res = asyncio.run(cell(server.base, spec, rate, server.pid, rpid, rep))
                runs.setdefault((name, store), []).append(res)
                r, redis_cpu = res
                print(
                    f"  run {rep + 1}/{repeat} {name:>10} {store:>6} {r.tokens_per_s:>9,.0f} "
                    f"tok/s  p50 {r.p50_ms or 0:.2f} ms  p99 {r.p99_ms or 0:.2f} ms  "
                    f"cpu/1k {per_1k(r.server_cpu_s, r.tokens)} ms  "
                    f"redis cpu/1k {per_1k(redis_cpu, r.tokens)} ms  failures {r.failures}",
                    flush=True,
                )
    out: dict[str, dict[str, Any]] = {}
    for (name, store), rs in runs.items():
        out.setdefault(name, {})[store] = {
            "tokens_per_s": median([r.tokens_per_s for r, _ in rs]),
            "p50_ms": median([r.p50_ms for r, _ in rs]),
            "p99_ms": median([r.p99_ms for r, _ in rs]),
            "server_cpu_ms_per_1k": median([per_1k(r.server_cpu_s, r.tokens) for r, _ in rs]),
            "redis_cpu_ms_per_1k": median([per_1k(c, r.tokens) for r, c in rs]),
            "failures": sum(r.failures for r, _ in rs),
            "runs": len(rs),
        }
        if any(r.failures for r, _ in rs):
            out[name][store]["failure_kinds"] = [r.failure_kinds for r, _ in rs if r.failures]
    for stores in out.values():
        mem, red = stores["memory"]["tokens_per_s"], stores["redis"]["tokens_per_s"]
        stores["redis_over_memory"] = round(red / mem, 2) if mem and red else None
    return out


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


def measure_fanout(url: str, args: argparse.Namespace) -> dict[str, Any]:
    port = url.rsplit(":", 1)[1].split("/")[0]
    figures: dict[str, Any] = {}
    pair = [spawn_server(10, 10_000, 0, ["--store", url], repo=args.repo) for _ in range(2)]
    try:
        for server in pair:
            wait_ready(server, 30)
        before = commandstats(port)
        events = asyncio.run(
            fanout([s.base for s in pair], args.readers, args.fan_tokens, args.rate)
        )
        after = commandstats(port)
    finally:
        for server in pair:
            stop_server(server)
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
    return figures


async def store_costs(url: str, parser: type[Any], streams: int, n: int) -> tuple[float, float]:
    """The store's CPU per event (us): appending, then range-reading from another store."""
    from redis.asyncio import Redis

    from server.events import Event
    from server.store.redis import RedisStore

    def store() -> RedisStore:
        st = RedisStore(url, n + 10, retention_s=60, open_ttl_s=600)
        assert isinstance(st.redis, Redis)  # (one Redis here, not a cluster)
        st.redis.connection_pool.connection_kwargs["parser_class"] = parser
        return st

    writer, reader = store(), store()
    await writer.start()
    await reader.start()
    line = b'{"type":"token","seq":0,"text":"hello wor","t":1764560000000000000}'
    ids = [f"store-{time.monotonic_ns()}-{i}" for i in range(streams)]
    for sid in ids:
        await writer.open(sid)

    async def generate(sid: str) -> None:
        for seq in range(n):
            await writer.append(sid, Event(seq, "token", line))
            if seq % 16 == 15:
                await asyncio.sleep(0)  # (a source yields now and then)
        await writer.append(sid, Event(n, "done", line))

    c0 = time.process_time()
    await asyncio.gather(*(generate(sid) for sid in ids))
    c1 = time.process_time()
    got = 0
    for sid in ids:
        after = -1
        while events := await reader.read(sid, after, limit=512, wait=0):
            got += len(events)
            after = events[-1].seq
    c2 = time.process_time()
    await writer.aclose()
    await reader.aclose()
    assert got == streams * (n + 1), got
    return 1e6 * (c1 - c0) / (streams * (n + 1)), 1e6 * (c2 - c1) / got


async def paced_store(
    url: str | None, streams: int, rate: float, n: int, port: str | None, redis_pid: int | None
) -> dict[str, Any]:
    """``streams`` logs of ``n`` events at ``rate``/s each, one local reader per log, on
    the Redis store (``url``) or the memory store (None): the store's latency (append to
    wake-up) p50/p99 in ms, CPU ms per 1,000 events, Redis commands per event."""
    from server.events import Event
    from server.store.base import LogStore
    from server.store.memory import MemoryStore
    from server.store.redis import RedisStore

    store: LogStore = (
        MemoryStore(n + 10)
        if url is None
        else RedisStore(url, n + 10, retention_s=60, open_ttl_s=600)
    )
    if isinstance(store, RedisStore):
        await store.start()
    line = b'{"type":"token","seq":0,"text":"hello wor","t":1764560000000000000}'
    tag = time.monotonic_ns()
    ids = [f"paced-{tag}-{i}" for i in range(streams)]
    for sid in ids:
        await store.open(sid)
    sent: dict[str, list[float]] = {sid: [0.0] * (n + 1) for sid in ids}
    lat: list[float] = []
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2

    async def generate(sid: str, phase: float) -> None:
        for seq in range(n + 1):
            delay = start + phase + seq / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            sent[sid][seq] = time.perf_counter()
            await store.append(sid, Event(seq, "done" if seq == n else "token", line))

    async def read(sid: str) -> None:
        after = -1
        while after < n:
            events = await store.read(sid, after, limit=512, wait=None)
            now = time.perf_counter()
            lat.extend(now - sent[sid][e.seq] for e in events)
            after = events[-1].seq

    before = commandstats(port) if port else {}
    r0, _ = process_usage(redis_pid)
    c0 = time.process_time()
    rng = random.Random(7)
    await asyncio.gather(
        *(generate(sid, rng.random() / rate) for sid in ids), *(read(sid) for sid in ids)
    )
    cpu = time.process_time() - c0
    r1, _ = process_usage(redis_pid)
    after = commandstats(port) if port else {}
    for sid in ids:
        await store.drop(sid)
    if isinstance(store, RedisStore):
        await store.aclose()
    lat.sort()
    events = streams * (n + 1)
    calls = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}
    calls.pop("info", None)
    return {
        "p50_ms": round(1e3 * lat[len(lat) // 2], 3),
        "p99_ms": round(1e3 * lat[int(len(lat) * 0.99)], 3),
        "cpu_ms_per_1k": round(1e6 * cpu / events, 1),
        "redis_cpu_ms_per_1k": per_1k(None if r0 is None or r1 is None else r1 - r0, events),
        "redis_commands_per_event": round(sum(calls.values()) / events, 2) if port else None,
        "round_trips_per_event": (
            round(store.commands["append"] / events, 3) if isinstance(store, RedisStore) else None
        ),
    }


def measure_paced_store(url: str, redis_pid: int, args: argparse.Namespace) -> dict[str, Any]:
    port = url.rsplit(":", 1)[1].split("/")[0]
    runs: dict[str, list[dict[str, Any]]] = {"memory": [], "redis": []}
    for rep in range(args.repeat):
        for store in STORES if rep % 2 == 0 else STORES[::-1]:
            r = asyncio.run(
                paced_store(
                    url if store == "redis" else None,
                    args.paced_streams,
                    args.pace,
                    args.paced_tokens,
                    port if store == "redis" else None,
                    redis_pid if store == "redis" else None,
                )
            )
            runs[store].append(r)
            print(f"  run {rep + 1}/{args.repeat} pacedstore {store:>6} {r}", flush=True)
    out: dict[str, Any] = {}
    for store, rs in runs.items():
        for key in rs[0]:
            out[f"pacedstore_{store}_{key}"] = median([r[key] for r in rs])
    return out


def measure_store(url: str, args: argparse.Namespace) -> dict[str, Any]:
    from redis._parsers import _AsyncHiredisParser, _AsyncRESP2Parser
    from redis.utils import HIREDIS_AVAILABLE

    parsers: dict[str, type[Any]] = {"python": _AsyncRESP2Parser}
    if HIREDIS_AVAILABLE:
        parsers["hiredis"] = _AsyncHiredisParser
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in parsers}
    for _ in range(args.repeat):
        for name, parser in parsers.items():
            runs[name].append(asyncio.run(store_costs(url, parser, args.streams, args.tokens)))
    out: dict[str, Any] = {}
    for name, rs in runs.items():
        out[f"store_append_us_per_event_{name}"] = median([a for a, _ in rs])
        out[f"store_range_read_us_per_event_{name}"] = median([b for _, b in rs])
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.split("\n")[0])
    p.add_argument(
        "--parts",
        default="throughput,paced,store,pacedstore,fanout",
        help="comma-separated (all five)",
    )
    p.add_argument("--repo", type=Path, default=REPO, help="the checkout whose servers run")
    p.add_argument(
        "--redis-args",
        default="",
        help="more `tokenwire serve` options for the Redis store's server "
        "(e.g. '--redis-write-linger-ms 1')",
    )
    p.add_argument("--transports", type=parse_transports, default=["sse", "ws", "chunked", "poll"])
    p.add_argument("--streams", type=int, default=100, help="throughput: streams at once (100)")
    p.add_argument("--tokens", type=int, default=2000, help="throughput: tokens each (2000)")
    p.add_argument("--paced-streams", type=int, default=200, help="paced: streams (200)")
    p.add_argument("--pace", type=float, default=20, help="paced: tokens/s each (20)")
    p.add_argument("--paced-tokens", type=int, default=200, help="paced: tokens each (200)")
    p.add_argument("--repeat", type=int, default=3, help="rounds of throughput and paced (3)")
    p.add_argument("--readers", type=int, default=1000, help="fan-out: readers (1000)")
    p.add_argument("--fan-tokens", type=int, default=200, help="fan-out: tokens (200)")
    p.add_argument("--rate", type=float, default=20, help="fan-out: tokens/s (20)")
    p.add_argument("--json", help="write the figures here too")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    parts = set(args.parts.split(","))
    if not parts <= {"throughput", "paced", "store", "pacedstore", "fanout"} or args.repeat < 1:
        raise SystemExit("--parts: throughput, paced, store, pacedstore, fanout; --repeat >= 1")
    raise_nofile(max(args.streams, args.paced_streams, args.readers))
    directory = Path(tempfile.mkdtemp(prefix="tokenwire-cluster-"))
    redis_proc, url = start_redis(directory)
    figures: dict[str, Any] = {"load1_at_start": round(os.getloadavg()[0], 2)}
    servers: dict[str, Server] = {}
    try:
        specs: list[tuple[str, CellSpec, float]] = []
        if "throughput" in parts:
            specs += [(t, CellSpec(t, args.streams, args.tokens, 1), 0.0) for t in args.transports]
        if "paced" in parts:
            spec = CellSpec("sse", args.paced_streams, args.paced_tokens, 1)
            specs.append(("paced sse", spec, args.pace))
        if specs:
            cap = max(args.streams, args.paced_streams) + 10
            tokens_cap = max(args.tokens, args.paced_tokens)
            for store in STORES:
                extra = ["--store", url] + args.redis_args.split() if store == "redis" else []
                extra = extra or ["--store", "memory"]
                servers[store] = spawn_server(cap, tokens_cap, 2.0, extra, repo=args.repo.resolve())
            for server in servers.values():
                wait_ready(server, 30)
            figures["cells"] = measure_cells(servers, redis_proc.pid, specs, args.repeat)
        if "store" in parts:
            figures.update(measure_store(url, args))
        if "pacedstore" in parts:
            figures.update(measure_paced_store(url, redis_proc.pid, args))
        if "fanout" in parts:
            figures.update(measure_fanout(url, args))
    finally:
        for server in servers.values():
            stop_server(server)
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(directory, ignore_errors=True)
    figures["load1_at_end"] = round(os.getloadavg()[0], 2)
    rows = []
    for name, stores in figures.get("cells", {}).items():
        for store in STORES:
            s = stores[store]
            rows.append(
                [
                    name,
                    store,
                    f"{s['tokens_per_s']:,.0f}",
                    str(s["p50_ms"]),
                    str(s["p99_ms"]),
                    str(s["server_cpu_ms_per_1k"]),
                    str(s["redis_cpu_ms_per_1k"] or "-"),
                    str(s["failures"]),
                    str(stores["redis_over_memory"]) if store == "redis" else "",
                ]
            )
    if rows:
        cols = ["cell", "store", "tok/s", "p50 ms", "p99 ms", "cpu ms/1k", "redis ms/1k"]
        print_table(
            f"memory vs Redis (median of {args.repeat})", [*cols, "failures", "redis/mem"], rows
        )
    other = [[k, str(v)] for k, v in figures.items() if k != "cells"]
    print_table("Redis store", ["figure", "value"], other)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    failed = sum(s[st]["failures"] for s in figures.get("cells", {}).values() for st in STORES)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
