"""Property: any text a source can emit arrives byte for byte, token for token, over every
transport, through both clients; and typed parts (reasoning and tool-call arguments with
any Unicode) reassemble exactly to ``done.parts`` through every Python reader, and through
both decoders however the wire bytes are split.

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
import json
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import clients
from bench import chaos
from clients import TRANSPORTS, Client, Part, PartReader, Reasoning, Text, ToolCallDone
from clients.check import PartsDigest
from clients.decoders import NDJSONDecoder, SSEDecoder
from server.app import create_app
from server.settings import Settings
from server.sources.base import Finish, GenerationRequest, SourceItem, TokenSource, ToolCallDelta
from server.sources.base import Reasoning as ReasoningPiece
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


# --- typed parts: reasoning and tool-call arguments, any Unicode, split at every byte ---

PARTS_EXAMPLES = 30
small_piece = st.one_of(st.text(scalar, min_size=1, max_size=12), st.sampled_from(SPECIAL))


@st.composite
def parts_script(draw: st.DrawFn) -> tuple[list[SourceItem], list[str], list[str], list[str]]:
    """A source's items (reasoning, then 1-3 calls whose argument JSON, any Unicode in its
    strings, is cut at drawn places, then text); the expected reasoning pieces, the calls'
    whole arguments and the text pieces."""
    reasoning = draw(st.lists(small_piece, max_size=6))
    items: list[SourceItem] = [ReasoningPiece(r) for r in reasoning]
    calls = []
    for index in range(draw(st.integers(1, 3))):
        value = {"q": draw(small_piece), "n": draw(st.lists(small_piece, max_size=3))}
        args = json.dumps(value, ensure_ascii=draw(st.booleans()))
        cuts = sorted(draw(st.sets(st.integers(1, max(1, len(args) - 1)), max_size=8)))
        pieces = [args[a:b] for a, b in itertools.pairwise([0, *cuts, len(args)])]
        items.append(ToolCallDelta(index, "", id=f"call_{index}", name=f"tool_{index}"))
        items += [ToolCallDelta(index, p) for p in pieces]
        calls.append(args)
    text = draw(st.lists(small_piece, max_size=4))
    return [*items, *text], reasoning, calls, text


class PartsPiecesSource(TokenSource):
    """Emits the items registered for the request's prompt (the hub infers the ending)."""

    name = "synthetic"
    typed_parts = True

    def __init__(self) -> None:
        self.scripts: dict[str, list[SourceItem]] = {}

    async def stream(self, request: GenerationRequest) -> AsyncIterator[SourceItem]:
        for item in self.scripts[request.prompt]:
            await asyncio.sleep(0)
            yield item


@pytest.fixture(scope="module")
def parts_server() -> Iterator[ThreadedServer]:
    with ThreadedServer(PartsPiecesSource()) as srv:  # type: ignore[arg-type]
        yield srv


def split_everywhere(data: bytes) -> Iterator[list[bytes]]:
    """The bytes one at a time, and split in two at every byte boundary."""
    yield [data[i : i + 1] for i in range(len(data))]
    for i in range(len(data) + 1):
        yield [data[:i], data[i:]]


def parts_of(events: list[dict[str, Any]]) -> list[Part]:
    reader = PartReader()
    return [part for ev in events for part in reader.feed(ev)]


async def read_parts_everywhere(
    url: str, prompt: str, n: int
) -> tuple[dict[str, list[Part]], dict[str, Any], bytes, bytes]:
    """The parts over the four transports, the ``done`` event, and the stream's SSE and
    NDJSON bytes as the server sent them."""
    async with Client(url) as c:
        streams = {t: c.stream(prompt, transport=t, max_tokens=n) for t in TRANSPORTS}

        async def one(t: Any) -> list[Part]:
            return [p async for p in streams[t].parts()]

        async with asyncio.timeout(60):
            results = await asyncio.gather(*(one(t) for t in TRANSPORTS))
        sid = streams["chunked"].id
        async with c.session.get(f"{url}/api/streams/{sid}/sse") as resp:
            sse = await resp.read()
        async with c.session.get(f"{url}/api/streams/{sid}/chunked") as resp:
            ndjson = await resp.read()
    for t, s in streams.items():
        assert s.digest_ok is True, t
    done = streams["chunked"].done
    assert done is not None
    return dict(zip(TRANSPORTS, results, strict=True)), done, sse, ndjson


@settings(
    max_examples=PARTS_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    print_blob=True,
)
@given(script=parts_script())
def test_typed_parts_round_trip_through_every_reader_and_any_split(
    parts_server: ThreadedServer,
    script: tuple[list[SourceItem], list[str], list[str], list[str]],
) -> None:
    items, reasoning, calls, text = script
    prompt = parts_server.script(items)  # type: ignore[arg-type]
    results, done, sse, ndjson = asyncio.run(
        read_parts_everywhere(parts_server.url, prompt, len(items) + 1)
    )
    want_reasoning = [r for r in reasoning if r]
    want_text = [t for t in text if t]
    for transport, parts in results.items():
        assert [p.text for p in parts if isinstance(p, Reasoning)] == want_reasoning, transport
        assert [p.text for p in parts if isinstance(p, Text)] == want_text, transport
        finished = [p for p in parts if isinstance(p, ToolCallDone)]
        assert [(p.index, p.name, p.arguments) for p in finished] == [
            (i, f"tool_{i}", args) for i, args in enumerate(calls)
        ], transport
        assert [p.parsed for p in finished] == [json.loads(a) for a in calls], transport
    want = results["chunked"]
    digest = PartsDigest()
    for chunks in split_everywhere(sse):
        dec = SSEDecoder()
        events = [orjson.loads(m.data) for c in chunks for m in dec.feed(c)]
        assert parts_of(events) == want
        assert events[-1] == done
    for chunks in split_everywhere(ndjson):
        dec_nd = NDJSONDecoder()
        events = [e for c in chunks for e in dec_nd.feed(c)]
        assert parts_of(events) == want
    for ev in events[:-1]:
        digest.update(ev)
    assert digest.mismatch(done) is None
