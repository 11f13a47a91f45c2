"""Transport overhead: delivered tokens/s, transport-added latency, bytes and CPU per token.

Each transport and each dialect (``/v1`` Chat Completions, Responses, Anthropic Messages)
against an unpaced synthetic source, at each
concurrency level, read over raw aiohttp sockets with the clients' decoders and checked
with :class:`clients.check.StreamCheck`. Method, columns and options: docs/bench.md
("Transport overhead"). ``python -m bench.overhead --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import itertools
import json
import os
import platform
import shlex
import statistics
import sys
import time
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.dialects import ROUTES, DialectReader, request_body
from bench.lab import (
    MIB,
    Server,
    check_loopback,
    comma_separated_ints,
    machine_busy_s,
    process_usage,
    raise_nofile,
    spawn_server,
    stop_server,
    wait_idle,
    wait_ready,
)
from bench.stats import (
    jain_index,
    median_of_known,
    or_dash,
    percentile,
    print_table,
    response_head_bytes,
)
from clients.check import IncompleteStream, StreamCheck
from clients.decoders import NDJSONDecoder, SSEDecoder, ws_frame_header
from server.sources.synthetic import synthetic_text
from wire import READERS

#: Server ``timeout`` for one long poll (seconds).
POLL_WAIT_S = 10


# ---------------------------------------------------------------------------------------
# What one cell run counts over all its streams


@dataclass(slots=True)
class CellTally:
    """Bytes, reads, latencies and failures of every stream of one cell run."""

    latencies_ms: array[float] = field(default_factory=lambda: array("d"))
    streams: int = 0
    tokens: int = 0
    bytes: int = 0
    payload_bytes: int = 0
    """The events' JSON (``/v1``: the token text): ``bytes`` minus this is the framing."""
    reads: int = 0
    """Body chunks (SSE, NDJSON), messages (WebSocket) or responses (poll) received."""
    failures: Counter[str] = field(default_factory=Counter)
    """Failed streams by kind of problem."""
    examples: dict[str, str] = field(default_factory=dict)
    """The first detailed message of each kind."""
    checks: list[StreamCheck] = field(default_factory=list)
    """Every stream's check, as its read starts (the fairness watch reads their counts)."""

    def report(self, metric: str, ms: float, nbytes: int) -> None:
        """:class:`StreamCheck`'s report: only the transport latency is kept here."""
        if metric == "transport_latency":
            self.latencies_ms.append(ms)

    def fail(self, kind: str, detail: str) -> None:
        self.failures[kind] += 1
        self.examples.setdefault(kind, detail)


def failure_kind(message: str) -> str:
    """``a gap: seq 5 where 3 was expected`` -> ``a gap``: the message up to its first
    colon or figure, to count failures by kind."""
    head = message.split(":", 1)[0]
    words = []
    for word in head.split():
        if any(c.isdigit() for c in word):
            break
        words.append(word)
    return " ".join(words[:6]) or message[:40]


async def http_failure(resp: aiohttp.ClientResponse, what: str = "") -> IncompleteStream:
    """``HTTP 503 too_many_unpaced_streams: message`` from a tokenwire error body."""
    raw = await resp.read()
    try:
        err = orjson.loads(raw)["error"]
        detail = f"HTTP {resp.status} {err['code']}: {err.get('message')}"
    except (orjson.JSONDecodeError, KeyError, TypeError):
        detail = f"HTTP {resp.status}: {raw[:200].decode(errors='replace')}"
    return IncompleteStream(what + detail)


# ---------------------------------------------------------------------------------------
# One reader per transport: bytes from an aiohttp socket into the clients' decoders and
# the stream check. Each returns when the stream ended; IncompleteStream when it was not
# whole.


ReadStream = Callable[[aiohttp.ClientSession, str, bytes, StreamCheck, CellTally], Awaitable[None]]
JSON_HEADERS = {"Content-Type": "application/json"}


