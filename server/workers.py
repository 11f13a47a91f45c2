"""``--workers N``: N server processes on one port (``SO_REUSEPORT``), one shared store.

The parent starts the workers (``multiprocessing`` with ``spawn``: each worker is a fresh
interpreter running :func:`server.app.serve`), forwards SIGINT/SIGTERM to them, and exits
with the first non-zero exit code among them (0 if all stopped cleanly). The kernel
spreads new connections over the workers; any worker serves any stream because the
streams live in the shared store (Redis), which :class:`~server.settings.Settings` requires.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from server.settings import Settings


def _worker(settings: Settings, js_dir: Path | None) -> None:
    from server.app import serve

    serve(settings, js_dir=js_dir)


def run_workers(settings: Settings, *, js_dir: Path | None = None) -> int:
    """Run ``settings.workers`` server processes until they stop; the exit code."""
    ctx = multiprocessing.get_context("spawn")
    procs = []
    for i in range(settings.workers):
        node = f"{settings.node_id}-{i}" if settings.node_id else ""
        mine = dataclasses.replace(settings, node_id=node)
        proc = ctx.Process(target=_worker, args=(mine, js_dir), name=f"tokenwire-worker-{i}")
        proc.start()
        procs.append(proc)

    def forward(signum: int, _frame: FrameType | None) -> None:
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for proc in procs:
            proc.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    codes = [proc.exitcode or 0 for proc in procs]
    bad = [c for c in codes if c != 0]
    if bad:
        print(f"tokenwire: {len(bad)} of {len(procs)} workers failed", file=sys.stderr)
    return bad[0] if bad else 0
