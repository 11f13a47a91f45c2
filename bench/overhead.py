"""Transport overhead benchmark: delivered tokens/s and transport-added latency per transport.

What it measures
----------------
For each transport (SSE, WebSocket, long polling, chunked NDJSON) and each concurrency level
``c`` (default 1, 100 and 1000 concurrent streams), it runs ``c`` lanes at once against a
tokenwire server whose synthetic source runs at full speed (``tokens_per_s=0``, ``ttft_ms=0``);
each lane creates a stream and reads it to its end (and then the next one, when a cell holds
more streams than lanes, see "Tokens per stream" below), over:

- ``sse``: ``POST /api/sse`` (create and stream), parsed with ``clients.decoders.SSEDecoder``;
- ``chunked``: ``POST /api/chunked`` (create and stream), NDJSON split at LF;
- ``ws``: one socket per stream on ``GET /api/ws`` with ``{"op":"generate",...}``;
- ``poll``: ``POST /api/streams``, then ``GET /api/streams/{id}/poll?after=&timeout=``
  in a loop;
- ``openai``: ``POST /v1/chat/completions`` with ``stream: true`` (OpenAI's SSE dialect,
  the same stream under the hood), parsed with ``SSEDecoder``. Its chunks carry no ``seq``
  and no ``t``: the text is checked against the synthetic source's own text for the prompt
  instead of a ``sha256``, and no latency is reported. Its **ovh B/tok** is what the
  chunks add to the token text (the tokenwire events' JSON is not on this wire).

Per cell (transport x concurrency) it reports:

- **tokens/s**: token events received over all streams / wall time of the cell (from
  launching the streams to the last stream's end; connection set-up is included, but the
  connection pool is warmed with ``c`` concurrent ``GET /healthz`` first);
- **latency p50/p95/p99 (ms)**: client receive time (``time.time_ns()`` when the chunk,
  message or poll response arrived) minus the event's ``t`` (server ``time.time_ns()`` at
  creation). With an unpaced source this includes the time an event waits in the stream's
  log while the server and client are saturated: at high concurrency it measures queueing,
  not the wire;
- **failures**: streams that did not get every ``seq`` exactly once and in order, the
  right stream id on every event, a final ``done`` with ``finish_reason="length"``, the
  asked token count and a matching ``sha256``, or that hit an HTTP error, an ``error``
  event, an exception or the cell timeout. Failures are listed, never dropped;
- **B/tok**: bytes received per token: HTTP bodies after de-chunking (SSE, NDJSON),
  WebSocket frames (header + payload), and for long polling every response's body plus its
  status line and headers. Not counted: the one-off response/upgrade headers of the
  streaming transports, HTTP chunk-size lines, TCP/IP. **ovh B/tok** is the same minus the
  events' JSON, i.e. the framing each transport adds per token;
- **tok/read**: tokens per body chunk (SSE, NDJSON), message (WebSocket) or poll response
  the client read: how much the server batched per write (long polling batches the most);
- **vs SSE**: the cell's tokens/s divided by SSE's at the same concurrency in the same run;
- **srv cpu / cli cpu / other cpu**: CPU seconds used by the server process
  (``/proc/<pid>/stat``; known when spawned or given ``--server-pid``), by this client
  (``time.process_time``) and by everything else on the machine (``/proc/stat`` busy time
  minus those two), each also as a share of the cell's wall time. Client and server share the
  machine's cores, so the client's parsing cost competes with the server: read tokens/s
  together with them. A background load is measured for 1 s before the first cell and a
  warning is printed if the machine is not idle. The server's RSS after each cell is shown
  in the progress lines and the JSON.

With ``--repeat K`` each cell runs K times (interleaved: every cell once, then again) and
the median of each figure is reported; failures are summed over the repeats.

How to run
----------
::

    .venv/bin/python bench/overhead.py                      # spawns its own server
    .venv/bin/python bench/overhead.py --repeat 3 --json bench/results/overhead.json
    .venv/bin/python bench/overhead.py --transports sse,ws --concurrency 100
    .venv/bin/tokenwire serve --port 8090 --max-unpaced-streams 5000 \\
        --max-live-streams 5000 --max-streams-per-client 5000 &
    .venv/bin/python bench/overhead.py --url http://127.0.0.1:8090 --server-pid $!

Without ``--url`` it starts ``python -m tokenwire serve`` on a free loopback port with the stream
caps raised and ``--retention-s 1`` (``--server-retention-s``), and stops it at the end.
Each cell then starts after the previous cell's finished streams were forgotten: with the
default retention (300 s) every event stays in the server's memory (about 4 KiB each with
orjson 3.12+, whose ``dumps`` result is over-allocated), and the growing heap makes every
later cell slower than the one before. Against ``--url`` the server must already allow
enough unpaced streams (``--max-unpaced-streams``), live streams and streams per client,
and a ``max_tokens_cap`` at least ``--tokens``. Only loopback targets are accepted unless
``--allow-remote``.

Tokens per stream: every cell carries about ``--cell-tokens`` tokens (default 200000) so
that it runs a few seconds. A stream has ``--tokens N`` tokens (default 2000), capped at
``--cell-tokens / c``; each lane reads ``--cell-tokens / (c * N)`` streams one after the
other. By default: c=1 reads 100 streams of 2000 tokens in sequence, c=100 reads 100
concurrent streams of 2000 tokens, c=1000 reads 1000 concurrent streams of 200 tokens. Or
give one value per concurrency level (``--tokens 2000,2000,200``); ``--cell-tokens 2000``
with ``--concurrency 1`` reads exactly one stream. Every cell run is bounded by
``--cell-timeout`` seconds (default 60): streams still open then count as failures.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import ipaddress
import itertools
import json
import math
import os
import platform
import resource
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

try:
    from clients.decoders import SSEDecoder, ws_frame_header
    from server.sources.synthetic import synthetic_text
except ImportError:  # run from a checkout without ``pip install -e .``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from clients.decoders import SSEDecoder, ws_frame_header
    from server.sources.synthetic import synthetic_text

TRANSPORTS = ("sse", "ws", "poll", "chunked", "openai")
REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: Server ``timeout`` for one long poll (seconds).
POLL_WAIT_S = 10


# ---------------------------------------------------------------------------------------
# Per-stream checks and per-cell accumulation


@dataclass(slots=True)
class Acc:
    """What one cell run accumulates over all its streams."""

    latencies: array[int] = field(default_factory=lambda: array("q"))
    tokens: int = 0
    bytes: int = 0
    json_bytes: int = 0
    reads: int = 0
    """Body chunks (SSE, NDJSON), messages (WebSocket) or responses (poll) received."""
    failures: Counter[str] = field(default_factory=Counter)
    """Failed streams by kind of (first) problem."""
    examples: dict[str, str] = field(default_factory=dict)
    """The first detailed message of each kind."""


class StreamCheck:
    """Checks one stream's events as they arrive and records tokens and latencies."""

    __slots__ = ("acc", "expected", "next_seq", "stream_id", "sha", "finished", "problem", "detail")

    def __init__(self, acc: Acc, expected: int) -> None:
        self.acc = acc
        self.expected = expected
        self.next_seq = 0
        self.stream_id: str | None = None
        self.sha = hashlib.sha256()
        self.finished = False
        self.problem: str | None = None
        self.detail = ""

    def fail(self, kind: str, detail: str = "") -> None:
        """Record the first problem of this stream (one failure per stream)."""
        if self.problem is None:
            self.problem = kind
            self.detail = detail

    def feed(self, ev: Any, recv_ns: int) -> bool:
        """Check one decoded event; True once the stream has ended (terminal or error)."""
        typ = ev.get("type") if isinstance(ev, dict) else None
        if typ == "token":
            seq = ev["seq"]
            if seq != self.next_seq:
                kind = "duplicate or reordered" if seq < self.next_seq else "gap"
                self.fail(kind, f"seq {seq} where {self.next_seq} was expected")
            if ev["stream"] != self.stream_id:
                self.fail("event of another stream", f"{ev['stream']} in {self.stream_id}")
            self.next_seq = max(self.next_seq, seq + 1)
            self.sha.update(ev["text"].encode())
            acc = self.acc
            acc.tokens += 1
            if ev["t"] is not None:
                acc.latencies.append(recv_ns - ev["t"])
            return False
        if typ == "created":
            if self.stream_id is None:
                self.stream_id = ev.get("stream")
            return False
        if typ == "done":
            self.finished = True
            if ev.get("stream") != self.stream_id:
                self.fail("done event of another stream")
            elif ev.get("seq") != self.next_seq or ev.get("tokens") != self.next_seq:
                self.fail("done seq/tokens", f"done {ev} after {self.next_seq} tokens")
            elif self.next_seq != self.expected or ev.get("finish_reason") != "length":
                self.fail(
                    f"done ({ev.get('finish_reason')}) before max_tokens",
                    f"after {self.next_seq} of {self.expected} tokens",
                )
            elif ev.get("sha256") != self.sha.hexdigest():
                self.fail("sha256 of the text does not match the done event", str(ev))
            return True
        if typ == "error":
            self.finished = True
            self.fail(f"error event {ev.get('code')}", str(ev.get("message")))
            return True
        self.fail("unexpected message", str(ev)[:200])
        return False

    def close(self, timed_out: bool = False) -> None:
        """End of the stream's reader: count a failure if it did not end cleanly."""
        if timed_out and not self.finished:
            self.fail("cell timeout", f"after {self.next_seq} of {self.expected} tokens")
        elif not self.finished:
            self.fail("ended without done", f"after {self.next_seq} of {self.expected} tokens")
        if self.problem is not None:
            self.acc.failures[self.problem] += 1
            self.acc.examples.setdefault(self.problem, self.detail)


