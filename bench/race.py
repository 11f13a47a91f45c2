"""The peer race (``tokenwire bench --peers``): the same load on tokenwire and on each peer.

tokenwire (``bench.lab.spawn_server``, caps raised) and every available peer
(``bench.peers.PEERS``; a peer whose module or ``node_modules`` is missing is skipped with a
line saying so) run at once on free loopback ports, optionally pinned to one core with the
load client on the other (``--pin``). Each cell (a transport at ``c`` concurrent streams, or
one stream fanned out to N SSE readers) runs on every target in turn, round-robin, repeated;
every stream is read with ``bench.overhead``'s readers (the clients' decoders) and checked
with ``StreamCheck``. Medians per target and cell, the ratio tokenwire / peer, a table,
``race.json`` and ``race.png`` in ``bench/results/<time>-race/``. docs/bench.md, "The peer
race".
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.lab import (
    REPO,
    Server,
    TreeCPU,
    free_port,
    raise_nofile,
    spawn_server,
    stop_server,
    wait_idle,
    wait_ready,
)
from bench.overhead import (
    CellSpec,
    CellTally,
    background_load,
    http_failure,
    read_sse_body,
    run_cell,
    tally_stream,
    warm_pool,
)
from bench.peers import PEERS, write_pieces
from bench.probe import PATH as PROBE_PATH
from bench.report import Load
from bench.stats import median_of_known, or_dash, percentile, print_table
from clients.check import StreamCheck
from wire import TRANSPORTS

TOKENWIRE = "tokenwire"
FANOUT = "fanout"
#: The fairness cell: ``fair_streams`` unpaced SSE streams at once, Jain's index watched.
FAIR = "fair"
#: The core the servers are pinned to with ``--pin``; the load client takes the other one.
SERVER_CPU = 0
#: The slowest delivery a cell waits for before it is cut (tokens/s over the cell).
SLOWEST_TOKENS_PER_S = 2000.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PacedPlan:
    """The realistic pace: Locust (``bench/locustfile.py``, as ``tokenwire bench`` runs it)
    on every target in turn, one transport at a time."""

    transports: tuple[str, ...]
    users: int
    """Concurrent streams: each user reads one stream after another."""
    pace: float
    """tokens/s of each stream (no jitter)."""
    tokens: int
    run_s: float
    """Streams start for this long; those in flight finish."""
    spawn_rate: float

    def load(self) -> Load:
        # ttft 0: the first token's time is the server's own (the probe measures it).
        return Load(
            users=self.users,
            spawn_rate=self.spawn_rate,
            run_s=self.run_s,
            tokens=self.tokens,
            pace=self.pace,
            ttft_ms=0,
        )

    @property
    def nominal_tokens_per_s(self) -> float:
        return self.users * self.pace


@dataclass(frozen=True, slots=True, kw_only=True)
class RacePlan:
    """What every target is put through, the same for each."""

    transports: tuple[str, ...]
    fanout: bool
    concurrency: int
    """Concurrent streams of a transport cell (one stream per lane)."""
    tokens: int
    """Tokens per stream of a transport cell."""
    readers: int
    """SSE readers of the one fan-out stream."""
    fanout_tokens: int
    fanout_ttft_ms: float
    """The fan-out stream's first token waits this long, so the readers are in place."""
    repeat: int
    warmup: bool
    settle_s: float
    """Pause before each cell once the target has no live stream (tokenwire's retention
    frees the last cell's logs meanwhile)."""
    cell_timeout_s: float
    """A cell's time limit at least; a big cell gets more (:meth:`timeout_s`)."""
    fair_streams: int = 0
    """The fairness cell's concurrent SSE streams (0: no such cell)."""
    fair_tokens: int = 0
    fair_pace: float = 10.0
    """tokens/s of each fairness stream: the goal is at a realistic pace (1000 x 50 tokens/s
    would be more than this 2-core machine's load client and server can share)."""
    paced: PacedPlan | None = None

    @property
    def scenarios(self) -> tuple[str, ...]:
        """The full-speed cells."""
        return (
            *self.transports,
            *((FANOUT,) if self.fanout else ()),
            *((FAIR,) if self.fair_streams else ()),
        )

    def spec(self, scenario: str) -> CellSpec:
        """A streams cell's shape (not the fan-out's)."""
        if scenario == FAIR:
            return CellSpec("sse", self.fair_streams, self.fair_tokens, 1)
        return CellSpec(scenario, self.concurrency, self.tokens, 1)

    def expected_tokens(self, scenario: str) -> int:
        if scenario == FANOUT:
            return self.readers * self.fanout_tokens
        spec = self.spec(scenario)
        return spec.concurrency * spec.tokens

    def timeout_s(self, scenario: str) -> float:
        """A cell's time limit: ``cell_timeout_s``, or the time its tokens take at
        ``SLOWEST_TOKENS_PER_S`` if longer. (A fixed 60 s cut FastAPI's fan-out of 1000
        tokens to 1000 readers: sse-starlette delivers the readers in lockstep at about
        17k tokens/s, so all of them were one event short of ``done`` when 60 s ran out.)"""
        return max(self.cell_timeout_s, self.expected_tokens(scenario) / SLOWEST_TOKENS_PER_S)


PLANS = {
    # The test suite's: a few streams of a few tokens, once.
    "quick": RacePlan(
        transports=TRANSPORTS,
        fanout=True,
        concurrency=4,
        tokens=20,
        readers=8,
        fanout_tokens=20,
        fanout_ttft_ms=300,
        repeat=1,
        warmup=False,
        settle_s=0.0,
        cell_timeout_s=30.0,
        fair_streams=8,
        fair_tokens=10,
        fair_pace=50,
        paced=PacedPlan(transports=("sse",), users=4, pace=50, tokens=10, run_s=0.5, spawn_rate=40),
    ),
    # 100 concurrent streams of 2000 tokens per transport (bench.overhead's c=100 cell), and
    # one 200-token stream read by 1000 readers: 200k tokens per cell, 3 rounds.
    "full": RacePlan(
        transports=TRANSPORTS,
        fanout=True,
        concurrency=100,
        tokens=2000,
        readers=1000,
        fanout_tokens=200,
        fanout_ttft_ms=2000,
        repeat=3,
        warmup=True,
        settle_s=1.5,
        cell_timeout_s=60.0,
        # The fairness goal: 1000 concurrent streams of 100 tokens at 10 tokens/s, Jain's
        # index >= 0.95.
        fair_streams=1000,
        fair_tokens=100,
        fair_pace=10,
        # The realistic pace: 200 streams of 250 tokens at 50 tokens/s (10k tokens/s in
        # all), 20 s per transport and target.
        paced=PacedPlan(
            transports=TRANSPORTS, users=200, pace=50, tokens=250, run_s=20, spawn_rate=100
        ),
    ),
}


