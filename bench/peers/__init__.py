"""The peer race: the same contract subset served by the stacks people would otherwise pick.

Each peer serves, from the synthetic source's exact text (``server.sources.synthetic``:
the same pieces, the same start for a prompt and seed) at the requested pace, the routes
``GET /healthz``, ``POST /api/sse``, ``POST /api/chunked``, ``GET /api/ws`` (``generate``),
``POST /api/streams`` with ``GET /api/streams/{id}/poll`` and the fan-out readers
``GET /api/streams/{id}/sse|chunked``; every event is byte-for-byte tokenwire's shape.
``PEERS`` says how to start each one on a port.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: ``command(host, port, pieces_file)``: the argv that serves the peer. ``pieces_file`` is a
#: JSON array of the synthetic corpus pieces (``corpus_pieces()``), for the peers that cannot
#: import them (Express).
Command = Callable[[str, int, Path], list[str]]


def _python(module: str) -> Command:
    return lambda host, port, _pieces: [
        sys.executable,
        "-m",
        module,
        "--host",
        host,
        "--port",
        str(port),
    ]


PEERS: dict[str, Command] = {
    "aiohttp": _python("bench.peers.aiohttp_peer"),
    "fastapi": _python("bench.peers.fastapi_peer"),
    "flask": _python("bench.peers.flask_peer"),
    "express": lambda host, port, pieces: [
        "node",
        str(HERE / "express" / "server.js"),
        "--host",
        host,
        "--port",
        str(port),
        "--pieces",
        str(pieces),
    ],
}
