"""The comparison report of ``tokenwire bench``: figures from Locust's own output, the
table, the plots and ``report.html``.

Everything here reads files and data that a run left behind (Locust's ``--json-file``
stats, its ``_failures.csv``, the runner's samples of the server process); nothing here
starts a process or opens a socket, so the report can be rebuilt from a results folder.

Percentiles come from the histograms Locust keeps (``response_times``: bucket → count,
with tenths of a millisecond below 10 ms, see ``bench/locustfile.py``), nearest rank
(``bench.stats.histogram_percentile``).
"""

from __future__ import annotations

import csv
import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.lab import MIB
from bench.stats import histogram_percentile, or_dash
from wire import READERS, TRANSPORTS

#: What the locustfile reports per stream and per token (the CSV rows ``<TYPE>,<name>``).
METRICS = ("ttft", "itl", "transport_latency", "stream_total")
#: Transports and dialects in report order, and their Locust request types.
LABELS: dict[str, str] = {r: r.upper() for r in READERS}
#: Fan-out subscribers: the transports (a dialect's request starts its own stream).
FANOUT_LABELS: dict[str, str] = {t: f"{t.upper()}-FANOUT" for t in TRANSPORTS}


def histogram(entry: Mapping[str, Any]) -> dict[float, int]:
    """A Locust stats entry's response-time histogram, bucket (ms) → count."""
    return {float(k): int(v) for k, v in entry.get("response_times", {}).items()}


@dataclass(slots=True)
class Metric:
    """One of the locustfile's rows: counts, bytes and times in milliseconds."""

    count: int
    failures: int
    bytes: int
    mean: float | None
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    max: float | None

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> Metric:
        hist = histogram(entry)
        n = int(entry["num_requests"])
        timed = n - int(entry.get("num_none_requests", 0))
        return cls(
            count=n,
            failures=int(entry["num_failures"]),
            bytes=int(entry["total_content_length"]),
            mean=float(entry["total_response_time"]) / timed if timed else None,
            p50=histogram_percentile(hist, 50),
            p90=histogram_percentile(hist, 90),
            p95=histogram_percentile(hist, 95),
            p99=histogram_percentile(hist, 99),
            max=float(entry["max_response_time"]) if timed else None,
        )


def nominal_stream_s(tokens: int, pace: float, ttft_ms: float) -> float:
    """How long a stream takes at the pace, from the request to its last token."""
    return ttft_ms / 1000 + (tokens - 1) / pace


@dataclass(frozen=True, slots=True, kw_only=True)
class Load:
    """One Locust run's shape: the same for every transport of a scenario."""

    users: int
    spawn_rate: float
    run_s: float
    """Streams start until then; the ones in flight finish (fan-out: an upper bound, the
    subscribers stop once they read the shared stream)."""
    tokens: int
    pace: float
    ttft_ms: float
    """Fan-out: the shared stream's first token comes this long after the users spawned."""

    @property
    def stream_s(self) -> float:
        return nominal_stream_s(self.tokens, self.pace, self.ttft_ms)


@dataclass(slots=True)
class Sample:
    """The server (and the load generator) at one moment of a run."""

    t: float
    """Seconds since Locust was started."""
    server_cpu_s: float | None
    server_rss: int | None
    client_cpu_s: float
    machine_busy_s: float | None = None
    """CPU seconds all cores were busy since boot (``/proc/stat``): what ran besides the
    server and Locust shows as "other CPU"."""
    open_streams: int | None = None
    """From the server's ``/metrics``: its live streams (fan-out: the subscriptions of the
    transport under test; a long poll counts only while it waits)."""


