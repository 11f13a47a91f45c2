"""``tokenwire bench --net``: every client and transport through every path and link
profile, and what arrived.

A **cell** is one client reading one stream over one transport, through one path (an
intermediary started from ``bench/net/conf/``), over one link profile (the shaper in front
of the path), speaking one protocol. Its row says whether the text arrived exact (the
digest), whether it streamed or came in one lump (arrival times), first-token delay,
latency p50/p95/p99, reconnects, the shaper's cuts, and the bytes on the wire per token
counted at the shaper (TLS and HTTP/2 framing included).

A **connections** row says how many of 10 EventSources opened at once in one Chromium page
flow through a path and protocol (HTTP/1.1 allows 6 connections per origin).

An **idle** row says whether a stream survives a quiet period longer than the path's idle
timeout, with the server's heartbeats and without.

Time is scaled so the lab fits in minutes: every timeout of the deployment (each path's idle
timeout, the server's heartbeats, the client's long-poll timeout) is multiplied by
``--time-scale`` (default 0.05: nginx's 60 s read timeout becomes 3 s, the 15 s SSE
heartbeat 0.75 s, the 25 s long poll 1.25 s). The quiet period is 1.6 x 60 s, scaled.

HTTP/3 cells cross the shaper's UDP relay (same port number as its TCP side, as caddy
serves QUIC on its TCP port's number), by host name (Chromium sends no SNI to an IP).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from bench.lab import REPO, Server, spawn_server, stop_server, wait_ready
from bench.net import paths, probes
from bench.net.probes import Load, Reading
from bench.net.shaper import PROFILES, Counts, Shaper
from bench.net.verdict import delivery, latency_ms, per_token

T = TypeVar("T")

#: Each client and the transports it reads (``v1``: the openai SDK on /v1).
CLIENTS: dict[str, tuple[str, ...]] = {
    "python": ("sse", "ws", "poll", "chunked"),
    "js": ("sse", "ws", "poll", "chunked"),
    "curl": ("sse",),
    "openai": ("v1",),
    "chromium": ("sse", "chunked", "ws"),
}

#: The deployment's timeouts, before scaling (server defaults; the client's poll timeout).
HEARTBEAT_S = 15.0
WS_HEARTBEAT_S = 20.0
POLL_TIMEOUT_S = 25.0
QUIET_S = 96.0
"""The idle experiment's quiet period: longer than nginx's 60 s and haproxy's 50 s."""

#: Why a cell fails, where the lab knows (path, transport or "*", a text in the error).
KNOWN: tuple[tuple[str, str, str, str], ...] = (
    ("nginx-default", "ws", "", "no upgrade lines: nginx drops Upgrade, tokenwire says 426"),
)


@dataclass(frozen=True, slots=True)
class Cell:
    client: str
    transport: str
    path: str
    profile: str
    protocol: str


@dataclass(slots=True)
class Row:
    """One cell's outcome (times in ms, sizes in bytes)."""

    client: str
    transport: str
    path: str
    profile: str
    protocol: str
    exact: bool | None
    delivery: str
    tokens: int
    error: str | None
    ttft_ms: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    reconnects: int
    cuts: int
    connections: int
    bytes_up: int
    bytes_down: int
    bytes_per_token: float | None
    protocol_seen: str
    note: str = ""
    #: Datagrams the shaper's UDP relay dropped (HTTP/3: the cap's queue, a stall, a cut).
    dropped: int = 0
    #: How many times the cell was read, and how many of those were exact without error
    #: (with several samples the figures above are medians, the counts totals).
    samples: int = 1
    ok_samples: int = 1
    latency_p50_min_ms: float | None = None
    latency_p50_max_ms: float | None = None
    ttft_min_ms: float | None = None
    ttft_max_ms: float | None = None

    @property
    def ok(self) -> bool:
        return bool(self.exact) and self.error is None


@dataclass(slots=True)
class IdleRow:
    path: str
    transport: str
    heartbeats: bool
    idle_timeout_s: float
    quiet_s: float
    survived: bool
    exact: bool | None
    reconnects: int
    error: str | None


