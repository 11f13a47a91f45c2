"""``POST /v1/messages`` requests (Anthropic's Messages API), checked with the Chat
Completions checks (:mod:`server.chat_request`): a decoded JSON body in, a
:class:`MessagesRequest` out, or an error (answered in Anthropic's shape).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from server.chat_request import (
    MessageShape,
    chat_messages,
    checked_fields,
    content_text,
    generation,
    model_field,
    sampling_field,
)
from server.request_fields import boolean_field, integer_field, missing_param
from server.settings import Settings
from server.sources.base import ChatMessage, Param, TokenSource
from server.tool_request import anthropic_thinking, tool_use
from server.validation import CreateRequest

#: Anthropic's sampling fields, with the ranges Anthropic accepts.
SAMPLING_FIELDS: Final = (
    Param(name="temperature", type="number", minimum=0, maximum=1),
    Param(name="top_p", type="number", minimum=0, maximum=1),
)

#: Fields that change nothing here.
_IGNORED: Final = frozenset({"metadata", "service_tier"})

#: Fields tokenwire accepts only with the value that asks for nothing.
_DEFAULT_ONLY: Final[Mapping[str, Callable[[Any], bool]]] = {
    "stop_sequences": lambda v: v == [],
}

#: Fields tokenwire has no way to honour, whatever their value.
_UNSUPPORTED: Final = frozenset({"top_k", "container", "mcp_servers", "context_management"})

_USED: Final = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "temperature",
        "top_p",
        "stream",
        "params",
        "tools",
        "tool_choice",
        "thinking",
    }
)

#: A message: ``user`` or ``assistant``, text blocks only.
_MESSAGE: Final = MessageShape(
    fields=frozenset({"role", "content"}), unsupported=frozenset(), roles=("user", "assistant")
)


@dataclass(frozen=True, slots=True)
class MessagesRequest:
    """A validated ``POST /v1/messages``."""

    model: str
    create: CreateRequest
    stream: bool
    input_tokens: int
    #: The request asked for typed parts (thinking or tools): blocks open at their parts.
    typed: bool = False
    #: Thinking was enabled: reasoning is sent as thinking blocks.
    thinking: bool = False


def parse_messages_body(
    body: Any, settings: Settings, sources: Mapping[str, TokenSource]
) -> MessagesRequest:
    """Validate a Messages body (``null`` means absent).

    ``max_tokens`` is required, as Anthropic requires it; ``system`` becomes a leading
    ``system`` message; the conversation becomes the prompt as on
    ``/v1/chat/completions``.

    Raises:
        BadRequest: The body is not a JSON object (``bad_json``).
        InvalidRequest: A field is missing, unknown, of the wrong type, out of range, or
            asks for something tokenwire does not do; a malformed tool or ``thinking``, or
            a forced tool not in ``tools``.
        ModelNotFound: ``model`` names nothing this server serves.
    """
    body = checked_fields(body, _USED | _IGNORED, _DEFAULT_ONLY, _UNSUPPORTED)
    model = model_field(body)
    if "max_tokens" not in body:
        raise missing_param("max_tokens")
    max_tokens = integer_field("max_tokens", body["max_tokens"], 1, settings.max_tokens_cap)
    if "messages" not in body:
        raise missing_param("messages")
    messages = list(chat_messages("messages", body["messages"], _MESSAGE))
    if "system" in body:
        system = content_text("system", body["system"])
        messages.insert(0, ChatMessage("system", system))
    for field in SAMPLING_FIELDS:
        if field.name in body:
            body[field.name] = sampling_field(field, body[field.name])
    stream = boolean_field("stream", body["stream"]) if "stream" in body else False
    tools = tool_use(body, "anthropic")
    effort = anthropic_thinking(body["thinking"], max_tokens) if "thinking" in body else None
    create, input_tokens = generation(
        model,
        messages,
        max_tokens,
        body,
        settings,
        sources,
        prompt_param="messages",
        reasoning_effort=effort,
        reasoning_param="thinking",
        tools=tools,
    )
    return MessagesRequest(
        model=model,
        create=create,
        stream=stream,
        input_tokens=input_tokens,
        typed=effort is not None or bool(tools.offered),
        thinking=effort is not None,
    )
