"""Every Autobahn|Testsuite fuzzing case against tokenwire's WebSocket settings, with
kosoku's reports.

It serves the app in this process with a test-only echo route built like ``GET /api/ws``,
runs the ``kosoku`` command against it (all 517 cases, or ``--cases 1.*,7.*``), reads the
verdicts from the reports it wrote to ``--outdir`` and prints every case that did not pass
with the reason docs/autobahn.md gives (or UNEXPECTED). Exit status 1 on an unexpected one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from bench.lab import REPO, free_port
from server.app import create_app
from server.appkeys import SETTINGS
from server.settings import Settings
from server.transports.ws import ws_response

ECHO_PATH = "/test/ws-echo"
#: Verdicts that count as passed.
PASSED = ("OK", "NON-STRICT", "INFORMATIONAL")


async def echo(request: web.Request) -> web.WebSocketResponse:
    """Echo every text and binary message, which is what the Autobahn fuzzing client
    expects of a server; built with ``ws_response()`` like ``GET /api/ws`` (the same message
    size limit, heartbeat and compression settings, aiohttp's own frame handling), without
    tokenwire's JSON protocol on top (ops, the message rate limit)."""
    ws = ws_response(request.app[SETTINGS])
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


def add_echo_route(app: web.Application) -> None:
    app.router.add_get(ECHO_PATH, echo)


#: Every case that does not pass against the echo route, and why (docs/autobahn.md).
#: Messages of ``ws_max_msg_bytes`` (64 KiB) or more are refused with 1009 by design.
TOO_BIG = {
    "1.1.7",
    "1.1.8",
    "1.2.7",
    "1.2.8",
    "10.1.1",
    *(
        f"9.{g}.{i}"
        for g, n in ((1, 6), (2, 6), (3, 9), (4, 9), (5, 6), (6, 6))
        for i in range(1, n + 1)
    ),
}
#: aiohttp accepts the reserved close code 1006 in a received close frame (RFC 6455 7.4.1
#: says it must never be sent) and answers 1000 instead of failing with 1002.
AIOHTTP_ACCEPTS_1006 = {"7.9.5"}


def expected_failure(case_id: str) -> str | None:
    """Why a case is expected not to pass, or None if it must pass."""
    if case_id in TOO_BIG:
        return "too big"
    if case_id in AIOHTTP_ACCEPTS_1006:
        return "aiohttp accepts 1006"
    if case_id.split(".")[0] in ("12", "13"):
        return "no compression"  # permessage-deflate is off (UNIMPLEMENTED)
    return None


def kosoku_command() -> str:
    beside = Path(sys.executable).with_name("kosoku")
    found = str(beside) if beside.exists() else shutil.which("kosoku")
    if found is None:
        raise SystemExit("the kosoku command is not installed: pip install -e '.[dev]'")
    return found


async def run_kosoku(url: str, cases: Sequence[str], parallel: int, outdir: Path) -> None:
    """The ``kosoku`` command (its public interface), which writes its reports to outdir."""
    selected = [arg for case in cases for arg in ("--include", case)]
    proc = await asyncio.create_subprocess_exec(
        kosoku_command(), url, "--parallelism", str(parallel), "--outdir", str(outdir), *selected
    )
    await proc.wait()  # exit status 1 when a case failed: the reports say which


def read_index(outdir: Path) -> dict[str, dict[str, Any]]:
    """Case id -> the verdicts in kosoku's Autobahn-format ``index.json``."""
    index = json.loads((outdir / "index.json").read_text())
    return {case: entry for agent in index.values() for case, entry in agent.items()}


def case_key(case_id: str) -> tuple[int, ...]:
    return tuple(int(p) for p in case_id.split("."))


async def run(args: argparse.Namespace) -> int:
    app = create_app(Settings(ws_max_msg_bytes=args.max_msg_bytes))
    add_echo_route(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    (args.outdir / "index.json").unlink(missing_ok=True)
    started = time.monotonic()
    try:
        await run_kosoku(f"ws://127.0.0.1:{port}{ECHO_PATH}", cases, args.parallel, args.outdir)
    finally:
        await runner.cleanup()
    elapsed = time.monotonic() - started
    results = read_index(args.outdir)
    verdicts = Counter((r["behavior"], r["behaviorClose"]) for r in results.values())
    print(f"{len(results)} cases in {elapsed:.1f} s (ws_max_msg_bytes={args.max_msg_bytes})")
    for (behavior, close), n in verdicts.most_common():
        print(f"  {n:4d}  behavior {behavior}, close {close}")
    passed = sum(r["behavior"] in PASSED for r in results.values())
    print(
        f"passed (OK, NON-STRICT or INFORMATIONAL): {passed}; not passed: {len(results) - passed}"
    )
    unexpected = 0
    reasons: Counter[str] = Counter()
    for case_id in sorted(results, key=case_key):
        r = results[case_id]
        if r["behavior"] in PASSED:
            continue
        reason = expected_failure(case_id)
        if reason is None or (reason == "too big" and r["remoteCloseCode"] != 1009):
            unexpected += 1
            detail = json.loads((args.outdir / r["reportfile"]).read_text()).get("result")
            print(f"UNEXPECTED {case_id}: {r['behavior']}/{r['behaviorClose']} {detail}")
        else:
            reasons[reason] += 1
    for reason, n in reasons.most_common():
        print(f"  not passed, as documented: {n:4d}  {reason}")
    print(f"reports: {args.outdir}/index.html")
    return 1 if unexpected or not results else 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Autobahn cases against the WebSocket settings.")
    p.add_argument("--cases", default="", help="comma-separated ids or globs (all)")
    p.add_argument("--parallel", type=int, default=2, help="cases at once (2)")
    p.add_argument("--max-msg-bytes", type=int, default=Settings().ws_max_msg_bytes)
    p.add_argument("--outdir", type=Path, default=REPO / "test-output" / "autobahn")
    args = p.parse_args(argv)
    args.outdir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
