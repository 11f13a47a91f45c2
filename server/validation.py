"""Checks on what clients send: the create body and query parameters.

Pure functions: they take plain values and raise ``ApiError`` subclasses with the exact
message a client sees.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from server.errors import BadRequest, InvalidField, TooLarge
from server.settings import Settings
from server.sources.base import GenerationRequest, TokenSource

CREATE_FIELDS = frozenset({"prompt", "max_tokens", "source", "params"})
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
            unknown[0], "unknown field (allowed: max_tokens, params, prompt, source)"
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
    return CreateRequest(
        source, GenerationRequest(prompt=prompt, max_tokens=max_tokens, params=clean)
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
