"""Checks on what clients send: the create body and query parameters.

Pure functions: they take plain values and raise ``ApiError`` subclasses with the exact
message a client sees.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from server.errors import BadRequest, InvalidField, TooLarge
from server.settings import Settings
from server.sources.base import (
    REASONING_EFFORTS,
    GenerationRequest,
    ReasoningEffort,
    TokenSource,
    Tool,
)

CREATE_FIELDS = frozenset(
    {"prompt", "max_tokens", "source", "params", "reasoning_effort", "tools", "tool_choice"}
)
#: A tool's name (OpenAI's rule): 1 to 64 of ASCII letters, digits, ``_`` and ``-``.
TOOL_NAME_PATTERN: Final = r"[A-Za-z0-9_-]{1,64}"
_TOOL_NAME = re.compile(TOOL_NAME_PATTERN)
#: The most tools one request may offer (OpenAI's limit).
MAX_TOOLS: Final = 128
#: How deep a tool's ``parameters`` may nest (objects and arrays, itself included).
MAX_SCHEMA_DEPTH: Final = 32
TOOL_FIELDS: Final = ("name", "description", "parameters")
REASONING_EFFORT_RULE: Final = f"must be one of: {', '.join(REASONING_EFFORTS)}"
#: The largest position a client may ask for (``after``, ``Last-Event-ID``): beyond 2^53 a
#: JSON number is not exact in JavaScript, and no log gets near it.
MAX_AFTER = 2**53


@dataclass(frozen=True, slots=True)
class CreateRequest:
    source: TokenSource
    request: GenerationRequest


def parse_create_body(
    body: Any, settings: Settings, sources: Mapping[str, TokenSource]
) -> CreateRequest:
    """Validate ``{"prompt", "max_tokens"?, "source"?, "params"?}`` against the caps."""
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object", code="bad_json")
    unknown = sorted(set(body) - CREATE_FIELDS)
    if unknown:
        raise InvalidField(
            unknown[0], f"unknown field (allowed: {', '.join(sorted(CREATE_FIELDS))})"
        )
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise InvalidField("prompt", "must be a string")
    if len(prompt) > settings.max_prompt_chars:
        raise TooLarge(
            f"prompt is {len(prompt)} characters; the limit is {settings.max_prompt_chars}",
            code="prompt_too_long",
        )
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        max_tokens = settings.default_max_tokens
    if (
        isinstance(max_tokens, bool)
        or not isinstance(max_tokens, int)
        or not 1 <= max_tokens <= settings.max_tokens_cap
    ):
        raise InvalidField("max_tokens", f"must be an integer from 1 to {settings.max_tokens_cap}")
    name = body.get("source")
    if name is None:
        name = settings.source
    if not isinstance(name, str):
        raise InvalidField("source", "must be a string")
    source = sources.get(name)
    if source is None:
        raise BadRequest(
            f"source {name!r} is not enabled on this server (enabled: {', '.join(sources)})",
            code="unknown_source",
        )
    params = body.get("params")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InvalidField("params", "must be an object")
    clean = source.validate_params(params)
    effort = parse_reasoning_effort(body.get("reasoning_effort"))
    tools = parse_tools(body.get("tools"))
    tool_choice = parse_tool_choice(body.get("tool_choice"), tools)
    request = GenerationRequest(
        prompt=prompt,
        max_tokens=max_tokens,
        params=clean,
        reasoning_effort=effort,
        tools=tools,
        tool_choice=tool_choice,
    )
    check_typed_parts(source, request)
    return CreateRequest(source, request)


def parse_reasoning_effort(value: Any, field: str = "reasoning_effort") -> ReasoningEffort | None:
    """``low``, ``medium`` or ``high``; absent or ``null``: no reasoning."""
    if value is None:
        return None
    if value not in REASONING_EFFORTS:
        raise InvalidField(field, REASONING_EFFORT_RULE)
    effort: ReasoningEffort = value
    return effort


def parse_tools(value: Any) -> tuple[Tool, ...]:
    """``[{"name", "description"?, "parameters"?}, ...]``: unique names, each
    :data:`TOOL_NAME_PATTERN`; ``parameters`` a JSON Schema object (its ``type``, if given,
    ``"object"``) at most :data:`MAX_SCHEMA_DEPTH` deep. Absent or ``null``: no tools."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_TOOLS:
        raise InvalidField("tools", f"must be an array of at most {MAX_TOOLS} tools")
    tools: list[Tool] = []
    for i, item in enumerate(value):
        where = f"tools[{i}]"
        if not isinstance(item, dict):
            raise InvalidField(where, "must be an object")
        unknown = sorted(set(item) - set(TOOL_FIELDS))
        if unknown:
            raise InvalidField(
                f"{where}.{unknown[0]}",
                f"unknown field (allowed: {', '.join(sorted(TOOL_FIELDS))})",
            )
        tool = check_tool(item.get("name"), item.get("description"), item.get("parameters"), where)
        if any(t.name == tool.name for t in tools):
            raise InvalidField(f"{where}.name", f"duplicate tool name {tool.name!r}")
        tools.append(tool)
    return tuple(tools)