@dataclass(slots=True)
class Lab:
    """The lab's settings: the stream each cell reads and the time scale."""

    load: Load = field(default_factory=Load)
    time_scale: float = 0.05
    seed: int = 0
    #: How many times each cell is read (the report gives medians and their spread).
    samples: int = 1

    def scaled(self, seconds: float) -> float:
        return seconds * self.time_scale

    def idle_timeout(self, path: str) -> float | None:
        t = paths.PATHS[path].idle_timeout_s
        return None if t is None else self.scaled(t)

    def server_args(self, heartbeats: bool = True) -> list[str]:
        """The lab's tokenwire: heartbeats scaled (or off); pages of the lab's origins (any
        port, TLS in front) may call it and open WebSockets."""
        hb = self.scaled(HEARTBEAT_S) if heartbeats else 0
        ws_hb = self.scaled(WS_HEARTBEAT_S) if heartbeats else 0
        return [
            *("--heartbeat-s", f"{hb:g}", "--ws-heartbeat-s", f"{ws_hb:g}"),
            *("--cors-origins", "*", "--ws-allowed-origins", "*"),
        ]


def protocols_for(client: str, path: str) -> tuple[str, ...]:
    offered = paths.PATHS[path].protocols
    if client == "chromium":
        return offered
    if client == "curl":
        return tuple(p for p in offered if p in ("http/1.1", "h2"))
    return ("http/1.1",)


def plan(path_names: Iterable[str], profiles: Iterable[str], clients: Iterable[str]) -> list[Cell]:
    """Every cell of the matrix."""
    cells = []
    profile_list = list(profiles)
    client_list = list(clients)
    for path in path_names:
        for profile in profile_list:
            for client in client_list:
                for protocol in protocols_for(client, path):
                    for transport in CLIENTS[client]:
                        cells.append(Cell(client, transport, path, profile, protocol))
    return cells


def explain(path: str, transport: str, error: str | None) -> str:
    if error is None:
        return ""
    for p, t, text, why in KNOWN:
        if p == path and t in ("*", transport) and text in error:
            return why
    return ""


def make_row(cell: Cell, r: Reading, counts: Counts, load: Load) -> Row:
    p50, p95, p99 = latency_ms(r.latencies_ns)
    ttft = None
    if r.first_ns is not None and r.started_ns is not None:
        ttft = (r.first_ns - r.started_ns) / 1e6
    wire = counts.up + counts.down
    return Row(
        client=cell.client,
        transport=cell.transport,
        path=cell.path,
        profile=cell.profile,
        protocol=cell.protocol,
        exact=r.exact,
        delivery=delivery(r.tokens, r.first_ns, r.last_ns, load.span_s),
        tokens=r.tokens,
        error=r.error,
        ttft_ms=ttft,
        latency_p50_ms=p50,
        latency_p95_ms=p95,
        latency_p99_ms=p99,
        reconnects=r.reconnects,
        cuts=counts.cuts,
        connections=counts.connections,
        bytes_up=counts.up,
        bytes_down=counts.down,
        bytes_per_token=per_token(wire, r.tokens),
        protocol_seen=r.protocol,
        note=explain(cell.path, cell.transport, r.error),
        ok_samples=int(bool(r.exact) and r.error is None),
        dropped=counts.dropped,
    )


async def _read(cell: Cell, base: str, lab: Lab, front: paths.Front, direct: str) -> Reading:
    ca = front.certs.ca if front.certs else None
    poll = lab.scaled(POLL_TIMEOUT_S)
    if cell.client == "python":
        return await probes.read_python(base, cell.transport, lab.load, ca, poll_timeout_s=poll)
    if cell.client == "js":
        return await probes.read_js(base, cell.transport, lab.load, ca, poll_timeout_s=poll)
    if cell.client == "curl":
        return await probes.read_curl(base, lab.load, ca, http2=cell.protocol == "h2")
    if cell.client == "openai":
        return await probes.read_openai(base, direct, lab.load, ca)
    raise ValueError(f"unknown client {cell.client}")


