"""Tools, tool choice and reasoning as each dialect's request says them: one set of checks
for Chat Completions, Responses and Anthropic Messages (their shapes differ only in where
the function's fields sit), giving what a :class:`GenerationRequest` takes.

Errors are :class:`InvalidRequest` with OpenAI's ``param``/``code`` (``/v1/messages``
answers them in Anthropic's shape).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from server.errors import InvalidRequest
from server.request_fields import (
    boolean_field,
    integer_field,
    missing_param,
    object_field,
    unknown_param,
    wrong_type,
)
from server.sources.base import ReasoningEffort, Tool
from server.validation import MAX_SCHEMA_DEPTH, MAX_TOOLS, schema_depth

ToolDialect = Literal["chat", "responses", "anthropic"]

#: A function name (OpenAI's rule; Anthropic's is the same set of characters).
NAME: Final = re.compile(r"[a-zA-Z0-9_-]{1,64}")

#: Where a dialect's function tool keeps its fields: ``(field of the function object or
#: None for the tool itself, the schema field, the fields allowed there)``.
_SHAPES: Final[dict[ToolDialect, tuple[str | None, str, frozenset[str]]]] = {
    "chat": ("function", "parameters", frozenset({"name", "description", "parameters", "strict"})),
    "responses": (
        None,
        "parameters",
        frozenset({"type", "name", "description", "parameters", "strict"}),
    ),
    "anthropic": (
        None,
        "input_schema",
        frozenset({"type", "name", "description", "input_schema", "cache_control", "strict"}),
    ),
}

#: OpenAI's ``reasoning_effort`` values as the efforts a source takes (``none``: no
#: reasoning; the values around the three a source knows map to the nearest).
_EFFORTS: Final[dict[str, ReasoningEffort | None]] = {
    "none": None,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "high",
    "max": "high",
}

#: Anthropic ``thinking.budget_tokens`` below each bound: the effort it asks for (above
#: the last: ``high``).
_BUDGETS: Final[tuple[tuple[int, ReasoningEffort], ...]] = ((4096, "low"), (16384, "medium"))


@dataclass(frozen=True, slots=True)
class ToolUse:
    """A request's tools and tool choice, checked."""

    #: Every tool the request lists (a response object echoes them).
    tools: tuple[Tool, ...] = ()
    #: The function the request forces (``required``/``any``: the first tool), or None.
    forced: str | None = None
    #: The request said the model must not call tools (``none``).
    disabled: bool = False

    @property
    def offered(self) -> tuple[Tool, ...]:
        """The tools the generation is offered (none when the choice is ``none``)."""
        return () if self.disabled else self.tools


#: A request without tools.
NO_TOOLS: Final = ToolUse()


