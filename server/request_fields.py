"""The field checks every request body shares (Chat Completions, Responses, Messages, and
their tools): wrong types, missing and unknown parameters, ranges, each with the message,
``param`` and ``code`` an OpenAI client sees (``/v1/messages`` answers in Anthropic's shape).
"""

from __future__ import annotations

from typing import Any

from server.errors import InvalidRequest


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def wrong_type(param: str, expected: str, value: Any) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid type for '{param}': expected {expected}, but got {_json_type(value)} instead.",
        param=param,
        code="invalid_type",
    )


def missing_param(param: str) -> InvalidRequest:
    return InvalidRequest(
        f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
    )


def integer_field(param: str, value: Any, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise wrong_type(param, "an integer", value)
    if value < lo:
        raise InvalidRequest(
            f"Invalid '{param}': integer below minimum value. Expected a value >= {lo}, "
            f"but got {value} instead.",
            param=param,
            code="integer_below_min_value",
        )
    if hi is not None and value > hi:
        raise InvalidRequest(
            f"Invalid '{param}': integer above maximum value. Expected a value <= {hi}, "
            f"but got {value} instead.",
            param=param,
            code="integer_above_max_value",
        )
    return value


def number_field(param: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise wrong_type(param, "a number", value)
    if not value >= lo:
        raise InvalidRequest(
            f"Invalid '{param}': decimal below minimum value. Expected a value >= {lo:g}, "
            f"but got {value:g} instead.",
            param=param,
            code="decimal_below_min_value",
        )
    if value > hi:
        raise InvalidRequest(
            f"Invalid '{param}': decimal above maximum value. Expected a value <= {hi:g}, "
            f"but got {value:g} instead.",
            param=param,
            code="decimal_above_max_value",
        )
    return float(value)


def boolean_field(param: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise wrong_type(param, "a boolean", value)
    return value


def object_field(param: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise wrong_type(param, "an object", value)
    return value


def unknown_param(param: str) -> InvalidRequest:
    return InvalidRequest(f"Unknown parameter: '{param}'.", param=param, code="unknown_parameter")


def unsupported_param(param: str) -> InvalidRequest:
    return InvalidRequest(
        f"Unsupported parameter: '{param}' is not supported by tokenwire.",
        param=param,
        code="unsupported_parameter",
    )