async def http_error(resp: aiohttp.ClientResponse) -> tuple[str, str]:
    """(``HTTP 503 too_many_unpaced_streams``, its message) from a tokenwire error body."""
    raw = await resp.read()
    try:
        err = orjson.loads(raw)["error"]
        return f"HTTP {resp.status} {err['code']}", str(err.get("message"))
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return f"HTTP {resp.status}", raw[:200].decode(errors="replace")


def header_bytes(resp: aiohttp.ClientResponse) -> int:
    """Bytes of the status line and header block of a response, as sent."""
    status_line = 9 + 4 + len(resp.reason or "") + 2  # "HTTP/1.1 " "200 " reason CRLF
    return status_line + sum(len(k) + len(v) + 4 for k, v in resp.raw_headers) + 2


# ---------------------------------------------------------------------------------------
# One reader per transport


Reader = Callable[[aiohttp.ClientSession, str, bytes, StreamCheck], Awaitable[None]]
JSON_HEADERS = {"Content-Type": "application/json"}


async def read_sse(
    session: aiohttp.ClientSession, base: str, body: bytes, chk: StreamCheck
) -> None:
    acc = chk.acc
    async with session.post(f"{base}/api/sse", data=body, headers=JSON_HEADERS) as resp:
        if resp.status != 200:
            chk.fail(*await http_error(resp))
            return
        dec = SSEDecoder()
        async for chunk in resp.content.iter_any():
            now = time.time_ns()
            acc.reads += 1
            acc.bytes += len(chunk)
            for msg in dec.feed(chunk):
                ev = orjson.loads(msg.data)
                if msg.event != "created":
                    acc.json_bytes += len(msg.data.encode())
                    if msg.event != ev.get("type") or msg.last_event_id != str(ev.get("seq")):
                        chk.fail("SSE event/id fields do not match the event", msg.data[:200])
                if chk.feed(ev, now):
                    return


