"""The ``tokenwire`` command: ``tokenwire serve [--host --port --source --model ...]``,
``tokenwire stream|compare`` (clients/cli.py) and ``tokenwire bench`` (bench/runner.py).

Every :class:`~server.settings.Settings` field is a flag (``--max-live-streams``) and an
environment variable (``TOKENWIRE_MAX_LIVE_STREAMS``); flags win.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Sequence

from server.settings import Settings

HELP = {
    "host": "interface to listen on",
    "port": "TCP port",
    "source": "default token source (synthetic is always enabled too)",
    "model": "hf: hub name or local path; openai: upstream model name",
    "base_url": "openai: an OpenAI-compatible base URL (or OPENAI_BASE_URL)",
    "api_key": "openai: API key (or OPENAI_API_KEY)",
    "tokens_per_s": "synthetic default pace; 0 = as fast as possible",
}


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(Settings)
    for f in dataclasses.fields(Settings):
        hint = hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        kind = args[0] if args and typing.get_origin(hint) is not typing.Literal else hint
        flag = "--" + f.name.replace("_", "-")
        default_help = f"(default: {f.default})"
        help_text = f"{HELP.get(f.name, f.name.replace('_', ' '))} {default_help}"
        if typing.get_origin(hint) is typing.Literal:
            choices = typing.get_args(hint)
            parser.add_argument(flag, choices=choices, default=None, help=help_text)
        elif kind in (int, float, str):
            parser.add_argument(flag, type=kind, default=None, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokenwire",
        description="One streamed LLM answer over SSE, WebSocket, long polling and chunked HTTP.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server")
    _add_settings_flags(serve)
    from clients.cli import add_parsers

    add_parsers(sub)
    from bench.runner import add_arguments

    add_arguments(sub.add_parser("bench", help="the transports under Locust, side by side"))
    return parser


def settings_from_args(ns: argparse.Namespace) -> Settings:
    overrides = {f.name: getattr(ns, f.name, None) for f in dataclasses.fields(Settings)}
    return Settings.from_env(**overrides)


def main(argv: Sequence[str] | None = None) -> None:
    ns = build_parser().parse_args(argv)
    if ns.command == "serve":
        from server.app import serve

        try:
            settings = settings_from_args(ns)
        except ValueError as e:
            raise SystemExit(f"tokenwire: {e}") from None
        serve(settings)
    elif ns.command == "bench":
        from bench.runner import run as run_bench

        raise SystemExit(run_bench(ns))
    else:
        from clients.cli import run

        raise SystemExit(run(ns))


if __name__ == "__main__":  # pragma: no cover
    main()
