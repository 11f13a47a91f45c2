"""The network lab's report: ``report.md`` (the summary, the idle experiment, the profiles
as measured, every cell) and plots, written offline into the results folder."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bench.net import paths
from bench.net.shaper import PROFILES

if TYPE_CHECKING:
    from bench.net.matrix import ConnRow, IdleRow, Lab, Row


def _f(v: float | None, spec: str = ".0f") -> str:
    return "–" if v is None else format(v, spec)


_STATUS = re.compile(r"\b([45]\d\d)\b")
_CLOSE = re.compile(r"\b(1\d\d\d)\b")


def short_error(error: str) -> str:
    """An error in a word or two: ``HTTP 500``, ``close 1006``, or the exception's name."""
    if m := _STATUS.search(error):
        return f"HTTP {m.group(1)}"
    if m := _CLOSE.search(error):
        return f"close {m.group(1)}"
    return error.split(":", 1)[0][:40]


def verdict(row: Row, short: bool = False) -> str:
    """One cell in a word or two: ``stream`` / ``LUMP`` when exact, else why it failed;
    with several samples of which only some were exact, how many (``FAIL close 1006 2/3
    exact``)."""
    mixed = f" {row.ok_samples}/{row.samples} exact" if 0 < row.ok_samples < row.samples else ""
    if row.ok:
        return "stream" if row.delivery == "stream" else "LUMP"
    err = row.error or ("text differs" if row.exact is False else "no digest")
    return (f"FAIL {short_error(err)}" if short else f"FAIL: {err[:60]}") + mixed


def _table(head: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in body]
    return lines


def summary(rows: Sequence[Row], profile: str) -> list[str]:
    """Path x (client, transport, protocol) on one profile."""
    cols: list[tuple[str, str, str]] = []
    for r in rows:
        key = (r.client, r.transport, r.protocol)
        if r.profile == profile and key not in cols:
            cols.append(key)
    if not cols:
        return []
    by = {(r.path, r.client, r.transport, r.protocol): r for r in rows if r.profile == profile}
    body = []
    for path in paths.PATHS:
        if not any(k[0] == path for k in by):
            continue
        cells = [by.get((path, *c)) for c in cols]
        body.append([path, *(verdict(r, short=True) if r else "" for r in cells)])
    head = ["path", *(f"{c} {t} {'h1' if p == 'http/1.1' else p}" for c, t, p in cols)]
    return _table(head, body)


def profile_table(rows: Sequence[Row]) -> list[str]:
    """Each profile's numbers as declared and as measured (the Python client, SSE, direct)."""
    body = []
    for p in PROFILES.values():
        measured = [
            r
            for r in rows
            if r.profile == p.name and r.client == "python" and r.transport == "sse" and r.ok
        ]
        direct = [r for r in measured if r.path == "direct"] or measured
        m = direct[0] if direct else None
        body.append(
            [
                p.name,
                _f(p.latency_ms),
                _f(p.jitter_ms),
                _f(p.rate_kbps),
                "–" if p.stall_every_s is None else f"{p.stall_every_s:g} s / {p.stall_s:g} s",
                _f(m.latency_p50_ms, ".1f") if m else "–",
                _f(m.latency_p99_ms, ".1f") if m else "–",
                _f(m.ttft_ms) if m else "–",
                str(m.reconnects) if m else "–",
                p.summary,
            ]
        )
    head = [
        "profile",
        "one-way ms",
        "jitter ms",
        "kbit/s",
        "stall every / for",
        "measured latency p50",
        "p99",
        "first token ms",
        "reconnects",
        "meaning",
    ]
    return _table(head, body)


def idle_table(idle: Sequence[IdleRow]) -> list[str]:
    body = [
        [
            r.path,
            r.transport,
            "on" if r.heartbeats else "off",
            f"{r.idle_timeout_s:g}" if r.idle_timeout_s else "none",
            f"{r.quiet_s:g}",
            "yes" if r.survived else "NO",
            str(r.reconnects),
            "exact" if r.exact else "–",
            r.error or "",
        ]
        for r in idle
    ]
    head = ["path", "transport", "heartbeats", "idle timeout s", "quiet s", "survived"]
    return _table([*head, "reconnects", "text", "error"], body)


def connections_table(conns: Sequence[ConnRow]) -> list[str]:
    body = [
        [
            c.path,
            c.protocol,
            c.protocol_seen,
            f"{c.flowing} of {c.opened}",
            str(c.waiting),
            f"{c.ws_flowing} of {c.opened}",
            c.error or "",
        ]
        for c in conns
    ]
    head = ["path", "asked", "used (nextHopProtocol)", "EventSource: flowing", "waiting"]
    return _table([*head, "one WebSocket: flowing", "error"], body)


def _spread(lo: float | None, hi: float | None) -> str:
    return "–" if lo is None or hi is None else f"{lo:.1f}-{hi:.1f}"


def added_p50(rows: Sequence[Row]) -> dict[int, float | None]:
    """Per row (by index): its latency p50 minus the ``direct`` path's on the same client,
    transport and profile (what the path adds), where both are known."""
    base = {
        (r.client, r.transport, r.profile): r.latency_p50_ms
        for r in rows
        if r.path == "direct" and r.latency_p50_ms is not None
    }
    out: dict[int, float | None] = {}
    for i, r in enumerate(rows):
        b = base.get((r.client, r.transport, r.profile))
        out[i] = None if b is None or r.latency_p50_ms is None else r.latency_p50_ms - b
    return out