async def read_sse_body(
    resp: aiohttp.ClientResponse,
    check: StreamCheck,
    tally: CellTally,
    first_token_ns: list[int] | None = None,
) -> None:
    """Decode and check an SSE response (a create-and-stream or a subscriber's) until its
    terminal event; ``first_token_ns`` collects when ``seq`` 0 arrived."""
    if resp.status != 200:
        raise await http_failure(resp)
    decoder = SSEDecoder()
    async for chunk in resp.content.iter_any():
        now = time.time_ns()
        tally.reads += 1
        tally.bytes += len(chunk)
        for msg in decoder.feed(chunk):
            ev = orjson.loads(msg.data)
            if msg.event != "created":
                tally.payload_bytes += len(msg.data.encode())
                if msg.event != ev.get("type") or msg.last_event_id != str(ev.get("seq")):
                    raise IncompleteStream(f"SSE event/id fields differ: {msg.data[:200]}")
                if first_token_ns is not None and ev.get("seq") == 0:
                    first_token_ns.append(now)
            if check.event(ev, now):
                return


async def read_sse(
    session: aiohttp.ClientSession, base: str, body: bytes, check: StreamCheck, tally: CellTally
) -> None:
    async with session.post(f"{base}/api/sse", data=body, headers=JSON_HEADERS) as resp:
        await read_sse_body(resp, check, tally)


async def read_chunked(
    session: aiohttp.ClientSession, base: str, body: bytes, check: StreamCheck, tally: CellTally
) -> None:
    async with session.post(f"{base}/api/chunked", data=body, headers=JSON_HEADERS) as resp:
        if resp.status != 200:
            raise await http_failure(resp)
        decoder = NDJSONDecoder()
        async for chunk in resp.content.iter_any():
            now = time.time_ns()
            tally.reads += 1
            tally.bytes += len(chunk)
            tally.payload_bytes += len(chunk) - chunk.count(b"\n")  # one LF after each line
            for ev in decoder.feed(chunk):
                if ev.get("type") == "created":  # a control message, not a log event
                    tally.payload_bytes -= len(orjson.dumps(ev))
                if check.event(ev, now):
                    return


async def read_ws(
    session: aiohttp.ClientSession, base: str, body: bytes, check: StreamCheck, tally: CellTally
) -> None:
    op = b'{"op":"generate",' + body[1:]
    async with session.ws_connect(f"{base}/api/ws", autoclose=False, max_msg_size=0) as ws:
        await ws.send_str(op.decode())
        while True:
            msg = await ws.receive()
            now = time.time_ns()
            if msg.type is not aiohttp.WSMsgType.TEXT:
                extra = f"{msg.data!r} {msg.extra or ''}".strip()
                raise IncompleteStream(f"WebSocket {msg.type.name}: {extra}")
            tally.reads += 1
            data = msg.data.encode()
            n = len(data)
            tally.bytes += n + ws_frame_header(n)
            ev = orjson.loads(data)
            if ev.get("type") != "created":
                tally.payload_bytes += n
            if check.event(ev, now):
                return


def poll_envelope(n_events: int, nxt: int, done: bool) -> int:
    """Bytes of ``{"events":[...],"next":N,"done":B}`` around n events' JSON."""
    tail = b'],"next":%d,"done":%s}' % (nxt, b"true" if done else b"false")
    return len(b'{"events":[') + max(0, n_events - 1) + len(tail)


async def read_poll(
    session: aiohttp.ClientSession, base: str, body: bytes, check: StreamCheck, tally: CellTally
) -> None:
    async with session.post(f"{base}/api/streams", data=body, headers=JSON_HEADERS) as resp:
        if resp.status != 201:
            raise await http_failure(resp)
        check.stream_id = (await resp.json())["id"]
    url = f"{base}/api/streams/{check.stream_id}/poll"
    after = -1
    while True:
        async with session.get(f"{url}?after={after}&timeout={POLL_WAIT_S}") as resp:
            raw = await resp.read()
            now = time.time_ns()
            if resp.status != 200:
                raise IncompleteStream(f"poll: HTTP {resp.status}: {raw[:200]!r}")
            tally.reads += 1
            tally.bytes += len(raw) + response_head_bytes(resp.reason or "", resp.raw_headers)
        page = orjson.loads(raw)
        events = page["events"]
        tally.payload_bytes += len(raw) - poll_envelope(len(events), page["next"], page["done"])
        ended = False
        for ev in events:
            ended = check.event(ev, now)
        if page["next"] != (events[-1]["seq"] if events else after):
            raise IncompleteStream(f"poll: next={page['next']} does not follow the events")
        after = page["next"]
        if page["done"] or ended:
            if page["done"] != ended:
                raise IncompleteStream("poll: the done flag and the terminal event disagree")
            return


