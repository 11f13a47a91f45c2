"""The synthetic source: determinism, realistic pieces, pacing params, validation; the
Param declaration every source's params derive from."""

from __future__ import annotations

import asyncio
import random

import pytest

from server.errors import InvalidField
from server.sources.base import (
    INT64_MIN,
    MAX_SEED,
    Finish,
    GenerationRequest,
    Param,
    check_params,
)
from server.sources.synthetic import (
    CORPUS_NAMES,
    TICKS_PER_S,
    SyntheticSource,
    corpus,
    corpus_pieces,
    corpus_starts,
    split_pieces,
    synthetic_text,
)


async def run(source: SyntheticSource, prompt: str, n: int, **params: object) -> list[object]:
    req = GenerationRequest(prompt=prompt, max_tokens=n, params=source.validate_params(params))
    return [item async for item in source.stream(req)]


async def test_deterministic_for_prompt_and_seed() -> None:
    src = SyntheticSource()
    a = await run(src, "p", 30, tokens_per_s=0, ttft_ms=0)
    b = await run(src, "p", 30, tokens_per_s=0, ttft_ms=0, jitter=1)
    c = await run(src, "p", 30, tokens_per_s=0, ttft_ms=0, seed=1)
    d = await run(src, "q", 30, tokens_per_s=0, ttft_ms=0)
    assert a == b  # pacing never changes the text
    assert a != c
    assert a != d
    assert a[-1] == Finish("length")
    assert len(a) == 31
    assert all(isinstance(p, str) and p for p in a[:-1])


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_pieces_rebuild_the_text_and_look_like_subwords(name: str) -> None:
    pieces = corpus_pieces(name)  # type: ignore[arg-type]
    assert "".join(pieces) == corpus(name)  # type: ignore[arg-type]
    assert max(len(p) for p in pieces if not p.isspace()) <= 5
    assert split_pieces("hello world", random.Random(1)) == ["hello", " wo", "rld"]


def test_hard_cases_hold_what_breaks_framing() -> None:
    for case in ("\r\n", "\r", "data:", "event:", "안녕", "🚀", "\\", '"'):
        assert case in corpus("hard-cases")
    assert corpus_starts("hard-cases") == tuple(range(len(corpus_pieces("hard-cases"))))


def test_default_text_is_prose_that_opens_a_paragraph() -> None:
    """The default reads like an answer: it opens a paragraph, the prompt (with the seed)
    picks which, and it holds nothing from the hard cases."""
    text = corpus()
    assert text.isascii()
    assert "\r" not in text
    assert text.endswith(".\n\n")  # the ring wraps onto a paragraph start
    paragraphs = text.split("\n\n")[:-1]
    starts = corpus_starts()
    assert len(starts) == len(paragraphs) == 12
    openings = ["".join(synthetic_text(p, 0, 12)) for p in ("hello", "Why stream?", "cli")]
    assert [o[:17] for o in openings] == [
        "The time to first",
        "A WebSocket turns",
        "Networks are not ",
    ]
    assert synthetic_text("hello", 1, 12) != synthetic_text("hello", 0, 12)
    for opening in openings:
        assert any(p.startswith(opening) for p in paragraphs)


def test_pieces_rebuild_any_text() -> None:
    """Every character is in some piece: ``_`` once fell through the pattern (a ``/v1``
    prompt holding ``__main__`` was a 500, found by schemathesis)."""
    text = "".join(chr(c) for c in range(0x20, 0x7F)) + " __main__ x_y ²½Ⅷ \u0301 \x00 \u2028"
    assert "".join(split_pieces(text, random.Random(0))) == text
    assert split_pieces("__main__", random.Random(0)) == ["__", "main", "__"]


def test_requested_pace() -> None:
    src = SyntheticSource()
    assert src.requested_pace(src.validate_params({})) == 30.0
    assert src.requested_pace(src.validate_params({"tokens_per_s": 0})) == 0.0
    assert src.requested_pace(src.validate_params({"tokens_per_s": 250})) == 250.0


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"tokens_per_s": -1}, "params.tokens_per_s: must be a number from 0 to 5000"),
        ({"tokens_per_s": True}, "params.tokens_per_s: must be a number from 0 to 5000"),
        ({"ttft_ms": 10001}, "params.ttft_ms: must be a number from 0 to 10000"),
        ({"jitter": 2}, "params.jitter: must be a number from 0 to 1"),
        ({"seed": -1}, "params.seed: must be an integer from 0 to 2^63-1"),
        (
            {"top_p": 1},
            "params.top_p: unknown parameter (allowed: corpus, jitter, seed, tokens_per_s,"
            " ttft_ms)",
        ),
        ({"corpus": "poems"}, "params.corpus: must be one of: prose, hard-cases"),
        ({"corpus": 1}, "params.corpus: must be one of: prose, hard-cases"),
    ],
)
def test_validate_params(params: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidField) as info:
        SyntheticSource().validate_params(params)
    assert str(info.value) == message


def test_unpaced_detection_and_defaults() -> None:
    src = SyntheticSource(tokens_per_s=0)
    assert src.is_unpaced(src.validate_params({})) is True
    assert src.is_unpaced(src.validate_params({"tokens_per_s": 5})) is False
    assert SyntheticSource().validate_params({"seed": 3}) == {
        "ttft_ms": 200.0,
        "tokens_per_s": 30.0,
        "jitter": 0.2,
        "seed": 3,
        "corpus": "prose",
    }
    assert SyntheticSource().validate_params({"corpus": "hard-cases"})["corpus"] == "hard-cases"


