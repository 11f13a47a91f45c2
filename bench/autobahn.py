"""Every Autobahn|Testsuite fuzzing case against tokenwire's WebSocket settings.

It starts the app in this process with the test-only echo route
(``tests/conformance/autobahn.py``: built with the same ``ws_response()`` as ``GET /api/ws``)
and runs the cases with ``kosoku`` (all 517 by default, or ``--cases 1.*,7.*``). It prints
the verdicts, every case that did not pass with the reason ``docs/autobahn.md`` gives (or
UNEXPECTED), and writes kosoku's Autobahn-format reports (``index.html``, one JSON and
HTML file per case) to ``--outdir``. Exit status 1 on an unexpected result.

``--max-msg-bytes`` raises the message size limit to show that the 1009 cases (9.x, the
64 KiB ones) pass once the limit allows their size: e.g. ``--max-msg-bytes 16777216``.

::

    .venv/bin/python bench/autobahn.py                 # or: make autobahn
    .venv/bin/python bench/autobahn.py --max-msg-bytes 16777216 --cases '9.*'
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from kosoku._report import write_reports  # noqa: E402

from server.app import create_app  # noqa: E402
from server.settings import Settings  # noqa: E402
from tests.conformance.autobahn import (  # noqa: E402
    ECHO_PATH,
    add_echo_route,
    expected_failure,
    run_cases,
)
from tests.serving import start_app  # noqa: E402


async def run(args: argparse.Namespace) -> int:
    app = create_app(Settings(ws_max_msg_bytes=args.max_msg_bytes))
    add_echo_route(app)
    runner, port = await start_app(app)
    cases = [c.strip() for c in args.cases.split(",")] if args.cases else None
    started = time.monotonic()
    try:
        results = await run_cases(f"ws://127.0.0.1:{port}{ECHO_PATH}", cases, (), args.parallel)
    finally:
        await runner.cleanup()
    elapsed = time.monotonic() - started
    verdicts = Counter((r.behavior.value, r.behavior_close.value) for r in results)
    print(f"{len(results)} cases in {elapsed:.1f} s (ws_max_msg_bytes={args.max_msg_bytes})")
    for (behavior, close), n in verdicts.most_common():
        print(f"  {n:4d}  behavior {behavior}, close {close}")
    passed = sum(r.passed for r in results)
    print(
        f"passed (OK, NON-STRICT or INFORMATIONAL): {passed}; not passed: {len(results) - passed}"
    )
    unexpected = 0
    reasons: Counter[str] = Counter()
    for r in results:
        if r.passed:
            continue
        reason = expected_failure(r.case_id)
        if reason is None or (reason == "too big" and r.remote_close_code != 1009):
            unexpected += 1
            print(f"UNEXPECTED {r.case_id}: {r.behavior.value}/{r.behavior_close.value} {r.result}")
        else:
            reasons[reason] += 1
    for reason, n in reasons.most_common():
        print(f"  not passed, as documented: {n:4d}  {reason}")
    write_reports(results, str(args.outdir))
    print(f"reports: {args.outdir}/index.html")
    return 1 if unexpected else 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Autobahn cases against the WebSocket settings.")
    p.add_argument("--cases", default="", help="comma-separated ids or globs (all)")
    p.add_argument("--parallel", type=int, default=2, help="cases at once (2)")
    p.add_argument("--max-msg-bytes", type=int, default=Settings().ws_max_msg_bytes)
    p.add_argument("--outdir", type=Path, default=REPO / "test-output" / "autobahn")
    args = p.parse_args(argv)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