async def read_chunked(
    session: aiohttp.ClientSession, base: str, body: bytes, chk: StreamCheck
) -> None:
    acc = chk.acc
    async with session.post(f"{base}/api/chunked", data=body, headers=JSON_HEADERS) as resp:
        if resp.status != 200:
            chk.fail(*await http_error(resp))
            return
        buf = b""
        async for chunk in resp.content.iter_any():
            now = time.time_ns()
            acc.reads += 1
            acc.bytes += len(chunk)
            buf += chunk
            if b"\n" not in chunk:
                continue
            lines = buf.split(b"\n")
            buf = lines.pop()
            for line in lines:
                if not line:
                    continue  # heartbeat
                ev = orjson.loads(line)
                if ev.get("type") != "created":
                    acc.json_bytes += len(line)
                if chk.feed(ev, now):
                    return


async def read_ws(session: aiohttp.ClientSession, base: str, body: bytes, chk: StreamCheck) -> None:
    acc = chk.acc
    op = b'{"op":"generate",' + body[1:]
    async with session.ws_connect(f"{base}/api/ws", autoclose=False, max_msg_size=0) as ws:
        await ws.send_str(op.decode())
        while True:
            msg = await ws.receive()
            now = time.time_ns()
            if msg.type is not aiohttp.WSMsgType.TEXT:
                chk.fail(f"WebSocket {msg.type.name}", f"{msg.data!r} {msg.extra or ''}".strip())
                return
            acc.reads += 1
            data = msg.data.encode()
            n = len(data)
            acc.bytes += n + ws_frame_header(n)
            ev = orjson.loads(data)
            if ev.get("type") != "created":
                acc.json_bytes += n
            if chk.feed(ev, now):
                return