async def _bounded(coro: Awaitable[T], limit_s: float, failed: Callable[[str], T]) -> T:
    """``coro``'s result, or ``failed(why)`` if it raised or outlived ``limit_s``: one cell
    that hangs or breaks is a finding in its row, not the end of the matrix."""
    try:
        async with asyncio.timeout(limit_s):
            return await coro
    except TimeoutError:
        return failed(f"the lab's cell timeout ({limit_s:g} s)")
    except Exception as e:
        return failed(probes.error_text(e))


def split_page(before: Counts, marks: Sequence[Counts], end: Counts, n: int) -> list[Counts]:
    """One browser page read ``n`` transports one after another; ``marks`` are the shaper's
    counts once the page loaded and after each transport. Each transport gets its own
    window's bytes, connections and cuts, plus an even share of the page's own bytes (its
    load and its close); the page's connections, cuts and drops go to the first. Without
    every mark (the page broke), the whole page is shared that way."""
    if len(marks) != n + 1:
        marks = [before] * (n + 1)
    page = (marks[0] - before) + (end - marks[-1])
    out = []
    for i in range(n):
        c = marks[i + 1] - marks[i]
        c.up += page.up // n
        c.down += page.down // n
        c.udp_up += page.udp_up // n
        c.udp_down += page.udp_down // n
        if i == 0:
            c.connections += page.connections
            c.cuts += page.cuts
            c.dropped += page.dropped
        out.append(c)
    return out


def aggregate(samples: Sequence[Row]) -> Row:
    """One cell's samples in one row: ``exact`` only if every sample was; the delivery most
    samples saw (a tie: ``lump``, so that buffering seen once is not hidden); the first
    error; latencies, first token and bytes per token the median over the samples that
    have them (``*_min``/``*_max``: the spread); reconnects, cuts, connections, bytes and
    dropped datagrams the totals."""
    first = samples[0]
    if len(samples) == 1:
        return first

    def med(name: str) -> float | None:
        vals = [v for r in samples if (v := getattr(r, name)) is not None]
        return statistics.median(vals) if vals else None

    def spread(name: str) -> tuple[float | None, float | None]:
        vals = [v for r in samples if (v := getattr(r, name)) is not None]
        return (min(vals), max(vals)) if vals else (None, None)

    exacts = [r.exact for r in samples]
    deliveries = [r.delivery for r in samples]
    errors = [r.error for r in samples if r.error is not None]
    p50_min, p50_max = spread("latency_p50_ms")
    ttft_min, ttft_max = spread("ttft_ms")
    return replace(
        first,
        exact=False if False in exacts else (None if None in exacts else True),
        delivery=max(("lump", "stream", "none"), key=deliveries.count),  # a tie: lump
        tokens=int(statistics.median(r.tokens for r in samples)),
        error=None if not errors else f"{errors[0]} ({len(errors)} of {len(samples)})",
        ttft_ms=med("ttft_ms"),
        latency_p50_ms=med("latency_p50_ms"),
        latency_p95_ms=med("latency_p95_ms"),
        latency_p99_ms=med("latency_p99_ms"),
        reconnects=sum(r.reconnects for r in samples),
        cuts=sum(r.cuts for r in samples),
        dropped=sum(r.dropped for r in samples),
        connections=sum(r.connections for r in samples),
        bytes_up=sum(r.bytes_up for r in samples),
        bytes_down=sum(r.bytes_down for r in samples),
        bytes_per_token=med("bytes_per_token"),
        protocol_seen=",".join(sorted({r.protocol_seen for r in samples})),
        note=next((r.note for r in samples if r.note), ""),
        samples=len(samples),
        ok_samples=sum(r.ok for r in samples),
        latency_p50_min_ms=p50_min,
        latency_p50_max_ms=p50_max,
        ttft_min_ms=ttft_min,
        ttft_max_ms=ttft_max,
    )


def _cell_limit_s(lab: Lab) -> float:
    """No reading may outlive its stream by more than this (the probes' own timeouts are
    60 s past it; a hang shows as this cell's error)."""
    return lab.load.span_s + lab.load.ttft_ms / 1000 + 90


