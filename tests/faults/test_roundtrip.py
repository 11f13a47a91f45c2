"""Property: any text a source can emit arrives byte for byte, token for token, over every
transport, through both clients.

A test source emits the pieces hypothesis draws: any Unicode scalar value (control
characters, NUL, lone ``\\r``, U+2028, a BOM, SSE field look-alikes; never a lone
surrogate, which no ``str`` a source can send on the wire holds), and long lines (up to
70,000 characters in one token). Empty pieces are drawn too: the hub skips them.

The Python client reads each example over the four transports in this process. The JS
client gets a bounded batch: hypothesis draws the cases, one Node process
(``bench/chaos.mjs``) reads each over the five ways it reads (SSE through Node's
``EventSource`` and over fetch, WebSocket, long polling, chunked). The server runs in a
thread of its own for the whole module, so that hypothesis can run many examples on it.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import clients
from bench import chaos
from clients import TRANSPORTS, Client
from server.app import create_app
from server.settings import Settings
from server.sources.base import Finish, GenerationRequest, TokenSource
from tests.serving import start_app

PY_EXAMPLES = 150
JS_EXAMPLES = 40

SPECIAL = [
    "\r",
    "\n",
    "\r\n",
    "\x00",
    "\u2028",
    "\u2029",
    "\ufeff",
    "\x85",
    "data: x",
    "\n\nid: 9\n\n",
    ":",
    "retry: 1",
    "event: done",
    '"',
    "\\",
    "\\u0000",
    "\x1b[31m",
    "</script>",
    "\U0001f469\u200d\U0001f4bb",
    "\U0010ffff",
]
scalar = st.characters(exclude_categories=("Cs",))
piece = st.one_of(
    st.text(scalar, max_size=24),
    st.sampled_from(SPECIAL),
    st.builds(lambda c, n: c * n, scalar, st.integers(1_000, 70_000)),
)
pieces_strategy = st.lists(piece, min_size=1, max_size=24)


class PiecesSource(TokenSource):
    """Emits the pieces registered for the request's prompt, then ``stop``."""

    name = "synthetic"

    def __init__(self) -> None:
        self.scripts: dict[str, list[str]] = {}

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str | Finish]:
        for p in self.scripts[request.prompt]:
            await asyncio.sleep(0)
            yield p
        yield Finish("stop")


class ThreadedServer:
    """A tokenwire server on a loopback port, in a thread with its own event loop."""

    def __init__(self, source: PiecesSource) -> None:
        self.source = source
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="roundtrip-server", daemon=True)
        self._keys = itertools.count()

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        app = create_app(
            Settings(max_tokens_cap=100, max_streams_per_client=1000, sse_retry_ms=50),
            sources={"synthetic": self.source},
            js_dir=clients.JS_DIR,
        )
        runner, port = await start_app(app)
        self.url = f"http://127.0.0.1:{port}"
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        assert self._ready.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        stop = self._stop
        assert stop is not None
        self._loop.call_soon_threadsafe(stop.set)
        self._thread.join(30)

    def script(self, pieces: list[str]) -> str:
        """Register ``pieces``; returns the prompt that emits them."""
        prompt = f"case {next(self._keys)}"
        self.source.scripts[prompt] = pieces
        return prompt


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    with ThreadedServer(PiecesSource()) as srv:
        yield srv


def expected(pieces: list[str]) -> tuple[list[str], str]:
    tokens = [p for p in pieces if p]
    return tokens, hashlib.sha256("".join(tokens).encode()).hexdigest()


async def read_python(url: str, prompt: str, n: int) -> dict[str, list[dict[str, Any]]]:
    async with Client(url) as c:

        async def one(t: Any) -> list[dict[str, Any]]:
            return [ev async for ev in c.stream(prompt, transport=t, max_tokens=max(1, n))]

        async with asyncio.timeout(60):
            results = await asyncio.gather(*(one(t) for t in TRANSPORTS))
    return dict(zip(TRANSPORTS, results, strict=True))


@settings(
    max_examples=PY_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    print_blob=True,
)
@given(pieces=pieces_strategy)
def test_python_client_round_trips_any_text(server: ThreadedServer, pieces: list[str]) -> None:
    tokens, digest = expected(pieces)
    prompt = server.script(pieces)
    results = asyncio.run(read_python(server.url, prompt, len(pieces)))
    for transport, events in results.items():
        assert [e["text"] for e in events[:-1]] == tokens, transport
        assert [e["seq"] for e in events] == list(range(len(tokens) + 1)), transport
        assert (events[-1]["type"], events[-1]["sha256"]) == ("done", digest), transport


JS_VARIANTS = ("js-sse-es", "js-sse-fetch", "js-ws", "js-poll", "js-chunked")


def test_js_client_round_trips_any_text(server: ThreadedServer) -> None:
    cases: list[list[str]] = []

    @settings(max_examples=JS_EXAMPLES, deadline=None, database=None)
    @given(pieces=pieces_strategy)
    def draw(pieces: list[str]) -> None:
        cases.append(pieces)

    draw()
    specs = [
        (chaos.Spec(f"{kind}-{i}", kind, server.script(p), max(1, len(p)), [], False, []), p)
        for i, p in enumerate(cases)
        for kind in JS_VARIANTS
    ]
    outcomes = asyncio.run(chaos.read_js([(s, server.url) for s, _ in specs], {}, 90))
    assert len(outcomes) == len(specs) == JS_EXAMPLES * len(JS_VARIANTS)
    for (spec, pieces), out in zip(specs, outcomes, strict=True):
        tokens, digest = expected(pieces)
        assert out.error is None, (spec.key, pieces)
        assert out.texts == tokens, (spec.key, pieces)
        assert out.seqs == list(range(len(tokens) + 1)), spec.key
        assert out.done is not None
        assert out.done["sha256"] == digest, spec.key