def poll_envelope(n_events: int, nxt: int, done: bool) -> int:
    """Bytes of ``{"events":[...],"next":N,"done":B}`` around n events' JSON."""
    tail = b'],"next":%d,"done":%s}' % (nxt, b"true" if done else b"false")
    return len(b'{"events":[') + max(0, n_events - 1) + len(tail)


async def read_poll(
    session: aiohttp.ClientSession, base: str, body: bytes, chk: StreamCheck
) -> None:
    acc = chk.acc
    async with session.post(f"{base}/api/streams", data=body, headers=JSON_HEADERS) as resp:
        if resp.status != 201:
            chk.fail(*await http_error(resp))
            return
        sid = (await resp.json())["id"]
    chk.stream_id = sid
    url = f"{base}/api/streams/{sid}/poll"
    after = -1
    while True:
        async with session.get(f"{url}?after={after}&timeout={POLL_WAIT_S}") as resp:
            raw = await resp.read()
            now = time.time_ns()
            if resp.status != 200:
                chk.fail(f"poll: HTTP {resp.status}", raw[:200].decode(errors="replace"))
                return
            acc.reads += 1
            acc.bytes += len(raw) + header_bytes(resp)
        page = orjson.loads(raw)
        events = page["events"]
        acc.json_bytes += len(raw) - poll_envelope(len(events), page["next"], page["done"])
        ended = False
        for ev in events:
            ended = chk.feed(ev, now) or ended
        if page["next"] != (events[-1]["seq"] if events else after):
            chk.fail("poll: next does not follow the events", f"next={page['next']}")
        after = page["next"]
        if page["done"] or ended:
            if page["done"] != ended:
                chk.fail("poll: done flag and terminal event disagree")
            return


async def read_openai(
    session: aiohttp.ClientSession, base: str, body: bytes, chk: StreamCheck
) -> None:
    """``/v1/chat/completions``: chunks become tokenwire-shaped events for the check."""
    acc = chk.acc
    create = orjson.loads(body)
    request = {
        "model": "synthetic",
        "messages": [{"role": "user", "content": create["prompt"]}],
        "max_tokens": create["max_tokens"],
        "stream": True,
        "params": create["params"],
    }
    # The dialect has no sha256: the synthetic source's text for this prompt stands in.
    text = "".join(synthetic_text(create["prompt"], 0, create["max_tokens"]))
    expected_sha = hashlib.sha256(text.encode()).hexdigest()
    url = f"{base}/v1/chat/completions"
    async with session.post(url, data=orjson.dumps(request), headers=JSON_HEADERS) as resp:
        if resp.status != 200:
            chk.fail(*await http_error(resp))
            return
        sid = chk.stream_id = resp.headers.get("Tokenwire-Stream")
        finish = None
        dec = SSEDecoder()
        async for chunk in resp.content.iter_any():
            now = time.time_ns()
            acc.reads += 1
            acc.bytes += len(chunk)
            for msg in dec.feed(chunk):
                if msg.data == "[DONE]":
                    n = chk.next_seq
                    done = {"type": "done", "stream": sid, "seq": n, "tokens": n}
                    done |= {"finish_reason": finish, "sha256": expected_sha}
                    chk.feed(done, now)
                    return
                obj = orjson.loads(msg.data)
                if "error" in obj:
                    err = obj["error"]
                    chk.feed({"type": "error", "code": err["code"], "message": err["message"]}, 0)
                    return
                choice = obj["choices"][0]
                finish = choice["finish_reason"] or finish
                content = choice["delta"].get("content")
                if content:
                    acc.json_bytes += len(content.encode())
                    ev = {"type": "token", "stream": sid, "seq": chk.next_seq, "text": content}
                    chk.feed(ev | {"t": None}, now)