async def run_cells(
    cells: Sequence[Cell], lab: Lab, upstream: Server, progress: Any = None
) -> list[Row]:
    """Run ``cells`` against a running tokenwire ``upstream``, path by path, profile by
    profile (one intermediary and one shaper each), one cell at a time, each
    ``lab.samples`` times (one row per cell: :func:`aggregate`)."""
    up_port = int(upstream.base.rsplit(":", 1)[1])
    rows: list[Row] = []
    limit = _cell_limit_s(lab)

    def add(cell: Cell, samples: list[Row]) -> None:
        rows.append(aggregate(samples))
        if progress:
            progress(rows[-1])

    by_path: dict[str, list[Cell]] = {}
    for c in cells:
        by_path.setdefault(c.path, []).append(c)
    for path, path_cells in by_path.items():
        try:
            started = paths.start(path, up_port, idle_timeout_s=lab.idle_timeout(path))
            front = started.__enter__()
        except Exception as e:  # the path did not start: every cell of it says why
            why = f"{path} did not start: {probes.error_text(e)}"
            for c in path_cells:
                add(c, [make_row(c, Reading(error=why, protocol="?"), Counts(), lab.load)])
            continue
        try:
            await _run_path(front, path_cells, lab, upstream, limit, add)
        finally:
            started.__exit__(None, None, None)
    return rows


async def _read_page(
    shaper: Shaper,
    base: str,
    cells: Sequence[Cell],
    lab: Lab,
    spki: str | None,
    protocol: str,
    limit: float,
) -> list[Row]:
    """One Chromium page reads ``cells`` (one protocol, a transport each); each row gets
    its own share of the shaper's counts (:func:`split_page`)."""
    await shaper.wait_closed(5.0)
    before = shaper.counts.copy()
    marks: list[Counts] = []
    readings = await _bounded(
        probes.read_chromium(
            base,
            [c.transport for c in cells],
            lab.load,
            spki=spki,
            protocol=protocol,
            mark=lambda: marks.append(shaper.counts.copy()),
        ),
        limit * len(cells),
        lambda why: {c.transport: Reading(error=why, protocol="?") for c in cells},
    )
    await shaper.wait_closed(5.0)
    shares = split_page(before, marks, shaper.counts.copy(), len(cells))
    return [
        make_row(c, readings[c.transport], share, lab.load)
        for c, share in zip(cells, shares, strict=True)
    ]


async def _run_path(
    front: paths.Front,
    path_cells: Sequence[Cell],
    lab: Lab,
    upstream: Server,
    limit: float,
    add: Callable[[Cell, list[Row]], None],
) -> None:
    spki = front.certs.spki_sha256() if front.certs else None
    by_profile: dict[str, list[Cell]] = {}
    for c in path_cells:
        by_profile.setdefault(c.profile, []).append(c)
    for profile, profile_cells in by_profile.items():
        quic = "h3" in front.path.protocols
        shaper = Shaper(front.port, PROFILES[profile], seed=lab.seed, udp=quic)
        async with shaper:
            shaped = f"{front.path.scheme}://127.0.0.1:{shaper.port}"
            browser: dict[str, list[Cell]] = {}
            for cell in profile_cells:
                if cell.client == "chromium":
                    browser.setdefault(cell.protocol, []).append(cell)
                    continue
                samples = []
                for _ in range(lab.samples):
                    await shaper.wait_closed(5.0)  # the last reading's bytes are its own
                    before = shaper.counts.copy()
                    reading = await _bounded(
                        _read(cell, shaped, lab, front, upstream.base),
                        limit,
                        lambda why: Reading(error=why),
                    )
                    samples.append(make_row(cell, reading, shaper.counts - before, lab.load))
                add(cell, samples)
            for protocol, bcells in browser.items():
                # QUIC through the UDP relay, by name (Chromium sends no SNI to an IP)
                base = f"https://localhost:{shaper.port}" if protocol == "h3" else shaped
                per_cell: dict[Cell, list[Row]] = {c: [] for c in bcells}
                for _ in range(lab.samples):
                    page = await _read_page(shaper, base, bcells, lab, spki, protocol, limit)
                    for c, row in zip(bcells, page, strict=True):
                        per_cell[c].append(row)
                for c in bcells:
                    add(c, per_cell[c])


