"""Paced streams stepped by the pacing clock (server/streams/generation.py, "stepped"): the
synthetic source's stepper as a table, and on a real server (memory store) the stepped path's
exact events on every transport, and exactly one terminal event with the right seq whatever
ends the stream (max_tokens, DELETE, WebSocket cancel, generation timeout, shutdown)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest

from server.app import drain
from server.sources.base import (
    TICKS_PER_S,
    Finish,
    GenerationRequest,
    PaceClock,
    Reasoning,
    SourceItem,
)
from server.sources.synthetic import SyntheticSource, SyntheticStepper, synthetic_text
from server.store.memory import MemoryStore
from server.streams import generation
from server.streams.generation import generate
from server.streams.record import StreamRecord
from tests.conftest import MakeServer, base_url, create
from tests.readers import TRANSPORTS, read
from tests.scripted_sources import StoppingSource
from tests.test_parts_native import CALL_BODY, check_digests, expected_call, without_t

PACED = {"ttft_ms": 0, "tokens_per_s": 200, "jitter": 0.3, "seed": 5}
SLOW = {"ttft_ms": 0, "tokens_per_s": 40, "jitter": 0}


def steps(stepper: SyntheticStepper) -> list[tuple[SourceItem, float]]:
    """Every item and the loop time it is due, to the nanosecond."""
    out: list[tuple[SourceItem, float]] = []
    for _ in range(1000):
        due = round(stepper.due, 9)
        item = stepper.next()
        out.append((item, due))
        if isinstance(item, Finish):
            return out
    raise AssertionError("no Finish")


def stepper(params: dict[str, Any], max_tokens: int = 5, **parts: Any) -> SyntheticStepper:
    source = SyntheticSource()
    request = GenerationRequest(
        prompt="p", max_tokens=max_tokens, params=source.validate_params(params), **parts
    )
    out = source.stepper(request, 2.0)
    assert isinstance(out, SyntheticStepper)
    return out


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param(
            {"tokens_per_s": 10, "ttft_ms": 100, "jitter": 0, "seed": 3},
            [("Ne", 2.1), ("twork", 2.2), ("s", 2.3), (" are", 2.4), (" not", 2.5)],
            id="even-gaps-after-ttft",
        ),
        pytest.param(
            {"tokens_per_s": 10, "ttft_ms": 100, "jitter": 0.5, "seed": 3},
            [
                ("Ne", 2.1),
                ("twork", 2.234710762),
                ("s", 2.34933895),
                (" are", 2.490681349),
                (" not", 2.618654588),
            ],
            id="jitter-same-text",
        ),
        pytest.param(
            {"tokens_per_s": 1000, "ttft_ms": 0, "jitter": 0, "seed": 3},
            [("Ne", 2.0), ("twork", 2.001), ("s", 2.002), (" are", 2.003), (" not", 2.004)],
            id="no-ttft",
        ),
    ],
)
def test_stepper_items_and_due_times(
    params: dict[str, Any], expected: list[tuple[str, float]]
) -> None:
    """Each piece at its time (an absolute schedule from ``now``), the ``Finish`` at once
    after the last one."""
    last_due = expected[-1][1]
    assert steps(stepper(params)) == [*expected, (Finish("length"), last_due)]


def test_stepper_typed_parts_and_no_pieces() -> None:
    params = {"tokens_per_s": 100, "ttft_ms": 50, "jitter": 0, "seed": 7}
    got = steps(stepper(params, max_tokens=3, reasoning_effort="low"))
    assert [item for item, _ in got] == [
        Reasoning("A"),
        Reasoning(" slow"),
        Reasoning(" re"),
        Finish("length"),
    ]
    assert [due for _, due in got] == [2.05, 2.06, 2.07, 2.07]
    assert steps(stepper(params, max_tokens=0)) == [(Finish("length"), 2.05)]


def test_stepper_only_for_a_paced_synthetic_stream() -> None:
    """Unpaced streams keep ``stream()``'s bursts; a subclass that redefines ``stream()``
    is iterated (the stepper would not say what it yields)."""
    source = SyntheticSource()
    unpaced = GenerationRequest(prompt="p", max_tokens=3, params={"tokens_per_s": 0})
    assert source.stepper(unpaced, 0.0) is None
    paced = GenerationRequest(prompt="p", max_tokens=3, params={"tokens_per_s": 5})
    assert isinstance(source.stepper(paced, 0.0), SyntheticStepper)
    assert StoppingSource(1).stepper(paced, 0.0) is None


@pytest.fixture
def step_count(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times the clock stepped a stream (the stepped path was taken)."""
    calls = [0]
    step = generation._Stepped.step  # noqa: SLF001

    def counted(self: generation._Stepped) -> None:  # noqa: SLF001
        calls[0] += 1
        step(self)

    monkeypatch.setattr(generation._Stepped, "step", counted)  # noqa: SLF001
    return calls