async def read_openai(
    session: aiohttp.ClientSession, base: str, body: bytes, check: StreamCheck, tally: CellTally
) -> None:
    """``/v1/chat/completions``: OpenAI's chunks, whose text is compared with the synthetic
    source's own text for the prompt (the dialect has no digest)."""
    create = orjson.loads(body)
    request = {
        "model": "synthetic",
        "messages": [{"role": "user", "content": create["prompt"]}],
        "max_tokens": create["max_tokens"],
        "stream": True,
        "params": create["params"],
    }
    url = f"{base}/v1/chat/completions"
    async with session.post(url, data=orjson.dumps(request), headers=JSON_HEADERS) as resp:
        if resp.status != 200:
            raise await http_failure(resp)
        check.stream_id = resp.headers.get("Tokenwire-Stream")
        decoder = SSEDecoder()
        async for chunk in resp.content.iter_any():
            now = time.time_ns()
            tally.reads += 1
            tally.bytes += len(chunk)
            for msg in decoder.feed(chunk):
                if msg.data == "[DONE]":
                    check.openai_done()
                    synthetic_check(check, create)
                    return
                chunk_obj = orjson.loads(msg.data)
                before = check.tokens
                check.openai_chunk(chunk_obj, now)
                if check.tokens != before:  # a content chunk: its text is the payload
                    tally.payload_bytes += len(chunk_obj["choices"][0]["delta"]["content"].encode())


def synthetic_check(check: StreamCheck, create: dict[str, Any]) -> None:
    """A dialect carries no digest: its text must be the synthetic source's own."""
    text = "".join(synthetic_text(create["prompt"], 0, create["max_tokens"]))
    if check.sha256 != hashlib.sha256(text.encode()).hexdigest():
        raise IncompleteStream("the text differs from the synthetic source's")


async def read_dialect(
    dialect: str,
    session: aiohttp.ClientSession,
    base: str,
    body: bytes,
    check: StreamCheck,
    tally: CellTally,
) -> None:
    """Responses or Anthropic Messages: the dialect's events, checked as Chat Completions
    chunks (:class:`bench.dialects.DialectReader`)."""
    create = orjson.loads(body)
    request = request_body(dialect, create["prompt"], create["max_tokens"], create["params"])
    async with session.post(f"{base}{ROUTES[dialect]}", data=request, headers=JSON_HEADERS) as resp:
        if resp.status != 200:
            raise await http_failure(resp)
        check.stream_id = resp.headers.get("Tokenwire-Stream")
        reader = DialectReader(dialect, check)
        decoder = SSEDecoder()
        async for chunk in resp.content.iter_any():
            now = time.time_ns()
            tally.reads += 1
            tally.bytes += len(chunk)
            for msg in decoder.feed(chunk):
                text = reader.feed(msg.event, msg.data, now)
                if text:  # a text delta: its text is the payload
                    tally.payload_bytes += len(text.encode())
                if reader.done:
                    synthetic_check(check, create)
                    return


def _dialect_reader(dialect: str) -> ReadStream:
    """:func:`read_dialect` for one dialect."""

    async def read(
        session: aiohttp.ClientSession,
        base: str,
        body: bytes,
        check: StreamCheck,
        tally: CellTally,
    ) -> None:
        await read_dialect(dialect, session, base, body, check, tally)

    return read


STREAM_READERS: dict[str, ReadStream] = {
    "sse": read_sse,
    "ws": read_ws,
    "poll": read_poll,
    "chunked": read_chunked,
    "openai": read_openai,
    "responses": _dialect_reader("responses"),
    "anthropic": _dialect_reader("anthropic"),
}
#: The readers measured: every transport and dialect.
MEASURED = tuple(r for r in READERS if r in STREAM_READERS)


