"""The ``hf`` source on a real (tiny) GPT-2 loaded with ``from_pretrained``.

Every expected value is computed here with the same model and tokenizer: greedy ids from
``model.generate()``, text from ``tokenizer.decode()``, and the expected pieces by decoding
every prefix of the ids in full (:func:`reference_pieces`). Timing is never asserted:
steps are counted, gated and ordered with forward pre-hooks that run in the worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import pytest
import torch

from server.errors import InvalidField, SourceError
from server.sources.base import Finish, GenerationRequest
from server.sources.hf import THREAD_NAME_PREFIX, HFSource, IncrementalDecoder
from tests.tinymodel import EOS_TOKEN, build_tiny_gpt2

Hook = Callable[[torch.nn.Module, Any], None]
MakeSource = Callable[[int], Awaitable[HFSource]]

REPLACEMENT_CHAR = "\ufffd"


# -- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from intra-op threads, and OpenMP spin-waiting against
    other busy processes slows every step down many times over."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="module")
def source(model_dir: Path) -> HFSource:
    """One loaded source shared by the tests that never run two streams at once."""
    src = HFSource(str(model_dir))
    # A private loop: the tests' own loops come and go; the loaded model is not tied to any.
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(src.start())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
    return src


@pytest.fixture
def make_source(model_dir: Path) -> MakeSource:
    """A fresh source (its own semaphore) for the tests about ``max_concurrent``."""

    async def make(max_concurrent: int) -> HFSource:
        src = HFSource(str(model_dir), max_concurrent=max_concurrent)
        await src.start()
        return src

    return make


def hf_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_NAME_PREFIX)]


@pytest.fixture(autouse=True)
def no_thread_left_behind() -> Iterator[None]:
    assert hf_threads() == []
    yield
    assert hf_threads() == []


@contextlib.contextmanager
def forward_pre_hook(model: torch.nn.Module, hook: Hook) -> Iterator[None]:
    """Run ``hook`` (in the worker thread) before every forward pass: one per decoding step."""
    handle = model.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def eos_id(src: HFSource) -> int:
    token_id = src.tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    assert isinstance(token_id, int)
    return token_id


def greedy_ids(src: HFSource, prompt: str, max_tokens: int) -> list[int]:
    """The ids plain greedy ``generate()`` produces, without the source."""
    encoded = src.tokenizer(prompt, return_tensors="pt")
    out = src.model.generate(  # type: ignore[operator]
        **encoded, max_new_tokens=max_tokens, do_sample=False, pad_token_id=eos_id(src)
    )
    ids: list[int] = out[0, encoded["input_ids"].shape[1] :].tolist()
    return ids


def decode(src: HFSource, ids: list[int]) -> str:
    text = src.tokenizer.decode(ids, skip_special_tokens=True)
    assert isinstance(text, str)
    return text


def reference_emissions(src: HFSource, ids: list[int]) -> list[str]:
    """What each generated token must emit (``""`` for none), from full decodes of prefixes.

    A token emits the new text once the text decoded so far is longer than what was emitted
    and does not end in an unfinished character (U+FFFD); what is still held after the last
    token is emitted with it.
    """
    emissions: list[str] = []
    emitted = 0
    for end in range(1, len(ids) + 1):
        text = decode(src, ids[:end])
        if len(text) > emitted and not text.endswith(REPLACEMENT_CHAR):
            emissions.append(text[emitted:])
            emitted = len(text)
        else:
            emissions.append("")
    full = decode(src, ids)
    if len(full) > emitted:
        emissions[-1] += full[emitted:]
    return emissions


def reference_pieces(src: HFSource, ids: list[int]) -> list[str]:
    """The pieces a token-by-token stream must yield, in order."""
    return [piece for piece in reference_emissions(src, ids) if piece]


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: the token string of each single byte."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def byte_ids(src: HFSource, data: bytes) -> list[int]:
    """One single-byte token id per byte of ``data``."""
    table = bytes_to_unicode()
    ids: list[int] = []
    for b in data:
        token_id = src.tokenizer.convert_tokens_to_ids(table[b])
        assert isinstance(token_id, int)
        assert token_id != eos_id(src)
        ids.append(token_id)
    return ids


async def collect(
    src: HFSource, prompt: str, max_tokens: int, params: Mapping[str, Any] | None = None
) -> tuple[list[str], Finish | None]:
    """Run one stream to the end; return its pieces and its ``Finish``."""
    pieces: list[str] = []
    finish: Finish | None = None
    request = GenerationRequest(prompt=prompt, max_tokens=max_tokens, params=params or {})
    async for item in src.stream(request):
        assert finish is None, "nothing may follow the Finish"
        if isinstance(item, Finish):
            finish = item
        else:
            pieces.append(item)
    return pieces, finish


# -- text: exact, token by token, never a split character ------------------------------------


@pytest.mark.parametrize(
    ("prompt", "max_tokens", "reason"),
    [
        pytest.param("Emoji:", 40, "length", id="emoji-zwj"),
        pytest.param("안녕하세요,", 30, "length", id="korean"),
        pytest.param("The quick", 60, "stop", id="eos"),
        pytest.param("Math:", 40, "length", id="cut-mid-character"),
    ],
)
async def test_pieces_are_the_greedy_generation_token_by_token(
    source: HFSource, prompt: str, max_tokens: int, reason: str
) -> None:
    ids = greedy_ids(source, prompt, max_tokens)
    full = decode(source, ids)
    emissions = reference_emissions(source, ids)
    adds_no_text = emissions.count("")

    pieces, finish = await collect(source, prompt, max_tokens)

    assert pieces == [piece for piece in emissions if piece]
    assert "".join(pieces) == full
    assert len(pieces) == len(ids) - adds_no_text
    if REPLACEMENT_CHAR not in full:
        assert not any(REPLACEMENT_CHAR in piece for piece in pieces)
    assert finish == Finish(reason)  # type: ignore[arg-type]
    assert reason == ("stop" if ids[-1] == eos_id(source) else "length")
    if reason == "length":
        assert len(ids) == max_tokens


async def test_split_characters_are_held_back_until_complete(source: HFSource) -> None:
    # The fitted tiny model continues this line of its corpus: emoji (with ZWJ sequences)
    # whose bytes are spread over several tokens, and no invalid byte anywhere.
    ids = greedy_ids(source, "Emoji:", 40)
    full = decode(source, ids)
    assert full.startswith(" 😀 🎉 🚀 👍🏽")
    assert REPLACEMENT_CHAR not in full
    partial = [i for i in ids if REPLACEMENT_CHAR in decode(source, [i])]
    assert len(partial) >= 5, "the case must include tokens that are partial characters"

    pieces, _ = await collect(source, "Emoji:", 40)

    assert "".join(pieces) == full
    assert not any(REPLACEMENT_CHAR in piece for piece in pieces)
    # A token that only starts a character adds no piece; the one that completes it does.
    emissions = reference_emissions(source, ids)
    assert pieces == [piece for piece in emissions if piece]
    assert len(pieces) == len(ids) - emissions.count("")
    assert emissions.count("") >= 5


async def test_cut_mid_character_ends_with_the_decoders_replacement(source: HFSource) -> None:
    ids = greedy_ids(source, "Math:", 40)
    full = decode(source, ids)
    assert full.endswith(REPLACEMENT_CHAR), "max_tokens cuts this one inside a character"
    assert REPLACEMENT_CHAR not in full[:-1]

    pieces, finish = await collect(source, "Math:", 40)

    assert "".join(pieces) == full
    assert pieces[-1].endswith(REPLACEMENT_CHAR)
    assert not any(REPLACEMENT_CHAR in piece for piece in pieces[:-1])
    assert finish == Finish("length")


async def test_pieces_are_tokens_not_words(source: HFSource) -> None:
    ids = greedy_ids(source, "The quick", 60)
    pieces, finish = await collect(source, "The quick", 60)

    assert "".join(pieces) == " brown fox jumps over the lazy dog."
    assert finish == Finish("stop")
    assert ids[-1] == eos_id(source)
    words = "".join(pieces).split()
    assert len(pieces) > len(words)
    # One piece per generated token, except the EOS token, which adds no text.
    assert len(pieces) == len(ids) - 1
    assert pieces == [decode(source, [i]) for i in ids[:-1]]


# -- incremental decoding on crafted ids ----------------------------------------------------


def test_decoder_holds_back_bytes_of_an_unfinished_character(source: HFSource) -> None:
    ids = byte_ids(source, "a한😀b".encode())  # 1 + 3 + 4 + 1 single-byte tokens
    assert decode(source, ids) == "a한😀b"
    decoder = IncrementalDecoder(source.tokenizer)

    pushed = [decoder.push(i) for i in ids]

    assert pushed == ["a", "", "", "한", "", "", "", "😀", "b"]
    assert decoder.flush() == ""
    assert decoder.ids == ids


def test_decoder_completes_a_character_across_multi_byte_tokens(source: HFSource) -> None:
    text = "naïve 한국어 토큰은 😀 🎉 👨\u200d👩\u200d👧 €"
    ids = source.tokenizer(text)["input_ids"]
    assert decode(source, ids) == text
    assert any(REPLACEMENT_CHAR in decode(source, [i]) for i in ids)
    decoder = IncrementalDecoder(source.tokenizer)

    pieces = [piece for piece in (decoder.push(i) for i in ids) if piece]
    tail = decoder.flush()

    assert tail == ""
    assert pieces == reference_pieces(source, ids)
    assert "".join(pieces) == text
    assert not any(REPLACEMENT_CHAR in piece for piece in pieces)


def test_decoder_skips_special_tokens(source: HFSource) -> None:
    a, b = byte_ids(source, b"ab")
    decoder = IncrementalDecoder(source.tokenizer)

    assert [decoder.push(i) for i in (a, eos_id(source), b, eos_id(source))] == ["a", "", "b", ""]
    assert decoder.flush() == ""


def test_decoder_flushes_an_unfinished_character_as_the_decoder_renders_it(
    source: HFSource,
) -> None:
    ids = byte_ids(source, b"x" + "한".encode()[:2])
    decoder = IncrementalDecoder(source.tokenizer)

    assert [decoder.push(i) for i in ids] == ["x", "", ""]
    tail = decoder.flush()

    assert tail == decode(source, ids)[1:]
    assert tail.startswith(REPLACEMENT_CHAR)
    assert decoder.flush() == ""


# -- the event loop keeps running -----------------------------------------------------------


async def test_generation_never_blocks_the_event_loop(source: HFSource) -> None:
    ticks = 0
    ticked = threading.Condition()
    steps_that_saw_a_tick: list[bool] = []
    ticks_at_piece: list[int] = []

    def need_a_tick(module: torch.nn.Module, args: Any) -> None:
        # Each decoding step waits until the event loop has run the ticker once more. If
        # generate() ran on the loop, no tick could happen and the step would fail.
        with ticked:
            seen = ticks
            ok = ticked.wait_for(lambda: ticks > seen, timeout=30)
        steps_that_saw_a_tick.append(ok)
        if not ok:
            raise AssertionError("the event loop did not run while generate() did")

    async def ticker() -> None:
        nonlocal ticks
        while True:
            with ticked:
                ticks += 1
                ticked.notify_all()
            await asyncio.sleep(0.001)

    ids = greedy_ids(source, "Emoji:", 24)
    tick_task = asyncio.create_task(ticker())
    try:
        with forward_pre_hook(source.model, need_a_tick):
            pieces: list[str] = []
            async for item in source.stream(GenerationRequest(prompt="Emoji:", max_tokens=24)):
                if isinstance(item, str):
                    pieces.append(item)
                    ticks_at_piece.append(ticks)
    finally:
        tick_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tick_task

    assert "".join(pieces) == decode(source, ids)
    assert steps_that_saw_a_tick == [True] * len(ids)
    assert ticks_at_piece[-1] - ticks_at_piece[0] > 0


# -- cancellation, closing, failure ---------------------------------------------------------


class StepGate:
    """A forward pre-hook that counts decoding steps and holds step ``hold_at`` until opened."""

    def __init__(self, hold_at: int) -> None:
        self.hold_at = hold_at
        self.steps = 0
        self.reached = threading.Event()
        self.opened = threading.Event()

    def __call__(self, module: torch.nn.Module, args: Any) -> None:
        self.steps += 1
        if self.steps == self.hold_at:
            self.reached.set()
            if not self.opened.wait(timeout=30):
                raise AssertionError("the gate was never opened")

    async def wait_reached(self) -> None:
        assert await asyncio.to_thread(self.reached.wait, 30)


async def test_cancel_stops_generation_within_one_step(source: HFSource) -> None:
    expected = decode(source, greedy_ids(source, "Hello", 100))
    gate = StepGate(hold_at=5)
    pieces: list[str] = []

    async def consume() -> None:
        async for item in source.stream(GenerationRequest(prompt="Hello", max_tokens=100)):
            assert isinstance(item, str)
            pieces.append(item)

    with forward_pre_hook(source.model, gate):
        task = asyncio.create_task(consume())
        await gate.wait_reached()
        steps_at_cancel = gate.steps
        task.cancel()
        # Opens the gate only after the task has run its cancellation (callbacks are FIFO),
        # so the step in flight is the last one: no new forward pass may start.
        asyncio.get_running_loop().call_soon(gate.opened.set)
        with pytest.raises(asyncio.CancelledError):
            await task

    assert steps_at_cancel == 5
    assert gate.steps - steps_at_cancel <= 1
    assert gate.steps == steps_at_cancel
    assert hf_threads() == []
    assert expected.startswith("".join(pieces))


async def test_closing_the_generator_stops_generation(source: HFSource) -> None:
    expected = reference_pieces(source, greedy_ids(source, "Hello", 100))
    gate = StepGate(hold_at=5)

    with forward_pre_hook(source.model, gate):
        agen = cast(
            AsyncGenerator[str | Finish, None],
            source.stream(GenerationRequest(prompt="Hello", max_tokens=100)),
        )
        first = [await anext(agen), await anext(agen)]
        await gate.wait_reached()
        steps_at_close = gate.steps
        closing = asyncio.create_task(agen.aclose())
        asyncio.get_running_loop().call_soon(gate.opened.set)
        await closing

    assert first == expected[:2]
    assert gate.steps - steps_at_close <= 1
    assert gate.steps == steps_at_close == 5
    assert hf_threads() == []


async def test_exception_in_generate_becomes_generation_failed(source: HFSource) -> None:
    expected = decode(source, greedy_ids(source, "Hello", 50))
    steps = 0

    def boom(module: torch.nn.Module, args: Any) -> None:
        nonlocal steps
        steps += 1
        if steps == 3:
            raise RuntimeError("boom at step 3")

    pieces: list[str] = []

    async def consume() -> None:
        async for item in source.stream(GenerationRequest(prompt="Hello", max_tokens=50)):
            assert isinstance(item, str)
            pieces.append(item)

    with forward_pre_hook(source.model, boom), pytest.raises(SourceError) as caught:
        await consume()

    assert caught.value.code == "generation_failed"
    assert caught.value.message == "RuntimeError: boom at step 3"
    assert str(caught.value) == "generation_failed: RuntimeError: boom at step 3"
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert steps == 3
    assert "".join(pieces) == expected[: len("".join(pieces))]
    assert len(pieces) <= 2


# -- max_concurrent ---------------------------------------------------------------------------


async def test_max_concurrent_one_runs_streams_one_after_the_other(
    make_source: MakeSource,
) -> None:
    src = await make_source(1)
    events: list[tuple[str, str]] = []
    step_threads: list[str] = []

    def record_thread(module: torch.nn.Module, args: Any) -> None:
        step_threads.append(threading.current_thread().name)

    async def consume(name: str, prompt: str) -> list[str]:
        events.append((name, "begin"))
        pieces, finish = await collect(src, prompt, 12)
        events.extend((name, "piece") for _ in pieces)
        events.append((name, "end"))
        return pieces

    with forward_pre_hook(src.model, record_thread):
        first = asyncio.create_task(consume("A", "Hello"))
        second = asyncio.create_task(consume("B", "Tokens"))
        pieces_a, pieces_b = await asyncio.gather(first, second)

    assert "".join(pieces_a) == decode(src, greedy_ids(src, "Hello", 12))
    assert "".join(pieces_b) == decode(src, greedy_ids(src, "Tokens", 12))
    # Both asked at once; B's pieces come only after A ended.
    assert events[:2] == [("A", "begin"), ("B", "begin")]
    assert events[2:] == (
        [("A", "piece")] * len(pieces_a)
        + [("A", "end")]
        + [("B", "piece")] * len(pieces_b)
        + [("B", "end")]
    )
    # The generations' decoding steps never interleaved: 12 of one thread, then 12 of another.
    assert len(step_threads) == 24
    assert len(set(step_threads[:12])) == len(set(step_threads[12:])) == 1
    assert step_threads[0] != step_threads[12]


async def test_a_cancelled_waiting_stream_leaves_cleanly(make_source: MakeSource) -> None:
    # With max_concurrent=1 a waiting stream that is cancelled leaves without ever starting a
    # generation, and the slot still works for the next one.
    src = await make_source(1)
    gate = StepGate(hold_at=2)
    step_threads: set[str] = set()

    def hook(module: torch.nn.Module, args: Any) -> None:
        step_threads.add(threading.current_thread().name)
        gate(module, args)

    with forward_pre_hook(src.model, hook):
        running = asyncio.create_task(collect(src, "Hello", 8))
        waiting = asyncio.create_task(collect(src, "Tokens", 8))
        await gate.wait_reached()
        assert not waiting.done()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        gate.opened.set()
        pieces, finish = await running
        after, after_finish = await collect(src, "The quick", 8)

    assert "".join(pieces) == decode(src, greedy_ids(src, "Hello", 8))
    assert finish == Finish("length")
    assert "".join(after) == decode(src, greedy_ids(src, "The quick", 8))
    assert after_finish == Finish("length")
    assert len(step_threads) == 2, "the cancelled waiter never started a generation thread"


@contextlib.contextmanager
def two_generations_meet(src: HFSource) -> Iterator[set[str]]:
    """Hold each generation thread at its first step until the other one is there too, so
    the block passes only if two generations run at the same time. Yields the thread names."""
    both_running = threading.Barrier(2, timeout=30)
    started: set[str] = set()

    def meet(module: torch.nn.Module, args: Any) -> None:
        name = threading.current_thread().name
        if name not in started:
            started.add(name)
            both_running.wait()

    with forward_pre_hook(src.model, meet):
        yield started


async def test_max_concurrent_two_runs_two_streams_at_once(make_source: MakeSource) -> None:
    src = await make_source(2)
    with two_generations_meet(src) as started:
        (pieces_a, finish_a), (pieces_b, finish_b) = await asyncio.gather(
            collect(src, "Hello", 10), collect(src, "Tokens", 10)
        )

    assert len(started) == 2
    assert "".join(pieces_a) == decode(src, greedy_ids(src, "Hello", 10))
    assert "".join(pieces_b) == decode(src, greedy_ids(src, "Tokens", 10))
    assert finish_a == finish_b == Finish("length")


# -- sampling params ------------------------------------------------------------------------


async def test_seed_makes_sampling_reproducible_even_concurrently(
    source: HFSource, make_source: MakeSource
) -> None:
    params_3 = {"temperature": 2.0, "seed": 3}
    params_4 = {"temperature": 2.0, "seed": 4}
    alone_3, _ = await collect(source, "Hello", 30, params_3)
    again_3, _ = await collect(source, "Hello", 30, params_3)
    alone_4, _ = await collect(source, "Hello", 30, params_4)
    greedy = reference_pieces(source, greedy_ids(source, "Hello", 30))

    assert alone_3 == again_3
    assert alone_3 != alone_4
    assert alone_3 != greedy

    src = await make_source(2)
    with two_generations_meet(src):
        (together_3, _), (together_4, _) = await asyncio.gather(
            collect(src, "Hello", 30, params_3), collect(src, "Hello", 30, params_4)
        )
    assert (together_3, together_4) == (alone_3, alone_4)


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"temperature": 2.0, "top_k": 1, "seed": 1}, id="top_k=1"),
        pytest.param({"temperature": 2.0, "top_p": 1e-9, "seed": 1}, id="tiny-top_p"),
        pytest.param({"temperature": 0, "top_k": 5, "seed": 9}, id="temperature=0"),
        pytest.param({"top_p": 0.5}, id="no-temperature"),
    ],
)
async def test_params_that_leave_one_choice_are_greedy(
    source: HFSource, params: dict[str, Any]
) -> None:
    greedy = reference_pieces(source, greedy_ids(source, "Hello", 30))

    pieces, finish = await collect(source, "Hello", 30, params)

    assert pieces == greedy
    assert finish == Finish("length")


# -- validate_params --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "cleaned"),
    [
        pytest.param({}, {}, id="empty"),
        pytest.param({"temperature": 0}, {"temperature": 0.0}, id="greedy"),
        pytest.param(
            {"temperature": 2, "top_p": 1, "top_k": 0, "seed": 2**63 - 1},
            {"temperature": 2.0, "top_p": 1.0, "top_k": 0, "seed": 2**63 - 1},
            id="upper-bounds",
        ),
        pytest.param(
            {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "seed": 0},
            {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "seed": 0},
            id="typical",
        ),
    ],
)
def test_validate_params_accepts(
    source: HFSource, params: dict[str, Any], cleaned: dict[str, Any]
) -> None:
    out = source.validate_params(params)
    assert out == cleaned
    assert {k: type(v) for k, v in out.items()} == {k: type(v) for k, v in cleaned.items()}


TEMPERATURE = "must be a number from 0 to 2"
TOP_P = "must be a number greater than 0, at most 1"
TOP_K = "must be an integer >= 0"
SEED = "must be an integer from 0 to 2^63-1"
UNKNOWN = "unknown parameter (allowed: seed, temperature, top_k, top_p)"


@pytest.mark.parametrize(
    ("params", "field", "rule"),
    [
        pytest.param({"temp": 1}, "params.temp", UNKNOWN, id="unknown"),
        pytest.param({"top_k": 1, "max_tokens": 5}, "params.max_tokens", UNKNOWN, id="unknown2"),
        pytest.param({"temperature": 2.5}, "params.temperature", TEMPERATURE, id="temp-high"),
        pytest.param({"temperature": -0.1}, "params.temperature", TEMPERATURE, id="temp-neg"),
        pytest.param({"temperature": "1"}, "params.temperature", TEMPERATURE, id="temp-str"),
        pytest.param({"temperature": True}, "params.temperature", TEMPERATURE, id="temp-bool"),
        pytest.param({"temperature": None}, "params.temperature", TEMPERATURE, id="temp-null"),
        pytest.param(
            {"temperature": float("nan")}, "params.temperature", TEMPERATURE, id="temp-nan"
        ),
        pytest.param({"top_p": 0}, "params.top_p", TOP_P, id="top_p-zero"),
        pytest.param({"top_p": 1.01}, "params.top_p", TOP_P, id="top_p-high"),
        pytest.param({"top_p": [0.5]}, "params.top_p", TOP_P, id="top_p-list"),
        pytest.param({"top_k": -1}, "params.top_k", TOP_K, id="top_k-neg"),
        pytest.param({"top_k": 2.0}, "params.top_k", TOP_K, id="top_k-float"),
        pytest.param({"top_k": True}, "params.top_k", TOP_K, id="top_k-bool"),
        pytest.param({"seed": -1}, "params.seed", SEED, id="seed-neg"),
        pytest.param({"seed": 2**63}, "params.seed", SEED, id="seed-big"),
        pytest.param({"seed": "7"}, "params.seed", SEED, id="seed-str"),
        pytest.param({"seed": False}, "params.seed", SEED, id="seed-bool"),
    ],
)
def test_validate_params_rejects(
    source: HFSource, params: dict[str, Any], field: str, rule: str
) -> None:
    with pytest.raises(InvalidField) as caught:
        source.validate_params(params)
    assert caught.value.field == field
    assert caught.value.message == f"{field}: {rule}"
    assert caught.value.body() == {
        "error": {"code": "invalid_field", "message": f"{field}: {rule}"}
    }


async def test_bad_params_in_a_request_fail_before_any_generation(source: HFSource) -> None:
    request = GenerationRequest(prompt="Hello", max_tokens=5, params={"top_k": -1})
    with pytest.raises(InvalidField, match=r"^params\.top_k: must be an integer >= 0$"):
        await anext(aiter(source.stream(request)))


def test_params_must_be_an_object(source: HFSource) -> None:
    with pytest.raises(InvalidField, match=r"^params: must be an object$"):
        source.validate_params([("seed", 1)])  # type: ignore[arg-type]


async def test_stream_before_start_is_a_source_error(model_dir: Path) -> None:
    src = HFSource(str(model_dir))
    with pytest.raises(SourceError) as caught:
        await anext(aiter(src.stream(GenerationRequest(prompt="Hello", max_tokens=5))))
    assert (caught.value.code, caught.value.message) == (
        "not_ready",
        f"model {str(model_dir)!r} is not loaded",
    )