@dataclass(slots=True, kw_only=True)
class RunResult:
    """One Locust run: one transport, one scenario (or one stress step)."""

    scenario: str
    transport: str
    label: str
    load: Load
    exit_code: int | None
    wall_s: float
    streams: int
    failed_streams: int
    failures: list[dict[str, Any]]
    tokens: int
    """Tokens received (``ttft`` + ``itl`` rows: one per token)."""
    tokens_generated: int | None
    """Tokens the server generated meanwhile (``/metrics``)."""
    http_requests: int
    """Locust's own HTTP rows (polls, creates, ...)."""
    metrics: dict[str, Metric]
    bytes_per_token: float | None
    tokens_per_s: float | None
    server_cpu_s: float | None
    server_cpu_pct: float | None
    cpu_ms_per_1k_tokens: float | None
    rss_base_mib: float | None
    rss_peak_mib: float | None
    open_streams_peak: int | None
    kib_per_open_stream: float | None
    client_cpu_pct: float | None
    other_cpu_pct: float | None
    """Busy CPU of the whole machine minus the server's and Locust's (other sessions, the
    runner, the kernel's work not charged to either), as a share of one core."""
    ttft_hist: dict[float, int]
    samples: list[Sample] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    verdict: str | None = None
    """Stress steps: why delivery counts as broken at this step (None: it held)."""

    def metric(self, name: str) -> Metric | None:
        return self.metrics.get(name)


