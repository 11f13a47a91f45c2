"""Stuck readers: do they slow anyone else, and what do they cost the server?

Paced streams' token gaps, with and without readers that ask for a big stream and read
nothing, and whether the server drops those within ``send_timeout_s``. Method: docs/bench.md
("Stuck readers"). ``python -m bench.stuck --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

import aiohttp

from bench.lab import MIB, Server, process_usage, spawn_server, stop_server, wait_ready
from bench.stats import median_of_known, percentile, print_table
from clients import Client
from wire import TRANSPORTS, Transport

#: ``/v1`` is left out: its answers are created by the request (paced by the server's
#: defaults, so never big and fast enough to stick), and it writes through the same pump
#: as SSE; ``tests/faults/test_slow_readers.py`` drops a stuck ``/v1`` reader.
STUCK_KINDS = TRANSPORTS


def small_socket(addr_info: Any) -> socket.socket:
    family, type_, proto, _, _ = addr_info
    s = socket.socket(family, type_, proto)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return s


async def stuck_reader(session: aiohttp.ClientSession, base: str, kind: str, sid: str) -> Any:
    """Ask for the whole stream and read nothing; returns what holds the connection."""
    if kind == "ws":
        ws = await session.ws_connect(f"{base}/api/ws", autoping=False)
        await ws.send_json({"op": "subscribe", "stream": sid, "after": -1})
        return ws
    if kind == "poll":
        resp = await session.get(f"{base}/api/streams/{sid}/poll", params={"after": "-1"})
    else:
        resp = await session.get(f"{base}/api/streams/{sid}/{kind}")
    assert resp.status == 200, resp.status
    return resp


#: The paced streams' transports: a long poll hands over several tokens at once, so its
#: gaps show batching rather than delay.
PACED_TRANSPORTS: tuple[Transport, ...] = ("sse", "ws", "chunked")


async def paced(base: str, n: int, tokens: int, rate: float) -> tuple[list[int], int]:
    """``n`` paced streams over SSE, WebSocket and chunked in turn: their gaps (ns), and how
    many arrived whole."""
    params = {"tokens_per_s": rate, "ttft_ms": 0, "jitter": 0}
    gaps: list[int] = []
    whole = 0

    async def one(i: int) -> None:
        nonlocal whole
        async with Client(base, poll_timeout_s=5) as c:
            s = c.stream(
                f"paced {i}", transport=PACED_TRANSPORTS[i % 3], max_tokens=tokens, params=params
            )
            seqs = [ev["seq"] async for ev in s]
            gaps.extend(s.stats.gaps_ns)
            whole += seqs == list(range(tokens + 1)) and s.digest_ok is True

    await asyncio.gather(*(one(i) for i in range(n)))
    return gaps, whole


async def run(args: argparse.Namespace, server: Server) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        async with Client(server.base, session=session) as c:
            big = {
                kind: [
                    await c.create(
                        f"big {kind} {i}",
                        max_tokens=args.stuck_tokens,
                        params={"tokens_per_s": 0, "ttft_ms": 0},
                    )
                    for i in range(args.stuck)
                ]
                for kind in STUCK_KINDS
            }
            for sids in big.values():
                for sid in sids:
                    for _ in range(6000):
                        if (await c.status(sid))["state"] != "running":
                            break
                        await asyncio.sleep(0.01)
        rows = []
        await paced(server.base, args.streams, args.tokens, args.rate)  # warm-up, not shown
        rss0 = rss_mib(server.pid)
        gaps, whole = await paced(server.base, args.streams, args.tokens, args.rate)
        rows.append(row("baseline", 0, gaps, whole, args.streams, rss0, rss_mib(server.pid)))
        stuck = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(socket_factory=small_socket, limit=0)
        )
        held = []
        started = time.monotonic()
        for kind in STUCK_KINDS:
            for i in range(args.stuck):
                held.append((kind, await stuck_reader(stuck, server.base, kind, big[kind][i])))
        await asyncio.sleep(1.0)  # let them fill every buffer
        rss1 = rss_mib(server.pid)
        gaps, whole = await paced(server.base, args.streams, args.tokens, args.rate)
        rows.append(row("stuck", len(held), gaps, whole, args.streams, rss1, rss_mib(server.pid)))
        # Wait out the send timeout, then count who was dropped: a dropped reader's
        # connection ends without the stream's last event.
        await asyncio.sleep(max(0.0, args.send_timeout + 2 - (time.monotonic() - started)))
        dropped: dict[str, int] = dict.fromkeys(STUCK_KINDS, 0)
        read_whole: dict[str, int] = dict.fromkeys(STUCK_KINDS, 0)
        for kind, holder in held:
            try:
                async with asyncio.timeout(30):
                    if isinstance(holder, aiohttp.ClientWebSocketResponse):
                        async for _ in holder:
                            pass
                        dropped[kind] += holder.close_code in (1006, 1008)
                        await holder.close()
                    else:
                        await holder.read()
                        read_whole[kind] += 1  # it all fit in the socket buffers: never stuck
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
                dropped[kind] += 1
            finally:
                if isinstance(holder, aiohttp.ClientResponse):
                    holder.release()
        await stuck.close()
        print(
            "stuck readers dropped after the send timeout: "
            + ", ".join(f"{k} {v}/{args.stuck}" for k, v in dropped.items())
            + "; read whole afterwards (never stuck): "
            + ", ".join(f"{k} {v}" for k, v in read_whole.items())
        )
        return rows


def rss_mib(pid: int | None) -> float | None:
    _, rss = process_usage(pid)
    return None if rss is None else rss / MIB


def gap_ms(ordered: Sequence[int], q: float) -> float:
    value = percentile(ordered, q)
    return round((value or 0) / 1e6, 2)


def row(
    phase: str,
    stuck: int,
    gaps: list[int],
    whole: int,
    streams: int,
    rss_before: float | None,
    rss_after: float | None,
) -> dict[str, Any]:
    ordered = sorted(gaps)
    return {
        "phase": phase,
        "stuck readers": stuck,
        "streams whole": f"{whole}/{streams}",
        "gaps": len(gaps),
        "gap p50 ms": round((median_of_known(ordered) or 0) / 1e6, 2),
        "gap p95 ms": gap_ms(ordered, 95),
        "gap p99 ms": gap_ms(ordered, 99),
        "gap max ms": round(max(gaps) / 1e6, 2),
        "server RSS MB": f"{rss_before or 0:.0f} -> {rss_after or 0:.0f}",
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Stuck readers vs everyone else's token gaps.")
    p.add_argument("--streams", type=int, default=100, help="paced streams per phase (100)")
    p.add_argument("--tokens", type=int, default=100, help="tokens per paced stream (100)")
    p.add_argument("--rate", type=float, default=50, help="tokens/s per paced stream (50)")
    p.add_argument("--stuck", type=int, default=2, help="stuck readers per transport (2)")
    p.add_argument("--stuck-tokens", type=int, default=100_000, help="big stream size")
    p.add_argument("--send-timeout", type=float, default=5, help="server send_timeout_s (5)")
    args = p.parse_args(argv)
    cap = args.streams + 10 * args.stuck + 64
    server = spawn_server(
        cap,
        args.stuck_tokens,
        600,
        [
            "--send-timeout-s",
            str(args.send_timeout),
            "--max-log-events",
            str(args.stuck_tokens + 1),
            "--grace-s",
            "60",
        ],
    )
    try:
        wait_ready(server, 30)
        rows = asyncio.run(run(args, server))
    finally:
        stop_server(server)
        if server.log_path is not None:
            server.log_path.unlink(missing_ok=True)
    print_table(
        f"paced streams at {args.rate:g} tok/s (pace {1000 / args.rate:g} ms)",
        list(rows[0]),
        [[str(v) for v in r.values()] for r in rows],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