def cell_table(rows: Sequence[Row]) -> list[str]:
    added = added_p50(rows)
    body = [
        [
            r.path,
            r.profile,
            r.client,
            r.transport,
            r.protocol,
            r.protocol_seen,
            "yes" if r.exact else "no",
            r.delivery,
            _f(r.ttft_ms),
            _f(r.latency_p50_ms, ".1f"),
            _f(added[i], "+.1f"),
            _f(r.latency_p95_ms, ".1f"),
            _f(r.latency_p99_ms, ".1f"),
            str(r.reconnects),
            str(r.cuts),
            str(r.dropped) if r.protocol == "h3" else "–",
            _f(r.bytes_per_token, ".1f"),
            f"{r.ok_samples}/{r.samples}",
            _spread(r.latency_p50_min_ms, r.latency_p50_max_ms),
            _spread(r.ttft_min_ms, r.ttft_max_ms),
            (r.error or "") + (f" ({r.note})" if r.note else ""),
        ]
        for i, r in enumerate(rows)
    ]
    head = ["path", "profile", "client", "transport", "asked", "used", "exact", "arrived"]
    head += ["first token ms", "lat p50", "vs direct", "p95", "p99", "reconn.", "cuts"]
    head += ["datagrams dropped"]
    head += ["B/token", "exact/samples", "p50 min-max", "first token min-max", "error"]
    return _table(head, body)


def plots(out: Path, rows: Sequence[Row]) -> list[Path]:
    """Bytes per token per path (the Python client, lan) and latency p95 per profile."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    lan = [r for r in rows if r.client == "python" and r.profile == "lan" and r.bytes_per_token]
    if lan:
        path_names = [p for p in paths.PATHS if any(r.path == p for r in lan)]
        transports = sorted({r.transport for r in lan})
        fig, ax = plt.subplots(figsize=(9, 4.5))
        width = 0.8 / len(transports)
        for i, t in enumerate(transports):
            ys = [
                next((r.bytes_per_token or 0 for r in lan if r.path == p and r.transport == t), 0)
                for p in path_names
            ]
            ax.bar([x + i * width for x in range(len(path_names))], ys, width, label=t)
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(path_names))], path_names)
        ax.set_ylabel("bytes on the wire per token (both ways)")
        ax.set_title("Bytes per token at the shaper (Python client, lan)")
        ax.legend()
        fig.autofmt_xdate()
        made.append(out / "bytes-per-token.png")
        fig.savefig(made[-1], dpi=110, bbox_inches="tight")
        plt.close(fig)
    py = [r for r in rows if r.client == "python" and r.ok and r.latency_p95_ms is not None]
    if py:
        profiles = [p for p in PROFILES if any(r.profile == p for r in py)]
        fig, ax = plt.subplots(figsize=(9, 4.5))
        for t in sorted({r.transport for r in py}):
            ys = []
            for p in profiles:
                vals = [r.latency_p95_ms for r in py if r.profile == p and r.transport == t]
                known = sorted(v for v in vals if v is not None)
                ys.append(known[len(known) // 2] if known else float("nan"))
            ax.plot(profiles, ys, marker="o", label=t)
        ax.set_yscale("log")
        ax.set_ylabel("latency p95, ms (median over paths)")
        ax.set_title("Transport latency by link profile (Python client)")
        ax.legend()
        made.append(out / "latency-by-profile.png")
        fig.savefig(made[-1], dpi=110, bbox_inches="tight")
        plt.close(fig)
    return made


def write_report(
    out: Path,
    lab: Lab,
    rows: Sequence[Row],
    idle: Sequence[IdleRow],
    conns: Sequence[ConnRow] = (),
) -> Path:
    lines = [
        "# tokenwire network lab",
        "",
        f"Each cell reads one stream of {lab.load.max_tokens} tokens at "
        f"{lab.load.tokens_per_s:g} tokens/s"
        + (
            f", {lab.samples} times (latencies, first token and bytes per token: the median "
            "over the samples, with their spread; reconnects and cuts: the totals)"
            if lab.samples > 1
            else ""
        )
        + f". Timeouts scaled by {lab.time_scale:g} "
        "(docs/network.md). `stream`: exact text, arrived over time; `LUMP`: exact text, all at "
        "the end (a buffering intermediary); `FAIL`: why.",
        "",
    ]
    for profile in PROFILES:
        part = summary(rows, profile)
        if part:
            lines += [f"## Which transport survives which path ({profile})", "", *part, ""]
    if idle:
        lines += ["## A quiet stream through an idle timeout", "", *idle_table(idle), ""]
    if conns:
        head = "## Many streams in one browser page (the demo's connections view)"
        lines += [head, "", *connections_table(conns), ""]
    lines += ["## Link profiles, declared and measured", "", *profile_table(rows), ""]
    made = plots(out, rows)
    for m in made:
        lines += [f"![{m.stem}]({m.name})", ""]
    lines += ["## Every cell", "", *cell_table(rows), ""]
    notes = sorted({r.note for r in rows if r.note})
    if notes:
        lines += ["## Known causes", "", *(f"- {n}" for n in notes), ""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report
