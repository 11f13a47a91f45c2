"""``POST /v1/chat/completions`` requests: model ids, body checks, the prompt, usage.

Pure functions like :mod:`server.validation`: a decoded JSON body in, a :class:`ChatRequest`
out, or an error carrying the message, ``param`` and ``code`` an OpenAI client sees.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from server.errors import BadRequest, InvalidField, InvalidRequest, ModelNotFound
from server.request_fields import (
    boolean_field,
    integer_field,
    missing_param,
    number_field,
    object_field,
    unknown_param,
    unsupported_param,
    wrong_type,
)
from server.settings import Settings
from server.sources.base import (
    CHAT_ROLES,
    INT64_MIN,
    MAX_SEED,
    ChatMessage,
    ChatRole,
    GenerationRequest,
    Param,
    ReasoningEffort,
    TokenSource,
)
from server.sources.synthetic import count_pieces
from server.tool_request import NO_TOOLS, ToolUse, reasoning_effort, tool_use
from server.validation import CreateRequest, typed_parts_refused

#: OpenAI's sampling fields, with the ranges OpenAI accepts. Each goes to the sources that
#: declare a param of the same name; the others accept and ignore it.
SAMPLING_FIELDS: Final = (
    Param(name="temperature", type="number", minimum=0, maximum=2),
    Param(name="top_p", type="number", minimum=0, maximum=1),
    Param(name="seed", type="integer", minimum=INT64_MIN, maximum=MAX_SEED),
)

#: Fields that change nothing here (metadata, storage, ``parallel_tool_calls``: a source
#: calls tools one after another in the one stream anyway).
IGNORED_FIELDS: Final = frozenset(
    {
        "user",
        "metadata",
        "store",
        "service_tier",
        "safety_identifier",
        "prompt_cache_key",
        "parallel_tool_calls",
    }
)


def _is_zero(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, int | float) and v == 0


#: OpenAI fields tokenwire accepts only with the value that asks for nothing.
_DEFAULT_ONLY: Final[Mapping[str, Callable[[Any], bool]]] = {
    "frequency_penalty": _is_zero,
    "presence_penalty": _is_zero,
    "logprobs": lambda v: v is False,
    "top_logprobs": _is_zero,
    "logit_bias": lambda v: v == {},
    "functions": lambda v: v == [],
    "function_call": lambda v: v in ("none", "auto"),
    "stop": lambda v: v == [],
    "response_format": lambda v: v == {"type": "text"},
    "modalities": lambda v: v == ["text"],
}

#: OpenAI fields tokenwire has no way to honour, whatever their value.
_UNSUPPORTED: Final = frozenset({"audio", "prediction", "verbosity", "web_search_options"})

_USED: Final = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "seed",
        "n",
        "stream",
        "stream_options",
        "params",
        "tools",
        "tool_choice",
        "reasoning_effort",
    }
)

_MESSAGE_FIELDS: Final = frozenset({"role", "content", "name", "refusal"})
_MESSAGE_UNSUPPORTED: Final = frozenset({"tool_calls", "tool_call_id", "function_call", "audio"})


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated ``POST /v1/chat/completions``."""

    #: The model id as the client named it (echoed in every chunk).
    model: str
    create: CreateRequest
    stream: bool
    include_usage: bool
    prompt_tokens: int


# ----- model ids -----------------------------------------------------------------------


def model_ids(sources: Mapping[str, TokenSource]) -> list[str]:
    """The ids ``GET /v1/models`` lists: a source's name, with ``/<model>`` if it has one."""
    ids = []
    for name, source in sources.items():
        served = source.served_model()
        ids.append(name if served is None else f"{name}/{served}")
    return ids


def resolve_model(model: str, sources: Mapping[str, TokenSource]) -> tuple[TokenSource, str | None]:
    """The source a model id names, and the upstream model to ask for (``openai/<name>``).

    Raises:
        ModelNotFound: No enabled source serves ``model``.
    """
    source = sources.get(model)
    if source is not None:
        return source, None
    name, _, rest = model.partition("/")
    source = sources.get(name)
    if source is not None and rest:
        if name == "openai":  # the upstream model is named per request (params.model)
            return source, rest
        if rest == source.served_model():
            return source, None
    raise ModelNotFound(model)