READERS: dict[str, Reader] = {
    "sse": read_sse,
    "ws": read_ws,
    "poll": read_poll,
    "chunked": read_chunked,
    "openai": read_openai,
}


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
    runs: list[CellResult] = field(default_factory=list)


def proc_cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of a process, from ``/proc/<pid>/stat``."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def system_busy_s() -> float | None:
    """CPU seconds all cores spent not idle since boot, from ``/proc/stat``."""
    try:
        with Path("/proc/stat").open() as f:
            values = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(values) - values[3] - values[4]) / CLK_TCK  # minus idle and iowait


def percentile(sorted_values: Sequence[int], q: float) -> float | None:
    """Nearest-rank percentile of ns values, in ms."""
    if not sorted_values:
        return None
    rank = math.ceil(q / 100 * len(sorted_values))
    return sorted_values[min(len(sorted_values), max(1, rank)) - 1] / 1e6


async def wait_idle(session: aiohttp.ClientSession, base: str, limit_s: float = 30.0) -> None:
    """Wait until the server has no live stream (the previous cell fully ended)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            async with session.get(f"{base}/healthz") as resp:
                if (await resp.json()).get("live_streams", 0) == 0:
                    return
        except (aiohttp.ClientError, OSError, ValueError) as e:
            raise SystemExit(f"server at {base} stopped answering /healthz: {e!r}") from None
        await asyncio.sleep(0.05)
    print(f"warning: server still has live streams after {limit_s:g} s", file=sys.stderr)


async def warm_pool(session: aiohttp.ClientSession, base: str, n: int) -> None:
    """Open n keep-alive connections, so each cell starts from a warm pool."""

    async def one() -> None:
        async with session.get(f"{base}/healthz") as resp:
            await resp.read()

    await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)


def proc_rss_mb(pid: int | None) -> float | None:
    """Resident memory of a process in MiB, from ``/proc/<pid>/status``."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass(frozen=True, slots=True)
class CellSpec:
    """One cell: ``concurrency`` lanes, each reading ``per_lane`` streams one after another."""

    transport: str
    concurrency: int
    tokens: int
    per_lane: int