def check_tool(name: Any, description: Any, parameters: Any, where: str) -> Tool:
    """One tool's fields checked (``None`` is absent), the errors naming ``where.name``,
    ``where.description`` and ``where.parameters`` (a dialect passes its own ``where``, e.g.
    ``tools[0].function``)."""
    if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
        raise InvalidField(f"{where}.name", "must be 1 to 64 characters of A-Z, a-z, 0-9, _ and -")
    if description is None:
        description = ""
    if not isinstance(description, str):
        raise InvalidField(f"{where}.description", "must be a string")
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
        raise InvalidField(
            f"{where}.parameters", 'must be a JSON Schema object (its type "object")'
        )
    if schema_depth(parameters) > MAX_SCHEMA_DEPTH:
        raise InvalidField(
            f"{where}.parameters", f"must nest at most {MAX_SCHEMA_DEPTH} levels deep"
        )
    return Tool(name=name, description=description, parameters=parameters)


def schema_depth(value: Any, limit: int = MAX_SCHEMA_DEPTH + 1) -> int:
    """How deep ``value`` nests objects and arrays (a scalar: 0), counted up to ``limit``
    (by default one past :data:`MAX_SCHEMA_DEPTH`: enough to refuse, never a deep walk)."""
    if limit <= 0 or not isinstance(value, dict | list):
        return 0
    children = value.values() if isinstance(value, dict) else value
    return 1 + max((schema_depth(child, limit - 1) for child in children), default=0)


def parse_tool_choice(value: Any, tools: tuple[Tool, ...]) -> str | None:
    """The name of the tool a request forces: one of ``tools``. Absent or ``null``: none."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidField("tool_choice", "must be a string, the name of a tool in tools")
    if not any(tool.name == value for tool in tools):
        raise InvalidField("tool_choice", f"no tool named {value!r} in tools")
    return value


def typed_parts_refused(source: TokenSource, request: GenerationRequest) -> str | None:
    """The field of ``request`` that asks a text-only source (``hf``) for typed parts:
    ``reasoning_effort`` or ``tools`` (in that order), or None if there is none. The one
    rule; each entry raises it in its own shape (:func:`check_typed_parts` natively)."""
    if source.typed_parts:
        return None
    if request.reasoning_effort is not None:
        return "reasoning_effort"
    if request.tools:
        return "tools"
    return None


def check_typed_parts(source: TokenSource, request: GenerationRequest) -> None:
    """Refuse reasoning or tools asked of a source that streams text only, naming the
    field."""
    field = typed_parts_refused(source, request)
    if field is not None:
        raise InvalidField(
            field, f"source {source.name!r} streams text only (no reasoning, no tool calls)"
        )


#: A position as a JSON integer writes it (no sign but for -1, no leading zeros); Python's
#: ``int()`` would also take ``+5``, `` 5``, ``1_000`` and non-ASCII digits.
POSITION_PATTERN = r"-1|0|[1-9][0-9]{0,15}"
_POSITION = re.compile(POSITION_PATTERN)
#: A JSON number (``float()`` would also take ``inf``, ``nan`` and ``1_0``).
_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")


_AFTER_RULE = "must be an integer >= -1"


def parse_after(raw: str | None, field: str = "after") -> int:
    """``after=SEQ`` (a query parameter, ``Last-Event-ID``): events with ``seq > SEQ``;
    absent means from the start (-1)."""
    if raw is None:
        return -1
    if not _POSITION.fullmatch(raw) or int(raw) > MAX_AFTER:
        raise InvalidField(field, _AFTER_RULE)
    return int(raw)


def after_value(value: Any, field: str = "after") -> int:
    """``"after": SEQ`` in a JSON message (WebSocket ``subscribe``); absent or ``null``
    means from the start (-1)."""
    if value is None:
        return -1
    if isinstance(value, bool) or not isinstance(value, int) or not -1 <= value <= MAX_AFTER:
        raise InvalidField(field, _AFTER_RULE)
    return value


def parse_timeout(raw: str | None, default: float, maximum: float) -> float:
    """Long-poll ``timeout`` in seconds, from 0 to ``maximum``; absent: ``default``."""
    if raw is None:
        return default
    if not _NUMBER.fullmatch(raw) or not 0 <= float(raw) <= maximum:
        raise InvalidField("timeout", f"must be a number from 0 to {maximum:g}")
    return float(raw)
