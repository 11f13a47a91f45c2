"""Chat Completions request checks (pure): model ids, every refusal, prompt, usage count."""

from __future__ import annotations

from typing import Any

import pytest

from server.chat_request import chat_prompt, model_ids, parse_chat_body, resolve_model
from server.errors import ApiError, BadRequest, InvalidRequest, ModelNotFound
from server.settings import Settings
from server.sources.base import ChatMessage, TokenSource
from server.sources.openai import OpenAISource
from server.sources.synthetic import SyntheticSource, count_pieces

SETTINGS = Settings()
SYNTHETIC = SyntheticSource()
UPSTREAM = OpenAISource(model="gpt-up")
SOURCES: dict[str, TokenSource] = {"synthetic": SYNTHETIC, "openai": UPSTREAM}
HI = [{"role": "user", "content": "hi"}]


#: A schema 33 levels deep (an object holding 32 nested arrays): one past the limit.
DEEP: dict[str, Any] = {"x": 0}
for _ in range(32):
    DEEP = {"x": [DEEP["x"]]}


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "synthetic", "messages": HI, **fields}


def FORCE(name: str) -> dict[str, Any]:  # noqa: N802 - reads as a constant's shape
    return {"type": "function", "function": {"name": name}}


def refusal(body: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse_chat_body(body, SETTINGS, SOURCES)
    return info.value


# -- models ----------------------------------------------------------------------------------


def test_model_ids() -> None:
    assert model_ids(SOURCES) == ["synthetic", "openai/gpt-up"]
    assert model_ids({"synthetic": SYNTHETIC}) == ["synthetic"]


@pytest.mark.parametrize(
    ("model", "source", "upstream"),
    [
        ("synthetic", "synthetic", None),
        ("openai", "openai", None),
        ("openai/gpt-up", "openai", "gpt-up"),
        ("openai/other-model", "openai", "other-model"),
        ("openai/org/model:tag", "openai", "org/model:tag"),
    ],
)
def test_resolve_model(model: str, source: str, upstream: str | None) -> None:
    src, up = resolve_model(model, SOURCES)
    assert (src.name, up) == (source, upstream)


@pytest.mark.parametrize(
    "model", ["", "gpt-4o", "synthetic/x", "openai/", "hf", "hf/gpt2", "Synthetic", "/synthetic"]
)
def test_unknown_model(model: str) -> None:
    with pytest.raises(ModelNotFound) as info:
        resolve_model(model, SOURCES)
    err = info.value
    assert (err.status, err.code, err.param) == (404, "model_not_found", "model")
    assert err.message == f"The model '{model}' does not exist on this server (see GET /v1/models)."


# -- accepted bodies -------------------------------------------------------------------------


def test_minimal_body() -> None:
    chat = parse_chat_body(body(), SETTINGS, SOURCES)
    assert chat.model == "synthetic"
    assert chat.create.source is SYNTHETIC
    req = chat.create.request
    assert (req.prompt, req.max_tokens, req.messages) == (
        "hi",
        SETTINGS.default_max_tokens,
        (ChatMessage("user", "hi"),),
    )
    assert req.params == SYNTHETIC.validate_params({})
    assert (chat.stream, chat.include_usage, chat.prompt_tokens) == (False, False, 1)


def test_full_body_for_synthetic() -> None:
    chat = parse_chat_body(
        body(
            max_completion_tokens=7,
            temperature=0.5,
            top_p=0.9,
            seed=42,
            n=1,
            stream=True,
            stream_options={"include_usage": True, "include_obfuscation": False},
            params={"tokens_per_s": 0, "ttft_ms": 0},
            user="u1",
            metadata={"k": "v"},
            store=False,
            frequency_penalty=0,
            presence_penalty=0.0,
            logprobs=False,
            tools=[],
            tool_choice="none",
            stop=[],
            response_format={"type": "text"},
            logit_bias={},
            stream_obfuscation=None,  # null is absent, whatever the name
        ),
        SETTINGS,
        SOURCES,
    )
    req = chat.create.request
    assert req.max_tokens == 7
    # temperature and top_p mean nothing to the synthetic source; seed does.
    assert req.params == {
        **SYNTHETIC.validate_params({}),
        "seed": 42,
        "tokens_per_s": 0.0,
        "ttft_ms": 0.0,
    }
    assert (chat.stream, chat.include_usage) == (True, True)


def test_sampling_fields_and_upstream_model_for_openai() -> None:
    chat = parse_chat_body(
        body(model="openai/gpt-other", temperature=1, top_p=0.5, seed=-3, max_tokens=9),
        SETTINGS,
        SOURCES,
    )
    assert chat.create.source is UPSTREAM
    assert chat.create.request.params == {
        "temperature": 1.0,
        "top_p": 0.5,
        "seed": -3,
        "model": "gpt-other",
    }
    assert chat.create.request.max_tokens == 9
    assert parse_chat_body(body(model="openai"), SETTINGS, SOURCES).create.request.params == {}


def test_nulls_are_absent() -> None:
    chat = parse_chat_body(
        body(
            max_tokens=None, temperature=None, stream=None, stream_options=None, n=None, tools=None
        ),
        SETTINGS,
        SOURCES,
    )
    assert chat.create.request.max_tokens == SETTINGS.default_max_tokens
    assert not chat.stream


# -- prompt and usage ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("messages", "prompt"),
    [
        ([{"role": "user", "content": "Tell me"}], "Tell me"),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                }
            ],
            "a\nb",
        ),
        (
            [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi", "name": "ann"},
            ],
            "system: Be brief.\n\nuser: Hi\n\nassistant:",
        ),
        (
            [
                {"role": "developer", "content": "d"},
                {"role": "user", "content": "u"},
                {"role": "assistant", "content": "a", "refusal": None},
                {"role": "user", "content": "u2"},
            ],
            "developer: d\n\nuser: u\n\nassistant: a\n\nuser: u2\n\nassistant:",
        ),
        ([{"role": "assistant", "content": "x"}], "assistant: x\n\nassistant:"),
    ],
    ids=["one-user", "text-parts", "system-user", "conversation", "one-assistant"],
)
def test_prompt(messages: list[dict[str, Any]], prompt: str) -> None:
    chat = parse_chat_body(body(messages=messages), SETTINGS, SOURCES)
    assert chat.create.request.prompt == prompt
    assert chat_prompt(chat.create.request.messages) == prompt
    assert chat.prompt_tokens == count_pieces(prompt)