async def run_cell(
    session: aiohttp.ClientSession,
    base: str,
    spec: CellSpec,
    rate: float,
    cell_timeout: float,
    server_pid: int | None,
    run_no: int,
    settle_s: float = 0.0,
) -> CellResult:
    await wait_idle(session, base)
    if settle_s:
        await asyncio.sleep(settle_s)  # let the server's sweeper free the last cell's logs
    await warm_pool(session, base, spec.concurrency)
    gc.collect()
    acc = Acc()
    reader = READERS[spec.transport]
    params = {"tokens_per_s": rate, "ttft_ms": 0}
    checks: list[StreamCheck] = []

    async def lane(i: int) -> None:
        for k in range(spec.per_lane):
            chk = StreamCheck(acc, spec.tokens)
            checks.append(chk)
            prompt = f"overhead {spec.transport} c={spec.concurrency} run={run_no} #{i}.{k}"
            body = orjson.dumps({"prompt": prompt, "max_tokens": spec.tokens, "params": params})
            try:
                await reader(session, base, body, chk)
            except (aiohttp.ClientError, OSError, ValueError, KeyError, TypeError) as e:
                chk.fail(type(e).__name__, str(e)[:200])

    srv0 = proc_cpu_s(server_pid)
    sys0 = system_busy_s()
    cli0 = time.process_time()
    t0 = time.perf_counter()
    tasks = [asyncio.create_task(lane(i)) for i in range(spec.concurrency)]
    _, pending = await asyncio.wait(tasks, timeout=cell_timeout)
    wall = time.perf_counter() - t0
    cli = time.process_time() - cli0
    srv1 = proc_cpu_s(server_pid)
    sys1 = system_busy_s()
    srv = srv1 - srv0 if srv0 is not None and srv1 is not None else None
    other = (
        max(0.0, sys1 - sys0 - cli - (srv or 0.0))
        if sys0 is not None and sys1 is not None
        else None
    )
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for chk in checks:
        chk.close(timed_out=bool(pending))

    lat = sorted(acc.latencies)
    n = acc.tokens
    return CellResult(
        transport=spec.transport,
        concurrency=spec.concurrency,
        tokens_per_stream=spec.tokens,
        streams=len(checks),
        tokens=n,
        wall_s=wall,
        tokens_per_s=n / wall if wall > 0 else 0.0,
        p50_ms=percentile(lat, 50),
        p95_ms=percentile(lat, 95),
        p99_ms=percentile(lat, 99),
        max_ms=lat[-1] / 1e6 if lat else None,
        bytes_per_token=acc.bytes / n if n else None,
        overhead_bytes_per_token=(acc.bytes - acc.json_bytes) / n if n else None,
        tokens_per_read=n / acc.reads if acc.reads else None,
        failures=sum(acc.failures.values()),
        failure_kinds=dict(acc.failures.most_common()),
        failure_examples=acc.examples,
        server_cpu_s=srv,
        client_cpu_s=cli,
        other_cpu_s=other,
        server_rss_mb=proc_rss_mb(server_pid),
    )


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


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
        p50_ms=_median([r.p50_ms for r in runs]),
        p95_ms=_median([r.p95_ms for r in runs]),
        p99_ms=_median([r.p99_ms for r in runs]),
        max_ms=_median([r.max_ms for r in runs]),
        bytes_per_token=_median([r.bytes_per_token for r in runs]),
        overhead_bytes_per_token=_median([r.overhead_bytes_per_token for r in runs]),
        tokens_per_read=_median([r.tokens_per_read for r in runs]),
        failures=sum(r.failures for r in runs),
        failure_kinds=dict(kinds.most_common()),
        failure_examples=examples,
        server_cpu_s=_median([r.server_cpu_s for r in runs]),
        client_cpu_s=statistics.median(r.client_cpu_s for r in runs),
        other_cpu_s=_median([r.other_cpu_s for r in runs]),
        server_rss_mb=runs[-1].server_rss_mb,
        runs=runs if len(runs) > 1 else [],
    )


# ---------------------------------------------------------------------------------------
# The server: spawned, or given