async def run_idle(
    path_names: Sequence[str],
    transports: Sequence[str],
    lab: Lab,
    with_hb: Server,
    without_hb: Server,
) -> list[IdleRow]:
    """Per path and transport, one stream whose first token comes after a quiet period
    longer than the path's (scaled) idle timeout, from a server with heartbeats and one
    without (the Python client, resuming as deployed)."""
    quiet = lab.scaled(QUIET_S)
    load = Load(max_tokens=5, tokens_per_s=50, ttft_ms=quiet * 1000)
    rows = []
    for path in path_names:
        timeout = lab.idle_timeout(path)
        for heartbeats, server in ((True, with_hb), (False, without_hb)):
            port = int(server.base.rsplit(":", 1)[1])

            def row(
                t: str,
                r: Reading,
                path: str = path,
                heartbeats: bool = heartbeats,
                timeout: float | None = timeout,
            ) -> IdleRow:
                return IdleRow(
                    path=path,
                    transport=t,
                    heartbeats=heartbeats,
                    idle_timeout_s=timeout or 0.0,
                    quiet_s=quiet,
                    survived=bool(r.exact) and r.error is None and r.reconnects == 0,
                    exact=r.exact,
                    reconnects=r.reconnects,
                    error=r.error,
                )

            try:
                with paths.start(path, port, idle_timeout_s=timeout) as front:
                    ca = front.certs.ca if front.certs else None
                    for t in transports:
                        r = await _bounded(
                            probes.read_python(
                                front.base, t, load, ca, poll_timeout_s=lab.scaled(POLL_TIMEOUT_S)
                            ),
                            quiet + _cell_limit_s(lab),
                            lambda why: Reading(error=why),
                        )
                        rows.append(row(t, r))
            except Exception as e:  # the path did not start: its rows say why
                why = Reading(error=f"{path} did not start: {probes.error_text(e)}")
                rows += [row(t, why) for t in transports]
    return rows


@dataclass(slots=True)
class ConnRow:
    """Chromium's connections view through one path and protocol: ``opened`` streams, an
    EventSource each (``flowing``, ``waiting`` for a connection) and one WebSocket for all
    (``ws_flowing``)."""

    path: str
    protocol: str
    opened: int
    flowing: int
    waiting: int
    ws_flowing: int
    protocol_seen: str
    error: str | None


async def run_connections(
    path_names: Sequence[str],
    lab: Lab,
    upstream: Server,
    n: int = 10,
    protocols: Sequence[str] | None = None,
) -> list[ConnRow]:
    """Per path and each protocol it offers (or those of ``protocols`` it offers): the
    connections view (``server/static/connections.html``) with ``n`` streams. Unshaped."""
    up_port = int(upstream.base.rsplit(":", 1)[1])
    rows = []
    for path in path_names:
        offered = [p for p in paths.PATHS[path].protocols if protocols is None or p in protocols]
        try:
            with paths.start(path, up_port, idle_timeout_s=lab.idle_timeout(path)) as front:
                spki = front.certs.spki_sha256() if front.certs else None
                for protocol in offered:
                    base = f"https://localhost:{front.port}" if protocol == "h3" else front.base
                    c = await _bounded(
                        probes.count_flowing(base, n=n, spki=spki, protocol=protocol),
                        120,
                        lambda why: probes.Connections(0, 0, 0, 0, "?", why),
                    )
                    rows.append(
                        ConnRow(
                            path,
                            protocol,
                            c.opened,
                            c.flowing,
                            c.waiting,
                            c.ws_flowing,
                            c.protocol,
                            c.error,
                        )  # fmt: skip
                    )
        except Exception as e:  # the path did not start: its rows say why
            why = f"{path} did not start: {probes.error_text(e)}"
            rows += [ConnRow(path, p, 0, 0, 0, 0, "?", why) for p in offered]
    return rows


def start_server(lab: Lab, heartbeats: bool = True) -> Server:
    server = spawn_server(1000, 4096, 0, lab.server_args(heartbeats))
    wait_ready(server, 30)
    return server