async def test_corpus_param_picks_the_text() -> None:
    src = SyntheticSource()
    got = await run(src, "p", 20, tokens_per_s=0, ttft_ms=0, corpus="hard-cases")
    assert got[:-1] == synthetic_text("p", 0, 20, "hard-cases")
    assert got[:-1] != synthetic_text("p", 0, 20)


# -- the Param declaration every source's params derive from ---------------------------

TOP_P = Param(name="top_p", type="number", minimum=0, exclusive_minimum=True, maximum=1)
SEED = Param(name="seed", type="integer", minimum=INT64_MIN, maximum=MAX_SEED)
TOP_K = Param(name="top_k", type="integer", minimum=0)
MODEL = Param(name="model", type="string")


@pytest.mark.parametrize(
    ("param", "rule", "schema"),
    [
        (
            TOP_P,
            "must be a number greater than 0, at most 1",
            {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        ),
        (
            SEED,
            "must be an integer from -2^63 to 2^63-1",
            {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
        ),
        (TOP_K, "must be an integer >= 0", {"type": "integer", "minimum": 0}),
        (MODEL, "must be a non-empty string", {"type": "string", "pattern": r"\S"}),
        (
            Param(name="corpus", type="string", choices=("a", "b"), default="a"),
            "must be one of: a, b",
            {"type": "string", "enum": ["a", "b"], "default": "a"},
        ),
        (
            Param(name="jitter", type="number", minimum=0, maximum=1, default=0.2, description="d"),
            "must be a number from 0 to 1",
            {"type": "number", "minimum": 0, "maximum": 1, "default": 0.2, "description": "d"},
        ),
    ],
)
def test_param_rule_and_schema(param: Param, rule: str, schema: dict[str, object]) -> None:
    assert param.rule == rule
    assert param.schema() == schema


@pytest.mark.parametrize(
    ("param", "value", "cleaned"),
    [
        (TOP_P, 1, 1.0),
        (TOP_P, 0.5, 0.5),
        (SEED, -(2**63), -(2**63)),
        (TOP_K, 10**30, 10**30),
        (MODEL, " m ", " m "),
    ],
)
def test_param_accepts(param: Param, value: object, cleaned: object) -> None:
    assert param.check(value) == cleaned
    assert type(param.check(value)) is type(cleaned)


@pytest.mark.parametrize(
    ("param", "value"),
    [
        (TOP_P, 0),
        (TOP_P, True),
        (TOP_P, float("nan")),
        (TOP_P, "0.5"),
        (SEED, 2**63),
        (SEED, 1.0),
        (TOP_K, -1),
        (MODEL, "  "),
        (MODEL, 4),
    ],
)
def test_param_refuses(param: Param, value: object) -> None:
    with pytest.raises(InvalidField) as info:
        param.check(value)
    assert str(info.value) == f"params.{param.name}: {param.rule}"


def test_check_params_fills_defaults_in_declared_order() -> None:
    declared = (
        Param(name="a", type="number", minimum=0, maximum=1, default=0.5),
        Param(name="b", type="integer", minimum=0),
    )
    assert check_params(declared, {}) == {"a": 0.5}
    assert check_params(declared, {"b": 3}) == {"a": 0.5, "b": 3}
    with pytest.raises(InvalidField, match=r"^params\.a: must be a number from 0 to 1$"):
        check_params(declared, {"b": -1, "a": 2})
    with pytest.raises(InvalidField, match=r"^params\.c: unknown parameter \(allowed: a, b\)$"):
        check_params(declared, {"c": 1})


def test_the_default_corpus_is_a_setting_of_the_source() -> None:
    src = SyntheticSource(corpus="hard-cases")
    assert src.validate_params({})["corpus"] == "hard-cases"
    assert src.validate_params({"corpus": "prose"})["corpus"] == "prose"


async def test_paced_streams_share_the_clock_and_a_cancelled_one_leaves_the_rest() -> None:
    """Streams at the same pace wait on the same ticks; cancelling one mid-stream leaves
    the others whole, and no piece comes before its time (``i / rate`` after the first,
    to the clock's tick)."""
    src = SyntheticSource()
    loop = asyncio.get_running_loop()
    rate, n = 100.0, 12

    async def timed() -> list[float]:
        params = src.validate_params({"tokens_per_s": rate, "ttft_ms": 0, "jitter": 0})
        req = GenerationRequest(prompt="p", max_tokens=n, params=params)
        times = []
        async for item in src.stream(req):
            if isinstance(item, str):
                times.append(loop.time())
        return times

    runs = [asyncio.create_task(timed()) for _ in range(5)]
    victim = asyncio.create_task(timed())
    await asyncio.sleep(0.045)
    victim.cancel()
    results = await asyncio.gather(*runs)
    assert victim.cancelled()
    tick = 1 / TICKS_PER_S
    for times in results:
        assert len(times) == n
        assert all(t - times[0] >= i / rate - 2 * tick for i, t in enumerate(times))
    assert src.clock()._ticks == {}