# ----- body checks ---------------------------------------------------------------------


def sampling_field(field: Param, value: Any) -> float | int:
    """An OpenAI sampling field checked against OpenAI's range (a number as ``float``)."""
    assert field.minimum is not None
    assert field.maximum is not None
    if field.type == "number":
        return number_field(field.name, value, field.minimum, field.maximum)
    return integer_field(field.name, value, int(field.minimum), int(field.maximum))


def content_text(param: str, value: Any, part_types: tuple[str, ...] = ("text",)) -> str:
    """A message's text: a string, or an array of ``{"type": <part type>, "text": ...}``
    parts (joined with ``\n``); ``part_types`` are the dialect's text part types."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise wrong_type(param, "a string or an array of content parts", value)
    if not value:
        raise InvalidRequest(
            f"Invalid '{param}': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            param=param,
            code="empty_array",
        )
    texts = []
    for i, part in enumerate(value):
        where = f"{param}[{i}]"
        object_field(where, part)
        kind = part.get("type")
        if kind is None:
            raise missing_param(f"{where}.type")
        if kind not in part_types:
            raise InvalidRequest(
                f"Unsupported value: '{where}.type' does not support {kind!r} on tokenwire "
                "(text only).",
                param=f"{where}.type",
                code="unsupported_value",
            )
        for key in sorted(part):
            if key not in ("type", "text"):
                raise unknown_param(f"{where}.{key}")
        text = part.get("text")
        if text is None:
            raise missing_param(f"{where}.text")
        if not isinstance(text, str):
            raise wrong_type(f"{where}.text", "a string", text)
        texts.append(text)
    return "\n".join(texts)


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageShape:
    """What a dialect's conversation message may hold."""

    fields: frozenset[str] = _MESSAGE_FIELDS
    #: Fields refused (``unsupported_parameter``) unless ``null``.
    unsupported: frozenset[str] = _MESSAGE_UNSUPPORTED
    roles: tuple[ChatRole, ...] = CHAT_ROLES
    part_types: tuple[str, ...] = ("text",)


CHAT_MESSAGE: Final = MessageShape()


def chat_message(where: str, value: Any, shape: MessageShape = CHAT_MESSAGE) -> ChatMessage:
    """One message (``where`` names it in errors, e.g. ``messages[0]``), checked against
    the dialect's ``shape``."""
    msg = object_field(where, value)
    for key in sorted(msg):
        if key in shape.unsupported and msg[key] is not None:
            raise unsupported_param(f"{where}.{key}")
        if key not in shape.fields and key not in shape.unsupported:
            raise unknown_param(f"{where}.{key}")
    role = msg.get("role")
    if role is None:
        raise missing_param(f"{where}.role")
    if not isinstance(role, str):
        raise wrong_type(f"{where}.role", "a string", role)
    if role in ("tool", "function"):
        raise InvalidRequest(
            f"Unsupported value: '{where}.role' does not support {role!r} on tokenwire "
            "(no tool calls).",
            param=f"{where}.role",
            code="unsupported_value",
        )
    if role not in shape.roles:
        roles = shape.roles
        supported = ", ".join(f"'{r}'" for r in roles[:-1]) + f" and '{roles[-1]}'"
        raise InvalidRequest(
            f"Invalid value: {role!r}. Supported values are: {supported}.",
            param=f"{where}.role",
            code="invalid_value",
        )
    content = msg.get("content")
    if content is None:
        raise missing_param(f"{where}.content")
    name = msg.get("name")
    if name is not None and not isinstance(name, str):
        raise wrong_type(f"{where}.name", "a string", name)
    text = content_text(f"{where}.content", content, shape.part_types)
    return ChatMessage(role, text)