@dataclass(slots=True)
class Target:
    base: str
    pid: int | None
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    retention_s: float = 0.0
    """The spawned server's ``--retention-s`` (0: its default); cells wait it out."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn_server(cap: int, tokens_cap: int, retention_s: float, extra: Sequence[str]) -> Target:
    """Start ``python -m tokenwire serve`` on a free loopback port with the stream caps raised and
    the total pace budget off."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "tokenwire",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-unpaced-streams",
        str(cap),
        "--max-live-streams",
        str(cap),
        "--max-streams-per-client",
        str(cap),
        "--max-tokens-cap",
        str(tokens_cap),
        "--max-total-tokens-per-s",  # no pace budget: the streams are the measurement
        "0",
        *(["--retention-s", str(retention_s)] if retention_s else []),
        *extra,
    ]
    fd, name = tempfile.mkstemp(prefix="tokenwire-bench-server-", suffix=".log")
    with os.fdopen(fd, "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    return Target(f"http://127.0.0.1:{port}", proc.pid, proc, Path(name), retention_s)


def stop_server(target: Target) -> int | None:
    """SIGTERM the spawned server and wait for it (SIGKILL after 15 s)."""
    proc = target.proc
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


async def wait_ready(session: aiohttp.ClientSession, target: Target, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while True:
        if target.proc is not None and target.proc.poll() is not None:
            raise SystemExit(f"server exited with {target.proc.returncode}; see {target.log_path}")
        try:
            async with session.get(f"{target.base}/healthz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"server at {target.base} not ready after {limit_s:g} s")
        await asyncio.sleep(0.1)


def check_loopback(url: str) -> None:
    """Refuse a target that is not on this machine's loopback (unless --allow-remote)."""
    host = urlsplit(url).hostname
    if not host:
        raise SystemExit(f"--url {url!r} has no host")
    try:
        addrs = {str(ai[4][0]) for ai in socket.getaddrinfo(host, None)}
    except socket.gaierror as e:
        raise SystemExit(f"cannot resolve {host!r}: {e}") from None
    remote = sorted(a for a in addrs if not ipaddress.ip_address(a.split("%")[0]).is_loopback)
    if remote:
        raise SystemExit(
            f"{host} resolves to non-loopback {', '.join(remote)}: this benchmark loads the "
            "target heavily; pass --allow-remote if you really mean it"
        )


def raise_nofile(concurrency: int) -> str:
    """Raise the soft open-files limit for c client sockets (the spawned server inherits it)."""
    need = 3 * concurrency + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    if soft != resource.RLIM_INFINITY and soft < need:
        print(f"warning: open-files limit {soft} < {need} needed", file=sys.stderr)
    return str(soft)


# ---------------------------------------------------------------------------------------
# Output


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


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
            fmt(r.vs_sse, ".2f"),
            fmt(r.p50_ms, ".2f"),
            fmt(r.p95_ms, ".2f"),
            fmt(r.p99_ms, ".2f"),
            fmt(r.bytes_per_token, ".1f"),
            fmt(r.overhead_bytes_per_token, ".1f"),
            fmt(r.tokens_per_read, ".1f"),
            str(r.failures),
            cpu_cell(r.server_cpu_s, r.wall_s),
            cpu_cell(r.client_cpu_s, r.wall_s),
            cpu_cell(r.other_cpu_s, r.wall_s),
        ]
        for r in cells
    ]


def print_table(title: str, cells: Sequence[CellResult], plain: bool) -> None:
    rows = table_rows(cells)
    if not plain:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            plain = True
        else:
            table = Table(title=title, title_justify="left")
            for i, col in enumerate(COLUMNS):
                table.add_column(col, justify="left" if i == 0 else "right", no_wrap=True)
            prev_c: int | None = None
            for r, row in zip(cells, rows, strict=True):
                if prev_c is not None and prev_c != r.concurrency:
                    table.add_section()
                table.add_row(*row)
                prev_c = r.concurrency
            width = None if sys.stdout.isatty() else 200
            Console(width=width).print(table)
            return
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(COLUMNS)]
    print(title)
    print(
        "  ".join(
            c.rjust(w) if i else c.ljust(w)
            for i, (c, w) in enumerate(zip(COLUMNS, widths, strict=True))
        )
    )
    for row in rows:
        print(
            "  ".join(
                v.rjust(w) if i else v.ljust(w)
                for i, (v, w) in enumerate(zip(row, widths, strict=True))
            )
        )


# ---------------------------------------------------------------------------------------
# Main


def parse_csv_ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"need integers >= 1: {text!r}")
    return values


