"""``tokenwire serve | stream | compare | bench``.

``serve`` takes one flag per :class:`~server.settings.Settings` field (also a
``TOKENWIRE_*`` environment variable; flags win); ``stream`` and ``compare`` are the
Python client from the terminal (``clients/cli.py``); ``bench`` runs the Locust harness
(``bench/runner.py``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from server import settings as server_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokenwire",
        description="One streamed LLM answer over SSE, WebSocket, long polling and chunked HTTP.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    server_settings.add_arguments(sub.add_parser("serve", help="run the server"))
    from clients.cli import add_parsers

    add_parsers(sub)
    from bench.runner import add_arguments

    add_arguments(sub.add_parser("bench", help="the transports under Locust, side by side"))
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    ns = build_parser().parse_args(argv)
    if ns.command == "serve":
        import clients
        from server.app import serve

        try:
            settings = server_settings.from_args(ns)
        except ValueError as e:
            raise SystemExit(f"tokenwire: {e}") from None
        if settings.workers > 1:
            from server.workers import run_workers

            raise SystemExit(run_workers(settings, js_dir=clients.JS_DIR))
        serve(settings, js_dir=clients.JS_DIR)
    elif ns.command == "bench":
        from bench.runner import run as run_bench

        raise SystemExit(run_bench(ns))
    else:
        from clients.cli import run

        raise SystemExit(run(ns))