def chat_messages(
    param: str, value: Any, shape: MessageShape = CHAT_MESSAGE
) -> tuple[ChatMessage, ...]:
    """A non-empty array of messages (the body field ``param``)."""
    if not isinstance(value, list):
        raise wrong_type(param, "an array", value)
    if not value:
        raise InvalidRequest(
            f"Invalid '{param}': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            param=param,
            code="empty_array",
        )
    return tuple(chat_message(f"{param}[{i}]", m, shape) for i, m in enumerate(value))


def chat_prompt(messages: Sequence[ChatMessage]) -> str:
    """The prompt a conversation becomes: a single ``user`` message as it is (so ``/v1``
    and ``POST /api/streams`` give the same text), else ``"<role>: <content>"`` blocks
    joined with a blank line, ending with ``"\n\nassistant:"``."""
    if len(messages) == 1 and messages[0].role == "user":
        return messages[0].content
    return "\n\n".join(f"{m.role}: {m.content}" for m in messages) + "\n\nassistant:"


def source_params(
    source: TokenSource,
    body: Mapping[str, Any],
    upstream_model: str | None,
) -> dict[str, Any]:
    """The source's params: the ``params`` extension, plus the sampling fields it takes."""
    params = dict(object_field("params", body["params"])) if "params" in body else {}
    from_fields = set()
    takes = {p.name for p in source.params}
    for key in (f.name for f in SAMPLING_FIELDS if f.name in takes):
        if key in body:
            if key in params:
                raise InvalidRequest(
                    f"Invalid 'params.{key}': set '{key}' or 'params.{key}', not both.",
                    param=f"params.{key}",
                    code="invalid_value",
                )
            params[key] = body[key]
            from_fields.add(key)
    if upstream_model is not None:
        if "model" in params:
            raise InvalidRequest(
                "Invalid 'params.model': name the upstream model in 'model' "
                f"('openai/{params['model']}').",
                param="params.model",
                code="invalid_value",
            )
        params["model"] = upstream_model
    try:
        return source.validate_params(params)
    except InvalidField as e:
        key = e.field.removeprefix("params.")
        param = key if key in from_fields else e.field
        raise InvalidRequest(
            f"Invalid '{param}': {e.reason}.", param=param, code="invalid_value"
        ) from None


def checked_fields(
    body: Any,
    known: frozenset[str],
    default_only: Mapping[str, Callable[[Any], bool]],
    unsupported: frozenset[str],
) -> dict[str, Any]:
    """A dialect's body with its ``null`` fields dropped (``null`` means absent), after
    refusing a field it has no way to honour (``unsupported_parameter``: one of
    ``unsupported``, or one of ``default_only`` with a value that asks for something) and a
    field it does not know (``unknown_parameter``).

    Raises:
        BadRequest: The body is not a JSON object (``bad_json``).
        InvalidRequest: The first such field, in sorted order.
    """
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object", code="bad_json")
    given: dict[str, Any] = {k: v for k, v in body.items() if v is not None}
    for key in sorted(given):
        if key in unsupported or (key in default_only and not default_only[key](given[key])):
            raise unsupported_param(key)
        if key not in known and key not in default_only:
            raise unknown_param(key)
    return given


def model_field(body: Mapping[str, Any]) -> str:
    """The required ``model`` string."""
    model = body.get("model")
    if model is None:
        raise missing_param("model")
    if not isinstance(model, str):
        raise wrong_type("model", "a string", model)
    return model