def sha(pieces: list[str]) -> str:
    return hashlib.sha256("".join(pieces).encode()).hexdigest()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_stepped_stream_is_exact_on_every_transport(
    make_server: MakeServer,
    session: aiohttp.ClientSession,
    transport: str,
    step_count: list[int],
) -> None:
    srv = await make_server()
    sid = await create(session, srv, prompt="stepped", max_tokens=30, params=PACED)
    events = await read(session, base_url(srv), transport, sid)
    pieces = synthetic_text("stepped", 5, 30)
    assert without_t(events[:-1]) == [
        {"stream": sid, "seq": i, "type": "token", "text": p} for i, p in enumerate(pieces)
    ]
    done = events[-1]
    del done["t"]
    assert done == {
        "stream": sid,
        "seq": 30,
        "type": "done",
        "finish_reason": "length",
        "tokens": 30,
        "sha256": sha(pieces),
    }
    assert step_count[0] >= 29  # one step per token at least (the first may run inline)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_typed_parts_through_the_stepped_path(
    make_server: MakeServer,
    session: aiohttp.ClientSession,
    transport: str,
    step_count: list[int],
) -> None:
    srv = await make_server()
    body = {**CALL_BODY, "params": {**CALL_BODY["params"], "tokens_per_s": 500, "ttft_ms": 5}}
    sid = await create(session, srv, **body)
    events = await read(session, base_url(srv), transport, sid)
    check_digests(events)
    assert without_t(events) == expected_call(sid)
    assert step_count[0] >= len(events) - 2


async def test_a_tool_call_that_reaches_max_tokens_ends_length(
    make_server: MakeServer, session: aiohttp.ClientSession, step_count: list[int]
) -> None:
    srv = await make_server()
    body = {**CALL_BODY, "max_tokens": 10, "params": {**CALL_BODY["params"], "tokens_per_s": 500}}
    sid = await create(session, srv, **body)
    events = await read(session, base_url(srv), "sse", sid)
    assert [e["seq"] for e in events] == list(range(11))
    assert [e["type"] for e in events] == ["reasoning"] * 8 + ["tool_call"] * 2 + ["done"]
    assert events[-1]["finish_reason"] == "length"
    assert step_count[0] >= 9


def only_terminal_last(events: list[dict[str, Any]]) -> dict[str, Any]:
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events[:-1]] == ["token"] * (len(events) - 1)
    return events[-1]


async def test_cancel_by_delete_mid_stream(
    make_server: MakeServer, session: aiohttp.ClientSession, step_count: list[int]
) -> None:
    srv = await make_server()
    base = base_url(srv)
    sid = await create(session, srv, prompt="del", max_tokens=1000, params=SLOW)
    reader = asyncio.create_task(read(session, base, "sse", sid))
    await read(session, base, "chunked", sid, limit=3)
    async with session.delete(f"{base}/api/streams/{sid}") as resp:
        assert resp.status == 204
    events = await reader
    done = only_terminal_last(events)
    n = done["seq"]
    assert 3 <= n < 1000
    assert done["type"] == "done"
    assert done["finish_reason"] == "cancelled"
    assert done["tokens"] == n
    assert done["sha256"] == sha(synthetic_text("del", 0, n))
    assert await read(session, base, "poll", sid) == events  # the log holds the same
    assert step_count[0] >= 3


async def test_cancel_over_websocket_mid_stream(
    make_server: MakeServer, session: aiohttp.ClientSession, step_count: list[int]
) -> None:
    srv = await make_server()
    async with session.ws_connect(f"{base_url(srv)}/api/ws") as ws:
        await ws.send_json({"op": "generate", "prompt": "wsc", "max_tokens": 1000, "params": SLOW})
        created = await ws.receive_json()
        sid = created["stream"]
        events = [await ws.receive_json(), await ws.receive_json()]
        await ws.send_json({"op": "cancel", "stream": sid})
        async with asyncio.timeout(10):
            while events[-1]["type"] != "done":
                events.append(await ws.receive_json())
    done = only_terminal_last(events)
    assert done["finish_reason"] == "cancelled"
    assert done["tokens"] == done["seq"] >= 2
    assert done["sha256"] == sha(synthetic_text("wsc", 0, done["seq"]))
    assert step_count[0] >= 2


