"""``POST /v1/responses`` requests (OpenAI's Responses API), checked with the Chat
Completions checks (:mod:`server.chat_request`): a decoded JSON body in, a
:class:`ResponsesRequest` out, or an error an OpenAI client reads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from server.chat_request import (
    IGNORED_FIELDS,
    SAMPLING_FIELDS,
    MessageShape,
    chat_message,
    checked_fields,
    generation,
    model_field,
    sampling_field,
)
from server.errors import InvalidRequest
from server.request_fields import (
    boolean_field,
    integer_field,
    missing_param,
    object_field,
    unknown_param,
    wrong_type,
)
from server.settings import Settings
from server.sources.base import ChatMessage, ReasoningEffort, TokenSource
from server.tool_request import NO_TOOLS, ToolUse, responses_reasoning, tool_use
from server.validation import CreateRequest

#: Responses fields tokenwire accepts only with the value that asks for nothing.
_DEFAULT_ONLY: Final[Mapping[str, Callable[[Any], bool]]] = {
    "include": lambda v: v == [],
    "top_logprobs": lambda v: v == 0,
    "text": lambda v: v in ({"format": {"type": "text"}}, {}),
    "truncation": lambda v: v in ("disabled", "auto"),
}

#: Fields that change nothing here (Chat Completions' and ``max_tool_calls``: a source
#: makes at most the calls it is asked for).
_IGNORED: Final = IGNORED_FIELDS | {"max_tool_calls"}

#: Responses fields tokenwire has no way to honour, whatever their value.
_UNSUPPORTED: Final = frozenset(
    {"previous_response_id", "conversation", "prompt", "context_management"}
)

_USED: Final = frozenset(
    {
        "model",
        "input",
        "instructions",
        "max_output_tokens",
        "temperature",
        "top_p",
        "stream",
        "stream_options",
        "background",
        "params",
        "tools",
        "tool_choice",
        "reasoning",
    }
)

#: An input item: a message (``type`` optional), text parts only.
_INPUT_MESSAGE: Final = MessageShape(
    fields=frozenset({"type", "role", "content", "id", "status"}),
    unsupported=frozenset(),
    part_types=("input_text", "output_text"),
)


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    """A validated ``POST /v1/responses``."""

    model: str
    create: CreateRequest
    stream: bool
    background: bool
    instructions: str | None
    input_tokens: int
    temperature: float | None
    top_p: float | None
    reasoning_effort: ReasoningEffort | None = None
    tools: ToolUse = NO_TOOLS
    #: ``tool_choice`` as given (the response object echoes it).
    tool_choice: Any = "auto"


def _input(value: Any) -> list[ChatMessage]:
    """``input``: a string (one user message) or an array of message items."""
    if isinstance(value, str):
        return [ChatMessage("user", value)]
    if not isinstance(value, list):
        raise wrong_type("input", "a string or an array of input items", value)
    if not value:
        raise InvalidRequest(
            "Invalid 'input': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            param="input",
            code="empty_array",
        )
    messages = []
    for i, item in enumerate(value):
        where = f"input[{i}]"
        kind = object_field(where, item).get("type", "message")
        if kind != "message":
            raise InvalidRequest(
                f"Unsupported value: '{where}.type' does not support {kind!r} on tokenwire "
                "(message items only).",
                param=f"{where}.type",
                code="unsupported_value",
            )
        messages.append(chat_message(where, item, _INPUT_MESSAGE))
    return messages


def parse_responses_body(
    body: Any, settings: Settings, sources: Mapping[str, TokenSource]
) -> ResponsesRequest:
    """Validate a Responses body (``null`` means absent).

    ``instructions`` becomes a leading ``system`` message; the conversation becomes the
    prompt as on ``/v1/chat/completions``.

    Raises:
        BadRequest: The body is not a JSON object (``bad_json``).
        InvalidRequest: A field is missing, unknown, of the wrong type, out of range, or
            asks for something tokenwire does not do; a malformed tool, or a forced one
            not in ``tools``.
        ModelNotFound: ``model`` names nothing this server serves.
    """
    body = checked_fields(body, _USED | _IGNORED, _DEFAULT_ONLY, _UNSUPPORTED)
    model = model_field(body)
    if "input" not in body:
        raise missing_param("input")
    messages = _input(body["input"])
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise wrong_type("instructions", "a string", instructions)
        messages.insert(0, ChatMessage("system", instructions))
    max_tokens = settings.default_max_tokens
    if "max_output_tokens" in body:
        max_tokens = integer_field(
            "max_output_tokens", body["max_output_tokens"], 1, settings.max_tokens_cap
        )
    sampling = {
        f.name: sampling_field(f, body[f.name])
        for f in SAMPLING_FIELDS
        if f.name in body and f.name in _USED
    }
    stream = boolean_field("stream", body["stream"]) if "stream" in body else False
    background = boolean_field("background", body["background"]) if "background" in body else False
    if "stream_options" in body:
        if not stream:
            raise InvalidRequest(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                param="stream_options",
                code="invalid_value",
            )
        options = object_field("stream_options", body["stream_options"])
        for key in sorted(options):
            if key != "include_obfuscation":
                raise unknown_param(f"stream_options.{key}")
            if options[key] is not None:
                boolean_field(f"stream_options.{key}", options[key])
    tools = tool_use(body, "responses")
    effort = responses_reasoning(body["reasoning"]) if "reasoning" in body else None
    create, input_tokens = generation(
        model,
        messages,
        max_tokens,
        body,
        settings,
        sources,
        prompt_param="input",
        reasoning_effort=effort,
        reasoning_param="reasoning.effort",
        tools=tools,
    )
    return ResponsesRequest(
        model=model,
        create=create,
        stream=stream,
        background=background,
        instructions=instructions,
        input_tokens=input_tokens,
        temperature=sampling.get("temperature"),
        top_p=sampling.get("top_p"),
        reasoning_effort=effort,
        tools=tools,
        tool_choice=body.get("tool_choice", "auto"),
    )
