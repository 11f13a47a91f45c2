"""``tokenwire stream`` and ``tokenwire compare``: the client from the terminal.

Every failure is one line on stderr (``tokenwire: ...``) and an exit status, never a
traceback: 1 when the server said no, is not there, or a stream failed (or stdout's reader
left); 2 for a bad flag value; 130 for Ctrl-C. ``stream`` prints the answer, reasoning
dimmed and each tool call as ``→ name(arguments)``. Results can be scripted: ``stream
--json`` writes JSON lines only, the events (``--parts``: the parts instead; ``--stats``
adds a last line, ``{"type": "stats", ...}``);
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
from clients.parts import Part, Reasoning, Text, ToolCall, ToolCallDone
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
    s = sub.add_parser(
        "stream",
        parents=[common],
        help="stream one answer to the terminal",
        description="Stream one answer: its text, reasoning dimmed, and each tool call as "
        "→ name(arguments).",
    )
    s.add_argument("--transport", choices=TRANSPORTS, default="sse")
    s.add_argument(
        "--json", action="store_true", help="print the events as JSON lines (stdout: JSON only)"
    )
    s.add_argument(
        "--parts",
        action="store_true",
        help='with --json: print the parts instead of the events ({"type": "text" | '
        '"reasoning" | "tool_call" | "tool_call_done", ...}; tool_call_done has the whole '
        "arguments and their parsed JSON)",
    )
    s.add_argument(
        "--reasoning-effort",
        choices=REASONING_EFFORTS,
        default=None,
        help="ask for reasoning (the source streams it before the answer)",
    )
    s.add_argument(
        "--tool",
        action="append",
        default=[],
        metavar="NAME[:SCHEMA_JSON]",
        help="offer a tool: its name, and optionally the JSON Schema of its arguments, e.g. "
        """--tool 'get_weather:{"type":"object","required":["city"],"""
        """"properties":{"city":{"type":"string"}}}' (repeatable)""",
    )
    s.add_argument(
        "--tool-choice",
        default=None,
        metavar="NAME",
        help="make the model call this tool (one of the --tool names)",
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


#: ``--reasoning-effort`` values (OpenAI's ``reasoning_effort``).
REASONING_EFFORTS = ("low", "medium", "high")


def tools_arg(specs: list[str], choice: str | None) -> list[dict[str, Any]] | None:
    """``--tool NAME[:SCHEMA_JSON]`` as ``[{"name", "parameters"?}]`` (``None``: no tool);
    ``--tool-choice`` must name one of them."""
    tools: list[dict[str, Any]] = []
    for spec in specs:
        name, sep, raw = spec.partition(":")
        if not name:
            raise Fail(f"--tool needs NAME[:SCHEMA_JSON], got {spec!r}", 2)
        tool: dict[str, Any] = {"name": name}
        if sep:
            try:
                schema = orjson.loads(raw)
            except orjson.JSONDecodeError as e:
                raise Fail(f"--tool {name}: the schema is not JSON ({e})", 2) from None
            if not isinstance(schema, dict):
                raise Fail(f"--tool {name}: the schema must be a JSON object", 2)
            tool["parameters"] = schema
        tools.append(tool)
    if choice is not None and choice not in [t["name"] for t in tools]:
        raise Fail(f"--tool-choice {choice!r} is not one of the --tool names", 2)
    return tools or None


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


class PartPrinter:
    """Parts to the terminal: the answer as it is, reasoning dimmed (``rich`` decides
    whether the output takes styles: a terminal, or ``FORCE_COLOR``), each tool call as
    ``→ name(arguments)`` with its pieces as they come. Model text is written as it is
    (never parsed as markup, never sanitized: a CR stays a CR)."""

    def __init__(self, file: Any) -> None:
        from rich.color import ColorSystem
        from rich.console import Console
        from rich.style import Style

        self.file = file
        # Dim is no colour: any colour system renders it, None (no styles) leaves text as is.
        styled = Console(file=file).color_system is not None
        self.color_system = ColorSystem.STANDARD if styled else None
        self.dim = Style(dim=True)
        self.kind: str | None = None  # what was printed last: text, reasoning, call, line
        self.call: int | None = None  # the open call's index

    def write(self, text: str, dim: bool = False) -> None:
        if dim:
            text = self.dim.render(text, color_system=self.color_system)
        self.file.write(text)

    def part(self, part: Part) -> None:
        if isinstance(part, ToolCallDone):
            self.write(")\n")
            self.kind, self.call = "line", None
            return
        if isinstance(part, ToolCall) and part.index == self.call:
            self.write(part.arguments)
            return
        self._close()
        if isinstance(part, ToolCall):
            self._line()
            self.write(f"→ {part.name or '?'}(" + part.arguments)
            self.kind, self.call = "call", part.index
        elif isinstance(part, Reasoning):
            if self.kind not in (None, "reasoning", "line"):
                self.write("\n")
            self.write(part.text, dim=True)
            self.kind = "reasoning"
        elif isinstance(part, Text):
            self._line()
            self.write(part.text)
            self.kind = "text"

    def end(self) -> None:
        self._close()
        if self.kind != "line":
            self.write("\n")

    def _line(self) -> None:
        """A call or the answer after reasoning starts on a line of its own."""
        if self.kind == "reasoning":
            self.write("\n")
            self.kind = "line"

    def _close(self) -> None:
        """A call that ended without its ``ToolCallDone`` (cut short) still closes."""
        if self.call is not None:
            self.write(")\n")
            self.kind, self.call = "line", None


async def _stream(ns: argparse.Namespace) -> int:
    out = sys.stdout
    params = _params(ns.param)
    tools = tools_arg(ns.tool, ns.tool_choice)
    if ns.parts and not ns.json:
        raise Fail("--parts goes with --json (the terminal shows the parts anyway)", 2)
    async with Client(base_url(ns.url), token=ns.token) as c:
        await probe(c)
        stream = c.stream(
            ns.prompt,
            transport=ns.transport,
            max_tokens=ns.max_tokens,
            source=ns.source,
            params=params,
            reasoning_effort=ns.reasoning_effort,
            tools=tools,
            tool_choice=ns.tool_choice,
        )
        if ns.json and not ns.parts:
            async for ev in stream:
                out.write(orjson.dumps(ev).decode() + "\n")
                out.flush()
        elif ns.json:
            async for part in stream.parts():
                out.write(orjson.dumps(part.to_json()).decode() + "\n")
                out.flush()
        else:
            printer = PartPrinter(out)
            async for part in stream.parts():
                printer.part(part)
                out.flush()
            printer.end()
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