def test_prompt_tokens_count() -> None:
    assert count_pieces("") == 0
    assert count_pieces("hello") == 1
    assert count_pieces("Hi, you!") == 4  # Hi / , / ␠you / !
    assert count_pieces("internationalization") == count_pieces("internationalization")
    assert count_pieces("internationalization") > 1  # long words are cut into sub-words


def test_prompt_length_cap() -> None:
    settings = Settings(max_prompt_chars=10)
    parse_chat_body(body(messages=[{"role": "user", "content": "x" * 10}]), settings, SOURCES)
    with pytest.raises(InvalidRequest) as info:  # "system: x\n\nuser: y\n\nassistant:"
        parse_chat_body(
            body(messages=[{"role": "system", "content": "x"}, {"role": "user", "content": "y"}]),
            settings,
            SOURCES,
        )
    assert info.value.openai_body() == {
        "error": {
            "message": (
                "The messages make a prompt of 30 characters; this server accepts at most 10."
            ),
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }


# -- refusals --------------------------------------------------------------------------------


def invalid(param: str | None, code: str, message: str) -> tuple[str | None, str, str]:
    return (param, code, message)


REFUSALS = [
    (["x"], invalid(None, "bad_json", "body must be a JSON object")),
    (
        {"messages": HI},
        invalid("model", "missing_required_parameter", "Missing required parameter: 'model'."),
    ),
    (
        body(model=4),
        invalid(
            "model",
            "invalid_type",
            "Invalid type for 'model': expected a string, but got an integer instead.",
        ),
    ),
    (
        {"model": "synthetic"},
        invalid(
            "messages", "missing_required_parameter", "Missing required parameter: 'messages'."
        ),
    ),
    (
        body(messages="hi"),
        invalid(
            "messages",
            "invalid_type",
            "Invalid type for 'messages': expected an array, but got a string instead.",
        ),
    ),
    (
        body(messages=[]),
        invalid(
            "messages",
            "empty_array",
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an "
            "empty array instead.",
        ),
    ),
    (
        body(messages=[["user", "hi"]]),
        invalid(
            "messages[0]",
            "invalid_type",
            "Invalid type for 'messages[0]': expected an object, but got an array instead.",
        ),
    ),
    (
        body(messages=[{"content": "hi"}]),
        invalid(
            "messages[0].role",
            "missing_required_parameter",
            "Missing required parameter: 'messages[0].role'.",
        ),
    ),
    (
        body(messages=[{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]),
        invalid(
            "messages[1].role",
            "invalid_value",
            "Invalid value: 'robot'. Supported values are: 'system', 'developer', 'user' and "
            "'assistant'.",
        ),
    ),
    (
        body(messages=[{"role": "tool", "content": "b", "tool_call_id": None}]),
        invalid(
            "messages[0].role",
            "unsupported_value",
            "Unsupported value: 'messages[0].role' does not support 'tool' on tokenwire (no tool "
            "calls).",
        ),
    ),
    (
        body(messages=[{"role": "user"}]),
        invalid(
            "messages[0].content",
            "missing_required_parameter",
            "Missing required parameter: 'messages[0].content'.",
        ),
    ),
    (
        body(messages=[{"role": "user", "content": 5}]),
        invalid(
            "messages[0].content",
            "invalid_type",
            "Invalid type for 'messages[0].content': expected a string or an array of content "
            "parts, but got an integer instead.",
        ),
    ),
    (
        body(
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
            ]
        ),
        invalid(
            "messages[0].content[0].type",
            "unsupported_value",
            "Unsupported value: 'messages[0].content[0].type' does not support 'image_url' on "
            "tokenwire (text only).",
        ),
    ),
    (
        body(messages=[{"role": "user", "content": [{"type": "text", "text": 1}]}]),
        invalid(
            "messages[0].content[0].text",
            "invalid_type",
            "Invalid type for 'messages[0].content[0].text': expected a string, but got an "
            "integer instead.",
        ),
    ),
    (
        body(messages=[{"role": "user", "content": [{"type": "text", "text": "a", "x": 1}]}]),
        invalid(
            "messages[0].content[0].x",
            "unknown_parameter",
            "Unknown parameter: 'messages[0].content[0].x'.",
        ),
    ),
    (
        body(messages=[{"role": "user", "content": "a", "mood": "happy"}]),
        invalid("messages[0].mood", "unknown_parameter", "Unknown parameter: 'messages[0].mood'."),
    ),
    (
        body(messages=[{"role": "assistant", "content": "a", "tool_calls": [{"id": "c"}]}]),
        invalid(
            "messages[0].tool_calls",
            "unsupported_parameter",
            "Unsupported parameter: 'messages[0].tool_calls' is not supported by tokenwire.",
        ),
    ),
    (body(colour="red"), invalid("colour", "unknown_parameter", "Unknown parameter: 'colour'.")),
    (
        body(n=2),
        invalid(
            "n",
            "unsupported_value",
            "Unsupported value: 'n' must be 1 on tokenwire (one generation per request).",
        ),
    ),
    (
        body(n=0),
        invalid(
            "n",
            "integer_below_min_value",
            "Invalid 'n': integer below minimum value. Expected a value >= 1, but got 0 instead.",
        ),
    ),
    (
        body(max_tokens="5"),
        invalid(
            "max_tokens",
            "invalid_type",
            "Invalid type for 'max_tokens': expected an integer, but got a string instead.",
        ),
    ),
    (
        body(max_tokens=2.5),
        invalid(
            "max_tokens",
            "invalid_type",
            "Invalid type for 'max_tokens': expected an integer, but got a decimal instead.",
        ),
    ),
    (
        body(max_tokens=True),
        invalid(
            "max_tokens",
            "invalid_type",
            "Invalid type for 'max_tokens': expected an integer, but got a boolean instead.",
        ),
    ),
    (
        body(max_tokens=0),
        invalid(
            "max_tokens",
            "integer_below_min_value",
            "Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, but got 0 "
            "instead.",
        ),
    ),
    (
        body(max_completion_tokens=4097),
        invalid(
            "max_completion_tokens",
            "integer_above_max_value",
            "Invalid 'max_completion_tokens': integer above maximum value. Expected a value "
            "<= 4096, but got 4097 instead.",
        ),
    ),
    (
        body(max_tokens=5, max_completion_tokens=5),
        invalid(
            "max_tokens",
            "invalid_value",
            "Invalid 'max_tokens': set 'max_tokens' or 'max_completion_tokens', not both.",
        ),
    ),
    (
        body(temperature=3),
        invalid(
            "temperature",
            "decimal_above_max_value",
            "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got "
            "3 instead.",
        ),
    ),
    (
        body(temperature="hot"),
        invalid(
            "temperature",
            "invalid_type",
            "Invalid type for 'temperature': expected a number, but got a string instead.",
        ),
    ),
    (
        body(top_p=-0.5),
        invalid(
            "top_p",
            "decimal_below_min_value",
            "Invalid 'top_p': decimal below minimum value. Expected a value >= 0, but got -0.5 "
            "instead.",
        ),
    ),
    (
        body(seed=1.5),
        invalid(
            "seed",
            "invalid_type",
            "Invalid type for 'seed': expected an integer, but got a decimal instead.",
        ),
    ),
    (
        body(seed=-1),
        invalid("seed", "invalid_value", "Invalid 'seed': must be an integer from 0 to 2^63-1."),
    ),
    (
        body(stream="yes"),
        invalid(
            "stream",
            "invalid_type",
            "Invalid type for 'stream': expected a boolean, but got a string instead.",
        ),
    ),
    (
        body(stream_options={"include_usage": True}),
        invalid(
            "stream_options",
            "invalid_value",
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
        ),
    ),
    (
        body(stream=True, stream_options=[]),
        invalid(
            "stream_options",
            "invalid_type",
            "Invalid type for 'stream_options': expected an object, but got an array instead.",
        ),
    ),
    (
        body(stream=True, stream_options={"include_usage": "yes"}),
        invalid(
            "stream_options.include_usage",
            "invalid_type",
            "Invalid type for 'stream_options.include_usage': expected a boolean, but got a "
            "string instead.",
        ),
    ),
    (
        body(stream=True, stream_options={"chunk_size": 1}),
        invalid(
            "stream_options.chunk_size",
            "unknown_parameter",
            "Unknown parameter: 'stream_options.chunk_size'.",
        ),
    ),
    (
        body(tools={"type": "function"}),
        invalid(
            "tools",
            "invalid_type",
            "Invalid type for 'tools': expected an array, but got an object instead.",
        ),
    ),
    (
        body(tools=[{"type": "function", "function": {"name": "f"}}], tool_choice=FORCE("g")),
        invalid(
            "tool_choice",
            "invalid_value",
            "Invalid value for 'tool_choice': function 'g' is not in 'tools'.",
        ),
    ),
    (
        body(tool_choice=FORCE("g")),
        invalid(
            "tool_choice",
            "invalid_value",
            "Invalid value for 'tool_choice': a tool choice other than 'none' or 'auto' "
            "needs 'tools'.",
        ),
    ),
    (
        body(tools=[{"type": "function", "function": {"description": "d"}}]),
        invalid(
            "tools[0].function.name",
            "missing_required_parameter",
            "Missing required parameter: 'tools[0].function.name'.",
        ),
    ),
    (
        body(tools=[{"type": "function", "function": {"name": "a b"}}]),
        invalid(
            "tools[0].function.name",
            "invalid_value",
            "Invalid 'tools[0].function.name': 'a b' is not a function name (1 to 64 of a-z, "
            "A-Z, 0-9, '_' and '-').",
        ),
    ),
    (
        body(tools=[{"type": "function", "function": {"name": "f", "parameters": []}}]),
        invalid(
            "tools[0].function.parameters",
            "invalid_type",
            "Invalid type for 'tools[0].function.parameters': expected an object, but got an "
            "array instead.",
        ),
    ),
    (
        body(tools=[{"type": "function", "function": {"name": "f", "strict": "yes"}}]),
        invalid(
            "tools[0].function.strict",
            "invalid_type",
            "Invalid type for 'tools[0].function.strict': expected a boolean, but got a string "
            "instead.",
        ),
    ),
    (
        body(tools=[{"type": "function", "name": "f"}]),
        invalid("tools[0].name", "unknown_parameter", "Unknown parameter: 'tools[0].name'."),
    ),
    (
        body(tools=[{"type": "custom", "custom": {"name": "f"}}]),
        invalid(
            "tools[0].type",
            "unsupported_value",
            "Unsupported value: 'tools[0].type' does not support 'custom' on tokenwire "
            "(function tools only).",
        ),
    ),
    (
        body(tools=[{"type": "function", "function": {"name": "f"}}] * 2),
        invalid(
            "tools[1].name",
            "invalid_value",
            "Invalid 'tools[1].name': the function name 'f' is listed twice.",
        ),
    ),
    (
        body(
            tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]
        ),
        invalid(
            "tools[0].function.parameters",
            "invalid_value",
            "Invalid 'tools[0].function.parameters': must be a JSON Schema of type 'object'.",
        ),
    ),
    (
        body(tools=[{"type": "function", "function": {"name": "f", "parameters": DEEP}}]),
        invalid(
            "tools[0].function.parameters",
            "invalid_value",
            "Invalid 'tools[0].function.parameters': must nest at most 32 levels deep.",
        ),
    ),
    (
        body(tools=[{"type": "function", "function": {"name": f"f{i}"}} for i in range(129)]),
        invalid(
            "tools", "invalid_value", "Invalid 'tools': array too long. Expected at most 128 tools."
        ),
    ),
    (
        body(tool_choice="always"),
        invalid(
            "tool_choice",
            "invalid_value",
            "Invalid value: 'always'. Supported values are: 'none', 'auto' and 'required'.",
        ),
    ),
    (
        body(tool_choice={"type": "function", "name": "f"}),
        invalid("tool_choice.name", "unknown_parameter", "Unknown parameter: 'tool_choice.name'."),
    ),
    (
        body(logprobs=True),
        invalid(
            "logprobs",
            "unsupported_parameter",
            "Unsupported parameter: 'logprobs' is not supported by tokenwire.",
        ),
    ),
    (
        body(stop=["\n"]),
        invalid(
            "stop",
            "unsupported_parameter",
            "Unsupported parameter: 'stop' is not supported by tokenwire.",
        ),
    ),
    (
        body(frequency_penalty=0.5),
        invalid(
            "frequency_penalty",
            "unsupported_parameter",
            "Unsupported parameter: 'frequency_penalty' is not supported by tokenwire.",
        ),
    ),
    (
        body(response_format={"type": "json_object"}),
        invalid(
            "response_format",
            "unsupported_parameter",
            "Unsupported parameter: 'response_format' is not supported by tokenwire.",
        ),
    ),
    (
        body(reasoning_effort="huge"),
        invalid(
            "reasoning_effort",
            "invalid_value",
            "Invalid value: 'huge'. Supported values are: 'none', 'minimal', 'low', 'medium', "
            "'high', 'xhigh' and 'max'.",
        ),
    ),
    (
        body(reasoning_effort=2),
        invalid(
            "reasoning_effort",
            "invalid_type",
            "Invalid type for 'reasoning_effort': expected a string, but got an integer instead.",
        ),
    ),
    (
        body(params=[]),
        invalid(
            "params",
            "invalid_type",
            "Invalid type for 'params': expected an object, but got an array instead.",
        ),
    ),
    (
        body(params={"tokens_per_s": -1}),
        invalid(
            "params.tokens_per_s",
            "invalid_value",
            "Invalid 'params.tokens_per_s': must be a number from 0 to 5000.",
        ),
    ),
    (
        body(params={"temperature": 1}),
        invalid(
            "params.temperature",
            "invalid_value",
            "Invalid 'params.temperature': unknown parameter (allowed: corpus, jitter, "
            "seed, tokens_per_s, ttft_ms).",
        ),
    ),
    (
        body(seed=1, params={"seed": 2}),
        invalid(
            "params.seed",
            "invalid_value",
            "Invalid 'params.seed': set 'seed' or 'params.seed', not both.",
        ),
    ),
    (
        body(model="openai/gpt-x", params={"model": "gpt-y"}),
        invalid(
            "params.model",
            "invalid_value",
            "Invalid 'params.model': name the upstream model in 'model' ('openai/gpt-y').",
        ),
    ),
    (
        body(model="openai", top_p=0),
        invalid(
            "top_p", "invalid_value", "Invalid 'top_p': must be a number greater than 0, at most 1."
        ),
    ),
]


