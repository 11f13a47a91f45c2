"""``tokenwire serve | stream | compare | bench``.

``serve`` takes one flag per :class:`~server.settings.Settings` field (also a
``TOKENWIRE_*`` environment variable; flags win); ``stream`` and ``compare`` are the
Python client from the terminal (``clients/cli.py``); ``bench`` runs the Locust harness
(``bench/runner.py``).
"""

from __future__ import annotations

import argparse
import errno
import socket
import sys
from collections.abc import Sequence

from server import settings as server_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokenwire",
        description="One streamed LLM answer over SSE, WebSocket, long polling and chunked HTTP.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="run the server",
        usage="%(prog)s [--host HOST] [--port PORT] [--source NAME] [more flags below]",
        description="Serve the streams, the demo page (/) and the API. Every flag can also be "
        "set as an environment variable, TOKENWIRE_<FLAG> (--max-live-streams is "
        "TOKENWIRE_MAX_LIVE_STREAMS); flags win.",
    )
    server_settings.add_arguments(serve)
    from clients.cli import add_parsers

    add_parsers(sub)
    from bench.runner import add_arguments

    bench = sub.add_parser("bench", help="the transports under Locust, side by side")
    add_arguments(bench)
    from bench.net.matrix import add_arguments as add_net_arguments

    add_net_arguments(bench)
    return parser


def _serve(ns: argparse.Namespace) -> None:
    """``tokenwire serve``: a bad setting, a taken port or a source that cannot start is one
    line on stderr and exit status 1, never a traceback."""
    import clients
    from server.app import serve

    try:
        settings = server_settings.from_args(ns)
    except ValueError as e:
        raise SystemExit(f"tokenwire: {e}") from None
    where = f"{settings.host}:{settings.port}"
    try:
        if settings.workers > 1:
            from server.workers import run_workers

            raise SystemExit(run_workers(settings, js_dir=clients.JS_DIR))
        serve(settings, js_dir=clients.JS_DIR)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise SystemExit(
                f"tokenwire: {where} is already in use (another server?): stop it, or pick "
                "another --port"
            ) from None
        if e.errno == errno.EADDRNOTAVAIL or isinstance(e, socket.gaierror):
            raise SystemExit(f"tokenwire: cannot listen on {where}: no such address") from None
        raise SystemExit(f"tokenwire: cannot serve on {where}: {e}") from None
    except ValueError as e:  # a source's start() (a model that does not load, ...)
        raise SystemExit(f"tokenwire: {e}") from None
    except KeyboardInterrupt:  # before the server's own SIGINT handler (a model loading)
        print("tokenwire: interrupted", file=sys.stderr)
        raise SystemExit(130) from None


def main(argv: Sequence[str] | None = None) -> None:
    try:
        _main(argv)
    except KeyboardInterrupt:  # Ctrl-C before a command's own handling (while importing)
        print("tokenwire: interrupted", file=sys.stderr)
        raise SystemExit(130) from None


def _main(argv: Sequence[str] | None) -> None:
    ns = build_parser().parse_args(argv)
    if ns.command == "serve":
        _serve(ns)
    elif ns.command == "bench" and ns.net:
        from bench.net.matrix import run as run_net

        raise SystemExit(run_net(ns))
    elif ns.command == "bench":
        from bench.runner import run as run_bench

        raise SystemExit(run_bench(ns))
    else:
        from clients.cli import run

        raise SystemExit(run(ns))
