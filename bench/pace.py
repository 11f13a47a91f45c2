"""The paced CPU driver: what tokenwire's server spends per token and per stream at a
realistic pace, without Locust (a lean asyncio client beside the server).

``python -m bench.pace [--repo DIR] [--transport sse|chunked|ws|poll] [--streams 200] [--pace 50]``

It spawns ``python -m bench.probe serve`` from ``--repo`` (default: this checkout; another
checkout of the code, e.g. ``git archive main | tar -x -C /tmp/base``, gives the A of an
A/B), then measures three things, each from psutil's user + system time of the server:

- **paced**: ``--streams`` streams at ``--pace`` tokens/s (no jitter, ``ttft_ms`` 0), long
  enough to outlast the window; after ``--warmup`` s, the server's CPU over ``--window`` s
  divided by the tokens the clients received in it (the clients' decoders: SSE through
  ``clients.decoders.SSEDecoder``, chunked through ``NDJSONDecoder``, WebSocket text
  messages, long-poll answers): **ms of CPU per 1,000 tokens** and **% of one core**; long
  polling also **polls per second** and **µs of CPU per poll**. Stream setup is outside
  the window.
- **setup**: ``--setups`` create-and-stream requests of one unpaced token each, 8 at a
  time (WebSocket: ``generate`` on 8 open sockets; long polling: ``POST /api/streams``
  then polls until ``done``): the server's CPU per stream (request, admission, registry,
  task, headers, first and terminal events, teardown).
- **light**: the probe on, ``--light`` streams one after another (20 tokens each at
  ``--pace``): first token (request arrival to the write of seq 0; long polling: the
  arrival of the poll that gets seq 0 to its answer) and server latency (append to write)
  p50/p99 in microseconds.

A long-poll client polls as ``clients/python`` does: ``GET .../poll?after=N&timeout=25``
with ``N`` the ``next`` of the previous answer, until an answer says ``done``.

It prints one JSON line. docs/bench.md, "The paced CPU driver".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil

from bench.lab import REPO, free_port
from bench.stats import percentile
from clients.decoders import NDJSONDecoder, SSEDecoder

PROBE = "/bench/probe"


def spawn(repo: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cap = "100000"
    cmd = [
        sys.executable,
        *("-m", "bench.probe", "serve", "--host", "127.0.0.1", "--port", str(port)),
        *("--max-unpaced-streams", cap, "--max-live-streams", cap),
        *("--max-streams-per-client", cap, "--max-tokens-cap", "1000000"),
        *("--max-total-tokens-per-s", "0", "--retention-s", "1"),
        *("--ws-max-msgs-per-s", "100000"),
    ]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    fd, name = tempfile.mkstemp(prefix="tokenwire-pace-", suffix=".log")
    with os.fdopen(fd, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


def cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


class Counter:
    tokens = 0
    failures = 0
    started = 0  # streams that received their first token
    polls = 0  # long-poll answers


def body(tokens: int, pace: float) -> dict[str, Any]:
    return {
        "prompt": "pace",
        "max_tokens": tokens,
        "source": "synthetic",
        "params": {"tokens_per_s": pace, "ttft_ms": 0, "jitter": 0},
    }


async def read_sse(
    session: aiohttp.ClientSession, base: str, req: dict[str, Any], n: Counter
) -> None:
    async with session.post(f"{base}/api/sse", json=req) as resp:
        if resp.status != 200:
            n.failures += 1
            return
        decoder = SSEDecoder()
        first = True
        async for chunk in resp.content.iter_any():
            for msg in decoder.feed(chunk):
                if msg.event == "token":
                    n.tokens += 1
                    n.started += first
                    first = False
                elif msg.event in ("done", "error"):
                    if msg.event == "error":
                        n.failures += 1
                    return


async def read_chunked(
    session: aiohttp.ClientSession, base: str, req: dict[str, Any], n: Counter
) -> None:
    async with session.post(f"{base}/api/chunked", json=req) as resp:
        if resp.status != 200:
            n.failures += 1
            return
        decoder = NDJSONDecoder()
        first = True
        async for chunk in resp.content.iter_any():
            for msg in decoder.feed(chunk):
                kind = msg.get("type")
                if kind == "token":
                    n.tokens += 1
                    n.started += first
                    first = False
                elif kind in ("done", "error"):
                    if kind == "error":
                        n.failures += 1
                    return


#: The long-poll ``timeout`` the clients send (``clients.Client``'s default).
POLL_TIMEOUT_S = 25


async def read_poll(
    session: aiohttp.ClientSession, base: str, req: dict[str, Any], n: Counter
) -> None:
    """``POST /api/streams``, then polls with ``after`` the previous answer's ``next``."""
    async with session.post(f"{base}/api/streams", json=req) as resp:
        if resp.status != 201:
            n.failures += 1
            return
        stream_id = (await resp.json())["id"]
    after, first = -1, True
    while True:
        url = f"{base}/api/streams/{stream_id}/poll?after={after}&timeout={POLL_TIMEOUT_S}"
        async with session.get(url) as resp:
            raw = await resp.read()
            if resp.status != 200:
                n.failures += 1
                return
        answer = orjson.loads(raw)
        n.polls += 1
        for event in answer["events"]:
            kind = event["type"]
            if kind == "token":
                n.tokens += 1
                n.started += first
                first = False
            elif kind == "error":
                n.failures += 1
        if answer["done"]:
            return
        after = answer["next"]


