"""Memory soak: one client streaming at every cap; does the server's memory plateau?

One client keeps ``max_unpaced_streams`` unpaced streams of ``max_tokens_cap`` tokens
running at all times, reading none of them (each is awaited with one long poll for its
last event). Finished streams are kept for ``retention_s``, so without a bound the
server's memory grows for as long as that lasts (issue 15: 33 MB/s). With the bounds on
retained memory (``--max-retained-*``) it must level off under them.

Every ``--every`` seconds it samples the server's RSS and its ``/metrics`` retained
figures, into ``soak.csv`` and ``soak.png`` under ``bench/results/<time>-soak/``, then
prints the figures and whether RSS plateaued (exit 1 if it did not).
``python -m bench.soak --help``; ``make bench-soak``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

from bench.lab import MIB, REPO, Server, free_port, process_usage, stop_server, wait_ready
from bench.stats import print_table
from server.settings import Settings

RETAINED = (
    "tokenwire_retained_streams",
    "tokenwire_retained_events",
    "tokenwire_retained_bytes",
)


@dataclass(slots=True)
class Sample:
    t_s: float
    rss_mib: float
    retained_streams: int
    retained_events: int
    retained_mib: float
    streams_done: int


def spawn(port: int, server_args: list[str]) -> Server:
    """``python -m tokenwire serve`` with its default caps (plus ``server_args``)."""
    cmd = [
        sys.executable,
        *("-m", "tokenwire", "serve", "--host", "127.0.0.1", "--port", str(port)),
        *server_args,
    ]
    fd, name = tempfile.mkstemp(prefix="tokenwire-soak-server-", suffix=".log")
    with os.fdopen(fd, "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    return Server(f"http://127.0.0.1:{port}", proc.pid, proc, Path(name))


async def one_stream(session: aiohttp.ClientSession, base: str, tokens: int) -> None:
    """Create an unpaced stream and wait for its last event (one long poll, no reading)."""
    body = {"prompt": "soak", "max_tokens": tokens, "params": {"tokens_per_s": 0, "ttft_ms": 0}}
    async with session.post(f"{base}/api/streams", json=body) as resp:
        if resp.status != 201:
            raise RuntimeError(f"create: {resp.status} {await resp.text()}")
        sid = (await resp.json())["id"]
    after = tokens - 1
    for _ in range(100):  # each poll waits up to 10 s; a stream of the cap takes far less
        async with session.get(
            f"{base}/api/streams/{sid}/poll", params={"after": str(after), "timeout": "10"}
        ) as resp:
            if resp.status != 200:
                raise RuntimeError(f"poll: {resp.status} {await resp.text()}")
            answer = await resp.json()
        if answer["done"]:
            return
        if answer["events"]:
            after = answer["events"][-1]["seq"]
    raise RuntimeError(f"stream {sid} did not finish")


async def client(base: str, streams: int, tokens: int, stop: float, done: list[int]) -> None:
    async def worker() -> None:
        while time.monotonic() < stop:
            await one_stream(session, base, tokens)
            done[0] += 1

    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker() for _ in range(streams)))


async def scrape(session: aiohttp.ClientSession, base: str) -> dict[str, float]:
    async with session.get(f"{base}/metrics") as resp:
        text = await resp.text()
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in RETAINED:
            out[name] = float(value)
    return out


async def sampler(
    server: Server, every: float, stop: float, done: list[int], samples: list[Sample]
) -> None:
    t0 = time.monotonic()
    async with aiohttp.ClientSession() as session:
        while True:
            _, rss = process_usage(server.pid)
            figures = await scrape(session, server.base)
            samples.append(
                Sample(
                    t_s=round(time.monotonic() - t0, 2),
                    rss_mib=round((rss or 0) / MIB, 1),
                    retained_streams=int(figures.get(RETAINED[0], 0)),
                    retained_events=int(figures.get(RETAINED[1], 0)),
                    retained_mib=round(figures.get(RETAINED[2], 0) / MIB, 2),
                    streams_done=done[0],
                )
            )
            if time.monotonic() >= stop:
                return
            await asyncio.sleep(every)


def plateaued(samples: list[Sample], tolerance: float) -> tuple[bool, float, float]:
    """Did RSS level off: is the last third's peak within ``tolerance`` of the middle
    third's? Returns the verdict and the two peaks (MiB)."""
    n = len(samples)
    middle = max(s.rss_mib for s in samples[n // 3 : 2 * n // 3] or samples)
    last = max(s.rss_mib for s in samples[2 * n // 3 :] or samples)
    return last <= middle * (1 + tolerance), middle, last


def plot(samples: list[Sample], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.t_s for s in samples]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(t, [s.rss_mib for s in samples], label="server RSS (MiB)")
    ax.plot(t, [s.retained_mib for s in samples], label="retained logs, as counted (MiB)")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("MiB")
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


async def load(server: Server, args: argparse.Namespace) -> tuple[list[Sample], int]:
    """Stream at the caps for ``--minutes`` while sampling; the samples and streams done."""
    samples: list[Sample] = []
    done = [0]
    stop = time.monotonic() + args.minutes * 60
    await asyncio.gather(
        client(server.base, args.streams, args.tokens, stop, done),
        sampler(server, args.every, stop, done, samples),
    )
    return samples, done[0]


def report(args: argparse.Namespace, samples: list[Sample], done: int, code: int | None) -> int:
    out = Path(args.out or REPO / "bench" / "results" / time.strftime("%Y%m%d-%H%M%S-soak"))
    out.mkdir(parents=True, exist_ok=True)
    with (out / "soak.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(asdict(samples[0])))
        w.writeheader()
        w.writerows(asdict(s) for s in samples)
    ok, middle, last = plateaued(samples, args.tolerance)
    title = (
        f"soak: {args.streams} unpaced streams x {args.tokens} tokens, one client, "
        f"{args.minutes:g} min\n{' '.join(args.server_arg) or 'default bounds'}"
    )
    plot(samples, out / "soak.png", title)
    summary = {
        "streams_at_once": args.streams,
        "tokens_per_stream": args.tokens,
        "streams_finished": done,
        "rss_start_mib": samples[0].rss_mib,
        "rss_peak_mib": max(s.rss_mib for s in samples),
        "rss_end_mib": samples[-1].rss_mib,
        "rss_peak_middle_third_mib": middle,
        "rss_peak_last_third_mib": last,
        "retained_peak_mib": max(s.retained_mib for s in samples),
        "retained_events_end": samples[-1].retained_events,
        "retained_bytes_per_event": round(
            samples[-1].retained_mib * MIB / max(1, samples[-1].retained_events), 1
        ),
        "plateaued": ok,
        "server_exit": code,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print_table("memory soak", ["figure", "value"], [[k, str(v)] for k, v in summary.items()])
    print(f"samples: {out / 'soak.csv'}; plot: {out / 'soak.png'}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=3.0, help="how long to soak (3)")
    p.add_argument("--every", type=float, default=1.0, help="seconds between samples (1)")
    defaults = Settings()
    p.add_argument(
        "--streams",
        type=int,
        default=defaults.max_unpaced_streams,
        help=f"streams at once (default: max_unpaced_streams, {defaults.max_unpaced_streams})",
    )
    p.add_argument(
        "--tokens",
        type=int,
        default=defaults.max_tokens_cap,
        help=f"tokens per stream (the default max_tokens_cap, {defaults.max_tokens_cap})",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.05,
        help="plateau: the last third's RSS peak within this fraction of the middle's (0.05)",
    )
    p.add_argument("--out", help="output directory (default bench/results/<time>-soak)")
    p.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="a flag for tokenwire serve (repeat), e.g. --server-arg=--max-retained-bytes=1e7",
    )
    args = p.parse_args(argv)
    server = spawn(free_port(), args.server_arg)
    try:
        wait_ready(server, 30)
        samples, done = asyncio.run(load(server, args))
    finally:
        code = stop_server(server)
    return report(args, samples, done, code)


if __name__ == "__main__":
    raise SystemExit(main())