def plan_of(ns: argparse.Namespace) -> RacePlan:
    """The preset with the command line's overrides."""
    base = PLANS["quick" if ns.quick else "full"]
    transports = tuple(t for t in ns.transports if t in TRANSPORTS)
    overrides: dict[str, Any] = {
        "transports": transports if ns.scenario in ("streams", "all") else (),
        "fanout": ns.scenario in ("fanout", "all"),
    }
    for name, value in (
        ("concurrency", ns.users),
        ("tokens", ns.tokens),
        ("readers", ns.readers),
        ("repeat", ns.repeat),
    ):
        if value is not None:
            if value < 1:
                raise SystemExit(f"--peers: {name} must be at least 1")
            overrides[name] = value
    if ns.tokens is not None:
        overrides["fanout_tokens"] = ns.tokens
    if ns.scenario not in ("fair", "all"):
        overrides["fair_streams"] = 0
    paced = base.paced
    if paced is not None and ns.scenario in ("paced", "all"):
        chosen = tuple(t for t in paced.transports if t in ns.transports)
        paced = dataclasses.replace(paced, transports=chosen)
        for name, value in (
            ("users", ns.paced_users),
            ("pace", ns.pace),
            ("run_s", ns.run_time),
        ):
            if value is not None:
                if value <= 0:
                    raise SystemExit(f"--peers: the paced {name} must be above 0")
                paced = dataclasses.replace(paced, **{name: value})
        overrides["paced"] = paced if paced.transports else None
    else:
        overrides["paced"] = None
    return dataclasses.replace(base, **overrides)


# ---------------------------------------------------------------------------------------
# The targets


@dataclass(slots=True)
class Target:
    """A server in the race: tokenwire or a peer, with its process tree's CPU."""

    name: str
    server: Server
    cpu: TreeCPU


def missing(argv: Sequence[str]) -> str | None:
    """Why a peer's command cannot run here (None when it can): its Python module, or its
    Node script and ``node_modules``, or ``node`` itself."""
    if "-m" in argv:
        module = argv[argv.index("-m") + 1]
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        return None if found else f"module {module} is missing"
    script = Path(argv[1])
    if shutil.which(argv[0]) is None:
        return f"{argv[0]} is not installed"
    if not script.is_file():
        return f"{script.relative_to(REPO) if script.is_relative_to(REPO) else script} is missing"
    if not (script.parent / "node_modules").is_dir():
        folder = script.parent
        where = folder.relative_to(REPO) if folder.is_relative_to(REPO) else folder
        return f"{where}/node_modules is missing (make express-deps)"
    return None


def pinned(argv: list[str], pin: bool) -> list[str]:
    return ["taskset", "-c", str(SERVER_CPU), *argv] if pin else argv


def start_peer(name: str, pieces: Path, out: Path, pin: bool) -> Server:
    """Start one peer on a free loopback port, its output in ``out/<name>.server.log``."""
    port = free_port()
    log_path = out / "servers" / f"{name}.server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            pinned(PEERS[name]("127.0.0.1", port, pieces), pin),
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return Server(f"http://127.0.0.1:{port}", proc.pid, proc, log_path)