@pytest.mark.parametrize(
    ("request_body", "expected"), REFUSALS, ids=[str(i) for i in range(len(REFUSALS))]
)
def test_refusals(request_body: Any, expected: tuple[str | None, str, str]) -> None:
    err = refusal(request_body)
    param, code, message = expected
    assert isinstance(err, BadRequest)
    assert err.status == 400
    assert err.openai_body() == {
        "error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    }


def test_first_problem_in_field_order_wins() -> None:
    # Unknown and unsupported fields are named in sorted order, before any value check.
    err = refusal(body(zeta=1, alpha=2, n=5))
    assert (err.param, err.code) == ("alpha", "unknown_parameter")


# -- tools and reasoning -----------------------------------------------------------------------

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "noop", "description": "d", "strict": True}},
]


@pytest.mark.parametrize(
    ("choice", "forced", "offered"),
    [
        (None, None, 2),
        ("auto", None, 2),
        ("none", None, 0),
        ("required", "get_weather", 2),  # the first tool
        (FORCE("noop"), "noop", 2),
    ],
    ids=["absent", "auto", "none", "required", "forced"],
)
def test_tools_and_choice_reach_the_source(choice: Any, forced: str | None, offered: int) -> None:
    req = parse_chat_body(
        body(tools=TOOLS, tool_choice=choice, reasoning_effort="medium"), SETTINGS, SOURCES
    ).create.request
    assert (req.tool_choice, len(req.tools), req.reasoning_effort) == (forced, offered, "medium")
    if offered:
        assert req.tools[0].name == "get_weather"
        assert req.tools[0].parameters == WEATHER
        assert (req.tools[1].name, req.tools[1].description, req.tools[1].parameters) == (
            "noop",
            "d",
            {},
        )


@pytest.mark.parametrize(
    ("effort", "given"),
    [("none", None), ("minimal", "low"), ("low", "low"), ("high", "high"), ("max", "high")],
)
def test_reasoning_efforts(effort: str, given: str | None) -> None:
    req = parse_chat_body(body(reasoning_effort=effort), SETTINGS, SOURCES).create.request
    assert req.reasoning_effort == given
