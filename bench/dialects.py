"""The Responses and Anthropic dialects as a load-test client reads them: each request
body, and a sans-I/O reader that turns each decoded SSE event into the calls
:class:`clients.check.StreamCheck` makes of Chat Completions chunks (the text, the finish
reason, the usage count, the end), so every dialect is checked by the same rules.

Used by the Locust users (``bench/locustfile.py``), the overhead bench
(``bench/overhead.py``) and the chaos bench (``bench/chaos.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

from clients.check import IncompleteStream, StreamCheck

#: The dialects read here, and each one's route.
ROUTES: Final = {"responses": "/v1/responses", "anthropic": "/v1/messages"}

#: Each dialect's ending as the finish reason a Chat Completions chunk would carry.
_RESPONSES_ENDINGS: Final = {"response.completed": "stop", "response.incomplete": "length"}
_STOP_REASONS: Final = {"end_turn": "stop", "max_tokens": "length", "tool_use": "tool_calls"}


def request_body(dialect: str, prompt: str, max_tokens: int, params: Mapping[str, Any]) -> bytes:
    """A streamed request of ``dialect`` for the synthetic source."""
    if dialect == "responses":
        body: dict[str, Any] = {"input": prompt, "max_output_tokens": max_tokens}
    else:
        body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens}
    return orjson.dumps({"model": "synthetic", "stream": True, "params": params, **body})


class DialectReader:
    """Feeds one dialect stream's SSE events to a :class:`StreamCheck`.

    ``feed(event, data, recv_ns)`` takes one decoded event (its ``event:`` name and
    ``data``) and returns the answer text it carried (the payload) or None; ``done`` is
    True once the stream ended well. A Responses ``sequence_number`` out of order, an
    error, or anything after the end raises :class:`IncompleteStream`.
    """

    def __init__(self, dialect: str, check: StreamCheck, *, starting_after: int = -1) -> None:
        if dialect not in ROUTES:
            raise ValueError(dialect)
        self.dialect = dialect
        self.check = check
        #: The last Responses ``sequence_number`` seen (a resume starts after it).
        self.sequence = starting_after
        self.done = False

    def feed(self, event: str | None, data: str, recv_ns: int) -> str | None:
        if self.done:
            raise IncompleteStream(f"an event after the end: {data[:200]}")
        body = orjson.loads(data)
        if not isinstance(body, dict):
            raise IncompleteStream(f"not a JSON object: {data[:200]}")
        if self.dialect == "responses":
            return self._responses(body, recv_ns)
        return self._anthropic(event, body, recv_ns)

    def _text(self, text: str, recv_ns: int) -> str:
        self.check.openai_chunk({"choices": [{"delta": {"content": text}}]}, recv_ns)
        return text

    def _end(self, finish: str, output_tokens: Any, recv_ns: int) -> None:
        check = self.check
        check.openai_chunk({"choices": [{"delta": {}, "finish_reason": finish}]}, recv_ns)
        check.openai_chunk({"choices": [], "usage": {"completion_tokens": output_tokens}}, recv_ns)
        check.openai_done()
        self.done = True

    def _responses(self, body: dict[str, Any], recv_ns: int) -> str | None:
        kind = body.get("type")
        if kind == "error" or kind == "response.failed":
            raise IncompleteStream(f"Responses {kind}: {str(body)[:200]}")
        if body.get("sequence_number") != self.sequence + 1:
            raise IncompleteStream(
                f"sequence_number {body.get('sequence_number')} after {self.sequence}"
            )
        self.sequence += 1
        if kind == "response.output_text.delta":
            return self._text(body["delta"], recv_ns)
        if kind in _RESPONSES_ENDINGS:
            usage = body["response"].get("usage") or {}
            self._end(_RESPONSES_ENDINGS[kind], usage.get("output_tokens"), recv_ns)
        return None

    def _anthropic(self, event: str | None, body: dict[str, Any], recv_ns: int) -> str | None:
        if event != body.get("type"):
            raise IncompleteStream(f"event {event!r} carries type {body.get('type')!r}")
        if event == "error":
            raise IncompleteStream(f"Anthropic error: {str(body)[:200]}")
        if event == "content_block_delta" and body["delta"].get("type") == "text_delta":
            return self._text(body["delta"]["text"], recv_ns)
        if event == "message_delta":
            reason = body["delta"].get("stop_reason")
            self.check.openai_chunk(
                {"choices": [{"delta": {}, "finish_reason": _STOP_REASONS.get(reason, reason)}]},
                recv_ns,
            )
            self.check.usage = {"completion_tokens": body.get("usage", {}).get("output_tokens")}
        if event == "message_stop":
            self.check.openai_done()
            self.done = True
        return None