async def read_ws(
    session: aiohttp.ClientSession, base: str, req: dict[str, Any], n: Counter
) -> None:
    async with session.ws_connect(f"{base}/api/ws") as ws:
        await generate_ws(ws, req, n)


async def generate_ws(ws: aiohttp.ClientWebSocketResponse, req: dict[str, Any], n: Counter) -> None:
    """One stream over an open socket (a chat client's socket carries one after another)."""
    await ws.send_str(orjson.dumps({"op": "generate", **req}).decode())
    first = True
    async for msg in ws:
        if msg.type != aiohttp.WSMsgType.TEXT:
            n.failures += 1
            return
        kind = orjson.loads(msg.data).get("type")
        if kind == "token":
            n.tokens += 1
            n.started += first
            first = False
        elif kind in ("done", "error"):
            if kind == "error":
                n.failures += 1
            return


Read = Callable[[aiohttp.ClientSession, str, dict[str, Any], Counter], Coroutine[Any, Any, None]]
#: One stream read to its end, per transport.
READERS: dict[str, Read] = {
    "sse": read_sse,
    "chunked": read_chunked,
    "ws": read_ws,
    "poll": read_poll,
}


async def paced(ns: argparse.Namespace, base: str, proc: psutil.Process) -> dict[str, Any]:
    n = Counter()
    # Long enough to outlast the window even when starting every stream takes a while (a
    # loaded machine, a poll client's create and first poll per stream): a stream that
    # ended inside the window would lower the token rate, not the work per token.
    tokens = int(ns.pace * (ns.warmup + ns.window + 60))
    read = READERS[ns.transport]
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as session:
        tasks = []
        for _ in range(ns.streams):  # spread the starts over one token gap
            tasks.append(asyncio.create_task(read(session, base, body(tokens, ns.pace), n)))
            await asyncio.sleep(1 / ns.pace / ns.streams)
        for _ in range(600):  # every stream under way (at most 60 s), then the warm-up
            if n.started >= ns.streams:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(ns.warmup)
        c0, t0, p0, w0 = cpu_s(proc), n.tokens, n.polls, time.monotonic()
        await asyncio.sleep(ns.window)
        c1, t1, p1, w1 = cpu_s(proc), n.tokens, n.polls, time.monotonic()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    got = t1 - t0
    out = {
        "tokens_per_s": round(got / (w1 - w0)),
        "cpu_ms_per_1k": round(1e6 * (c1 - c0) / got, 2) if got else None,
        "cpu_pct": round(100 * (c1 - c0) / (w1 - w0), 1),
        "started": n.started,
        "failures": n.failures,
    }
    if ns.transport == "poll":
        polls = p1 - p0
        out["polls_per_s"] = round(polls / (w1 - w0))
        out["cpu_us_per_poll"] = round(1e6 * (c1 - c0) / polls, 1) if polls else None
    return out


