"""``tokenwire stream`` and ``tokenwire compare``: the client from the terminal.

Every failure is one line on stderr (``tokenwire: ...``) and an exit status, never a
traceback: 1 when the server said no, is not there, or a stream failed (or stdout's reader
left); 2 for a bad flag value; 130 for Ctrl-C. Results can be scripted: ``stream --json``
writes JSON lines only (``--stats`` adds a last line, ``{"type": "stats", ...}``);
``compare --json`` writes one JSON document and ``compare --csv`` one row per transport,
with ``--repeat N`` medians.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import statistics
import sys
from typing import Any

import aiohttp
import orjson
import yarl

from clients.client import Client, Stream
from clients.errors import TokenwireError
from wire import TRANSPORTS, Transport

DEFAULT_URL = "http://127.0.0.1:8080"
#: How long the first ``GET /healthz`` may take before the CLI says no server answers.
PROBE_S = 1.5


class Fail(Exception):
    """What the command line prints (``tokenwire: <message>``) and its exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def add_parsers(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("prompt", help="the prompt (the synthetic text depends on it)")
    common.add_argument(
        "--url",
        default=os.environ.get("TOKENWIRE_URL") or DEFAULT_URL,
        help=f"the server's base URL (default: $TOKENWIRE_URL or {DEFAULT_URL})",
    )
    common.add_argument(
        "--token",
        default=os.environ.get("TOKENWIRE_AUTH_TOKEN"),
        help="the server's --auth-token (default: $TOKENWIRE_AUTH_TOKEN)",
    )
    common.add_argument(
        "--max-tokens", type=int, default=None, help="tokens to generate (default: the server's)"
    )
    common.add_argument(
        "--source", default=None, help="a source the server enabled (default: the server's)"
    )
    common.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="a source param, e.g. --param tokens_per_s=100 or --param corpus=hard-cases "
        "(repeatable)",
    )
    s = sub.add_parser("stream", parents=[common], help="stream one answer to the terminal")
    s.add_argument("--transport", choices=TRANSPORTS, default="sse")
    s.add_argument(
        "--json", action="store_true", help="print the events as JSON lines (stdout: JSON only)"
    )
    s.add_argument(
        "--stats",
        action="store_true",
        help='end with the measurements (with --json: a last line {"type": "stats", ...})',
    )
    c = sub.add_parser(
        "compare", parents=[common], help="read one generation over all four transports"
    )
    c.add_argument(
        "--transports",
        default=",".join(TRANSPORTS),
        help=f"comma-separated, of {', '.join(TRANSPORTS)} (default: all)",
    )
    c.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="N generations, one after another; the figures are their medians",
    )
    out = c.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON document")
    out.add_argument("--csv", action="store_true", help="print CSV, one row per transport")


def _params(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise Fail(f"--param needs KEY=VALUE, got {pair!r}", 2)
        try:
            out[key] = orjson.loads(raw)
        except orjson.JSONDecodeError:
            out[key] = raw
    return out


def base_url(raw: str) -> str:
    """``--url`` checked: an ``http(s)://host[:port]`` URL (``Fail`` with status 2 if not)."""
    try:
        url = yarl.URL(raw)
        ok = url.scheme in ("http", "https") and bool(url.host)
    except (ValueError, TypeError):
        ok = False
    if not ok:
        hint = "" if "://" in raw else f"; did you mean http://{raw}?"
        raise Fail(f"--url must be http:// or https:// and a host, got {raw!r}{hint}", 2)
    return raw.rstrip("/")


def transports_arg(raw: str) -> list[Transport]:
    """``--transports`` checked against the wire's names, in the order given."""
    names = [n.strip() for n in raw.split(",") if n.strip()]
    unknown = [n for n in names if n not in TRANSPORTS]
    if unknown or not names:
        what = f"unknown transport {unknown[0]!r}" if unknown else "no transport"
        raise Fail(f"{what} in --transports (valid: {', '.join(TRANSPORTS)})", 2)
    return [t for t in TRANSPORTS if t in names]


async def probe(c: Client) -> None:
    """Fail at once, with how to start one, when no tokenwire server answers at the URL (the
    client's own reconnects would retry for many seconds first)."""
    try:
        async with asyncio.timeout(PROBE_S), c.session.get(c.url("/healthz")) as resp:
            body = await resp.read()
    except (aiohttp.ClientError, TimeoutError, ValueError):
        raise Fail(
            f"no tokenwire server answers at {c.base_url}: start one with `tokenwire serve`"
            " (or pass --url)"
        ) from None
    try:
        ok = resp.status == 200 and orjson.loads(body).get("status") == "ok"
    except (orjson.JSONDecodeError, AttributeError):
        ok = False
    if not ok:
        raise Fail(
            f"{c.base_url} answers, but not as a tokenwire server (GET /healthz: {resp.status})"
        )


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}{unit}"
    return f"{value:,}{unit}"


STAT_ROWS = [
    ("tokens", "tokens", ""),
    ("time to first token", "ttft_ms", " ms"),
    ("gap p50", "gap_p50_ms", " ms"),
    ("gap p95", "gap_p95_ms", " ms"),
    ("transport latency p50", "latency_p50_ms", " ms"),
    ("transport latency p95", "latency_p95_ms", " ms"),
    ("bytes received", "bytes_received", ""),
    ("HTTP requests", "requests", ""),
    ("reconnects", "reconnects", ""),
]
#: The measurement keys of ``StreamStats.summary()``, in the order the outputs list them.
STAT_KEYS = [key for _, key, _ in STAT_ROWS]