def start_targets(
    names: Sequence[str], plan: RacePlan, out: Path, pin: bool
) -> tuple[list[Target], dict[str, str]]:
    """tokenwire and each peer that can run, ready; the skipped peers with the reason."""
    cap = max(5000, 2 * max(plan.concurrency, plan.readers))
    tokens_cap = max(4096, plan.tokens, plan.fanout_tokens, plan.fair_tokens)
    # With paced cells, tokenwire runs with the latency probe (bench/probe.py; off until a
    # paced cell switches it on).
    module = "bench.probe" if plan.paced is not None else "tokenwire"
    tw = spawn_server(max(cap, plan.fair_streams * 2), tokens_cap, 1.0, [], module=module)
    servers: list[tuple[str, Server]] = [(TOKENWIRE, tw)]
    skipped: dict[str, str] = {}
    targets = []
    try:
        if pin:
            subprocess.run(
                ["taskset", "-a", "-p", "-c", str(SERVER_CPU), str(tw.pid)],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        (out / "servers").mkdir(exist_ok=True)
        pieces = out / "servers" / "pieces.json"
        write_pieces(pieces)
        for name in names:
            why = missing(PEERS[name]("127.0.0.1", 0, pieces))
            if why is not None:
                skipped[name] = why
                print(f"peer {name}: skipped, {why}", flush=True)
                continue
            servers.append((name, start_peer(name, pieces, out, pin)))
        for name, server in servers:
            try:
                wait_ready(server, 30.0)
            except SystemExit as e:
                if name == TOKENWIRE:
                    raise
                stop_server(server)
                skipped[name] = f"did not start: {e}"
                print(f"peer {name}: skipped, it did not start ({e})", flush=True)
                continue
            assert server.pid is not None
            targets.append(Target(name, server, TreeCPU(server.pid)))
    except BaseException:
        for _, server in servers:
            stop_server(server)
        raise
    return targets, skipped


def stop_targets(targets: Sequence[Target], out: Path) -> dict[str, int | None]:
    codes = {}
    for t in targets:
        codes[t.name] = stop_server(t.server)
        log = t.server.log_path
        if log is not None and log.parent != out and log.exists():
            shutil.move(log, out / f"{t.name}.server.log")
    return codes


# ---------------------------------------------------------------------------------------
# One cell run on one target


@dataclass(slots=True)
class RaceRun:
    """One run of one cell on one target."""

    streams: int
    tokens: int
    tokens_expected: int
    wall_s: float
    tokens_per_s: float
    server_cpu_s: float
    cpu_window_s: float
    """The time over which ``server_cpu_s`` was read (the cell, connection warm-up and the
    fan-out's wait for its first token included)."""
    failures: int
    failure_kinds: dict[str, int]
    failure_examples: dict[str, str]
    jain: float | None = None
    """Jain's index over the streams' tokens while all were under way (streams cells)."""

    @property
    def cpu_ms_per_1k(self) -> float | None:
        return 1e6 * self.server_cpu_s / self.tokens if self.tokens else None


async def read_fanout_sse(
    session: aiohttp.ClientSession,
    url: str,
    check: StreamCheck,
    tally: CellTally,
    first_token_ns: list[int],
) -> None:
    """``GET /api/streams/{id}/sse`` from the start, read as ``bench.overhead.read_sse``
    reads a create-and-stream response."""
    async with session.get(url) as resp:
        await read_sse_body(resp, check, tally, first_token_ns)


async def run_fanout(
    session: aiohttp.ClientSession, base: str, plan: RacePlan, run_no: int
) -> tuple[CellTally, float]:
    """One stream, ``plan.readers`` SSE readers from the start; the tally and the wall time
    from the first token received to the last reader's end."""
    await warm_pool(session, base, plan.readers)
    tally = CellTally()
    body = {
        "prompt": f"race fanout run={run_no}",
        "max_tokens": plan.fanout_tokens,
        "params": {"tokens_per_s": 0, "ttft_ms": plan.fanout_ttft_ms},
    }
    async with session.post(
        f"{base}/api/streams", data=orjson.dumps(body), headers={"Content-Type": "application/json"}
    ) as resp:
        if resp.status != 201:
            err = await http_failure(resp)
            tally.streams = plan.readers
            tally.failures["create"] = plan.readers
            tally.examples["create"] = str(err)
            return tally, 0.0
        stream_id = (await resp.json())["id"]
    url = f"{base}/api/streams/{stream_id}/sse"
    first: list[int] = []
    ends: list[int] = []

    async def reader() -> None:
        check = StreamCheck(
            tally.report, sent_ns=time.time_ns(), max_tokens=plan.fanout_tokens, stream_id=stream_id
        )
        try:
            read = read_fanout_sse(session, url, check, tally, first)
            await tally_stream(tally, check, plan.fanout_tokens, read)
        finally:
            ends.append(time.time_ns())

    tasks = [asyncio.create_task(reader()) for _ in range(plan.readers)]
    _, pending = await asyncio.wait(tasks, timeout=plan.timeout_s(FANOUT))
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    wall = (max(ends) - min(first)) / 1e9 if first and ends else 0.0
    return tally, wall


async def run_once(target: Target, scenario: str, plan: RacePlan, run_no: int) -> RaceRun:
    """One cell run on one target, from an idle server and a fresh client session."""
    base = target.server.base
    await asyncio.to_thread(wait_idle, base, 30.0, 0.05)
    if plan.settle_s:
        await asyncio.sleep(plan.settle_s)
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        cpu0 = target.cpu.seconds()
        t0 = time.perf_counter()
        if scenario == FANOUT:
            tally, wall = await run_fanout(session, base, plan, run_no)
            cpu = target.cpu.seconds() - cpu0
            window = time.perf_counter() - t0
            return RaceRun(
                streams=tally.streams,
                tokens=tally.tokens,
                tokens_expected=plan.expected_tokens(FANOUT),
                wall_s=wall,
                tokens_per_s=tally.tokens / wall if wall > 0 else 0.0,
                server_cpu_s=cpu,
                cpu_window_s=window,
                failures=sum(tally.failures.values()),
                failure_kinds=dict(tally.failures.most_common()),
                failure_examples=tally.examples,
            )
        spec = plan.spec(scenario)
        # The server's CPU is read here, over its process tree (gunicorn's workers too).
        limit = plan.timeout_s(scenario)
        # The fairness cell's streams start together: each one's first token waits until
        # all of them were created (else the first ones can end before the last begin).
        fair = scenario == FAIR
        ttft = min(10_000.0, 1000.0 + 3.0 * spec.concurrency) if fair else 0.0
        rate = plan.fair_pace if fair else 0.0
        limit += ttft / 1000 + (spec.tokens / rate if rate else 0.0)
        r = await run_cell(
            session, base, spec, rate, limit, None, run_no, fairness=True, ttft_ms=ttft
        )
        cpu = target.cpu.seconds() - cpu0
        window = time.perf_counter() - t0
    return RaceRun(
        streams=r.streams,
        tokens=r.tokens,
        tokens_expected=plan.expected_tokens(scenario),
        wall_s=r.wall_s,
        tokens_per_s=r.tokens_per_s,
        server_cpu_s=cpu,
        cpu_window_s=window,
        failures=r.failures,
        failure_kinds=r.failure_kinds,
        failure_examples=r.failure_examples,
        jain=r.jain,
    )


async def warm_up(target: Target, scenario: str, plan: RacePlan) -> None:
    """A few short streams first (the JIT, the pools, the imports), not measured."""
    small = dataclasses.replace(
        plan,
        concurrency=4,
        tokens=200,
        readers=min(plan.readers, 50),
        fanout_tokens=50,
        fanout_ttft_ms=300,
        settle_s=0.0,
        fair_streams=min(plan.fair_streams, 50),
        fair_tokens=20,
    )
    await run_once(target, scenario, small, -1)


# ---------------------------------------------------------------------------------------
# The realistic pace: Locust on one target


class _NoProgress:
    """``bench.runner.run_locust``'s progress bar, silent (the race prints its own lines)."""

    def add_task(self, *_args: Any, **_kwargs: Any) -> int:
        return 0

    def update(self, *_args: Any, **_kwargs: Any) -> None:
        return None


def probe_call(base: str, method: str) -> dict[str, Any]:
    """tokenwire's latency probe (``bench/probe.py``): POST on, GET read, DELETE off."""
    req = urllib.request.Request(f"{base}{PROBE_PATH}", method=method)
    with urllib.request.urlopen(req, timeout=30) as resp:
        doc: dict[str, Any] = json.loads(resp.read())
    return doc


@dataclass(slots=True)
class PacedRun:
    """One Locust run of one transport on one target at the realistic pace."""

    streams: int
    failed_streams: int
    tokens: int
    tokens_per_s: float | None
    server_cpu_s: float | None
    cpu_ms_per_1k: float | None
    cpu_pct_nominal: float | None
    """CPU per token x the plan's nominal tokens/s (users x pace), as % of one core: what
    the steady state costs, without the ramp and the tail of the run."""
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    """Locust's transport latency (receive time - the event's ``t``): client and loopback
    included."""
    ttft_p50_ms: float | None
    client_cpu_pct: float | None
    other_cpu_pct: float | None
    exit_code: int | None
    failures: list[dict[str, Any]]
    server_latency_us: dict[str, float | None] = field(default_factory=dict)
    """tokenwire only (the probe): p50, p99, max, n of append-to-write, microseconds."""
    first_token_us: dict[str, float | None] = field(default_factory=dict)
    """tokenwire only (the probe): p50, p99, max, n of new stream to first token's write."""
    files: dict[str, str] = field(default_factory=dict)


def summary_us(values_ns: Sequence[int]) -> dict[str, float | None]:
    ordered = sorted(values_ns)
    return {
        "p50": None if not ordered else (percentile(ordered, 50) or 0) / 1e3,
        "p99": None if not ordered else (percentile(ordered, 99) or 0) / 1e3,
        "max": ordered[-1] / 1e3 if ordered else None,
        "n": float(len(ordered)),
    }


def paced_once(target: Target, transport: str, plan: PacedPlan, out: Path, run_no: int) -> PacedRun:
    """One Locust run (``bench.runner.run_locust``: the locustfile's user of the transport,
    the clients' decoders and StreamCheck) on one target, from an idle server; tokenwire's
    with the latency probe on."""
    from bench.runner import run_locust  # (not at the top: runner imports this module)

    base = target.server.base
    wait_idle(base, 30.0, 0.05)
    probed = target.name == TOKENWIRE
    if probed:
        probe_call(base, "POST")
    name = f"paced-{transport}-{target.name}-{run_no + 1}"
    load = plan.load()
    r = run_locust(
        argparse.Namespace(locust_workers=0, workers=1),
        target.server,
        scenario="paced",
        transport=transport,
        load=load,
        out=out,
        progress=_NoProgress(),
        server_cpu=target.cpu.seconds,
        name=name,
    )
    latency: dict[str, float | None] = {}
    first: dict[str, float | None] = {}
    if probed:
        doc = probe_call(base, "GET")
        probe_call(base, "DELETE")
        latency = summary_us(doc["latency_ns"])
        first = summary_us(doc["first_token_ns"])
    lat = r.metric("transport_latency")
    ttft = r.metric("ttft")
    cpu_per_token = r.server_cpu_s / r.tokens if r.server_cpu_s is not None and r.tokens else None
    return PacedRun(
        streams=r.streams,
        failed_streams=r.failed_streams,
        tokens=r.tokens,
        tokens_per_s=r.tokens_per_s,
        server_cpu_s=r.server_cpu_s,
        cpu_ms_per_1k=r.cpu_ms_per_1k_tokens,
        cpu_pct_nominal=None
        if cpu_per_token is None
        else 100 * cpu_per_token * plan.nominal_tokens_per_s,
        latency_p50_ms=lat.p50 if lat else None,
        latency_p99_ms=lat.p99 if lat else None,
        ttft_p50_ms=ttft.p50 if ttft else None,
        client_cpu_pct=r.client_cpu_pct,
        other_cpu_pct=r.other_cpu_pct,
        exit_code=r.exit_code,
        failures=r.failures,
        server_latency_us=latency,
        first_token_us=first,
        files=r.files,
    )


@dataclass(slots=True)
class PacedCell:
    """One target at the realistic pace on one transport: medians over the runs."""

    target: str
    transport: str
    streams: int
    failed_streams: int
    tokens: int
    tokens_per_s: float | None
    cpu_ms_per_1k: float | None
    cpu_pct_nominal: float | None
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    ttft_p50_ms: float | None
    client_cpu_pct: float | None
    other_cpu_pct: float | None
    server_latency_p99_us: float | None
    first_token_p50_us: float | None
    first_token_p99_us: float | None
    cpu_ratio: float | None = None
    """tokenwire's CPU per token / this target's (None for tokenwire)."""
    runs: list[PacedRun] = field(default_factory=list)


def aggregate_paced(target: str, transport: str, runs: list[PacedRun]) -> PacedCell:
    def med(values: Iterable[float | None]) -> float | None:
        return median_of_known(values)

    return PacedCell(
        target=target,
        transport=transport,
        streams=sum(r.streams for r in runs),
        failed_streams=sum(r.failed_streams for r in runs),
        tokens=sum(r.tokens for r in runs),
        tokens_per_s=med(r.tokens_per_s for r in runs),
        cpu_ms_per_1k=med(r.cpu_ms_per_1k for r in runs),
        cpu_pct_nominal=med(r.cpu_pct_nominal for r in runs),
        latency_p50_ms=med(r.latency_p50_ms for r in runs),
        latency_p99_ms=med(r.latency_p99_ms for r in runs),
        ttft_p50_ms=med(r.ttft_p50_ms for r in runs),
        client_cpu_pct=med(r.client_cpu_pct for r in runs),
        other_cpu_pct=med(r.other_cpu_pct for r in runs),
        server_latency_p99_us=med(r.server_latency_us.get("p99") for r in runs),
        first_token_p50_us=med(r.first_token_us.get("p50") for r in runs),
        first_token_p99_us=med(r.first_token_us.get("p99") for r in runs),
        runs=runs,
    )


def add_paced_ratios(cells: Sequence[PacedCell]) -> None:
    ours = {c.transport: c for c in cells if c.target == TOKENWIRE}
    for c in cells:
        tw = ours.get(c.transport)
        if c.target != TOKENWIRE and tw is not None and tw.cpu_ms_per_1k and c.cpu_ms_per_1k:
            c.cpu_ratio = tw.cpu_ms_per_1k / c.cpu_ms_per_1k


#: The paced table (fits 100 columns).
PACED_COLUMNS = (
    "transport",
    "target",
    "CPU%",
    "lat p50/p99 ms",
    "srv p99 µs",
    "1st tok µs",
    "failed",
    "tw/p CPU",
)


def paced_label(transport: str, plan: PacedPlan) -> str:
    return f"{transport} {plan.users}x{plan.pace:g}/s"


def paced_rows(cells: Sequence[PacedCell], plan: PacedPlan) -> list[list[str]]:
    """Per transport and target: CPU % at the pace, Locust's latency, the probe's server
    latency p99 and first token p50/p99 (tokenwire), failed streams, CPU ratio."""
    del plan  # (the plan is in the table's title)
    return [
        [
            c.transport,
            c.target,
            or_dash(c.cpu_pct_nominal, ".1f"),
            f"{or_dash(c.latency_p50_ms, '.1f')}/{or_dash(c.latency_p99_ms, '.1f')}",
            or_dash(c.server_latency_p99_us, ".0f"),
            f"{or_dash(c.first_token_p50_us, '.0f')}/{or_dash(c.first_token_p99_us, '.0f')}"
            if c.first_token_p50_us is not None
            else "-",
            str(c.failed_streams),
            or_dash(c.cpu_ratio, ".2f"),
        ]
        for c in cells
    ]


# ---------------------------------------------------------------------------------------
# The goals (issue 13) and the warnings


def _verdict(ok: bool | None) -> str:
    return "no figure" if ok is None else "met" if ok else "MISSED"


def goal_lines(cells: Sequence[RaceCell], paced: Sequence[PacedCell], plan: RacePlan) -> list[str]:
    """Each goal with the figures it is judged on and met / MISSED."""
    by = {(c.target, c.scenario): c for c in cells}
    lines = []

    def ratio(peer: str, scenario: str, floor: float, what: str) -> None:
        c = by.get((peer, scenario))
        if c is None or c.tokens_per_s_ratio is None:
            return
        ok = c.tokens_per_s_ratio >= floor
        lines.append(
            f"goal {what}: tokenwire / {peer} tokens/s on {scenario_label(scenario, plan)} "
            f">= {floor:g}: {c.tokens_per_s_ratio:.2f} ({_verdict(ok)})"
        )

    for t in plan.transports:
        ratio("aiohttp", t, 0.85, "full speed")
    ratio("fastapi", "sse", 2.5, "full speed")
    ratio("fastapi", "ws", 1.5, "full speed")
    ratio("aiohttp", FANOUT, 1.0, "fan-out")
    if (tw := by.get((TOKENWIRE, "poll"))) is not None:
        fast = tw.tokens_per_s >= 40_000
        lines.append(
            f"goal long polling: >= 40,000 tokens/s at c={plan.concurrency}: "
            f"{tw.tokens_per_s:,.0f} ({_verdict(fast)})"
        )
    if (tw := by.get((TOKENWIRE, FAIR))) is not None:
        fair = None if tw.jain is None else tw.jain >= 0.95
        lines.append(
            f"goal fairness: Jain's index >= 0.95 at {plan.fair_streams} streams: "
            f"{or_dash(tw.jain, '.3f')} ({_verdict(fair)})"
        )
    ours = [c for c in paced if c.target == TOKENWIRE]
    if ours and plan.paced is not None:
        p = plan.paced

        def each(value: Callable[[PacedCell], float | None], fmt: str, limit: float) -> str:
            figures = [(c.transport, value(c)) for c in ours]
            known = [v for _, v in figures if v is not None]
            ok = None if not known else max(known) <= limit
            text = ", ".join(f"{t} {or_dash(v, fmt)}" for t, v in figures)
            return f"{text} ({_verdict(ok)})"

        lines.append(
            f"goal paced CPU: {p.users} streams at {p.pace:g} tokens/s, server CPU <= 25% of "
            f"a core: {each(lambda c: c.cpu_pct_nominal, '.1f', 25)} %"
        )
        lines.append(
            "goal paced latency: p99 append-to-write <= 300 us of server time: "
            f"{each(lambda c: c.server_latency_p99_us, '.0f', 300)} us"
        )
        lines.append(
            "goal first token: new stream to its first token's write <= 300 us of server "
            f"time (median): {each(lambda c: c.first_token_p50_us, '.0f', 300)} us"
        )
    return lines


def warning_lines(
    header: Sequence[str], cells: Sequence[RaceCell], paced: Sequence[PacedCell], plan: RacePlan
) -> list[str]:
    """Every warning of the run, for the terminal and the report alike."""
    warnings = [
        "warning: " + line.split(" -- WARNING: ", 1)[1]
        for line in header
        if " -- WARNING: " in line
    ]
    if not plan.warmup:
        warnings.append(
            "warning: the quick plan checks that every target serves every cell whole; it is "
            "not a measurement, and its goal figures mean nothing"
        )
    elif plan.repeat < 3:
        warnings.append(f"warning: {plan.repeat} round(s): medians of fewer than 3 runs are noisy")
    if busy := [f"{c.target} {c.transport}" for c in paced if (c.other_cpu_pct or 0) > 25]:
        warnings.append(
            "warning: other CPU above 25% of a core during the paced runs of "
            + ", ".join(busy)
            + ": these figures are skewed"
        )
    if full := [f"{c.target} {c.transport}" for c in paced if (c.client_cpu_pct or 0) > 90]:
        warnings.append(
            "warning: the Locust client used more than 90% of a core in the paced runs of "
            + ", ".join(full)
            + ": the load generator, not the server, may have set the pace"
        )
    return warnings


# ---------------------------------------------------------------------------------------
# Figures


@dataclass(slots=True)
class RaceCell:
    """One target in one cell: medians over the runs, failures and tokens summed."""

    target: str
    scenario: str
    tokens_per_s: float
    cpu_ms_per_1k: float | None
    server_cpu_pct: float | None
    streams: int
    tokens: int
    tokens_expected: int
    failures: int
    failure_kinds: dict[str, int]
    failure_examples: dict[str, str]
    tokens_per_s_ratio: float | None = None
    """tokenwire's tokens/s / this target's (None for tokenwire itself)."""
    cpu_ratio: float | None = None
    """tokenwire's CPU per token / this target's."""
    jain: float | None = None
    """Median of the runs' Jain's index (streams cells)."""
    runs: list[RaceRun] = field(default_factory=list)


def aggregate(target: str, scenario: str, runs: list[RaceRun]) -> RaceCell:
    kinds: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for r in runs:
        kinds.update(r.failure_kinds)
        for k, v in r.failure_examples.items():
            examples.setdefault(k, v)
    cpu = [r.cpu_ms_per_1k for r in runs if r.cpu_ms_per_1k is not None]
    pct = [100 * r.server_cpu_s / r.cpu_window_s for r in runs if r.cpu_window_s > 0]
    return RaceCell(
        target=target,
        scenario=scenario,
        tokens_per_s=statistics.median(r.tokens_per_s for r in runs),
        cpu_ms_per_1k=statistics.median(cpu) if cpu else None,
        server_cpu_pct=statistics.median(pct) if pct else None,
        streams=sum(r.streams for r in runs),
        tokens=sum(r.tokens for r in runs),
        tokens_expected=sum(r.tokens_expected for r in runs),
        failures=sum(r.failures for r in runs),
        failure_kinds=dict(kinds.most_common()),
        failure_examples=examples,
        jain=median_of_known(r.jain for r in runs),
        runs=runs,
    )


def add_ratios(cells: Sequence[RaceCell]) -> None:
    """tokenwire / peer, per cell: above 1 in tokens/s, below 1 in CPU, means tokenwire wins."""
    ours = {c.scenario: c for c in cells if c.target == TOKENWIRE}
    for c in cells:
        tw = ours.get(c.scenario)
        if c.target == TOKENWIRE or tw is None:
            continue
        c.tokens_per_s_ratio = tw.tokens_per_s / c.tokens_per_s if c.tokens_per_s else None
        if tw.cpu_ms_per_1k is not None and c.cpu_ms_per_1k:
            c.cpu_ratio = tw.cpu_ms_per_1k / c.cpu_ms_per_1k


def scenario_label(scenario: str, plan: RacePlan) -> str:
    if scenario == FANOUT:
        return f"fan-out x{plan.readers}"
    if scenario == FAIR:
        return f"fair c={plan.fair_streams}"
    return f"{scenario} c={plan.concurrency}"


#: The full-speed table (fits 100 columns): tokens whole or not is in ``failed`` and the
#: lines after the table.
COLUMNS = (
    "cell",
    "target",
    "tok/s",
    "ms/1k tok",
    "CPU%",
    "failed",
    "Jain",
    "tw/p tok/s",
    "tw/p CPU",
)


def failed_text(failures: int, tokens: int, expected: int) -> str:
    """The failed streams, starred when tokens are missing (the lines after the table
    say how many)."""
    return str(failures) if tokens == expected else f"{failures}*"


def table_rows(cells: Sequence[RaceCell], plan: RacePlan) -> list[list[str]]:
    return [
        [
            scenario_label(c.scenario, plan),
            c.target,
            f"{c.tokens_per_s:,.0f}",
            or_dash(c.cpu_ms_per_1k, ".1f"),
            or_dash(c.server_cpu_pct, ".0f"),
            failed_text(c.failures, c.tokens, c.tokens_expected),
            or_dash(c.jain, ".3f"),
            or_dash(c.tokens_per_s_ratio, ".2f"),
            or_dash(c.cpu_ratio, ".2f"),
        ]
        for c in cells
    ]


def ratio_rows(cells: Sequence[RaceCell], plan: RacePlan, peers: Sequence[str]) -> list[list[str]]:
    """Per cell, per peer: ``tok/s ratio (CPU ratio)``."""
    by = {(c.scenario, c.target): c for c in cells}
    rows = []
    for scenario in plan.scenarios:
        row = [scenario_label(scenario, plan)]
        for p in peers:
            c = by.get((scenario, p))
            row.append(
                "-"
                if c is None
                else f"{or_dash(c.tokens_per_s_ratio, '.2f')} ({or_dash(c.cpu_ratio, '.2f')})"
            )
        rows.append(row)
    return rows


def _bars(
    ax: Any,
    groups: Sequence[str],
    targets: Sequence[str],
    value: Callable[[str, str], float | None],
    colour_of: Callable[[str], str],
) -> None:
    """Bars per group (a cell) and target: the group's transport colour, one shade per
    target (tokenwire darkest), the target's initial on each bar."""
    width = 0.8 / max(1, len(targets))
    for i, name in enumerate(targets):
        xs = [k + (i - (len(targets) - 1) / 2) * width for k in range(len(groups))]
        ys = [value(g, name) or 0.0 for g in groups]
        alpha = 1.0 - 0.7 * i / max(1, len(targets) - 1) if len(targets) > 1 else 1.0
        bars = ax.bar(xs, ys, width, color=[colour_of(g) for g in groups], alpha=alpha)
        ax.bar_label(bars, labels=[name[:2] if y else "" for y in ys], fontsize=7)
    ax.grid(axis="y", alpha=0.3)


def plot(path: Path, cells: Sequence[RaceCell], plan: RacePlan, targets: Sequence[str]) -> Path:
    """Grouped bars per cell, one per target: tokens/s, and server CPU per 1000 tokens."""
    from bench.report import _plt, transport_colour

    plt = _plt()
    by = {(c.scenario, c.target): c for c in cells}
    scenarios = plan.scenarios
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 2 * len(scenarios)), 8), sharex=True)
    metrics: list[tuple[str, Callable[[RaceCell], float | None]]] = [
        ("tokens/s (median)", lambda c: c.tokens_per_s),
        ("server CPU ms per 1000 tokens (median)", lambda c: c.cpu_ms_per_1k),
    ]
    for ax, (title, value) in zip(axes, metrics, strict=True):
        _bars(
            ax,
            scenarios,
            targets,
            lambda s, t, value=value: value(by[(s, t)]) if (s, t) in by else None,  # type: ignore[misc]
            lambda s: transport_colour("sse" if s in (FANOUT, FAIR) else s),
        )
        ax.set_title(title)
    axes[1].set_xticks(range(len(scenarios)), [scenario_label(s, plan) for s in scenarios])
    fig.suptitle(
        f"full speed: median of {plan.repeat} run(s)\nbars per target, left to right: "
        + ", ".join(targets)
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_paced(
    path: Path, cells: Sequence[PacedCell], plan: PacedPlan, targets: Sequence[str]
) -> Path:
    """Per transport and target at the realistic pace: server CPU (% of a core at the
    nominal rate) and Locust's transport latency p99."""
    from bench.report import _plt, transport_colour

    plt = _plt()
    by = {(c.transport, c.target): c for c in cells}
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 2 * len(plan.transports)), 8), sharex=True)
    metrics: list[tuple[str, Callable[[PacedCell], float | None]]] = [
        (
            f"server CPU, % of a core at {plan.users} x {plan.pace:g} tokens/s",
            lambda c: c.cpu_pct_nominal,
        ),
        (
            "transport latency p99, ms (Locust: client and loopback included)",
            lambda c: c.latency_p99_ms,
        ),
    ]
    for ax, (title, value) in zip(axes, metrics, strict=True):
        _bars(
            ax,
            plan.transports,
            targets,
            lambda s, t, value=value: value(by[(s, t)]) if (s, t) in by else None,  # type: ignore[misc]
            transport_colour,
        )
        ax.set_title(title)
    axes[1].set_xticks(range(len(plan.transports)), list(plan.transports))
    fig.suptitle(
        "at a realistic pace (Locust)\nbars per target, left to right: " + ", ".join(targets)
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------
# Main


def versions() -> dict[str, str]:
    """The stacks' versions that are installed here (Python packages, Node, Express, ws)."""
    found = {"python": platform.python_version()}
    for pkg in ("aiohttp", "fastapi", "sse-starlette", "uvicorn", "flask", "gunicorn", "gevent"):
        try:
            found[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    try:
        found["node"] = subprocess.run(
            ["node", "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    lock = Path(PEERS["express"]("h", 0, Path())[1]).parent / "package-lock.json"
    if lock.exists():
        packages = json.loads(lock.read_text()).get("packages", {})
        for pkg in ("express", "ws"):
            if (v := packages.get(f"node_modules/{pkg}", {}).get("version")) is not None:
                found[pkg] = v
    return found


def peer_names(text: str) -> list[str]:
    if text == "all":
        return list(PEERS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names or (bad := [n for n in names if n not in PEERS]):
        raise SystemExit(
            f"--peers: {', '.join(bad) or 'no name'}? "
            f"a comma-separated subset of {', '.join(PEERS)}"
        )
    return names


NOT_FOR_RACE = ("stress", "host", "server_pid", "spawn_rate", "stress_users")


async def race(
    targets: Sequence[Target],
    plan: RacePlan,
    header: Callable[[float], list[str]],
    out: Path,
) -> tuple[dict[tuple[str, str], list[RaceRun]], dict[tuple[str, str], list[PacedRun]], list[str]]:
    """Every cell on every target in turn (the order rotated each round), ``repeat`` times:
    the full-speed cells, then the paced ones (Locust, one run per transport and target)."""
    background = await background_load(1.0)
    lines = header(background)
    for line in lines:
        print(line, flush=True)
    runs: dict[tuple[str, str], list[RaceRun]] = {}
    paced: dict[tuple[str, str], list[PacedRun]] = {}
    if plan.warmup:
        for t in targets:
            for scenario in plan.scenarios:
                await warm_up(t, scenario, plan)
    for rep in range(plan.repeat):
        order = [*targets[rep % len(targets) :], *targets[: rep % len(targets)]]
        for scenario in plan.scenarios:
            for t in order:
                r = await run_once(t, scenario, plan, rep)
                runs.setdefault((t.name, scenario), []).append(r)
                print(
                    f"  run {rep + 1}/{plan.repeat} {scenario_label(scenario, plan):<17} "
                    f"{t.name:<10} {r.tokens_per_s:>9,.0f} tok/s  "
                    f"cpu {or_dash(r.cpu_ms_per_1k, '.1f')} ms/1k tok  "
                    f"tokens {r.tokens}/{r.tokens_expected}  failures {r.failures}"
                    + (f"  Jain {r.jain:.3f}" if r.jain is not None else ""),
                    flush=True,
                )
        if plan.paced is None:
            continue
        for transport in plan.paced.transports:
            for t in order:
                p = await asyncio.to_thread(paced_once, t, transport, plan.paced, out, rep)
                paced.setdefault((t.name, transport), []).append(p)
                probe = ""
                if p.server_latency_us:
                    probe = (
                        f"  srv lat p99 {or_dash(p.server_latency_us.get('p99'), '.0f')} us"
                        f"  1st tok p50 {or_dash(p.first_token_us.get('p50'), '.0f')} us"
                    )
                print(
                    f"  run {rep + 1}/{plan.repeat} {paced_label(transport, plan.paced):<17} "
                    f"{t.name:<10} cpu {or_dash(p.cpu_pct_nominal, '.1f')}% at the pace  "
                    f"lat p99 {or_dash(p.latency_p99_ms, '.1f')} ms  streams {p.streams}  "
                    f"failed {p.failed_streams}{probe}",
                    flush=True,
                )
    return runs, paced, lines


def run_race(ns: argparse.Namespace) -> int:
    """``tokenwire bench --peers``: the exit status (1 if a stream failed or came short)."""
    missing_mods = [m for m in ("matplotlib", "psutil") if importlib.util.find_spec(m) is None]
    if missing_mods:
        raise SystemExit(f"the race needs {', '.join(missing_mods)}: pip install -e '.[bench]'")
    given = [f"--{n.replace('_', '-')}" for n in NOT_FOR_RACE if getattr(ns, n, None)]
    cluster = [
        flag
        for flag, on in (
            ("--locust-workers", ns.locust_workers),
            ("--workers", ns.workers > 1),
            ("--store", ns.store != "memory"),
        )
        if on
    ]
    if given or cluster:
        raise SystemExit(
            f"--peers starts its own servers and load: {' '.join(given + cluster)} "
            "apply to the Locust runs only"
        )
    plan = plan_of(ns)
    if not plan.scenarios and plan.paced is None:
        raise SystemExit("--peers: no transport of the peer contract (sse, ws, poll, chunked)")
    names = peer_names(ns.peers)
    if not ns.quick and plan.repeat < 3:
        print(f"warning: {plan.repeat} round(s): medians of fewer than 3 runs are noisy")
    pin = bool(ns.pin)
    if pin and (shutil.which("taskset") is None or (os.cpu_count() or 1) < 2):
        print("--pin: taskset or a second core is missing; running unpinned", file=sys.stderr)
        pin = False
    preset = "quick" if ns.quick else "full"
    out: Path = ns.out or REPO / "bench" / "results" / time.strftime("%Y%m%d-%H%M%S-race")
    out.mkdir(parents=True, exist_ok=True)
    nofile = raise_nofile(max(plan.concurrency, plan.readers))
    if pin:
        os.sched_setaffinity(0, {c for c in os.sched_getaffinity(0) if c != SERVER_CPU})
    found = versions()
    targets, skipped = start_targets(names, plan, out, pin)

    def header(background: float) -> list[str]:
        cpus = os.cpu_count() or 0
        return [
            f"the peer race ({preset}): "
            + ", ".join(t.name for t in targets)
            + (
                f"; skipped: {', '.join(f'{k} ({v})' for k, v in skipped.items())}"
                if skipped
                else ""
            ),
            f"each cell on every target in turn, {plan.repeat} round(s), medians; every "
            "stream checked (seqs, sha256, count). Full speed (tokens_per_s=0): "
            + "; ".join(
                part
                for part in (
                    f"{','.join(plan.transports)} at c={plan.concurrency} streams of "
                    f"{plan.tokens} tokens"
                    if plan.transports
                    else "",
                    f"fan-out: one stream of {plan.fanout_tokens} tokens to {plan.readers} "
                    "SSE readers"
                    if plan.fanout
                    else "",
                    f"fairness: {plan.fair_streams} SSE streams of {plan.fair_tokens} tokens at "
                    f"{plan.fair_pace:g} tokens/s"
                    if plan.fair_streams
                    else "",
                )
                if part
            )
            + (
                f". Paced (Locust): {','.join(plan.paced.transports)}, {plan.paced.users} "
                f"streams of {plan.paced.tokens} tokens at {plan.paced.pace:g} tokens/s, "
                f"{plan.paced.run_s:g} s per run"
                if plan.paced is not None
                else ""
            ),
            f"{cpus} CPU cores; "
            + (
                f"servers pinned to CPU {SERVER_CPU}, this load client to the rest"
                if pin
                else "unpinned: servers and the load client share the cores"
            )
            + f"; open-files limit {nofile}; background load {background:.2f} cores"
            + (
                " -- WARNING: another workload is running; figures skewed"
                if background > 0.15
                else ""
            ),
            "server CPU = the target's process tree (psutil), over the cell; tw/p: tokenwire's "
            "figure / the peer's (tok/s above 1 and CPU below 1: tokenwire ahead); paced CPU% = "
            "CPU per token x the nominal tokens/s; srv p99 / 1st tok: tokenwire's probe "
            "(server time, docs/bench.md)",
            "versions: " + ", ".join(f"{k} {v}" for k, v in found.items()),
        ]

    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop
    except ImportError:
        pass
    else:
        loop_factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runs, paced_runs, lines = runner.run(race(targets, plan, header, out))
    except KeyboardInterrupt:
        print(f"interrupted: nothing reported (the servers' logs are in {out / 'servers'})")
        return 130
    finally:
        codes = stop_targets(targets, out / "servers")
    cells = [aggregate(t.name, s, runs[(t.name, s)]) for s in plan.scenarios for t in targets]
    add_ratios(cells)
    paced_cells = []
    if plan.paced is not None:
        paced_cells = [
            aggregate_paced(t.name, tr, paced_runs[(t.name, tr)])
            for tr in plan.paced.transports
            for t in targets
        ]
        add_paced_ratios(paced_cells)
    peers = [t.name for t in targets if t.name != TOKENWIRE]
    title = f"the peer race (median of {plan.repeat} runs)" if plan.repeat > 1 else "the peer race"
    print()
    starts = [i for i in range(len(targets), len(cells), len(targets))]
    if cells:
        print_table(
            title + ": full speed",
            COLUMNS,
            table_rows(cells, plan),
            plain=ns.plain,
            sections=starts,
        )
    if peers and cells:
        print_table(
            "tokenwire / peer: tokens/s (server CPU per token)",
            ["cell", *peers],
            ratio_rows(cells, plan, peers),
            plain=ns.plain,
        )
    if plan.paced is not None and paced_cells:
        pstarts = [i for i in range(len(targets), len(paced_cells), len(targets))]
        print_table(
            f"{title}: at a realistic pace (Locust, {plan.paced.users} streams x "
            f"{plan.paced.pace:g} tokens/s)",
            PACED_COLUMNS,
            paced_rows(paced_cells, plan.paced),
            plain=ns.plain,
            sections=pstarts,
        )
    goals = goal_lines(cells, paced_cells, plan)
    warnings = warning_lines(lines, cells, paced_cells, plan)
    for line in (*goals, *warnings):
        print(line)
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    pngs = [plot(plots / "race.png", cells, plan, [t.name for t in targets])] if cells else []
    if plan.paced is not None and paced_cells:
        pngs.append(
            plot_paced(plots / "paced.png", paced_cells, plan.paced, [t.name for t in targets])
        )
    doc = {
        "meta": {
            "preset": preset,
            "header": lines,
            "plan": dataclasses.asdict(plan),
            "targets": [t.name for t in targets],
            "skipped": skipped,
            "pinned": pin,
            "versions": found,
            "exit_codes": codes,
            "cpu_count": os.cpu_count(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "goals": goals,
        "warnings": warnings,
        "cells": [dataclasses.asdict(c) for c in cells],
        "paced": [dataclasses.asdict(c) for c in paced_cells],
    }
    (out / "race.json").write_text(json.dumps(doc, indent=1) + "\n")
    from bench.report import write_race_html

    report = write_race_html(out, doc, pngs)
    bad = [c for c in cells if c.failures or c.tokens != c.tokens_expected]
    for c in bad:
        print(
            f"{c.target} {scenario_label(c.scenario, plan)}: {c.failures} failed streams, "
            f"tokens {c.tokens}/{c.tokens_expected}"
        )
        for kind, n in list(c.failure_kinds.items())[:5]:
            print(f"  {n} x {kind} (first: {c.failure_examples.get(kind)})")
    bad_paced = [c for c in paced_cells if c.failed_streams or not c.streams]
    for pc in bad_paced:
        print(
            f"{pc.target} paced {pc.transport}: {pc.failed_streams} of {pc.streams} streams failed"
        )
        for f in (f for r in pc.runs for f in r.failures[:3]):
            print(f"  {f['occurrences']} x {f['type']} {f['name']}: {f['error']}")
    print(f"results: {out} (report.html, race.json, plots/, locust/, servers/)")
    print(f"report: {report}")
    return 1 if bad or bad_paced else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.race [options]``: ``tokenwire bench --peers [options]``."""
    from bench.runner import build_parser

    args = list(sys.argv[1:] if argv is None else argv)
    return run_race(build_parser().parse_args(["--peers", *args]))


if __name__ == "__main__":
    sys.exit(main())