# ---------------------------------------------------------------------------------------
# Cells


@dataclass(slots=True)
class CellResult:
    """One run of one cell, or the median over repeats (failures summed)."""

    transport: str
    concurrency: int
    tokens_per_stream: int
    streams: int
    tokens: int
    wall_s: float
    tokens_per_s: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    bytes_per_token: float | None
    overhead_bytes_per_token: float | None
    tokens_per_read: float | None
    """Tokens per body chunk / message / poll response the client read."""
    failures: int
    failure_kinds: dict[str, int]
    failure_examples: dict[str, str]
    server_cpu_s: float | None
    client_cpu_s: float
    other_cpu_s: float | None
    """Busy CPU time of the whole machine minus the server's and the client's."""
    server_rss_mb: float | None = None
    vs_sse: float | None = None
    jain: float | None = None
    """Jain's index over the streams' tokens delivered while all were under way
    (:func:`watch_fairness`; None when not watched or there was no such window)."""
    runs: list[CellResult] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class CellSpec:
    """One cell: ``concurrency`` lanes, each reading ``per_lane`` streams one after another."""

    transport: str
    concurrency: int
    tokens: int
    per_lane: int


async def warm_pool(session: aiohttp.ClientSession, base: str, n: int) -> None:
    """Open n keep-alive connections, so each cell starts from a warm pool."""

    async def one() -> None:
        async with session.get(f"{base}/healthz") as resp:
            await resp.read()

    await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)


async def tally_stream(
    tally: CellTally, check: StreamCheck, expected: int, read: Awaitable[None]
) -> None:
    """Await ``read`` (which feeds ``check``) and count the stream in ``tally``: whole with
    ``expected`` tokens, or a failure of the kind its error names."""
    tally.streams += 1
    try:
        await read
        check.end()
        if check.tokens != expected:
            raise IncompleteStream(f"finished after {check.tokens} of {expected} tokens")
    except IncompleteStream as e:
        tally.fail(failure_kind(str(e)), str(e)[:200])
    except (aiohttp.ClientError, OSError, ValueError, KeyError, TypeError) as e:
        tally.fail(type(e).__name__, str(e)[:200])
    except asyncio.CancelledError:
        tally.fail("cell timeout", f"after {check.tokens} of {expected} tokens")
        raise
    finally:
        tally.tokens += check.tokens


async def read_stream(
    session: aiohttp.ClientSession, base: str, spec: CellSpec, body: bytes, tally: CellTally
) -> None:
    """Read and check one stream; a stream that is not whole counts as a failure."""
    check = StreamCheck(tally.report, sent_ns=time.time_ns(), max_tokens=spec.tokens)
    tally.checks.append(check)
    read = STREAM_READERS[spec.transport](session, base, body, check, tally)
    await tally_stream(tally, check, spec.tokens, read)


async def watch_fairness(tally: CellTally, streams: int, tokens: int) -> float | None:
    """Jain's index over the tokens each of ``streams`` streams had received at the moment
    the first of them had all ``tokens`` (counts read every 5 ms). The streams must start
    together (a common ``ttft_ms`` longer than their creation) for the counts to compare.
    None if the cell ended first."""
    while True:
        await asyncio.sleep(0.005)
        counts = [c.tokens for c in tally.checks]
        if len(counts) == streams and max(counts) >= tokens:
            return jain_index(counts)