def _invalid(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid '{param}': {message}", param=param, code="invalid_value")


def _string(param: str, value: Any) -> str:
    if not isinstance(value, str):
        raise wrong_type(param, "a string", value)
    return value


def _name(param: str, value: Any) -> str:
    name = _string(param, value)
    if not NAME.fullmatch(name):
        raise _invalid(
            param,
            f"{name!r} is not a function name (1 to 64 of a-z, A-Z, 0-9, '_' and '-').",
        )
    return name


def _tool(where: str, value: Any, dialect: ToolDialect) -> Tool:
    tool = object_field(where, value)
    nested, schema_key, allowed = _SHAPES[dialect]
    kind = tool.get("type", None if dialect != "anthropic" else "custom")
    if kind is None:
        raise missing_param(f"{where}.type")
    if kind != ("custom" if dialect == "anthropic" else "function"):
        raise InvalidRequest(
            f"Unsupported value: '{where}.type' does not support {kind!r} on tokenwire "
            "(function tools only).",
            param=f"{where}.type",
            code="unsupported_value",
        )
    if nested is not None:
        for key in sorted(tool):
            if key not in ("type", nested):
                raise unknown_param(f"{where}.{key}")
        if nested not in tool:
            raise missing_param(f"{where}.{nested}")
        where = f"{where}.{nested}"
        tool = object_field(where, tool[nested])
    for key in sorted(tool):
        if key not in allowed:
            raise unknown_param(f"{where}.{key}")
    fields = {k: v for k, v in tool.items() if v is not None}
    if "name" not in fields:
        raise missing_param(f"{where}.name")
    name = _name(f"{where}.name", fields["name"])
    description = _string(f"{where}.description", fields.get("description", ""))
    if schema_key not in fields and dialect == "anthropic":
        raise missing_param(f"{where}.{schema_key}")
    schema = object_field(f"{where}.{schema_key}", fields.get(schema_key, {}))
    # The native API's rules for a schema (server/validation.py), in OpenAI's words.
    if schema.get("type", "object") != "object":
        raise _invalid(f"{where}.{schema_key}", "must be a JSON Schema of type 'object'.")
    if schema_depth(schema) > MAX_SCHEMA_DEPTH:
        raise _invalid(
            f"{where}.{schema_key}", f"must nest at most {MAX_SCHEMA_DEPTH} levels deep."
        )
    if "strict" in fields:
        boolean_field(f"{where}.strict", fields["strict"])
    return Tool(name=name, description=description, parameters=schema)


def parse_tools(value: Any, dialect: ToolDialect) -> tuple[Tool, ...]:
    """``tools``: an array of the dialect's function tools, names unique."""
    if not isinstance(value, list):
        raise wrong_type("tools", "an array", value)
    if len(value) > MAX_TOOLS:
        raise _invalid("tools", f"array too long. Expected at most {MAX_TOOLS} tools.")
    tools = tuple(_tool(f"tools[{i}]", t, dialect) for i, t in enumerate(value))
    seen: set[str] = set()
    for i, t in enumerate(tools):
        if t.name in seen:
            raise _invalid(f"tools[{i}].name", f"the function name {t.name!r} is listed twice.")
        seen.add(t.name)
    return tools


def _choice_mode(value: Any, dialect: ToolDialect) -> tuple[str, str | None]:
    """A ``tool_choice`` as ``(mode, name)``: ``none``/``auto``/``required`` or
    ``function`` with the function's name."""
    if dialect == "anthropic":
        choice = object_field("tool_choice", value)
        kind = choice.get("type")
        if kind is None:
            raise missing_param("tool_choice.type")
        modes = {"auto": "auto", "any": "required", "none": "none", "tool": "function"}
        if kind not in modes:
            raise _invalid(
                "tool_choice.type",
                f"{kind!r} is not one of 'auto', 'any', 'tool' and 'none'.",
            )
        for key in sorted(choice):
            if key not in ("type", "name", "disable_parallel_tool_use"):
                raise unknown_param(f"tool_choice.{key}")
        if choice.get("disable_parallel_tool_use") is not None:
            boolean_field(
                "tool_choice.disable_parallel_tool_use", choice["disable_parallel_tool_use"]
            )
        if kind != "tool":
            return modes[kind], None
        if choice.get("name") is None:
            raise missing_param("tool_choice.name")
        return "function", _string("tool_choice.name", choice["name"])
    if isinstance(value, str):
        if value not in ("none", "auto", "required"):
            raise InvalidRequest(
                f"Invalid value: {value!r}. Supported values are: 'none', 'auto' and 'required'.",
                param="tool_choice",
                code="invalid_value",
            )
        return value, None
    choice = object_field("tool_choice", value)
    kind = choice.get("type")
    if kind is None:
        raise missing_param("tool_choice.type")
    if kind != "function":
        raise InvalidRequest(
            f"Unsupported value: 'tool_choice.type' does not support {kind!r} on tokenwire "
            "(function tools only).",
            param="tool_choice.type",
            code="unsupported_value",
        )
    where = "tool_choice"
    if dialect == "chat":
        for key in sorted(choice):
            if key not in ("type", "function"):
                raise unknown_param(f"tool_choice.{key}")
        if choice.get("function") is None:
            raise missing_param("tool_choice.function")
        where = "tool_choice.function"
        choice = object_field(where, choice["function"])
    for key in sorted(choice):
        if key not in ("type", "name"):
            raise unknown_param(f"{where}.{key}")
    if choice.get("name") is None:
        raise missing_param(f"{where}.name")
    return "function", _string(f"{where}.name", choice["name"])


def tool_use(body: Mapping[str, Any], dialect: ToolDialect) -> ToolUse:
    """The body's ``tools`` and ``tool_choice`` (``null`` already dropped), checked: a
    forced function must be one of ``tools``.

    Raises:
        InvalidRequest: A malformed tool or choice; a choice that needs tools the body
            does not list (``invalid_value``, param ``tool_choice``).
    """
    tools = parse_tools(body["tools"], dialect) if "tools" in body else ()
    if "tool_choice" not in body:
        return ToolUse(tools)
    mode, name = _choice_mode(body["tool_choice"], dialect)
    if mode == "none":
        return ToolUse(tools, disabled=True)
    if mode == "auto":
        return ToolUse(tools)
    if not tools:
        raise InvalidRequest(
            "Invalid value for 'tool_choice': a tool choice other than 'none' or 'auto' "
            "needs 'tools'.",
            param="tool_choice",
            code="invalid_value",
        )
    if name is None:  # required / any: tokenwire's sources call the first tool
        return ToolUse(tools, forced=tools[0].name)
    if name not in {t.name for t in tools}:
        raise InvalidRequest(
            f"Invalid value for 'tool_choice': function {name!r} is not in 'tools'.",
            param="tool_choice",
            code="invalid_value",
        )
    return ToolUse(tools, forced=name)


def reasoning_effort(param: str, value: Any) -> ReasoningEffort | None:
    """OpenAI's ``reasoning_effort`` (``reasoning.effort``): the effort a source takes."""
    effort = _string(param, value)
    if effort not in _EFFORTS:
        supported = ", ".join(f"'{e}'" for e in list(_EFFORTS)[:-1])
        raise InvalidRequest(
            f"Invalid value: {effort!r}. Supported values are: {supported} and 'max'.",
            param=param,
            code="invalid_value",
        )
    return _EFFORTS[effort]


def responses_reasoning(value: Any) -> ReasoningEffort | None:
    """Responses' ``reasoning``: ``{effort, summary?, generate_summary?}``."""
    reasoning = object_field("reasoning", value)
    for key in sorted(reasoning):
        if key not in ("effort", "summary", "generate_summary"):
            raise unknown_param(f"reasoning.{key}")
    effort = reasoning.get("effort")
    return None if effort is None else reasoning_effort("reasoning.effort", effort)


def anthropic_thinking(value: Any, max_tokens: int) -> ReasoningEffort | None:
    """Anthropic's ``thinking``: ``{"type": "enabled", "budget_tokens": n}`` (n >= 1024
    and below ``max_tokens``, as Anthropic checks) asks for reasoning, its effort by the
    budget; ``{"type": "disabled"}`` for none."""
    thinking = object_field("thinking", value)
    kind = thinking.get("type")
    if kind is None:
        raise missing_param("thinking.type")
    if kind == "disabled":
        for key in sorted(thinking):
            if key != "type":
                raise unknown_param(f"thinking.{key}")
        return None
    if kind != "enabled":
        raise _invalid("thinking.type", f"{kind!r} is not one of 'enabled' and 'disabled'.")
    for key in sorted(thinking):
        if key not in ("type", "budget_tokens", "display"):
            raise unknown_param(f"thinking.{key}")
    if thinking.get("budget_tokens") is None:
        raise missing_param("thinking.budget_tokens")
    budget = integer_field("thinking.budget_tokens", thinking["budget_tokens"], 1024)
    if budget >= max_tokens:
        raise _invalid(
            "thinking.budget_tokens", f"must be less than max_tokens ({max_tokens}), got {budget}."
        )
    for bound, effort in _BUDGETS:
        if budget < bound:
            return effort
    return "high"