@pytest.mark.parametrize(
    ("params", "first_tokens"),
    [
        pytest.param(SLOW, 2, id="mid-stream"),
        pytest.param({**SLOW, "ttft_ms": 5000}, 0, id="before-the-first-token"),
    ],
)
async def test_generation_timeout(
    make_server: MakeServer,
    session: aiohttp.ClientSession,
    params: dict[str, Any],
    first_tokens: int,
) -> None:
    srv = await make_server(generation_timeout_s=0.3)
    sid = await create(session, srv, prompt="slow", max_tokens=1000, params=params)
    events = await read(session, base_url(srv), "sse", sid)
    error = only_terminal_last(events)
    n = error["seq"]
    assert first_tokens <= n < 1000
    assert [e["text"] for e in events[:-1]] == synthetic_text("slow", 0, n)
    del error["t"]
    assert error == {
        "stream": sid,
        "seq": n,
        "type": "error",
        "code": "generation_timeout",
        "message": "generation took longer than 0.3 s",
    }


async def test_shutdown_mid_stream(make_server: MakeServer, session: aiohttp.ClientSession) -> None:
    srv = await make_server(shutdown_timeout_s=5, shutdown_drain_s=0.2)
    base = base_url(srv)
    sid = await create(session, srv, prompt="bye", max_tokens=1000, params=SLOW)
    reader = asyncio.create_task(read(session, base, "chunked", sid))
    await read(session, base, "sse", sid, limit=3)
    async with asyncio.timeout(15):
        await drain(srv.app)
        events = await reader
    error = only_terminal_last(events)
    assert error["seq"] >= 3
    assert [e["text"] for e in events[:-1]] == synthetic_text("bye", 0, error["seq"])
    assert (error["type"], error["code"], error["message"]) == (
        "error",
        "shutdown",
        "the server is shutting down",
    )


async def test_a_stepped_stream_that_fails_ends_with_one_error() -> None:
    """The stepper's own error (a forced tool the request does not offer: validation
    refuses it before a stream starts, so here the generation runs directly on a memory
    store) ends the stream with one ``error`` event, as an error of ``stream()`` does."""
    store = MemoryStore(100)
    record = StreamRecord(id="s1", source="synthetic", client="c", max_tokens=5, unpaced=False)
    await store.open("s1")
    request = GenerationRequest(
        prompt="p", max_tokens=5, params={"tokens_per_s": 50, "ttft_ms": 20}, tool_choice="nope"
    )
    final, _ = await generate(record, SyntheticSource(), request, store, 10.0)
    assert final.seq == 0
    assert final.type == "error"
    assert orjson.loads(final.data)["message"] == "tool_choice names no tool in tools: 'nope'"
    assert await store.read("s1", -1, limit=10, wait=0) == [final]


async def test_the_clock_parks_far_deadlines_then_calls_each_at_its_tick() -> None:
    """A deadline more than two coarse slots ahead waits in a slot shared with the others
    near it (no tick of its own yet), then moves to its own tick: each call comes at or
    after its deadline, in deadline order; a cancelled future is dropped, not resolved."""
    clock = PaceClock(asyncio.get_running_loop())
    now = clock.loop.time()
    fired: list[tuple[str, float]] = []
    done = asyncio.Event()

    def call(name: str) -> Callable[[], None]:
        def step() -> None:
            fired.append((name, clock.loop.time()))
            if name == "far-b":
                done.set()

        return step

    deadlines = {"near": now + 0.05, "far-a": now + 0.35, "far-b": now + 0.352}
    for name, at in deadlines.items():
        assert clock.call(at, call(name))
    dropped = clock.until(now + 0.351)
    assert dropped is not None
    dropped.cancel()
    assert not clock.call(now - 0.01, call("past"))  # already past: no call
    assert len(clock._ticks) == 1  # noqa: SLF001 - only the near one has a tick
    assert sum(map(len, clock._slots.values())) == 3  # noqa: SLF001
    async with asyncio.timeout(10):
        await done.wait()
    assert [name for name, _ in fired] == ["near", "far-a", "far-b"]
    for name, t in fired:
        assert t >= deadlines[name] - 2 / TICKS_PER_S
    assert clock._ticks == {}  # noqa: SLF001
    assert clock._slots == {}  # noqa: SLF001