def read_failures(path: Path) -> list[dict[str, Any]]:
    """Locust's ``_failures.csv``: one row per (type, name, error) with its count."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [
            {
                "type": row["Method"],
                "name": row["Name"],
                "error": row["Error"],
                "occurrences": int(row["Occurrences"]),
            }
            for row in csv.DictReader(f)
        ]


def result_from_run(
    *,
    scenario: str,
    transport: str,
    label: str,
    entries: Sequence[Mapping[str, Any]],
    failures: list[dict[str, Any]],
    samples: Sequence[Sample],
    load: Load,
    exit_code: int | None,
    wall_s: float,
    tokens_generated: int | None,
) -> RunResult:
    """Figures of one run from Locust's stats entries and the runner's samples."""
    ours = {e["name"]: e for e in entries if e["method"] == label}
    metrics = {name: Metric.from_entry(ours[name]) for name in METRICS if name in ours}
    http = sum(int(e["num_requests"]) for e in entries if e["method"] in ("GET", "POST"))
    ttft, itl, total = metrics.get("ttft"), metrics.get("itl"), metrics.get("stream_total")
    tokens = (ttft.count if ttft else 0) + (itl.count if itl else 0)
    # Tokens per second of delivery: first token to the end of the last stream.
    active = None
    if "ttft" in ours and "stream_total" in ours:
        active = float(ours["stream_total"]["last_request_timestamp"]) - float(
            ours["ttft"]["start_time"]
        )
    cpu = _delta([s.server_cpu_s for s in samples])
    span = samples[-1].t - samples[0].t if len(samples) > 1 else 0.0
    client_cpu = _delta([s.client_cpu_s for s in samples])
    busy = _delta([s.machine_busy_s for s in samples])
    other = None
    if busy is not None and span:
        other = 100 * max(0.0, busy - (cpu or 0.0) - (client_cpu or 0.0)) / span
    rss = [s.server_rss for s in samples if s.server_rss is not None]
    opened = [s.open_streams for s in samples if s.open_streams is not None]
    # Per concurrent stream (fan-out: per subscriber): every user holds one all along.
    kib = max(0, max(rss) - rss[0]) / load.users / 1024 if rss and load.users else None
    return RunResult(
        scenario=scenario,
        transport=transport,
        label=label,
        load=load,
        exit_code=exit_code,
        wall_s=wall_s,
        streams=total.count if total else 0,
        failed_streams=total.failures if total else 0,
        failures=failures,
        tokens=tokens,
        tokens_generated=tokens_generated,
        http_requests=http,
        metrics=metrics,
        bytes_per_token=total.bytes / tokens if total and tokens else None,
        tokens_per_s=tokens / active if active else None,
        server_cpu_s=cpu,
        server_cpu_pct=100 * cpu / span if cpu is not None and span else None,
        cpu_ms_per_1k_tokens=1e6 * cpu / tokens if cpu is not None and tokens else None,
        rss_base_mib=rss[0] / MIB if rss else None,
        rss_peak_mib=max(rss) / MIB if rss else None,
        open_streams_peak=max(opened) if opened else None,
        kib_per_open_stream=kib,
        client_cpu_pct=100 * client_cpu / span if client_cpu is not None and span else None,
        other_cpu_pct=other,
        ttft_hist=histogram(ours["ttft"]) if "ttft" in ours else {},
        samples=list(samples),
    )


def _delta(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return known[-1] - known[0] if len(known) > 1 else None


def verdict(r: RunResult) -> str | None:
    """Why a stress step counts as broken, or None if delivery kept up with the pace:

    - any failed stream (an error, a cut, a gap, a wrong digest);
    - streams took more than 10% longer than the pace allows (median);
    - tokens arrived more than a second after the server logged them (p95).
    """
    if r.failed_streams:
        first = r.failures[0]["error"] if r.failures else "see the failures CSV"
        return f"{r.failed_streams} failed streams ({first})"
    total = r.metric("stream_total")
    if total is None or not total.count:
        return "no stream completed"
    nominal = r.load.stream_s
    if total.p50 is not None and total.p50 / 1000 > 1.1 * nominal:
        return f"behind pace: median stream {total.p50 / 1000:.1f} s, pace allows {nominal:.1f} s"
    latency = r.metric("transport_latency")
    if latency is not None and latency.p95 is not None and latency.p95 > 1000:
        return f"behind pace: p95 transport latency {latency.p95 / 1000:.1f} s"
    return None


# ---------------------------------------------------------------------------------------
# The table


def ms_pair(m: Metric | None, a: str, b: str) -> str:
    if m is None:
        return "-"
    return f"{or_dash(getattr(m, a), '.1f')} / {or_dash(getattr(m, b), '.1f')}"


COLUMNS = (
    "transport",
    "users",
    "streams",
    "failed",
    "tokens rx / gen",
    "tok/s",
    "TTFT p50 / p95 ms",
    "ITL p50 / p99 ms",
    "latency p50 / p95 / p99 ms",
    "B/tok",
    "srv CPU %",
    "CPU ms / 1k tok",
    "KiB / open stream",
    "client CPU %",
    "other CPU %",
)


def table_row(r: RunResult) -> list[str]:
    lat = r.metric("transport_latency")
    latency = (
        "-"
        if lat is None
        else f"{or_dash(lat.p50, '.1f')} / {or_dash(lat.p95, '.1f')} / {or_dash(lat.p99, '.1f')}"
    )
    gen = "?" if r.tokens_generated is None else f"{r.tokens_generated:,}"
    return [
        r.transport,
        str(r.load.users),
        str(r.streams),
        str(r.failed_streams),
        f"{r.tokens:,} / {gen}",
        or_dash(r.tokens_per_s),
        ms_pair(r.metric("ttft"), "p50", "p95"),
        ms_pair(r.metric("itl"), "p50", "p99"),
        latency,
        or_dash(r.bytes_per_token, ".1f"),
        or_dash(r.server_cpu_pct),
        or_dash(r.cpu_ms_per_1k_tokens, ".1f"),
        or_dash(r.kib_per_open_stream, ".1f"),
        or_dash(r.client_cpu_pct),
        or_dash(r.other_cpu_pct),
    ]


STRESS_COLUMNS = ("transport", "held", "broke at", "why", "srv / client CPU % there", "steps")


def stress_row(transport: str, steps: Sequence[RunResult]) -> list[str]:
    held = [s.load.users for s in steps if s.verdict is None]
    broken = next((s for s in steps if s.verdict is not None), None)
    return [
        transport,
        str(max(held)) if held else "-",
        str(broken.load.users) if broken else "not reached",
        broken.verdict or "" if broken else "",
        f"{or_dash(broken.server_cpu_pct)} / {or_dash(broken.client_cpu_pct)}" if broken else "-",
        ", ".join(str(s.load.users) for s in steps),
    ]


#: The terminal's two tables (each fits a 100-column terminal): the table's columns by
#: index into :data:`COLUMNS`, each with a shorter header. ``report.html`` has them as one.
TERMINAL_TABLES: tuple[tuple[str, tuple[tuple[int, str], ...]], ...] = (
    (
        "delivery",
        (
            (0, "transport"),
            (1, "users"),
            (2, "streams"),
            (3, "failed"),
            (5, "tok/s"),
            (6, "TTFT p50/95"),
            (7, "ITL p50/99"),
            (8, "lat p50/95/99"),
        ),
    ),
    (
        "cost",
        (
            (0, "transport"),
            (4, "tokens rx / gen"),
            (9, "B/tok"),
            (10, "srv CPU%"),
            (11, "ms/1k tok"),
            (12, "KiB/strm"),
            (13, "cli CPU%"),
            (14, "oth CPU%"),
        ),
    ),
)


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """The table on stdout: rows in :data:`COLUMNS`' shape as two tables of at most 100
    columns (delivery, cost); any other shape as one table."""
    from bench.stats import print_table as print_one

    rows = [list(r) for r in rows]
    if tuple(columns) != COLUMNS:
        print_one(title, columns, rows)
        return
    for part, picks in TERMINAL_TABLES:
        print_one(
            f"{title} ({part}; times in ms)" if part == "delivery" else f"{title} ({part})",
            [name for _, name in picks],
            [[row[i] for i, _ in picks] for row in rows],
        )


# ---------------------------------------------------------------------------------------
# Plots


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _plt().close(fig)
    return path


def _bars(
    path: Path,
    title: str,
    ylabel: str,
    groups: Mapping[str, Sequence[RunResult]],
    value: Any,
) -> Path | None:
    """Bars per transport, one colour per group (scenario)."""
    plt = _plt()
    names = list(LABELS)
    width = 0.8 / max(1, len(groups))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    drawn = False
    for i, (group, results) in enumerate(groups.items()):
        by_t = {r.transport: value(r) for r in results}
        xs = [j + i * width for j, t in enumerate(names) if by_t.get(t) is not None]
        ys = [by_t[t] for t in names if by_t.get(t) is not None]
        if ys:
            bars = ax.bar(xs, ys, width, label=group)
            ax.bar_label(bars, fmt="%.1f", fontsize=8)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xticks([j + width * (len(groups) - 1) / 2 for j in range(len(names))], names)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.legend()
    return _save(fig, path)


def plot_latency(path: Path, results: Sequence[RunResult], title: str) -> Path | None:
    """Percentiles of TTFT, ITL and transport latency per transport."""
    plt = _plt()
    qs = ("p50", "p90", "p95", "p99")
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.5))
    for ax, name, label in zip(
        axes,
        ("ttft", "itl", "transport_latency"),
        ("time to first token", "inter-token gap", "transport latency (receive - t)"),
        strict=True,
    ):
        width = 0.8 / len(qs)
        for i, q in enumerate(qs):
            xs, ys = [], []
            for j, r in enumerate(results):
                m = r.metric(name)
                if m is not None and getattr(m, q) is not None:
                    xs.append(j + i * width)
                    ys.append(getattr(m, q))
            ax.bar(xs, ys, width, label=q)
        for j, r in enumerate(results):
            if r.metric(name) is None:  # openai: OpenAI's chunks carry no server timestamp
                ax.text(j + width * 1.5, 0, "n/a", ha="center", va="bottom")
        ax.set_xticks(
            [j + width * 1.5 for j in range(len(results))], [r.transport for r in results]
        )
        ax.set_title(label)
        ax.set_ylabel("ms")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def plot_ttft(path: Path, results: Sequence[RunResult], title: str) -> Path | None:
    """Distribution (CDF) of time to first token per transport."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in results:
        hist = r.ttft_hist
        if not hist:
            continue
        n = sum(hist.values())
        xs = sorted(hist)
        seen, ys = 0, []
        for x in xs:
            seen += hist[x]
            ys.append(100 * seen / n)
        ax.step(xs, ys, where="post", label=f"{r.transport} (n={n})")
    ax.set_xlabel("time to first token (ms)")
    ax.set_ylabel("% of streams")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_timeline(path: Path, results: Sequence[RunResult], title: str) -> Path | None:
    """Server CPU and open streams over each run."""
    plt = _plt()
    fig, (cpu_ax, open_ax) = plt.subplots(1, 2, figsize=(14, 4.5))
    drawn = False
    for r in results:
        s = [x for x in r.samples if x.server_cpu_s is not None]
        if len(s) > 1:
            ts = [b.t for b in s[1:]]
            pct = [
                100 * (b.server_cpu_s - a.server_cpu_s) / (b.t - a.t)  # type: ignore[operator]
                for a, b in zip(s, s[1:], strict=False)
            ]
            cpu_ax.plot(ts, pct, label=r.transport)
            drawn = True
        o = [x for x in r.samples if x.open_streams is not None]
        if o:
            open_ax.plot([x.t for x in o], [x.open_streams for x in o], label=r.transport)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    cpu_ax.set_title("server CPU (% of one core)")
    cpu_ax.set_xlabel("s")
    open_ax.set_title("live streams (fan-out: subscriptions; a long poll only while it waits)")
    open_ax.set_xlabel("s")
    for ax in (cpu_ax, open_ax):
        ax.grid(alpha=0.3)
        if ax.lines:  # (no live streams curve when the server is several processes)
            ax.legend()
    fig.suptitle(title)
    return _save(fig, path)