async def run_cell(
    session: aiohttp.ClientSession,
    base: str,
    spec: CellSpec,
    rate: float,
    cell_timeout: float,
    server_pid: int | None,
    run_no: int,
    settle_s: float = 0.0,
    fairness: bool = False,
    ttft_ms: float = 0.0,
) -> CellResult:
    """One cell run (``fairness``: with :func:`watch_fairness`, one stream per lane;
    ``ttft_ms``: every stream's first token waits this long, so that all can be in place)."""
    await asyncio.to_thread(wait_idle, base, 30.0, 0.05)
    if settle_s:
        await asyncio.sleep(settle_s)  # let the server's sweeper free the last cell's logs
    await warm_pool(session, base, spec.concurrency)
    gc.collect()
    tally = CellTally()
    params = {"tokens_per_s": rate, "ttft_ms": ttft_ms}

    async def lane(i: int) -> None:
        for k in range(spec.per_lane):
            prompt = f"overhead {spec.transport} c={spec.concurrency} run={run_no} #{i}.{k}"
            body = orjson.dumps({"prompt": prompt, "max_tokens": spec.tokens, "params": params})
            await read_stream(session, base, spec, body, tally)

    srv0, _ = process_usage(server_pid)
    busy0 = machine_busy_s()
    cli0 = time.process_time()
    t0 = time.perf_counter()
    tasks = [asyncio.create_task(lane(i)) for i in range(spec.concurrency)]
    watch = (
        asyncio.create_task(watch_fairness(tally, spec.concurrency, spec.tokens))
        if fairness and spec.per_lane == 1
        else None
    )
    _, pending = await asyncio.wait(tasks, timeout=cell_timeout)
    wall = time.perf_counter() - t0
    jain = None
    if watch is not None:
        if watch.done():
            jain = watch.result()
        else:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
    cli = time.process_time() - cli0
    srv1, rss = process_usage(server_pid)
    busy1 = machine_busy_s()
    srv = srv1 - srv0 if srv0 is not None and srv1 is not None else None
    other = max(0.0, busy1 - busy0 - cli - (srv or 0.0))
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)

    lat = sorted(tally.latencies_ms)
    n = tally.tokens
    return CellResult(
        transport=spec.transport,
        concurrency=spec.concurrency,
        tokens_per_stream=spec.tokens,
        streams=tally.streams,
        tokens=n,
        wall_s=wall,
        tokens_per_s=n / wall if wall > 0 else 0.0,
        p50_ms=percentile(lat, 50),
        p95_ms=percentile(lat, 95),
        p99_ms=percentile(lat, 99),
        max_ms=lat[-1] if lat else None,
        bytes_per_token=tally.bytes / n if n else None,
        overhead_bytes_per_token=(tally.bytes - tally.payload_bytes) / n if n else None,
        tokens_per_read=n / tally.reads if tally.reads else None,
        failures=sum(tally.failures.values()),
        failure_kinds=dict(tally.failures.most_common()),
        failure_examples=tally.examples,
        server_cpu_s=srv,
        client_cpu_s=cli,
        other_cpu_s=other,
        server_rss_mb=None if rss is None else rss / MIB,
        jain=jain,
    )


def aggregate(runs: list[CellResult]) -> CellResult:
    """Median of every figure over the repeats; failures summed."""
    first = runs[0]
    kinds: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for r in runs:
        kinds.update(r.failure_kinds)
        for k, v in r.failure_examples.items():
            examples.setdefault(k, v)
    return CellResult(
        transport=first.transport,
        concurrency=first.concurrency,
        tokens_per_stream=first.tokens_per_stream,
        streams=round(statistics.median(r.streams for r in runs)),
        tokens=round(statistics.median(r.tokens for r in runs)),
        wall_s=statistics.median(r.wall_s for r in runs),
        tokens_per_s=statistics.median(r.tokens_per_s for r in runs),
        p50_ms=median_of_known([r.p50_ms for r in runs]),
        p95_ms=median_of_known([r.p95_ms for r in runs]),
        p99_ms=median_of_known([r.p99_ms for r in runs]),
        max_ms=median_of_known([r.max_ms for r in runs]),
        bytes_per_token=median_of_known([r.bytes_per_token for r in runs]),
        overhead_bytes_per_token=median_of_known([r.overhead_bytes_per_token for r in runs]),
        tokens_per_read=median_of_known([r.tokens_per_read for r in runs]),
        failures=sum(r.failures for r in runs),
        failure_kinds=dict(kinds.most_common()),
        failure_examples=examples,
        server_cpu_s=median_of_known([r.server_cpu_s for r in runs]),
        client_cpu_s=statistics.median(r.client_cpu_s for r in runs),
        other_cpu_s=median_of_known([r.other_cpu_s for r in runs]),
        server_rss_mb=runs[-1].server_rss_mb,
        runs=runs if len(runs) > 1 else [],
    )