def generation(
    model: str,
    messages: Sequence[ChatMessage],
    max_tokens: int,
    body: Mapping[str, Any],
    settings: Settings,
    sources: Mapping[str, TokenSource],
    *,
    prompt_param: str,
    reasoning_effort: ReasoningEffort | None = None,
    reasoning_param: str = "reasoning_effort",
    tools: ToolUse = NO_TOOLS,
) -> tuple[CreateRequest, int]:
    """What every dialect starts: the source ``model`` names, its params (``params`` and the
    sampling fields of ``body``), the prompt the messages make; and the prompt's pieces
    (the ``prompt_tokens``/``input_tokens`` of usage). ``reasoning_effort`` and ``tools``
    (the dialect's, checked by :mod:`server.tool_request`) go to the source as they are;
    a source that streams text only (``hf``) refuses them (naming ``tools`` or
    ``reasoning_param``, the dialect's reasoning field).

    Raises:
        ModelNotFound: ``model`` names nothing this server serves.
        InvalidRequest: A param the source refuses, or a prompt over ``max_prompt_chars``
            (``context_length_exceeded``, naming ``prompt_param``).
    """
    source, upstream_model = resolve_model(model, sources)
    params = source_params(source, body, upstream_model)
    prompt = chat_prompt(messages)
    if len(prompt) > settings.max_prompt_chars:
        raise InvalidRequest(
            f"The {prompt_param} make a prompt of {len(prompt)} characters; this server "
            f"accepts at most {settings.max_prompt_chars}.",
            param=prompt_param,
            code="context_length_exceeded",
        )
    request = GenerationRequest(
        prompt=prompt,
        max_tokens=max_tokens,
        params=params,
        messages=tuple(messages),
        reasoning_effort=reasoning_effort,
        tools=tools.offered,
        tool_choice=tools.forced,
    )
    refused = typed_parts_refused(source, request)
    if refused is not None:
        param = reasoning_param if refused == "reasoning_effort" else refused
        raise InvalidRequest(
            f"Invalid '{param}': model {model!r} streams text only (no reasoning, no tool calls).",
            param=param,
            code="invalid_value",
        )
    return CreateRequest(source, request), count_pieces(prompt)


def parse_chat_body(
    body: Any, settings: Settings, sources: Mapping[str, TokenSource]
) -> ChatRequest:
    """Validate a Chat Completions body (``null`` means absent, as for OpenAI).

    Raises:
        BadRequest: The body is not a JSON object (``bad_json``).
        InvalidRequest: A field is missing, unknown, of the wrong type, out of range, or
            asks for something tokenwire does not do (``n`` > 1, logprobs, ...); a
            malformed tool, or a forced one not in ``tools``.
        ModelNotFound: ``model`` names nothing this server serves.
    """
    body = checked_fields(body, _USED | IGNORED_FIELDS, _DEFAULT_ONLY, _UNSUPPORTED)
    model = model_field(body)
    if "messages" not in body:
        raise missing_param("messages")
    messages = chat_messages("messages", body["messages"])

    if "max_tokens" in body and "max_completion_tokens" in body:
        raise InvalidRequest(
            "Invalid 'max_tokens': set 'max_tokens' or 'max_completion_tokens', not both.",
            param="max_tokens",
            code="invalid_value",
        )
    max_tokens = settings.default_max_tokens
    for key in ("max_tokens", "max_completion_tokens"):
        if key in body:
            max_tokens = integer_field(key, body[key], 1, settings.max_tokens_cap)
    for field in SAMPLING_FIELDS:
        if field.name in body:
            body[field.name] = sampling_field(field, body[field.name])
    if "n" in body and integer_field("n", body["n"], 1) != 1:
        raise InvalidRequest(
            "Unsupported value: 'n' must be 1 on tokenwire (one generation per request).",
            param="n",
            code="unsupported_value",
        )
    stream = boolean_field("stream", body["stream"]) if "stream" in body else False
    include_usage = False
    if "stream_options" in body:
        if not stream:
            raise InvalidRequest(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                param="stream_options",
                code="invalid_value",
            )
        options = object_field("stream_options", body["stream_options"])
        for key in sorted(options):
            if key not in ("include_usage", "include_obfuscation"):
                raise unknown_param(f"stream_options.{key}")
            if options[key] is not None:
                boolean_field(f"stream_options.{key}", options[key])
        include_usage = options.get("include_usage") is True

    tools = tool_use(body, "chat")
    effort = (
        reasoning_effort("reasoning_effort", body["reasoning_effort"])
        if "reasoning_effort" in body
        else None
    )
    create, prompt_tokens = generation(
        model,
        messages,
        max_tokens,
        body,
        settings,
        sources,
        prompt_param="messages",
        reasoning_effort=effort,
        tools=tools,
    )
    return ChatRequest(
        model=model,
        create=create,
        stream=stream,
        include_usage=include_usage,
        prompt_tokens=prompt_tokens,
    )