# ---------------------------------------------------------------------------------------
# The command


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``tokenwire bench --net`` flags (added to the bench subcommand)."""
    g = p.add_argument_group("the network lab (--net)")
    g.add_argument(
        "--net",
        action="store_true",
        help="the network lab: every transport through real proxies and shaped links",
    )
    g.add_argument(
        "--net-paths", default=",".join(paths.PATHS), help="comma-separated paths (--net)"
    )
    g.add_argument(
        "--net-profiles", default=",".join(PROFILES), help="comma-separated link profiles"
    )
    g.add_argument("--net-clients", default=",".join(CLIENTS), help="comma-separated clients")
    g.add_argument(
        "--time-scale", type=float, default=0.05, help="multiplies every timeout (--net)"
    )
    g.add_argument(
        "--samples",
        dest="net_samples",
        type=int,
        default=1,
        metavar="N",
        help="read each cell N times; the report gives medians and their spread (--net)",
    )
    g.add_argument(
        "--tbf-kbit",
        type=float,
        metavar="N",
        help="run the whole lab in a network namespace whose loopback the kernel's tbf caps "
        "at N kbit/s (every hop inside shares it; root only; docs/network.md)",
    )
    g.add_argument(
        "--net-serve",
        metavar="PATH",
        help="start one path in front of a tokenwire server (timeouts as deployed), print the "
        "connections view's URL and Chromium's flags for each protocol, run until Ctrl-C",
    )


def _names(text: str, known: Iterable[str], what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in set(known)]
    if bad or not names:
        raise SystemExit(f"tokenwire bench --net: unknown {what} {', '.join(bad) or '(none)'}")
    return names


def browser_command(front: paths.Front, protocol: str) -> str:
    """How to open the connections view through ``front`` over ``protocol`` in Chromium:
    a fresh profile (flags apply to a new browser only), the lab certificate trusted by its
    key, the protocol chosen by flags, and the page's URL."""
    base = f"https://localhost:{front.port}" if protocol == "h3" else front.base
    spki = front.certs.spki_sha256() if front.certs else None
    flags = [
        f for f in probes.chromium_args(spki=spki, protocol=protocol, origin=base)
        if f not in probes.CHROMIUM_ARGS
    ]  # fmt: skip
    return " ".join(
        ["chromium", "--user-data-dir=$(mktemp -d)", *flags, base + probes.CONNECTIONS_PAGE]
    )


def serve(path: str) -> int:
    """``tokenwire bench --net --net-serve PATH``: a tokenwire server with the lab's settings
    (heartbeats and timeouts as deployed) behind one path, until Ctrl-C."""
    lab = Lab(time_scale=1.0)
    server = start_server(lab)
    try:
        up_port = int(server.base.rsplit(":", 1)[1])
        with paths.start(path, up_port, idle_timeout_s=lab.idle_timeout(path)) as front:
            print(f"{path}: {front.path.summary}")
            print(f"tokenwire: {server.base} (the path's upstream)")
            print(f"the demo: {front.base}/")
            print(f"the connections view: {front.base}{probes.CONNECTIONS_PAGE}, in Chromium:")
            for protocol in front.path.protocols:
                print(f"  {protocol}: {browser_command(front, protocol)}")
            print("Ctrl-C stops it.", flush=True)
            signal.signal(signal.SIGTERM, signal.default_int_handler)  # kill: stop cleanly too
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    finally:
        stop_server(server)
    return 0