# ---------------------------------------------------------------------------------------
# Output


def cpu_cell(cpu: float | None, wall: float) -> str:
    if cpu is None:
        return "n/a"
    return f"{cpu:.2f}s {100 * cpu / wall:.0f}%" if wall > 0 else f"{cpu:.2f}s"


COLUMNS = (
    "transport",
    "c",
    "tok/stream",
    "streams",
    "tokens",
    "wall s",
    "tokens/s",
    "vs SSE",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "B/tok",
    "ovh B/tok",
    "tok/read",
    "failures",
    "srv cpu",
    "cli cpu",
    "other cpu",
)


def table_rows(cells: Sequence[CellResult]) -> list[list[str]]:
    return [
        [
            r.transport,
            str(r.concurrency),
            str(r.tokens_per_stream),
            str(r.streams),
            str(r.tokens),
            f"{r.wall_s:.2f}",
            f"{r.tokens_per_s:,.0f}",
            or_dash(r.vs_sse, ".2f"),
            or_dash(r.p50_ms, ".2f"),
            or_dash(r.p95_ms, ".2f"),
            or_dash(r.p99_ms, ".2f"),
            or_dash(r.bytes_per_token, ".1f"),
            or_dash(r.overhead_bytes_per_token, ".1f"),
            or_dash(r.tokens_per_read, ".1f"),
            str(r.failures),
            cpu_cell(r.server_cpu_s, r.wall_s),
            cpu_cell(r.client_cpu_s, r.wall_s),
            cpu_cell(r.other_cpu_s, r.wall_s),
        ]
        for r in cells
    ]


def print_cells(title: str, cells: Sequence[CellResult], plain: bool) -> None:
    """The table, one section per concurrency level."""
    starts = [i for i, r in enumerate(cells) if i and cells[i - 1].concurrency != r.concurrency]
    print_table(title, COLUMNS, table_rows(cells), plain=plain, sections=starts)


# ---------------------------------------------------------------------------------------
# Main


def parse_transports(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in MEASURED]
    if bad or not values:
        raise argparse.ArgumentTypeError(f"transports are {', '.join(MEASURED)}; got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.overhead",
        description="Delivered tokens/s and transport-added latency per transport.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--url", help="a running server (default: spawn one; see --spawn)")
    p.add_argument(
        "--spawn",
        action="store_true",
        help="start a server subprocess on a free port (the default without --url)",
    )
    p.add_argument("--server-pid", type=int, help="pid of the --url server, for its CPU time")
    p.add_argument(
        "--server-args", default="", help="extra flags for the spawned server (one string)"
    )
    p.add_argument(
        "--server-retention-s",
        type=float,
        default=1.0,
        help="spawned server's --retention-s; cells wait it out so each starts with the last "
        "cell's logs freed (0: the server default, 300 s, keeps every event in memory)",
    )
    p.add_argument(
        "--settle-s",
        type=float,
        help="pause before each cell, after the server has no live stream (default: the "
        "spawned server's retention + 0.5 s; 0 with --url)",
    )
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --url")
    p.add_argument(
        "--transports",
        type=parse_transports,
        default=list(MEASURED),
        help="comma-separated subset of " + ",".join(MEASURED),
    )
    p.add_argument(
        "--concurrency",
        type=comma_separated_ints,
        default=[1, 100, 1000],
        help="comma-separated concurrent stream counts",
    )
    p.add_argument(
        "--tokens",
        type=comma_separated_ints,
        default=[2000],
        help="tokens per stream: one value (capped at --cell-tokens/c) or one per concurrency",
    )
    p.add_argument(
        "--cell-tokens", type=int, default=200_000, help="token budget per cell (see --tokens)"
    )
    p.add_argument("--min-tokens", type=int, default=20, help="floor of the scaled tokens")
    p.add_argument("--rate", type=float, default=0.0, help="tokens_per_s per stream (0 = unpaced)")
    p.add_argument("--repeat", type=int, default=1, help="runs per cell; the median is shown")
    p.add_argument("--cell-timeout", type=float, default=60.0, help="seconds per cell run")
    p.add_argument("--no-warmup", action="store_true", help="skip the short warm-up streams")
    p.add_argument("--json", type=Path, help="write the results to this JSON file")
    p.add_argument("--plain", action="store_true", help="plain-text table even if rich exists")
    return p