def plot_stress(path: Path, stress: Mapping[str, Sequence[RunResult]]) -> Path | None:
    """Users held and users at the break, per transport."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    names = list(stress)
    held = [max((s.load.users for s in stress[t] if s.verdict is None), default=0) for t in names]
    broke = [
        next((s.load.users for s in stress[t] if s.verdict is not None), 0) or math.nan
        for t in names
    ]
    ax.bar([i - 0.2 for i in range(len(names))], held, 0.4, label="held the pace")
    ax.bar([i + 0.2 for i in range(len(names))], broke, 0.4, label="broke at")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("concurrent streams")
    ax.set_title("stress: concurrent streams per transport")
    ax.legend()
    return _save(fig, path)


def make_plots(
    out: Path,
    streams: Sequence[RunResult],
    fanout: Sequence[RunResult],
    stress: Mapping[str, Sequence[RunResult]],
) -> list[Path]:
    """Every PNG of the report (in ``out/plots/``); those without data are left out."""
    out = out / "plots"
    out.mkdir(parents=True, exist_ok=True)
    made: list[Path | None] = []
    groups = {k: v for k, v in (("streams", streams), ("fan-out", fanout)) if v}
    if streams:
        made.append(plot_latency(out / "latency.png", streams, "latency percentiles (streams)"))
        made.append(plot_ttft(out / "ttft.png", streams, "time to first token (streams)"))
        made.append(plot_timeline(out / "timeline.png", streams, "streams: server over time"))
    if fanout:
        made.append(plot_latency(out / "fanout-latency.png", fanout, "fan-out: latency"))
        made.append(plot_timeline(out / "fanout-timeline.png", fanout, "fan-out: server"))
    if groups:
        made.append(
            _bars(
                out / "bytes-per-token.png",
                "bytes received per token",
                "bytes",
                groups,
                lambda r: r.bytes_per_token,
            )
        )
        made.append(
            _bars(
                out / "cpu-per-1k-tokens.png",
                "server CPU per 1000 tokens delivered",
                "CPU ms",
                groups,
                lambda r: r.cpu_ms_per_1k_tokens,
            )
        )
        made.append(
            _bars(
                out / "memory-per-stream.png",
                "server memory per open stream (fan-out: per subscriber)",
                "KiB (RSS growth / concurrent streams)",
                groups,
                lambda r: r.kib_per_open_stream,
            )
        )
    if stress:
        made.append(plot_stress(out / "stress.png", stress))
    return [p for p in made if p is not None]


# ---------------------------------------------------------------------------------------
# report.html


def bench_warnings(
    streams: Sequence[RunResult],
    fanout: Sequence[RunResult],
    stress: Mapping[str, Sequence[RunResult]],
) -> list[str]:
    """Every warning of a ``tokenwire bench`` run: the terminal prints them and the report
    repeats them."""
    every = [*streams, *fanout, *(r for steps in stress.values() for r in steps)]
    warnings = []
    if disturbed := [r for r in every if (r.other_cpu_pct or 0) > 25]:
        warnings.append(
            "warning: other work kept the machine busy (other CPU above 25% of a core) during "
            + ", ".join(f"{r.scenario} {r.transport}" for r in disturbed)
            + ": these figures are skewed"
        )
    if saturated := [r for r in every if (r.client_cpu_pct or 0) > 90]:
        warnings.append(
            "warning: Locust used more than 90% of a core during "
            + ", ".join(f"{r.scenario} {r.transport}" for r in saturated)
            + ": the load generator, not the server, may have set the pace"
        )
    return warnings


def write_html(
    out: Path,
    meta: Mapping[str, Any],
    streams: Sequence[RunResult],
    fanout: Sequence[RunResult],
    stress: Mapping[str, Sequence[RunResult]],
    plots: Sequence[Path],
) -> Path:
    """``report.html``: the setup, every warning, the tables (the demo's transport colours),
    the plots embedded, links to Locust's reports; nothing loaded from outside."""
    colours = " ".join(f"--{k}:{v};" for k, v in transport_colours().items())
    parts = [
        "<!doctype html><html lang='en'><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        "<title>tokenwire bench</title>",
        f"<style>{_REPORT_CSS % {'colours': colours}}</style><main>",
        "<h1>tokenwire bench</h1>",
        f"<p class='muted'>{html.escape(str(meta.get('time', '')))} · preset "
        f"{html.escape(str(meta.get('preset', '')))} · {meta.get('cpu_count')} cores</p>",
    ]
    for w in meta.get("warnings", []):
        parts.append(f"<div class='warn'>{html.escape(w)}</div>")
    for title, results in (("Streams", streams), ("Fan-out: one shared stream", fanout)):
        if not results:
            continue
        parts.append(f"<h2>{title}</h2><section class='card'>")
        parts.append(_race_table(COLUMNS, (table_row(r) for r in results)))
        links = " · ".join(
            f"<a href='{html.escape(r.files['html'])}'>{html.escape(r.transport)}</a>"
            for r in results
            if "html" in r.files
        )
        parts.append(f"<p class='muted'>Locust's own reports: {links}</p>")
        for r in results:
            for f in r.failures:
                parts.append(
                    f"<div class='warn'>{html.escape(r.transport)}: {f['occurrences']} x "
                    f"{html.escape(f['type'])} {html.escape(f['name'])}: "
                    f"{html.escape(f['error'])}</div>"
                )
        parts.append("</section>")
    if stress:
        parts.append("<h2>Stress: where delivery broke</h2><section class='card'>")
        parts.append(_race_table(STRESS_COLUMNS, (stress_row(t, s) for t, s in stress.items())))
        steps = [
            [f"{r.transport} x{r.load.users}", *table_row(r)[1:]]
            for s in stress.values()
            for r in s
        ]
        parts.append(_race_table(COLUMNS, steps))
        parts.append("</section>")
    for p in plots:
        parts.append(
            f"<section class='card'><h3>{html.escape(p.stem)}</h3>"
            f"<img alt='{html.escape(p.stem)}' src='{_png_data_uri(p)}'></section>"
        )
    parts.append("<h2>How it was run</h2><section class='card'><ul class='meta'>")
    parts.extend(f"<li>{html.escape(str(line))}</li>" for line in meta["notes"])
    parts.append(
        "</ul><p class='muted'>Raw files: <a href='summary.json'>summary.json</a> · "
        "<a href='plots/'>plots/</a> · <a href='locust/'>locust/</a> (Locust's CSV, JSON, "
        "HTML and log per run) · <a href='servers/'>servers/</a> (each server's log)</p>"
        "</section></main></html>"
    )
    path = out / "report.html"
    path.write_text("\n".join(parts) + "\n")
    return path


# ---------------------------------------------------------------------------------------
# The demo's colours, and the peer race's report

#: The demo page's stylesheet: its ``--sse``, ``--ws``, ``--poll``, ``--chunked`` colours
#: (the light scheme's, declared last) are the report's too.
DEMO_CSS = Path(__file__).resolve().parent.parent / "server" / "static" / "demo.css"
_FALLBACK_COLOUR = "#5b647c"


def transport_colours() -> dict[str, str]:
    """Each transport's colour on the demo page (light scheme), read from its CSS."""
    import re

    found: dict[str, str] = {}
    try:
        css = DEMO_CSS.read_text()
    except OSError:
        return found
    for name, colour in re.findall(r"--(sse|ws|poll|chunked):\s*(#[0-9a-fA-F]{3,8})", css):
        found[name] = colour  # the last declaration wins: the light scheme
    return found


def transport_colour(transport: str) -> str:
    return transport_colours().get(transport, _FALLBACK_COLOUR)


def _png_data_uri(path: Path) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def plot_race_ratios(path: Path, doc: Mapping[str, Any]) -> Path | None:
    """tokenwire / peer per cell, one panel per peer: tokens/s at full speed (above 1:
    tokenwire ahead) and server CPU per token at the realistic pace (below 1: ahead)."""
    cells = doc.get("cells", [])
    paced = doc.get("paced", [])
    peers = [t for t in doc["meta"]["targets"] if t != "tokenwire"]
    if not peers or not (cells or paced):
        return None
    plt = _plt()
    rows: list[tuple[str, list[Mapping[str, Any]], str, str]] = [
        ("full speed: tokens/s ratio", cells, "scenario", "tokens_per_s_ratio"),
        ("paced: CPU per token ratio", paced, "transport", "cpu_ratio"),
    ]
    rows = [row for row in rows if row[1]]  # a run without full-speed (or paced) cells
    fig, axes = plt.subplots(
        len(rows), len(peers), figsize=(3.2 * len(peers) + 1, 3.5 * len(rows)), squeeze=False
    )
    for r, (title, source, key, field_name) in enumerate(rows):
        for k, peer in enumerate(peers):
            ax = axes[r][k]
            mine = [c for c in source if c["target"] == peer and c.get(field_name) is not None]
            names = [c[key] for c in mine]
            values = [c[field_name] for c in mine]
            colours = [transport_colour("sse" if n in ("fanout", "fair") else n) for n in names]
            bars = ax.bar(range(len(names)), values, color=colours)
            ax.bar_label(bars, fmt="%.2f", fontsize=7)
            ax.axhline(1.0, color="#151a2b", linewidth=0.8)
            ax.set_xticks(range(len(names)), names, rotation=30, fontsize=8)
            ax.set_title(f"{title}\ntokenwire / {peer}", fontsize=9)
            ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


_REPORT_CSS = """
:root { --fg:#151a2b; --muted:#5b647c; --line:#dde2ee; --card:#fff; --bg:#f4f6fb;
  --ok:#15803d; --bad:#b91c1c; --warn:#a16207; %(colours)s }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg);
  background: var(--bg); margin: 0; padding: 2rem; }
main { max-width: 1180px; margin: auto; }
h1 { margin: 0 0 .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid var(--line); }
.muted { color: var(--muted); } code { font: 0.9em ui-monospace, monospace; }
section.card { background: var(--card); border: 1px solid var(--line); border-radius: 12px;
  padding: 1rem 1.4rem; margin: 1rem 0; overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; font-size: 14px; }
th, td { padding: 4px 10px; text-align: right; border-bottom: 1px solid var(--line);
  white-space: nowrap; }
th { background: var(--bg); position: sticky; top: 0; }
td:first-child, th:first-child, td.name { text-align: left; }
tr.tokenwire td { font-weight: 600; }
td.t { border-left: 6px solid var(--c); }
.warn { background: #fef9c3; border-left: 6px solid var(--warn); padding: .5rem 1rem;
  margin: .4rem 0; border-radius: 6px; }
li.met::marker { color: var(--ok); } li.missed { color: var(--bad); font-weight: 600; }
img { max-width: 100%%; height: auto; }
ul.meta { font-size: 13px; color: var(--muted); }
"""


def _cell_colour(name: str) -> str:
    key = "sse" if name.startswith(("fan-out", "fair")) else name.split(" ", 1)[0]
    return transport_colour(key)


def _race_table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cls = " class='tokenwire'" if len(row) > 1 and row[1] == "tokenwire" else ""
        cells = [
            f"<td class='t' style='--c:{_cell_colour(row[0])}'>{html.escape(row[0])}</td>",
            *(f"<td>{html.escape(v)}</td>" for v in row[1:]),
        ]
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def write_race_html(out: Path, doc: Mapping[str, Any], pngs: Sequence[Path]) -> Path:
    """The peer race's ``report.html`` from ``race.json``'s document: goals, warnings (every
    one the terminal printed), the tables, the plots embedded; nothing loaded from outside
    (opens offline); the raw files are linked in their folders."""
    from bench import race

    meta = doc["meta"]
    plan_doc = dict(meta["plan"])
    paced_doc = plan_doc.pop("paced", None)
    plan = race.RacePlan(
        **{**plan_doc, "transports": tuple(plan_doc["transports"])},
        paced=None
        if paced_doc is None
        else race.PacedPlan(**{**paced_doc, "transports": tuple(paced_doc["transports"])}),
    )
    cells = [
        race.RaceCell(**{k: v for k, v in c.items() if k != "runs"}) for c in doc.get("cells", [])
    ]
    paced = [
        race.PacedCell(**{k: v for k, v in c.items() if k != "runs"}) for c in doc.get("paced", [])
    ]
    plots_dir = out / "plots"
    plots_dir.mkdir(exist_ok=True)
    ratio_png = plot_race_ratios(plots_dir / "ratios.png", doc)
    images = [p for p in (ratio_png, *pngs) if p is not None and p.exists()]
    colours = " ".join(f"--{k}:{v};" for k, v in transport_colours().items())
    parts = [
        "<!doctype html><html lang='en'><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        "<title>tokenwire: the peer race</title>",
        f"<style>{_REPORT_CSS % {'colours': colours}}</style><main>",
        "<h1>tokenwire: the peer race</h1>",
        f"<p class='muted'>{html.escape(meta.get('time', ''))} · {meta.get('cpu_count')} cores"
        f" · targets: {html.escape(', '.join(meta['targets']))}"
        + (
            " · skipped: "
            + html.escape(", ".join(f"{k} ({v})" for k, v in meta["skipped"].items()))
            if meta.get("skipped")
            else ""
        )
        + "</p>",
    ]
    for w in doc.get("warnings", []):
        parts.append(f"<div class='warn'>{html.escape(w)}</div>")
    if doc.get("goals"):
        items = []
        for g in doc["goals"]:
            cls = "missed" if "(MISSED)" in g else "met" if "(met)" in g else ""
            items.append(f"<li class='{cls}'>{html.escape(g)}</li>")
        parts.append(
            "<h2>Goals</h2><section class='card'><ul>" + "".join(items) + "</ul></section>"
        )
    if cells:
        parts.append("<h2>Full speed</h2><section class='card'>")
        parts.append(_race_table(race.COLUMNS, race.table_rows(cells, plan)))
        peers = [t for t in meta["targets"] if t != "tokenwire"]
        if peers:
            parts.append("<h3>tokenwire / peer: tokens/s (server CPU per token)</h3>")
            parts.append(_race_table(["cell", *peers], race.ratio_rows(cells, plan, peers)))
        parts.append("</section>")
    if paced and plan.paced is not None:
        parts.append(
            f"<h2>At a realistic pace (Locust, {plan.paced.users} streams x "
            f"{plan.paced.pace:g} tokens/s)</h2><section class='card'>"
        )
        parts.append(_race_table(race.PACED_COLUMNS, race.paced_rows(paced, plan.paced)))
        links = []
        for c in doc.get("paced", []):
            for n, r in enumerate(c.get("runs", []), 1):
                if "html" in r.get("files", {}):
                    links.append(
                        f"<a href='{html.escape(r['files']['html'])}'>"
                        f"{html.escape(c['transport'])} {html.escape(c['target'])} #{n}</a>"
                    )
        if links:
            parts.append("<p class='muted'>Locust's own reports: " + " · ".join(links) + "</p>")
        parts.append("</section>")
    for p in images:
        parts.append(
            f"<section class='card'><h3>{html.escape(p.stem)}</h3>"
            f"<img alt='{html.escape(p.stem)}' src='{_png_data_uri(p)}'></section>"
        )
    parts.append("<h2>How it was run</h2><section class='card'><ul class='meta'>")
    parts.extend(f"<li>{html.escape(str(line))}</li>" for line in meta.get("header", []))
    parts.append(
        "</ul><p class='muted'>Raw files: <a href='race.json'>race.json</a> · "
        "<a href='plots/'>plots/</a> · <a href='locust/'>locust/</a> (Locust's CSV, JSON, "
        "HTML and logs per paced run) · <a href='servers/'>servers/</a> (each server's log)"
        "</p></section></main></html>"
    )
    path = out / "report.html"
    path.write_text("\n".join(parts) + "\n")
    return path
