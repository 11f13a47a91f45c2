"""Token source backed by an OpenAI-compatible Chat Completions API, through the ``openai`` SDK.

Errors become ``SourceError`` (``upstream_error``, ``upstream_timeout``,
``upstream_unavailable``); cancelling closes the upstream response. (``import openai`` below
is the SDK, not this module.)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import AsyncGenerator, Mapping
from typing import Any, ClassVar, Final, Literal, cast

import openai
from openai.types.chat import (
    ChatCompletionChunk,
    ChatCompletionMessageParam,
    ChatCompletionToolChoiceOptionParam,
    ChatCompletionToolParam,
)

from server.errors import SourceError
from server.sources.base import (
    INT64_MIN,
    MAX_SEED,
    Finish,
    FinishReason,
    GenerationRequest,
    Param,
    Reasoning,
    SourceItem,
    TokenSource,
    ToolCallDelta,
)

__all__ = ["CLOSED_EARLY_MESSAGE", "PLACEHOLDER_API_KEY", "OpenAISource"]

#: API key sent when none is configured but a base URL is (local servers ignore it).
PLACEHOLDER_API_KEY: Final = "tokenwire-no-key"

#: ``SourceError`` message when the upstream stream ends or breaks without a finish_reason.
CLOSED_EARLY_MESSAGE: Final = "upstream closed the stream before finish_reason"

MaxTokensField = Literal["max_tokens", "max_completion_tokens"]

_MAX_TOKENS_FIELDS: Final[frozenset[str]] = frozenset({"max_tokens", "max_completion_tokens"})
_BODY_TEXT_LIMIT: Final = 300
_FINISH_REASONS: Final[Mapping[str, FinishReason]] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
}


def map_finish_reason(reason: str) -> FinishReason:
    """Map an upstream ``finish_reason`` to tokenwire's.

    ``"length"`` and ``"tool_calls"`` stay; ``"stop"`` and everything else
    (``"content_filter"``, the legacy ``"function_call"``, vendor-specific values) become
    ``"stop"``.
    """
    return _FINISH_REASONS.get(reason, "stop")


class OpenAISource(TokenSource):
    """Streams a chat completion from an OpenAI-compatible API through the ``openai`` SDK.

    Args:
        model: Model name sent upstream unless the request's ``params.model`` overrides it.
        base_url: API base URL (e.g. ``http://127.0.0.1:8000/v1``); ``None`` uses
            ``OPENAI_BASE_URL`` or the SDK's default (the OpenAI cloud).
        api_key: API key; ``None`` uses ``OPENAI_API_KEY``, else a placeholder when a base
            URL is set.
        timeout: Seconds the SDK waits to connect, to send, and for each read (for the first
            byte of the answer and between bytes of the stream).
        max_tokens_field: Body field that carries ``max_tokens``: ``"max_tokens"`` (widest
            support among compatible servers) or ``"max_completion_tokens"`` (required by
            OpenAI's reasoning models).

    Raises:
        ValueError: ``model`` is empty, ``timeout`` is not positive, or ``max_tokens_field``
            is not one of the two names.
    """

    name = "openai"
    typed_parts: ClassVar[bool] = True
    params = (
        Param(name="temperature", type="number", minimum=0, maximum=2),
        Param(name="top_p", type="number", minimum=0, exclusive_minimum=True, maximum=1),
        Param(name="seed", type="integer", minimum=INT64_MIN, maximum=MAX_SEED),
        Param(name="model", type="string", description="replaces the configured model"),
    )

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_tokens_field: MaxTokensField = "max_tokens",
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ValueError("OpenAISource: model must be a non-empty string")
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not (math.isfinite(timeout) and timeout > 0)
        ):
            raise ValueError("OpenAISource: timeout must be a positive number of seconds")
        if max_tokens_field not in _MAX_TOKENS_FIELDS:
            raise ValueError(
                "OpenAISource: max_tokens_field must be 'max_tokens' or 'max_completion_tokens'"
            )
        self.model = model
        self.base_url = base_url
        self.api_key = api_key
        self.timeout = float(timeout)
        self.max_tokens_field: MaxTokensField = max_tokens_field
        self._client: openai.AsyncOpenAI | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def client(self) -> openai.AsyncOpenAI:
        """The SDK client (only between :meth:`start` and :meth:`aclose`).

        Raises:
            RuntimeError: The source is not started.
        """
        if self._client is None:
            raise RuntimeError("OpenAISource is not started: await start() first")
        return self._client

    async def start(self) -> None:
        """Create the SDK client (idempotent).

        ``base_url``/``api_key`` given as ``None`` (or empty) fall back to ``OPENAI_BASE_URL``
        and ``OPENAI_API_KEY``; with no key at all, :data:`PLACEHOLDER_API_KEY` is used when a
        base URL is known.

        Raises:
            ValueError: No API key and no base URL are configured.
        """
        if self._client is not None:
            return
        base_url = self.base_url or os.environ.get("OPENAI_BASE_URL") or None
        api_key = self.api_key or os.environ.get("OPENAI_API_KEY") or None
        if api_key is None:
            if base_url is None:
                raise ValueError(
                    "OpenAISource needs an API key: pass api_key or set OPENAI_API_KEY "
                    "(a local OpenAI-compatible server needs none: set base_url or "
                    "OPENAI_BASE_URL instead)"
                )
            api_key = PLACEHOLDER_API_KEY
        self._client = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key, timeout=self.timeout, max_retries=0
        )

    async def aclose(self) -> None:
        """Close the SDK client and its connection pool (idempotent)."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def served_model(self) -> str:
        return self.model

    # -- streaming -------------------------------------------------------------------------

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[SourceItem, None]:
        """Yield the upstream's deltas, then one ``Finish``: ``delta.reasoning_content`` (else
        ``delta.reasoning``) as ``Reasoning``, ``delta.content`` as text, each
        ``delta.tool_calls`` entry as a ``ToolCallDelta``, one item per piece, in that order
        within a delta. ``reasoning_effort``, ``tools`` and ``tool_choice`` are sent
        upstream when the request sets them (Chat Completions' shapes).

        An async generator (so ``aclose()`` is typed): closing it, or cancelling the task
        that iterates it, closes the upstream HTTP response.

        ``request.params`` is expected to come from :meth:`validate_params`; only its known
        keys are read. Empty and ``None`` deltas, chunks without choices (e.g. a usage chunk)
        and choices other than index 0 carry no text and are skipped.

        Raises:
            SourceError: The upstream failed: ``upstream_error`` (a 4xx/5xx answer, an in-band
                error, a stream cut before ``finish_reason``), ``upstream_timeout``,
                ``upstream_unavailable``.
            RuntimeError: The source is not started.
        """
        client = self.client
        params = request.params
        max_tokens = request.max_tokens
        use_completion_field = self.max_tokens_field == "max_completion_tokens"
        try:
            upstream = await client.chat.completions.create(
                model=params.get("model", self.model),
                messages=_messages(request),
                stream=True,
                max_tokens=openai.omit if use_completion_field else max_tokens,
                max_completion_tokens=max_tokens if use_completion_field else openai.omit,
                temperature=params.get("temperature", openai.omit),
                top_p=params.get("top_p", openai.omit),
                seed=params.get("seed", openai.omit),
                reasoning_effort=request.reasoning_effort or openai.omit,
                tools=_tools(request) or openai.omit,
                tool_choice=_tool_choice(request) or openai.omit,
            )
        except openai.APIError as exc:
            raise self._translate(exc, mid_stream=False) from exc

        finish_reason: str | None = None
        try:
            async for chunk in upstream:
                pieces, reason = _read_chunk(chunk)
                for piece in pieces:
                    yield piece
                if reason is not None:
                    finish_reason = reason
        except openai.APIError as exc:
            raise self._translate(exc, mid_stream=True) from exc
        except json.JSONDecodeError as exc:
            raise SourceError("upstream_error", "upstream sent an event that is not JSON") from exc
        finally:
            # Runs on normal end, on errors, on CancelledError at an await and on aclose() at
            # a yield: close the HTTP response so the upstream sees the disconnect.
            await _close_quietly(upstream)

        if finish_reason is None:
            raise SourceError("upstream_error", CLOSED_EARLY_MESSAGE)
        yield Finish(map_finish_reason(finish_reason))

    def _translate(self, exc: openai.APIError, *, mid_stream: bool) -> SourceError:
        """Turn an SDK error into a ``SourceError`` with a stable code."""
        if isinstance(exc, openai.APITimeoutError):
            if mid_stream:
                return SourceError(
                    "upstream_timeout", f"upstream sent nothing for {self.timeout:g} s mid-stream"
                )
            return SourceError(
                "upstream_timeout", f"upstream did not answer within {self.timeout:g} s"
            )
        if isinstance(exc, openai.APIConnectionError):
            if mid_stream:
                return SourceError("upstream_error", CLOSED_EARLY_MESSAGE)
            cause = exc.__cause__
            detail = str(cause) if cause is not None and str(cause) else exc.message
            base_url = str(self._client.base_url if self._client is not None else self.base_url)
            return SourceError(
                "upstream_unavailable", f"cannot reach {base_url.rstrip('/')}: {detail}"
            )
        if isinstance(exc, openai.APIStatusError):
            return SourceError("upstream_error", _status_message(exc))
        if mid_stream:
            return SourceError("upstream_error", f"upstream error event: {exc.message}")
        return SourceError("upstream_error", f"upstream error: {exc.message}")


def _messages(request: GenerationRequest) -> list[ChatCompletionMessageParam]:
    """The request's chat messages as they came, or its prompt as one user message."""
    if not request.messages:
        return [{"role": "user", "content": request.prompt}]
    return [
        cast(ChatCompletionMessageParam, {"role": m.role, "content": m.content})
        for m in request.messages
    ]


def _tools(request: GenerationRequest) -> list[ChatCompletionToolParam]:
    """The request's tools in Chat Completions' shape (``[]`` if it offers none)."""
    out: list[ChatCompletionToolParam] = []
    for tool in request.tools:
        function: dict[str, Any] = {"name": tool.name}
        if tool.description:
            function["description"] = tool.description
        if tool.parameters:
            function["parameters"] = dict(tool.parameters)
        out.append(cast(ChatCompletionToolParam, {"type": "function", "function": function}))
    return out


def _tool_choice(request: GenerationRequest) -> ChatCompletionToolChoiceOptionParam | None:
    """The forced function in Chat Completions' shape, or ``None``."""
    if request.tool_choice is None:
        return None
    return {"type": "function", "function": {"name": request.tool_choice}}


def _read_chunk(chunk: ChatCompletionChunk) -> tuple[list[SourceItem], str | None]:
    """The pieces of the chunk's choice 0 (reasoning, content, tool-call pieces; empty ones
    left out) and its ``finish_reason``."""
    out: list[SourceItem] = []
    reason: str | None = None
    for choice in chunk.choices or ():
        if choice.index != 0:
            continue
        if choice.finish_reason is not None:
            reason = choice.finish_reason
        delta = choice.delta
        if delta is None:
            continue
        extra = delta.model_extra or {}
        # One of the two names (a server may send both, with the same text).
        text = extra.get("reasoning_content") or extra.get("reasoning")
        if isinstance(text, str) and text:
            out.append(Reasoning(text))
        if delta.content:
            out.append(delta.content)
        for call in delta.tool_calls or ():
            function = call.function
            out.append(
                ToolCallDelta(
                    call.index,
                    (function.arguments if function is not None else None) or "",
                    id=call.id,
                    name=function.name if function is not None else None,
                )
            )
    return out, reason


def _status_message(exc: openai.APIStatusError) -> str:
    """``upstream answered HTTP <status> (<code>): <upstream message>``.

    The code and message come from OpenAI's ``{"error": {"message", "type", "param",
    "code"}}`` body; a body that is not JSON is quoted (truncated) instead.
    """
    body = exc.body
    code: object = None
    detail: str | None = None
    if isinstance(body, Mapping):
        code = body.get("code")
        message = body.get("message")
        if isinstance(message, str) and message.strip():
            detail = message.strip()
    elif isinstance(body, str) and body.strip():
        detail = body.strip()[:_BODY_TEXT_LIMIT]
    text = f"upstream answered HTTP {exc.status_code}"
    if isinstance(code, str | int) and not isinstance(code, bool) and str(code):
        text += f" ({code})"
    return f"{text}: {detail}" if detail else text


async def _close_quietly(upstream: openai.AsyncStream[ChatCompletionChunk]) -> None:
    """Close the upstream response; a failure to close must not mask the real outcome."""
    with contextlib.suppress(Exception):
        await upstream.close()