def plan(args: argparse.Namespace) -> dict[int, tuple[int, int]]:
    """Per concurrency: (tokens per stream, streams per lane), about --cell-tokens in all."""
    tokens: list[int] = args.tokens
    conc: list[int] = args.concurrency
    if len(tokens) == 1:
        per_stream = {c: min(tokens[0], max(args.min_tokens, args.cell_tokens // c)) for c in conc}
    elif len(tokens) == len(conc):
        per_stream = dict(zip(conc, tokens, strict=True))
    else:
        raise SystemExit("--tokens takes one value or one per --concurrency value")
    return {c: (n, max(1, args.cell_tokens // (c * n))) for c, n in per_stream.items()}


async def background_load(seconds: float) -> float:
    """Cores kept busy by everything on the machine while the benchmark is idle."""
    b0 = machine_busy_s()
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    return (machine_busy_s() - b0) / (time.perf_counter() - t0)


def header_lines(
    args: argparse.Namespace, server: Server, nofile: str, loop: str, background: float
) -> list[str]:
    cpus = os.cpu_count() or 0
    load = f"background load before start: {background:.2f} of {cpus} cores"
    if background > 0.15:
        load += " -- WARNING: another workload is running; figures will be skewed"
    retention = (
        f", --retention-s {server.retention_s:g}" if server.retention_s else ", retention default"
    )
    where = (
        f"spawned server pid {server.pid} at {server.base}{retention} (log {server.log_path})"
        if server.proc is not None
        else f"server at {server.base}"
        + (f" pid {server.pid}" if server.pid else " (pid unknown: no server CPU)")
    )
    return [
        "tokenwire transport overhead: synthetic source at "
        + ("full speed (tokens_per_s=0)" if args.rate == 0 else f"{args.rate:g} tokens/s"),
        where,
        f"client: Python {platform.python_version()}, aiohttp {aiohttp.__version__}, "
        f"{loop} loop, open-files limit {nofile}, repeat {args.repeat}, "
        f"cell timeout {args.cell_timeout:g} s",
        f"CAVEAT: {cpus} CPU cores shared by the load client and the server; client "
        "parsing competes with the server (see srv/cli cpu, % of wall). Latency = client "
        "receive time - event t, including queueing in the log and in the client's loop.",
        load
        + " (per cell: 'other cpu' = machine busy time minus server and client"
        + ("" if server.pid else ", server included")
        + ")",
    ]


async def bench(args: argparse.Namespace, server: Server, loop_name: str, nofile: str) -> int:
    per_c = plan(args)
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        background = await background_load(1.0)
        for line in header_lines(args, server, nofile, loop_name, background):
            print(line)
        if not args.no_warmup:
            for t in args.transports:
                spec = CellSpec(t, 4, 200, 1)
                await run_cell(session, server.base, spec, args.rate, 30.0, None, -1)
        runs: dict[tuple[str, int], list[CellResult]] = {}
        rss_trail: list[float] = []
        settle: float = args.settle_s
        if settle is None:
            settle = server.retention_s + 0.5 if server.retention_s else 0.0
        for rep in range(args.repeat):
            for c in args.concurrency:
                for t in args.transports:
                    spec = CellSpec(t, c, *per_c[c])
                    r = await run_cell(
                        session,
                        server.base,
                        spec,
                        args.rate,
                        args.cell_timeout,
                        server.pid,
                        rep,
                        settle_s=settle,
                    )
                    runs.setdefault((t, c), []).append(r)
                    if r.server_rss_mb is not None:
                        rss_trail.append(r.server_rss_mb)
                    print(
                        f"  run {rep + 1}/{args.repeat} {t:>7} c={c:<5} "
                        f"{r.tokens_per_s:>10,.0f} tok/s  p50 {or_dash(r.p50_ms, '.2f')} ms  "
                        f"wall {r.wall_s:.2f} s  failures {r.failures}  "
                        f"cpu srv {cpu_cell(r.server_cpu_s, r.wall_s)} "
                        f"cli {cpu_cell(r.client_cpu_s, r.wall_s)} "
                        f"other {cpu_cell(r.other_cpu_s, r.wall_s)}  "
                        f"srv rss {or_dash(r.server_rss_mb, '.0f')} MiB",
                        flush=True,
                    )
    cells = [aggregate(runs[(t, c)]) for c in args.concurrency for t in args.transports]
    sse = {r.concurrency: r.tokens_per_s for r in cells if r.transport == "sse"}
    for r in cells:
        base = sse.get(r.concurrency)
        r.vs_sse = r.tokens_per_s / base if base else None
    title = f"median of {args.repeat} runs" if args.repeat > 1 else "one run per cell"
    print()
    print_cells(f"tokenwire transport overhead ({title})", cells, args.plain)
    grew = sum(b - a > 256 for a, b in itertools.pairwise(rss_trail))
    if rss_trail and grew > len(rss_trail) // 2:
        print(
            f"warning: the server's RSS grew in {grew} of {len(rss_trail) - 1} cells, to "
            f"{rss_trail[-1]:.0f} MiB: later cells ran against a bigger heap (finished "
            "streams' events are kept for --retention-s; see docs/bench.md)"
        )
    failed = [r for r in cells if r.failures]
    for r in failed:
        print(f"failures {r.transport} c={r.concurrency}: {r.failures} streams")
        for kind, n in r.failure_kinds.items():
            example = r.failure_examples.get(kind)
            print(f"  {n} x {kind}" + (f" (first: {example})" if example else ""))
    if args.json is not None:
        doc = {
            "meta": {
                "header": header_lines(args, server, nofile, loop_name, background),
                "background_load_cores": background,
                "cpu_count": os.cpu_count(),
                "python": platform.python_version(),
                "aiohttp": aiohttp.__version__,
                "loop": loop_name,
                "url": server.base,
                "spawned": server.proc is not None,
                "rate": args.rate,
                "repeat": args.repeat,
                "cell_timeout_s": args.cell_timeout,
                "plan": {
                    str(c): {"tokens_per_stream": n, "streams_per_lane": k}
                    for c, (n, k) in per_c.items()
                },
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
            "cells": [asdict(r) for r in cells],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.url and args.spawn:
        raise SystemExit("--url and --spawn exclude each other")
    if args.repeat < 1 or args.cell_timeout <= 0:
        raise SystemExit("--repeat must be >= 1 and --cell-timeout > 0")
    nofile = raise_nofile(max(args.concurrency))
    per_c = plan(args)
    if args.url:
        if not args.allow_remote:
            check_loopback(args.url)
        server = Server(args.url.rstrip("/"), args.server_pid)
    else:
        cap = max(5000, 2 * max(args.concurrency))
        tokens_cap = max(4096, *(n for n, _ in per_c.values()))
        retention = args.server_retention_s
        server = spawn_server(cap, tokens_cap, retention, shlex.split(args.server_args))
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    loop_name = "asyncio"
    try:
        import uvloop
    except ImportError:
        pass
    else:
        loop_factory = uvloop.new_event_loop
        loop_name = "uvloop"
    status = 2
    try:
        wait_ready(server, 30.0 if server.proc is not None else 5.0)
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            status = runner.run(bench(args, server, loop_name, nofile))
    except KeyboardInterrupt:
        status = 130
    finally:
        code = stop_server(server)
        if server.proc is not None and server.log_path is not None:
            if code == 0 and status == 0:
                server.log_path.unlink(missing_ok=True)
                print("server stopped (exit 0)")
            else:
                print(f"server stopped (exit {code}); its log: {server.log_path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
