"""``tokenwire stream`` and ``tokenwire compare``: the client from the terminal."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

import orjson

from clients.client import Client, Stream
from clients.errors import TokenwireError
from wire import TRANSPORTS, Transport


def add_parsers(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("prompt")
    common.add_argument("--url", default="http://127.0.0.1:8080", help="server base URL")
    common.add_argument(
        "--token",
        default=os.environ.get("TOKENWIRE_AUTH_TOKEN"),
        help="the server's --auth-token (default: $TOKENWIRE_AUTH_TOKEN)",
    )
    common.add_argument("--max-tokens", type=int, default=None)
    common.add_argument("--source", default=None)
    common.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="a source param, e.g. --param tokens_per_s=100 (repeatable)",
    )
    s = sub.add_parser("stream", parents=[common], help="stream one answer to the terminal")
    s.add_argument("--transport", choices=TRANSPORTS, default="sse")
    s.add_argument("--json", action="store_true", help="print the events as JSON lines")
    s.add_argument("--stats", action="store_true", help="end with the measurements")
    c = sub.add_parser(
        "compare", parents=[common], help="read one generation over all four transports"
    )
    c.add_argument("--transports", default=",".join(TRANSPORTS))


def _params(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise SystemExit(f"tokenwire: --param needs KEY=VALUE, got {pair!r}")
        try:
            out[key] = orjson.loads(raw)
        except orjson.JSONDecodeError:
            out[key] = raw
    return out


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


async def _stream(ns: argparse.Namespace) -> int:
    out = sys.stdout
    async with Client(ns.url, token=ns.token) as c:
        stream = c.stream(
            ns.prompt,
            transport=ns.transport,
            max_tokens=ns.max_tokens,
            source=ns.source,
            params=_params(ns.param),
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
            out.write(f"stream {stream.id} over {ns.transport}, digest ok: {stream.digest_ok}\n")
            for label, key, unit in STAT_ROWS:
                out.write(f"  {label:<24}{_fmt(summary[key], unit)}\n")
    return 0


async def _compare(ns: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    transports: list[Transport] = [t for t in TRANSPORTS if t in ns.transports.split(",")]
    console = Console()
    async with Client(ns.url, token=ns.token) as c:
        sid = await c.create(ns.prompt, ns.max_tokens, ns.source, _params(ns.param))
        streams = {t: c.subscribe(sid, transport=t) for t in transports}

        def progress() -> Table:
            table = Table(title=f"stream {sid}: one generation, {len(transports)} transports")
            table.add_column("transport")
            table.add_column("tokens", justify="right")
            table.add_column("last text")
            for t, s in streams.items():
                tail = s.text[-40:].replace("\n", "⏎").replace("\r", "␍")
                table.add_row(t, str(s.stats.tokens), tail)
            return table

        async def drain(s: Stream) -> None:
            async for _ in s:
                pass

        with Live(progress(), console=console, refresh_per_second=10) as live:
            tasks = [asyncio.create_task(drain(s)) for s in streams.values()]
            pending = set(tasks)
            while pending:
                _, pending = await asyncio.wait(pending, timeout=0.1)
                live.update(progress())
            for task in tasks:
                task.result()
    texts = {s.text for s in streams.values()}
    table = Table(title="measurements (client side)")
    table.add_column("")
    for t in transports:
        table.add_column(t, justify="right")
    summaries = {t: s.stats.summary() for t, s in streams.items()}
    for label, key, unit in STAT_ROWS:
        table.add_row(label, *(_fmt(summaries[t][key], unit) for t in transports))
    table.add_row("digest ok", *(str(streams[t].digest_ok) for t in transports))
    console.print(table)
    console.print("identical text on every transport" if len(texts) == 1 else "TEXTS DIFFER")
    return 0 if len(texts) == 1 else 1


def run(ns: argparse.Namespace) -> int:
    try:
        return asyncio.run(_stream(ns) if ns.command == "stream" else _compare(ns))
    except TokenwireError as e:
        print(f"tokenwire: {e}", file=sys.stderr)
        return 1