def parse_transports(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in TRANSPORTS]
    if bad or not values:
        raise argparse.ArgumentTypeError(f"transports are {', '.join(TRANSPORTS)}; got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench/overhead.py",
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
        default=list(TRANSPORTS),
        help="comma-separated subset of " + ",".join(TRANSPORTS),
    )
    p.add_argument(
        "--concurrency",
        type=parse_csv_ints,
        default=[1, 100, 1000],
        help="comma-separated concurrent stream counts",
    )
    p.add_argument(
        "--tokens",
        type=parse_csv_ints,
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


async def background_load(seconds: float) -> float | None:
    """Cores kept busy by everything on the machine while the benchmark is idle."""
    b0 = system_busy_s()
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    b1 = system_busy_s()
    if b0 is None or b1 is None:
        return None
    return (b1 - b0) / (time.perf_counter() - t0)


def header_lines(
    args: argparse.Namespace, target: Target, nofile: str, loop: str, background: float | None
) -> list[str]:
    cpus = os.cpu_count() or 0
    if background is None:
        load = "background load unknown (no /proc/stat)"
    else:
        load = f"background load before start: {background:.2f} of {cpus} cores"
        if background > 0.15:
            load += " -- WARNING: another workload is running; figures will be skewed"
    retention = (
        f", --retention-s {target.retention_s:g}" if target.retention_s else ", retention default"
    )
    where = (
        f"spawned server pid {target.pid} at {target.base}{retention} (log {target.log_path})"
        if target.proc is not None
        else f"server at {target.base}"
        + (f" pid {target.pid}" if target.pid else " (pid unknown: no server CPU)")
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
        + ("" if target.pid else ", server included")
        + ")",
    ]


async def bench(args: argparse.Namespace, target: Target, loop_name: str, nofile: str) -> int:
    per_c = plan(args)
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await wait_ready(session, target, 30.0 if target.proc is not None else 5.0)
        background = await background_load(1.0)
        for line in header_lines(args, target, nofile, loop_name, background):
            print(line)
        if not args.no_warmup:
            for t in args.transports:
                spec = CellSpec(t, 4, 200, 1)
                await run_cell(session, target.base, spec, args.rate, 30.0, None, -1)
        runs: dict[tuple[str, int], list[CellResult]] = {}
        rss_trail: list[float] = []
        settle: float = args.settle_s
        if settle is None:
            settle = target.retention_s + 0.5 if target.retention_s else 0.0
        for rep in range(args.repeat):
            for c in args.concurrency:
                for t in args.transports:
                    spec = CellSpec(t, c, *per_c[c])
                    r = await run_cell(
                        session,
                        target.base,
                        spec,
                        args.rate,
                        args.cell_timeout,
                        target.pid,
                        rep,
                        settle_s=settle,
                    )
                    runs.setdefault((t, c), []).append(r)
                    if r.server_rss_mb is not None:
                        rss_trail.append(r.server_rss_mb)
                    print(
                        f"  run {rep + 1}/{args.repeat} {t:>7} c={c:<5} "
                        f"{r.tokens_per_s:>10,.0f} tok/s  p50 {fmt(r.p50_ms, '.2f')} ms  "
                        f"wall {r.wall_s:.2f} s  failures {r.failures}  "
                        f"cpu srv {cpu_cell(r.server_cpu_s, r.wall_s)} "
                        f"cli {cpu_cell(r.client_cpu_s, r.wall_s)} "
                        f"other {cpu_cell(r.other_cpu_s, r.wall_s)}  "
                        f"srv rss {fmt(r.server_rss_mb, '.0f')} MiB",
                        flush=True,
                    )
    cells = [aggregate(runs[(t, c)]) for c in args.concurrency for t in args.transports]
    sse = {r.concurrency: r.tokens_per_s for r in cells if r.transport == "sse"}
    for r in cells:
        base = sse.get(r.concurrency)
        r.vs_sse = r.tokens_per_s / base if base else None
    title = f"median of {args.repeat} runs" if args.repeat > 1 else "one run per cell"
    print()
    print_table(f"tokenwire transport overhead ({title})", cells, args.plain)
    grew = sum(b - a > 256 for a, b in itertools.pairwise(rss_trail))
    if rss_trail and grew > len(rss_trail) // 2:
        print(
            f"warning: the server's RSS grew in {grew} of {len(rss_trail) - 1} cells, to "
            f"{rss_trail[-1]:.0f} MiB: later cells ran against a bigger heap (finished "
            "streams' events are kept for --retention-s; see this script's docstring)"
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
                "header": header_lines(args, target, nofile, loop_name, background),
                "background_load_cores": background,
                "cpu_count": os.cpu_count(),
                "python": platform.python_version(),
                "aiohttp": aiohttp.__version__,
                "loop": loop_name,
                "url": target.base,
                "spawned": target.proc is not None,
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
        target = Target(args.url.rstrip("/"), args.server_pid)
    else:
        cap = max(5000, 2 * max(args.concurrency))
        tokens_cap = max(4096, *(n for n, _ in per_c.values()))
        retention = args.server_retention_s
        target = spawn_server(cap, tokens_cap, retention, shlex.split(args.server_args))
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
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            status = runner.run(bench(args, target, loop_name, nofile))
    except KeyboardInterrupt:
        status = 130
    finally:
        code = stop_server(target)
        if target.proc is not None and target.log_path is not None:
            if code == 0 and status == 0:
                target.log_path.unlink(missing_ok=True)
                print("server stopped (exit 0)")
            else:
                print(f"server stopped (exit {code}); its log: {target.log_path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
