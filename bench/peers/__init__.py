"""The peer race: the same contract subset served by the stacks people would otherwise pick.

Each peer serves, from the synthetic source's exact text (``server.sources.synthetic``:
the same pieces, the same start for a prompt and seed) at the requested pace, the routes
``GET /healthz``, ``POST /api/sse``, ``POST /api/chunked``, ``GET /api/ws`` (``generate``),
``POST /api/streams`` with ``GET /api/streams/{id}/poll`` and the fan-out readers
``GET /api/streams/{id}/sse|chunked``; every event is byte-for-byte tokenwire's shape.
``PEERS`` says how to start each one on a port.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from server.sources.synthetic import DEFAULT_CORPUS, CorpusName, corpus_pieces, corpus_starts

HERE = Path(__file__).resolve().parent

#: ``command(host, port, pieces_file)``: the argv that serves the peer. ``pieces_file`` is
#: what :func:`write_pieces` writes, for the peers that cannot import the synthetic source
#: (Express).
Command = Callable[[str, int, Path], list[str]]


def write_pieces(path: Path, corpus: CorpusName = DEFAULT_CORPUS) -> None:
    """Write a corpus's ring as JSON, ``{"pieces": [...], "starts": [...]}``: from it a peer
    computes :func:`~server.sources.synthetic.synthetic_text` (the start is
    ``starts[sha256(f"{seed}\\0{prompt}")[:8] % len(starts)]``, then the pieces in a ring)."""
    ring = {"pieces": list(corpus_pieces(corpus)), "starts": list(corpus_starts(corpus))}
    path.write_text(json.dumps(ring))


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