async def setup(ns: argparse.Namespace, base: str, proc: psutil.Process) -> dict[str, Any]:
    """WebSocket: each of the 8 workers keeps one socket (its streams one after another)."""
    n = Counter()
    async with aiohttp.ClientSession() as session:
        sockets = []
        if ns.transport == "ws":
            sockets = [await session.ws_connect(f"{base}/api/ws") for _ in range(8)]
        read = READERS[ns.transport]
        for _ in range(20):  # warm
            if sockets:
                await generate_ws(sockets[0], body(1, 0), n)
            else:
                await read(session, base, body(1, 0), n)
        c0 = cpu_s(proc)
        left = ns.setups

        async def worker(i: int) -> None:
            nonlocal left
            while left > 0:
                left -= 1
                if sockets:
                    await generate_ws(sockets[i], body(1, 0), n)
                else:
                    await read(session, base, body(1, 0), n)

        await asyncio.gather(*(worker(i) for i in range(8)))
        c1 = cpu_s(proc)
        for ws in sockets:
            await ws.close()
    return {"cpu_us_per_stream": round(1e6 * (c1 - c0) / ns.setups), "failures": n.failures}


async def light(ns: argparse.Namespace, base: str) -> dict[str, Any]:
    n = Counter()
    read = READERS[ns.transport]
    async with aiohttp.ClientSession() as session:
        await read(session, base, body(5, 0), n)  # warm
        async with session.post(base + PROBE) as r:
            r.raise_for_status()
        for _ in range(ns.light):
            await read(session, base, body(20, ns.pace), n)
        async with session.get(base + PROBE) as r:
            doc = await r.json()
        async with session.delete(base + PROBE) as r:
            r.raise_for_status()

    def us(values: Sequence[int], p: float) -> float | None:
        v = percentile(sorted(values), p)
        return None if v is None else round(v / 1e3)

    lat, first = doc["latency_ns"], doc["first_token_ns"]
    return {
        "first_token_p50_us": us(first, 50),
        "first_token_p99_us": us(first, 99),
        "latency_p50_us": us(lat, 50),
        "latency_p99_us": us(lat, 99),
        "samples": len(lat),
        "failures": n.failures,
    }


async def measure(ns: argparse.Namespace, base: str, proc: psutil.Process) -> dict[str, Any]:
    out: dict[str, Any] = {"transport": ns.transport, "repo": str(ns.repo)}
    load = psutil.getloadavg()[0]
    if "light" in ns.parts:
        out["light"] = await light(ns, base)
    if "setup" in ns.parts:
        out["setup"] = await setup(ns, base, proc)
    if "paced" in ns.parts:
        out["paced"] = await paced(ns, base, proc)
    out["load1"] = round(load, 2)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pace", description=__doc__.split("\n")[0])
    p.add_argument("--repo", type=Path, default=REPO, help="the checkout whose server runs")
    p.add_argument("--transport", choices=tuple(READERS), default="sse")
    p.add_argument("--streams", type=int, default=200)
    p.add_argument("--pace", type=float, default=50.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--window", type=float, default=8.0)
    p.add_argument("--setups", type=int, default=400)
    p.add_argument("--light", type=int, default=40)
    p.add_argument("--parts", default="light,setup,paced", help="comma-separated")
    ns = p.parse_args(argv)
    ns.parts = set(ns.parts.split(","))
    popen, base = spawn(ns.repo.resolve())
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                import urllib.request

                urllib.request.urlopen(f"{base}/healthz", timeout=1).read()
                break
            except OSError:
                if popen.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"server did not start ({popen.returncode})") from None
                time.sleep(0.1)
        result = asyncio.run(measure(ns, base, psutil.Process(popen.pid)))
    finally:
        popen.terminate()
        try:
            popen.wait(15)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
