"""The synthetic source: determinism, realistic pieces, pacing params, validation; the
Param declaration every source's params derive from."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import jsonschema_rs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.errors import InvalidField
from server.sources.base import (
    INT64_MIN,
    MAX_SEED,
    TICKS_PER_S,
    Finish,
    GenerationRequest,
    Param,
    Reasoning,
    ReasoningEffort,
    Tool,
    ToolCallDelta,
    check_params,
)
from server.sources.synthetic import (
    CORPUS_NAMES,
    REASONING_PIECES,
    CorpusName,
    SyntheticSource,
    corpus,
    corpus_pieces,
    corpus_starts,
    corpus_words,
    split_arguments,
    split_pieces,
    synthetic_arguments,
    synthetic_items,
    synthetic_reasoning,
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


# -- typed parts: reasoning and a forced tool call (docs/protocol.md, "Typed parts") ------

QUICK = {"tokens_per_s": 0, "ttft_ms": 0}


async def run_request(source: SyntheticSource, request: GenerationRequest) -> list[object]:
    return [item async for item in source.stream(request)]


def parts_request(
    params: dict[str, Any], max_tokens: int = 40, prompt: str = "weather?", **parts: Any
) -> GenerationRequest:
    clean = SyntheticSource().validate_params({**QUICK, **params})
    return GenerationRequest(prompt=prompt, max_tokens=max_tokens, params=clean, **parts)


WEATHER = Tool(
    name="get_weather",
    parameters={
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "metric": {"type": "boolean"},
            "unit": {"enum": ["c", "f"]},
        },
        "required": ["city", "days", "metric", "unit"],
    },
)
#: Every kind of value the arguments are built for (docs/protocol.md, "Sources").
EVERY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "days": {"type": "integer"},
        "scale": {"type": "number"},
        "metric": {"type": "boolean"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "note": {"type": ["null", "string"]},
        "nothing": {"type": "null"},
        "kind": {"const": "forecast"},
        "either": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
        "where": {
            "type": "object",
            "properties": {
                "lat": {"type": "number"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "extra": {"type": "string"},  # not required: left out
            },
            "required": ["tags", "lat"],  # schema order wins: lat, then tags
        },
        "hours": {  # no required: every property
            "type": "array",
            "items": {"type": "object", "properties": {"h": {"type": "integer"}, "ok": {}}},
        },
        "optional": {"type": "string"},  # not required: left out
    },
    "required": [
        *("city", "days", "scale", "metric", "unit", "note", "nothing", "kind", "either"),
        *("where", "hours", "missing"),  # "missing" has no schema: a string
    ],
}


async def test_reasoning_comes_first_then_the_answer() -> None:
    src = SyntheticSource()
    items = await run_request(src, parts_request({"seed": 7}, reasoning_effort="low"))
    assert items == [
        *map(Reasoning, ["Chunk", "ed", " HTTP", " s", "ends", " one", " line", " of"]),
        *synthetic_text("weather?", 7, 32),  # the answer is unchanged, only shorter
        Finish("length"),
    ]
    assert synthetic_text("weather?", 7, 3) == ["A", " lang", "uage"]


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
@pytest.mark.parametrize("name", CORPUS_NAMES)
async def test_reasoning_effort_sets_the_number_of_pieces(
    effort: ReasoningEffort, name: CorpusName
) -> None:
    count = {"low": 8, "medium": 32, "high": 128}[effort]
    assert REASONING_PIECES[effort] == count
    request = parts_request({"corpus": name}, 200, prompt="p", reasoning_effort=effort)
    items = await run_request(SyntheticSource(), request)
    reasoning = synthetic_reasoning("p", 0, count, name)
    assert items == [
        *map(Reasoning, reasoning),
        *synthetic_text("p", 0, 200 - count, name),
        Finish("length"),
    ]
    assert all(piece for piece in reasoning)
    # from another start than the answer's
    assert reasoning[:8] != synthetic_text("p", 0, 8, name)


async def test_reasoning_is_cut_by_max_tokens() -> None:
    items = await run_request(SyntheticSource(), parts_request({}, 5, reasoning_effort="high"))
    assert items == [*map(Reasoning, synthetic_reasoning("weather?", 0, 5)), Finish("length")]


async def test_a_forced_call_after_the_reasoning_and_no_answer() -> None:
    request = parts_request(
        {"seed": 7}, reasoning_effort="low", tools=(WEATHER,), tool_choice="get_weather"
    )
    items = await run_request(SyntheticSource(), request)
    pieces = ['{"city"', ':"each"', ',"days', '":7,"', "metr", "i", 'c":fal', 'se,"', "uni"]
    assert items == [
        *map(Reasoning, ["Chunk", "ed", " HTTP", " s", "ends", " one", " line", " of"]),
        ToolCallDelta(0, "", name="get_weather"),  # the hub gives it its id
        *(ToolCallDelta(0, p) for p in [*pieces, 't":"c"}']),
        Finish("tool_calls"),
    ]
    assert "".join([*pieces, 't":"c"}']) == '{"city":"each","days":7,"metric":false,"unit":"c"}'
    # Same request, same items; another seed, other arguments and cuts.
    assert await run_request(SyntheticSource(), request) == items
    other = parts_request({"seed": 8}, tools=(WEATHER,), tool_choice="get_weather")
    assert await run_request(SyntheticSource(), other) != items[8:]


async def test_offered_tools_without_tool_choice_are_not_called() -> None:
    request = parts_request({}, 12, tools=(WEATHER,))
    assert await run_request(SyntheticSource(), request) == [
        *synthetic_text("weather?", 0, 12),
        Finish("length"),
    ]


async def test_a_call_cut_by_max_tokens_ends_length() -> None:
    request = parts_request({"seed": 7}, 4, tools=(WEATHER,), tool_choice="get_weather")
    assert await run_request(SyntheticSource(), request) == [
        ToolCallDelta(0, "", name="get_weather"),
        ToolCallDelta(0, '{"city"'),
        ToolCallDelta(0, ':"each"'),
        ToolCallDelta(0, ',"days'),
        Finish("length"),
    ]


def test_arguments_for_every_type() -> None:
    assert synthetic_arguments(EVERY, "weather?", 42) == (
        '{"city":"for","days":42,"scale":10.5,"metric":true,"unit":"celsius","note":"new",'
        '"nothing":null,"kind":"forecast","either":42,"where":{"lat":10.5,"tags":["events"]},'
        '"hours":[{"h":42,"ok":"the"}],"missing":"server"}'
    )
    assert synthetic_arguments(EVERY, "weather?", 7, "hard-cases") == (
        '{"city":"the","days":7,"scale":1.75,"metric":false,"unit":"celsius","note":"start.",'
        '"nothing":null,"kind":"forecast","either":7,"where":{"lat":1.75,"tags":["Streaming"]},'
        '"hours":[{"h":7,"ok":"an"}],"missing":"answer"}'
    )
    jsonschema_rs.validator_for(EVERY).validate(json.loads(synthetic_arguments(EVERY, "x", 9)))


def test_arguments_escape_what_the_hard_cases_hold() -> None:
    two = {"properties": {"s": {"type": "string"}, "t": {"type": "string"}}}
    assert synthetic_arguments(two, "q", 36, "hard-cases") == (
        '{"s":"C:\\\\Users\\\\name\\\\file.txt","t":"and"}'
    )
    assert synthetic_arguments(two, "q", 9, "hard-cases") == '{"s":"\\"double\\"","t":"and"}'
    assert json.loads(synthetic_arguments(two, "q", 36, "hard-cases"))["s"] == (
        "C:\\Users\\name\\file.txt"
    )


def test_arguments_of_empty_and_untyped_schemas() -> None:
    assert synthetic_arguments({}, "p", 3) == "{}"
    assert synthetic_arguments({"properties": {"a": {}, "b": {"type": "integer"}}}, "p", 3) == (
        '{"a":"asks","b":3}'
    )
    # Malformed keywords are ignored, never raised on.
    odd = {"properties": {"a": 5, "b": {"type": 5, "enum": []}}, "required": "a"}
    assert synthetic_arguments(odd, "p", 3) == '{"a":"asks","b":"again"}'


def test_arguments_are_cut_into_pieces_of_one_to_seven_characters() -> None:
    text = synthetic_arguments(EVERY, "weather?", 42)
    pieces = split_arguments(text, "weather?", 42)
    assert "".join(pieces) == text
    assert pieces[:8] == ['{"city', '":"', 'for"', ',"da', 'ys":4', '2,"sca', "le", '":10.5,']
    assert {len(p) for p in pieces} == set(range(1, 8))
    assert split_arguments(text, "weather?", 43) != pieces
    assert split_arguments("", "weather?", 42) == []


# A JSON Schema of the kinds the arguments honour, nested (Hypothesis).
_JSON_SCALAR = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8)
_NAMES = st.text(min_size=1, max_size=6)
_LEAF = st.one_of(
    st.sampled_from(["string", "integer", "number", "boolean", "null"]).map(lambda t: {"type": t}),
    st.lists(_JSON_SCALAR, min_size=1, max_size=3).map(lambda v: {"enum": v}),
    _JSON_SCALAR.map(lambda v: {"const": v}),
    st.just({"type": ["null", "string"]}),
    st.just({}),
)


def _object_schema(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[Any]:
    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        properties = draw(st.dictionaries(_NAMES, children, max_size=4))
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        if draw(st.booleans()):
            schema["required"] = [k for k in properties if draw(st.booleans())]
        return schema

    return build()


_SCHEMA = st.recursive(
    _LEAF,
    lambda children: (
        _object_schema(children) | children.map(lambda items: {"type": "array", "items": items})
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(
    parameters=_object_schema(_SCHEMA),
    prompt=st.text(max_size=10),
    seed=st.integers(0, MAX_SEED),
    name=st.sampled_from(CORPUS_NAMES),
)
def test_arguments_are_valid_for_any_schema(
    parameters: dict[str, Any], prompt: str, seed: int, name: CorpusName
) -> None:
    text = synthetic_arguments(parameters, prompt, seed, name)
    assert text == synthetic_arguments(parameters, prompt, seed, name)
    value = json.loads(text)
    jsonschema_rs.validator_for(parameters).validate(value)
    required = parameters.get("required", list(parameters["properties"]))
    assert list(value) == [k for k in parameters["properties"] if k in required]
    pieces = split_arguments(text, prompt, seed)
    assert "".join(pieces) == text
    assert all(1 <= len(p) <= 7 for p in pieces)
    tool = Tool(name="f", parameters=parameters)
    request = GenerationRequest(prompt=prompt, max_tokens=4096, tools=(tool,), tool_choice="f")
    items, reason = synthetic_items(request, seed, name)
    assert reason == "tool_calls"
    assert items == [ToolCallDelta(0, "", name="f"), *(ToolCallDelta(0, p) for p in pieces)]


def test_corpus_words() -> None:
    assert corpus_words()[:4] == ("A", "language", "model", "writes")
    assert all(w.isalpha() for w in corpus_words())
    assert all(w and not any(c.isspace() for c in w) for w in corpus_words("hard-cases"))
    assert '"double"' in corpus_words("hard-cases")
