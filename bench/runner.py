"""``tokenwire bench``: the four transports and ``/v1`` under Locust, one after another
(``--peers``: the peer race of ``bench/race.py`` instead).

Per transport: a fresh server (or ``--host``), Locust headless as a subprocess on
``bench/locustfile.py`` (gevent never enters this asyncio-free process), the server's CPU,
memory and ``/metrics`` sampled meanwhile; then one results folder with ``summary.json``
and ``report.html`` (``bench/report.py``). Scenarios, presets and files: docs/bench.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.lab import (
    REPO,
    Server,
    TreeCPU,
    check_loopback,
    comma_separated_ints,
    machine_busy_s,
    process_usage,
    raise_nofile,
    spawn_server,
    start_redis,
    stop_server,
    wait_idle,
    wait_ready,
)
from bench.peers import PEERS
from bench.report import (
    COLUMNS,
    FANOUT_LABELS,
    LABELS,
    STRESS_COLUMNS,
    Load,
    RunResult,
    Sample,
    bench_warnings,
    make_plots,
    print_table,
    read_failures,
    result_from_run,
    stress_row,
    table_row,
    verdict,
    write_html,
)
from wire import READERS

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
#: The locustfile's user classes per transport (and dialect), and its fan-out subscribers.
USER_CLASSES = {"sse": "SSEUser", "ws": "WSUser", "poll": "PollUser", "chunked": "ChunkedUser"}
USER_CLASSES["openai"] = "OpenAIUser"
#: The readers a Locust user class exists for (the Responses and Anthropic dialects: not yet).
BENCHED = tuple(r for r in READERS if r in USER_CLASSES)
FANOUT_CLASSES = {"sse": "SSEFanout", "ws": "WSFanout", "poll": "PollFanout"}
FANOUT_CLASSES["chunked"] = "ChunkedFanout"
SAMPLE_EVERY_S = 0.5
#: Locust headless on the locustfile, as a subprocess (never imported here: gevent).
LOCUST_HEADLESS = (sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless")


@dataclass(frozen=True, slots=True, kw_only=True)
class Preset:
    streams: Load
    fanout: Load
    stress_users: tuple[int, ...]
    stress_step_s: float


PRESETS = {
    # Seconds per transport, for the test suite.
    "quick": Preset(
        streams=Load(users=6, spawn_rate=20, run_s=1.5, tokens=20, pace=40, ttft_ms=50),
        fanout=Load(users=6, spawn_rate=20, run_s=10, tokens=20, pace=40, ttft_ms=100),
        stress_users=(4, 8),
        stress_step_s=2,
    ),
    # A minute per transport: 200 concurrent streams of 200 tokens at 20 tokens/s (4000
    # tokens/s in all), which one Locust process drives on one core of a 2-core machine
    # that also runs the server (long polling: ~2000 requests/s); see docs/bench.md.
    "default": Preset(
        streams=Load(users=200, spawn_rate=50, run_s=60, tokens=200, pace=20, ttft_ms=200),
        fanout=Load(users=200, spawn_rate=100, run_s=60, tokens=300, pace=20, ttft_ms=2000),
        stress_users=(100, 200, 400, 800, 1600),
        stress_step_s=20,
    ),
}
PRESETS["stress"] = dataclasses.replace(
    PRESETS["default"],
    streams=Load(users=0, spawn_rate=100, run_s=20, tokens=100, pace=20, ttft_ms=200),
)


# ---------------------------------------------------------------------------------------
# The command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    preset = p.add_mutually_exclusive_group()
    preset.add_argument(
        "--quick", action="store_true", help="a few seconds per transport (what the tests run)"
    )
    preset.add_argument(
        "--stress",
        action="store_true",
        help="ramp concurrent streams up per transport until delivery falls behind the pace "
        "or streams fail",
    )
    p.add_argument(
        "--scenario",
        choices=("streams", "fanout", "all", "paced", "fair"),
        default="all",
        help="streams: N users, N concurrent streams; fanout: N subscribers of one stream; "
        "--peers only: paced (Locust at a realistic pace), fair (1000 streams, Jain's index)",
    )
    p.add_argument(
        "--transports",
        type=_transports,
        default=list(BENCHED),
        help="comma-separated subset of " + ",".join(BENCHED),
    )
    p.add_argument("--host", help="a running tokenwire server (default: start one per run)")
    p.add_argument("--server-pid", type=int, help="pid of the --host server, for CPU and memory")
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host")
    p.add_argument("--users", type=int, help="concurrent streams (fan-out: subscribers)")
    p.add_argument("--spawn-rate", type=float, help="users started per second")
    p.add_argument("--run-time", type=float, help="seconds per transport")
    p.add_argument("--tokens", type=int, help="tokens per stream")
    p.add_argument("--pace", type=float, help="tokens per second of each stream")
    p.add_argument(
        "--stress-users",
        type=comma_separated_ints,
        help="stress steps, comma-separated (e.g. 100,200,400)",
    )
    p.add_argument(
        "--locust-workers",
        type=int,
        default=0,
        metavar="N",
        help="Locust in distributed mode: a master and N worker processes on this machine",
    )
    p.add_argument(
        "--store",
        default="memory",
        help="the spawned server's store: memory (default), redis (a redis-server the bench "
        "starts on a free loopback port) or redis://HOST:PORT/DB",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="the spawned server as N processes on one port (needs a Redis --store)",
    )
    p.add_argument("--out", type=Path, help="results folder (default: bench/results/<time>)")
    race = p.add_argument_group(
        "the peer race",
        "tokenwire against the same contract on other stacks (bench/race.py); --quick, "
        "--scenario, --transports, --users (concurrent streams), --tokens and --out apply",
    )
    race.add_argument(
        "--peers",
        nargs="?",
        const="all",
        metavar="NAMES",
        help="race tokenwire against the peers (comma-separated subset of "
        + ",".join(PEERS)
        + "; default all that can run here)",
    )
    race.add_argument("--repeat", type=int, help="rounds over every cell and target (default 3)")
    race.add_argument(
        "--paced-users",
        type=int,
        help="concurrent Locust streams of the paced cells (default 200; --pace and "
        "--run-time apply to them too)",
    )
    race.add_argument(
        "--readers", type=int, help="SSE readers of the fan-out stream (default 1000)"
    )
    race.add_argument(
        "--pin",
        action="store_true",
        help="servers on CPU 0, the load client on the others (taskset)",
    )
    race.add_argument("--plain", action="store_true", help="plain-text tables even if rich exists")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tokenwire bench", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    add_arguments(p)
    return p


def _transports(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values or any(v not in BENCHED for v in values):
        raise argparse.ArgumentTypeError(f"transports are {', '.join(BENCHED)}; got {text!r}")
    return values


def load_of(base: Load, ns: argparse.Namespace) -> Load:
    """The preset's load with the command line's overrides."""
    overrides = {
        "users": ns.users,
        "spawn_rate": ns.spawn_rate,
        "run_s": ns.run_time,
        "tokens": ns.tokens,
        "pace": ns.pace,
    }
    return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})


# ---------------------------------------------------------------------------------------
# The server


@contextmanager
def server_for(
    ns: argparse.Namespace, users: int, tokens: int, out: Path, name: str
) -> Iterator[Server]:
    """A fresh server on a free loopback port (so no run inherits the last one's heap), or
    the ``--host`` server once it is idle."""
    if ns.host:
        base = ns.host.rstrip("/")
        wait_idle(base)
        yield Server(base, ns.server_pid)
        return
    cap = max(5000, 2 * users)
    # Retention 5 s: finished streams' logs leave memory soon (the memory per open stream
    # stays about open streams), and /v1's check still finds the stream's done event.
    store = ["--store", ns.store_url] if ns.store_url != "memory" else []
    workers = ["--workers", str(ns.workers)] if ns.workers > 1 else []
    server = spawn_server(cap, max(4096, tokens), 5.0, [*store, *workers])
    try:
        wait_ready(server, 30.0)
        yield server
    finally:
        code = stop_server(server)
        if server.log_path is not None:
            (out / "servers").mkdir(exist_ok=True)
            shutil.move(server.log_path, out / "servers" / f"{name}.server.log")
        if code not in (0, None):
            print(f"warning: the server of {name} exited with {code}", file=sys.stderr)


def scrape(base: str) -> dict[str, float]:
    """The server's ``/metrics`` as ``name{transport}`` → value (empty if unreachable)."""
    from prometheus_client.parser import text_string_to_metric_families

    token = os.environ.get("TOKENWIRE_AUTH_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        req = urllib.request.Request(f"{base}/metrics", headers=headers)
        with urllib.request.urlopen(req, timeout=2) as resp:
            text = resp.read().decode()
    except (OSError, ValueError):
        return {}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = s.name + (f"{{{s.labels['transport']}}}" if "transport" in s.labels else "")
            out[key] = s.value
    return out


# ---------------------------------------------------------------------------------------
# One Locust run


def locust_command(
    ns: argparse.Namespace, host: str, load: Load, user_class: str, prefix: Path
) -> tuple[list[str], float]:
    """Locust's command line for one run, and the time it may take at most."""
    stop_timeout = 1.5 * load.stream_s + 10
    limit = load.run_s + stop_timeout + 10  # Locust's own backstop (--run-time)
    cmd = [
        *LOCUST_HEADLESS,
        "--only-summary",
        "-H",
        host,
        "-u",
        str(load.users),
        "-r",
        f"{load.spawn_rate:g}",
        "-t",
        f"{limit:.0f}s",
        "--stop-timeout",
        f"{stop_timeout:.0f}",
        "--tw-run-time",
        f"{load.run_s:g}",
        "--tw-tokens",
        str(load.tokens),
        "--tw-pace",
        f"{load.pace:g}",
        "--tw-ttft-ms",
        f"{load.ttft_ms:g}",
        "--csv",
        str(prefix),
        "--json-file",
        str(prefix),
        "--html",
        f"{prefix}.html",
        *(["--processes", str(ns.locust_workers)] if ns.locust_workers else []),
        user_class,
    ]
    return cmd, limit + 20


def run_locust(
    ns: argparse.Namespace,
    server: Server,
    *,
    scenario: str,
    transport: str,
    load: Load,
    out: Path,
    progress: Any,
    server_cpu: Callable[[], float] | None = None,
    name: str | None = None,
) -> RunResult:
    """One Locust run of one user class, with the server sampled meanwhile (its CPU by
    ``server_cpu`` when given, e.g. a process tree's, else its process's); ``name``: the
    run's file names (default ``<scenario>-<transport>``)."""
    fanout = scenario == "fanout"
    label = (FANOUT_LABELS if fanout else LABELS)[transport]
    user_class = (FANOUT_CLASSES if fanout else USER_CLASSES)[transport]
    if name is None:
        stress = scenario == "stress"
        name = f"stress-{transport}-{load.users}" if stress else f"{scenario}-{transport}"
    raw = out / "locust"  # Locust's own files, one folder for every run's
    raw.mkdir(parents=True, exist_ok=True)
    prefix = raw / name
    cmd, hard_limit = locust_command(ns, server.base, load, user_class, prefix)
    metric_key = f"tokenwire_subscribers{{{transport}}}" if fanout else "tokenwire_live_streams"
    # Several server processes on one port: /metrics answers for whichever one the kernel
    # picks, so the server's counts are not read; CPU and memory are the process tree's.
    one_process = ns.workers <= 1 or server.proc is None
    tree = TreeCPU(server.pid) if not one_process and server.pid is not None else None
    if tree is not None:
        server_cpu = tree.seconds
    measure = scrape if one_process else lambda _base: {}
    before = measure(server.base)
    samples: list[Sample] = []
    task = progress.add_task(f"{name}: starting", total=load.run_s)
    start = time.monotonic()
    with (raw / f"{name}.log").open("wb") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its workers too can be stopped as one group
        )
        client = TreeCPU(proc.pid)
        try:
            while proc.poll() is None:
                elapsed = time.monotonic() - start
                if elapsed > hard_limit:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    break
                cpu, rss = process_usage(server.pid)
                if server_cpu is not None:
                    cpu = server_cpu()
                if tree is not None:
                    rss = tree.rss()
                opened = measure(server.base).get(metric_key)
                samples.append(
                    Sample(
                        t=elapsed,
                        server_cpu_s=cpu,
                        server_rss=rss,
                        client_cpu_s=client.seconds(),
                        machine_busy_s=machine_busy_s(),
                        open_streams=None if opened is None else int(opened),
                    )
                )
                progress.update(
                    task,
                    completed=min(elapsed, load.run_s),
                    description=f"{name}: {load.users} users, "
                    f"{samples[-1].open_streams if opened is not None else '?'} open"
                    + _cpu_note(samples),
                )
                time.sleep(SAMPLE_EVERY_S)
        except BaseException:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait()
            raise
    progress.update(task, completed=load.run_s, description=f"{name}: done")
    after = measure(server.base)
    generated = None
    if before and after:
        key = "tokenwire_tokens_generated_total"
        generated = int(after.get(key, 0) - before.get(key, 0))
    stats_path = Path(f"{prefix}.json")
    entries = json.loads(stats_path.read_text()) if stats_path.exists() else []
    result = result_from_run(
        scenario=scenario,
        transport=transport,
        label=label,
        entries=entries,
        failures=read_failures(Path(f"{prefix}_failures.csv")),
        samples=samples,
        load=load,
        exit_code=proc.returncode,
        wall_s=time.monotonic() - start,
        tokens_generated=generated,
    )
    result.files = {
        "csv": f"locust/{name}_stats.csv",
        "json": f"locust/{name}.json",
        "html": f"locust/{name}.html",
        "log": f"locust/{name}.log",
    }
    return result


def _cpu_note(samples: Sequence[Sample]) -> str:
    if len(samples) < 3:
        return ""
    a, b = samples[-3], samples[-1]
    dt = b.t - a.t
    note = f", client CPU {100 * (b.client_cpu_s - a.client_cpu_s) / dt:.0f}%"
    if a.server_cpu_s is not None and b.server_cpu_s is not None:
        note += f", server CPU {100 * (b.server_cpu_s - a.server_cpu_s) / dt:.0f}%"
    return note


# ---------------------------------------------------------------------------------------
# Scenarios


def run_scenario(
    ns: argparse.Namespace, scenario: str, load: Load, out: Path, progress: Any
) -> list[RunResult]:
    results = []
    for transport in ns.transports:
        if scenario == "fanout" and transport not in FANOUT_CLASSES:
            continue  # openai (/v1) starts its own stream: no subscribing to a shared one
        with server_for(ns, load.users, load.tokens, out, f"{scenario}-{transport}") as server:
            results.append(
                run_locust(
                    ns,
                    server,
                    scenario=scenario,
                    transport=transport,
                    load=load,
                    out=out,
                    progress=progress,
                )
            )
    return results


def run_stress(
    ns: argparse.Namespace, base: Load, steps: Sequence[int], out: Path, progress: Any
) -> dict[str, list[RunResult]]:
    """Per transport, one fresh server, steps of more concurrent streams until one breaks."""
    found: dict[str, list[RunResult]] = {}
    for transport in ns.transports:
        found[transport] = []
        with server_for(ns, max(steps), base.tokens, out, f"stress-{transport}") as server:
            for users in steps:
                # Every step ramps up in about the same time, however many users it has.
                load = dataclasses.replace(
                    base, users=users, spawn_rate=max(base.spawn_rate, users / 4)
                )
                r = run_locust(
                    ns,
                    server,
                    scenario="stress",
                    transport=transport,
                    load=load,
                    out=out,
                    progress=progress,
                )
                r.verdict = verdict(r)
                found[transport].append(r)
                if r.verdict is not None:
                    break
                if ns.host:
                    wait_idle(server.base)
    return found


# ---------------------------------------------------------------------------------------
# Main


def notes(
    ns: argparse.Namespace, preset: str, loads: dict[str, Load], steps: Sequence[int]
) -> list[str]:
    cpus = os.cpu_count() or 0
    where = ns.host or "a fresh server per transport (python -m tokenwire serve, synthetic source)"
    if not ns.host and (ns.store != "memory" or ns.workers > 1):
        where += f", store {ns.store}, {ns.workers} process(es)"
        if ns.workers > 1:
            where += " (server CPU and memory: all of them; tokens generated: not read)"
    lines = [
        f"preset {preset}; server: {where}",
        f"Locust {importlib.metadata.version('locust')}"
        + (
            f", distributed: master + {ns.locust_workers} workers"
            if ns.locust_workers
            else ", one process"
        )
        + f"; Python {platform.python_version()}; {cpus} CPU cores shared by Locust and "
        "the server: client CPU near 100% means the load generator, not the server, set "
        "the limit; other CPU = the machine's busy time minus both (other work on the "
        "machine skews the figures when it is high)",
    ]
    for scenario, load in loads.items():
        users = f"{load.users} users" if scenario != "stress" else f"steps of {steps} users"
        lines.append(
            f"{scenario}: {users}, spawn {load.spawn_rate:g}/s, {load.run_s:g} s, "
            f"streams of {load.tokens} tokens at {load.pace:g} tokens/s (no jitter), "
            f"ttft {load.ttft_ms:g} ms"
        )
    lines.append(
        "tokens rx = received by Locust; gen = generated by the server meanwhile "
        "(fan-out: rx = subscribers x gen). B/tok = every byte received / tokens (poll: "
        "bodies and response headers). CPU ms / 1k tok = server CPU over the run / tokens "
        "received. KiB / open stream = growth of the server's RSS / concurrent streams (users)"
    )
    return lines


def jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def run(ns: argparse.Namespace) -> int:
    """``tokenwire bench``: returns the exit status (1 if any stream failed)."""
    if ns.peers is not None:
        from bench.race import run_race

        return run_race(ns)
    if ns.scenario in ("paced", "fair"):
        raise SystemExit(f"--scenario {ns.scenario} is a scenario of the peer race (--peers)")
    # Never import locust here: it monkey-patches the process for gevent (Locust runs as a
    # subprocess). Only check that it is installed.
    missing = [m for m in ("locust", "matplotlib", "psutil") if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"tokenwire bench needs {', '.join(missing)}: pip install -e '.[bench]'")

    preset_name = "quick" if ns.quick else "stress" if ns.stress else "default"
    preset = PRESETS[preset_name]
    if ns.host and not ns.allow_remote:
        check_loopback(ns.host)
    check_cluster(ns)
    with redis_for(ns):
        return run_locust_scenarios(ns, preset_name, preset)


def check_cluster(ns: argparse.Namespace) -> None:
    """``--store``, ``--workers`` and ``--locust-workers``: one line and exit 2 if wrong."""
    if ns.workers < 1 or ns.locust_workers < 0:
        raise SystemExit("tokenwire bench: --workers must be >= 1 and --locust-workers >= 0")
    if ns.store != "memory" and ns.store != "redis" and not ns.store.startswith("redis://"):
        raise SystemExit(
            f"tokenwire bench: --store is memory, redis or redis://HOST:PORT/DB; got {ns.store!r}"
        )
    if ns.host and (ns.store != "memory" or ns.workers > 1):
        raise SystemExit(
            "tokenwire bench: --store and --workers apply to a spawned server, not --host"
        )
    if ns.workers > 1 and ns.store == "memory":
        raise SystemExit(
            "tokenwire bench: --workers > 1 needs a shared store (--store redis or redis://...)"
        )


@contextmanager
def redis_for(ns: argparse.Namespace) -> Iterator[None]:
    """Sets ``ns.store_url``: ``--store redis`` starts a redis-server for the whole run."""
    if ns.store != "redis":
        ns.store_url = ns.store
        yield
        return
    directory = Path(tempfile.mkdtemp(prefix="tokenwire-bench-redis-"))
    proc, ns.store_url = start_redis(directory)
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


def run_locust_scenarios(ns: argparse.Namespace, preset_name: str, preset: Preset) -> int:
    """The Locust scenarios of ``tokenwire bench`` (not the peer race)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    out: Path = ns.out or REPO / "bench" / "results" / time.strftime(f"%Y%m%d-%H%M%S-{preset_name}")
    out.mkdir(parents=True, exist_ok=True)
    streams_load = load_of(preset.streams, ns)
    fanout_load = load_of(preset.fanout, ns)
    steps = tuple(ns.stress_users or preset.stress_users)
    raise_nofile(max(steps) if ns.stress else max(streams_load.users, fanout_load.users))
    loads = (
        {"stress": streams_load}
        if ns.stress
        else {
            s: load
            for s, load in (("streams", streams_load), ("fanout", fanout_load))
            if ns.scenario in (s, "all")
        }
    )
    streams: list[RunResult] = []
    fanout: list[RunResult] = []
    stress: dict[str, list[RunResult]] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=False) as progress:
        if ns.stress:
            stress = run_stress(ns, streams_load, steps, out, progress)
        if "streams" in loads:
            streams = run_scenario(ns, "streams", streams_load, out, progress)
        if "fanout" in loads:
            fanout = run_scenario(ns, "fanout", fanout_load, out, progress)
    meta = {
        "preset": preset_name,
        "notes": notes(ns, preset_name, loads, steps),
        "loads": {k: dataclasses.asdict(v) for k, v in loads.items()},
        "host": ns.host,
        "store": ns.store,
        "workers": ns.workers,
        "locust_workers": ns.locust_workers,
        "cpu_count": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    plots = make_plots(out, streams, fanout, stress)
    warnings = bench_warnings(streams, fanout, stress)
    meta["warnings"] = warnings
    summary = {"meta": meta, "streams": streams, "fanout": fanout, "stress": stress}
    (out / "summary.json").write_text(json.dumps(jsonable(summary), indent=1) + "\n")
    report = write_html(out, meta, streams, fanout, stress, plots)
    for line in meta["notes"]:
        print(line)
    if streams:
        print_table("tokenwire bench: streams", COLUMNS, (table_row(r) for r in streams))
    if fanout:
        print_table(
            "tokenwire bench: fan-out (one shared stream)", COLUMNS, (table_row(r) for r in fanout)
        )
    if stress:
        rows = [
            [f"{r.transport} x{r.load.users}", *table_row(r)[1:]]
            for s in stress.values()
            for r in s
        ]
        print_table("tokenwire bench: stress steps", COLUMNS, rows)
        print_table(
            "tokenwire bench: stress", STRESS_COLUMNS, (stress_row(t, s) for t, s in stress.items())
        )
    for line in warnings:
        print(line)
    failed = [r for r in (*streams, *fanout) if r.failed_streams or r.exit_code != 0]
    for r in failed:
        print(f"{r.scenario} {r.transport}: {r.failed_streams} failed streams, exit {r.exit_code}")
        for f in r.failures[:5]:
            print(f"  {f['occurrences']} x {f['type']} {f['name']}: {f['error']}")
    print(f"results: {out} (report: {report})")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