async def _stream(ns: argparse.Namespace) -> int:
    out = sys.stdout
    params = _params(ns.param)
    async with Client(base_url(ns.url), token=ns.token) as c:
        await probe(c)
        stream = c.stream(
            ns.prompt,
            transport=ns.transport,
            max_tokens=ns.max_tokens,
            source=ns.source,
            params=params,
        )
        async for ev in stream:
            if ns.json:
                out.write(orjson.dumps(ev).decode() + "\n")
            elif ev["type"] == "token":
                out.write(ev["text"])
            out.flush()
        if not ns.json:
            out.write("\n")
        if ns.stats:
            summary = stream.stats.summary()
            if ns.json:
                stats = {"type": "stats", "stream": stream.id, "digest_ok": stream.digest_ok}
                out.write(orjson.dumps(stats | summary).decode() + "\n")
            else:
                out.write(
                    f"stream {stream.id} over {ns.transport}, digest ok: {stream.digest_ok}\n"
                )
                for label, key, unit in STAT_ROWS:
                    out.write(f"  {label:<24}{_fmt(summary[key], unit)}\n")
    return 0


def median(values: list[Any]) -> Any:
    """The median of the measured values (``None`` when none was measured); counts stay
    ints when the median falls on one."""
    got = [v for v in values if v is not None]
    if not got:
        return None
    m = statistics.median(got)
    return int(m) if isinstance(m, float) and m.is_integer() and isinstance(got[0], int) else m


async def _compare_once(
    c: Client, ns: argparse.Namespace, transports: list[Transport], live: bool
) -> dict[Transport, Stream]:
    """One generation read over every transport at once; with ``live``, a progress table."""
    sid = await c.create(ns.prompt, ns.max_tokens, ns.source, _params(ns.param))
    streams = {t: c.subscribe(sid, transport=t) for t in transports}

    async def drain(s: Stream) -> None:
        async for _ in s:
            pass

    tasks = [asyncio.create_task(drain(s)) for s in streams.values()]
    try:
        if not live:
            await asyncio.gather(*tasks)
            return streams
        from rich.live import Live
        from rich.table import Table

        def progress() -> Table:
            table = Table(title=f"stream {sid}: one generation, {len(transports)} transports")
            table.add_column("transport")
            table.add_column("tokens", justify="right")
            table.add_column("last text")
            for t, s in streams.items():
                tail = s.text[-40:].replace("\n", "⏎").replace("\r", "␍")
                table.add_row(t, str(s.stats.tokens), tail)
            return table

        with Live(progress(), refresh_per_second=10, transient=True) as view:
            pending = set(tasks)
            while pending:
                _, pending = await asyncio.wait(pending, timeout=0.1)
                view.update(progress())
        for task in tasks:
            task.result()
        return streams
    finally:
        for task in tasks:
            task.cancel()


async def _compare(ns: argparse.Namespace) -> int:
    from rich.console import Console

    transports = transports_arg(ns.transports)
    if ns.repeat < 1:
        raise Fail(f"--repeat must be at least 1, got {ns.repeat}", 2)
    _params(ns.param)  # a bad --param fails before anything is created
    console = Console()
    live = console.is_terminal and not (ns.json or ns.csv)
    runs: list[dict[Transport, Stream]] = []
    async with Client(base_url(ns.url), token=ns.token) as c:
        await probe(c)
        for _ in range(ns.repeat):
            runs.append(await _compare_once(c, ns, transports, live))
    identical = len({s.text for run in runs for s in run.values()}) == 1
    result: dict[Transport, dict[str, Any]] = {}
    for t in transports:
        summaries = [run[t].stats.summary() for run in runs]
        result[t] = {key: median([s[key] for s in summaries]) for key in STAT_KEYS}
        result[t]["digest_ok"] = all(run[t].digest_ok for run in runs)
    if ns.json:
        doc = {
            "prompt": ns.prompt,
            "runs": ns.repeat,
            "streams": [next(iter(run.values())).id for run in runs],
            "identical_text": identical,
            "transports": result,
        }
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif ns.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["transport", "runs", *STAT_KEYS, "digest_ok", "identical_text"])
        for t in transports:
            row = [result[t][key] for key in STAT_KEYS]
            writer.writerow([t, ns.repeat, *("" if v is None else v for v in row),
                             result[t]["digest_ok"], identical])  # fmt: skip
    else:
        from rich.table import Table

        what = "measurements" if ns.repeat == 1 else f"medians of {ns.repeat} runs"
        table = Table(title=f"{what} (client side)")
        table.add_column("")
        for t in transports:
            table.add_column(t, justify="right")
        for label, key, unit in STAT_ROWS:
            table.add_row(label, *(_fmt(result[t][key], unit) for t in transports))
        table.add_row("digest ok", *(str(result[t]["digest_ok"]) for t in transports))
        console.print(table)
        console.print("identical text on every transport" if identical else "TEXTS DIFFER")
    return 0 if identical else 1


def run(ns: argparse.Namespace) -> int:
    try:
        return asyncio.run(_stream(ns) if ns.command == "stream" else _compare(ns))
    except Fail as e:
        print(f"tokenwire: {e}", file=sys.stderr)
        return e.status
    except (TokenwireError, aiohttp.ClientError) as e:
        print(f"tokenwire: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tokenwire: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of stdout left (``| head``): say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