def run_in_tbf(ns: argparse.Namespace, quick: bool) -> int:
    """``--tbf-kbit N``: the same lab, run by a child ``tokenwire bench --net`` inside a
    network namespace whose loopback ``tbf`` caps at N kbit/s (``bench/net/netns.py``)."""
    import subprocess
    import sys

    from bench.net.netns import tbf_namespace

    stamp = time.strftime("%Y%m%d-%H%M%S")
    out: Path = getattr(ns, "out", None) or REPO / "bench" / "results" / f"{stamp}-net-tbf"
    argv = [sys.executable, "-m", "tokenwire", "bench", "--net", *(["--quick"] if quick else [])]
    argv += ["--net-paths", ns.net_paths, "--net-profiles", ns.net_profiles]
    argv += ["--net-clients", ns.net_clients, "--time-scale", f"{ns.time_scale:g}"]
    argv += ["--samples", str(ns.net_samples), "--out", str(out)]
    try:
        with tbf_namespace(ns.tbf_kbit) as netns:
            print(f"tokenwire bench --net: inside {netns.name}, lo capped by tbf at "
                  f"{ns.tbf_kbit:g} kbit/s", flush=True)  # fmt: skip
            code = subprocess.run(netns.argv(argv), cwd=REPO, check=False).returncode
            stats = netns.qdisc()
    except (ValueError, RuntimeError) as e:
        raise SystemExit(f"tokenwire bench --net: --tbf-kbit: {e}") from None
    note = (
        f"\n\nRun inside a network namespace whose loopback tbf capped at {ns.tbf_kbit:g} "
        f"kbit/s (every hop inside shares it): {stats['bytes']} bytes in "
        f"{stats['packets']} packets passed it, {stats['drops']} packets dropped.\n"
    )
    report = out / "report.md"
    if report.exists():
        report.write_text(report.read_text() + note)
    print(note.strip())
    return code


def run(ns: argparse.Namespace) -> int:
    """``tokenwire bench --net``: the matrix (``--quick``: lan and flaky, fewer tokens),
    the idle experiment, then ``report.md``, ``results.json`` and plots in the results
    folder. Returns 0: a failure through an intermediary is a finding, not an error."""
    if getattr(ns, "net_serve", None):
        return serve(_names(ns.net_serve, paths.PATHS, "path")[0])
    path_names = _names(ns.net_paths, paths.PATHS, "path")
    profiles = _names(ns.net_profiles, PROFILES, "profile")
    clients = _names(ns.net_clients, CLIENTS, "client")
    if ns.net_samples < 1:
        raise SystemExit("tokenwire bench --net: --samples must be at least 1")
    quick = bool(getattr(ns, "quick", False))
    if getattr(ns, "tbf_kbit", None) is not None:
        return run_in_tbf(ns, quick)
    if quick and ns.net_profiles == ",".join(PROFILES):
        profiles = ["lan", "flaky"]
    lab = Lab(
        load=Load(max_tokens=20 if quick else 40, tokens_per_s=20),
        time_scale=ns.time_scale,
        samples=ns.net_samples,
    )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out: Path = getattr(ns, "out", None) or REPO / "bench" / "results" / f"{stamp}-net"
    out.mkdir(parents=True, exist_ok=True)
    cells = plan(path_names, profiles, clients)
    print(f"tokenwire bench --net: {len(cells)} cells into {out}", flush=True)

    def progress(row: Row) -> None:
        verdict = "exact" if row.ok else f"FAILED ({row.error})"
        print(
            f"  {row.path:17} {row.profile:6} {row.client:8} {row.transport:8} "
            f"{row.protocol:8} {row.delivery:6} {verdict}",
            flush=True,
        )

    # Quick: the idle experiment only on paths with an idle timeout (without one, nothing
    # can cut the quiet stream).
    idle_paths = [p for p in path_names if not quick or lab.idle_timeout(p) is not None]
    server = start_server(lab)
    quiet_server = start_server(lab, heartbeats=False) if idle_paths else None
    try:
        rows = asyncio.run(run_cells(cells, lab, server, progress))
        idle = (
            asyncio.run(
                run_idle(idle_paths, ("sse", "ws", "chunked", "poll"), lab, server, quiet_server)
            )
            if quiet_server is not None
            else []
        )
        conns = (
            asyncio.run(run_connections(path_names, lab, server)) if "chromium" in clients else []
        )
    finally:
        stop_server(server)
        if quiet_server is not None:
            stop_server(quiet_server)
    from bench.net.report import write_report

    report = write_report(out, lab, rows, idle, conns)
    (out / "results.json").write_text(
        json.dumps(
            {
                "load": asdict(lab.load),
                "time_scale": lab.time_scale,
                "samples": lab.samples,
                "rows": [asdict(r) for r in rows],
                "idle": [asdict(r) for r in idle],
                "connections": [asdict(r) for r in conns],
            },
            indent=1,
        )
    )
    print(f"report: {report}")
    return 0
