"""OpenAI's Chat Completions format for the ``/v1`` routes: events in, bytes out.

A stream is SSE events of ``data:`` lines only (no ``id:``/``event:``/``retry:``: the SDK
chokes on an empty event once an id was set), ending with ``data: [DONE]``, or with one
in-band ``data: {"error": ...}`` when the generation ended without an answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from server.errors import ApiError, GenerationError
from server.events import Event, event_fields, token_text_json
from server.framing.parts import Block, fold, joined, piece
from server.framing.sse import sse_data

#: The last event of a stream that ended with an answer.
DONE = sse_data(b"[DONE]")

#: OpenAI's finish reasons for tokenwire's ``done`` reasons (``cancelled`` is an error).
FINISH_REASONS: dict[str, str] = {"stop": "stop", "length": "length", "tool_calls": "tool_calls"}

_encode = msgspec.json.Encoder().encode


def completion_id(stream_id: str) -> str:
    """The ``id`` of every chunk (and of the non-streamed completion) of a stream."""
    return f"chatcmpl-{stream_id}"


def error_frame(err: ApiError) -> bytes:
    """The in-band error that ends a stream: ``data: {"error": {message,type,param,code}}``."""
    return sse_data(_encode(err.openai_body()))


def outcome(stream_id: str, event: Event) -> str | GenerationError:
    """A terminal event as an OpenAI client sees it: the ``finish_reason`` of an answer
    that ended normally (``stop``, ``length``), else the error to report, in-band or as
    the HTTP status."""
    fields = event_fields(event)
    if event.type == "error":
        return GenerationError(str(fields["code"]), str(fields["message"]), stream_id=stream_id)
    reason = FINISH_REASONS.get(fields["finish_reason"])
    if reason is None:
        return GenerationError(
            "cancelled",
            f"stream {stream_id} was cancelled (DELETE, a WebSocket cancel, or no reader "
            "for the grace period)",
            stream_id=stream_id,
        )
    return reason


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


class ChunkFramer:
    """Frames one stream's log as ``chat.completion.chunk`` events.

    The JSON every chunk shares (id, object, created, model) is encoded once; a token's
    text is spliced in as the JSON string its event already holds, so nothing is decoded
    or re-encoded per token.
    """

    __slots__ = ("_head", "_tail", "include_usage", "prompt_tokens", "stream_id")

    def __init__(
        self,
        *,
        stream_id: str,
        created: int,
        model: str,
        include_usage: bool,
        prompt_tokens: int,
    ) -> None:
        self.stream_id = stream_id
        self.include_usage = include_usage
        self.prompt_tokens = prompt_tokens
        self._head = b'{"id":%s,"object":"chat.completion.chunk","created":%d,"model":%s' % (
            _encode(completion_id(stream_id)),
            created,
            _encode(model),
        )
        self._tail = b',"usage":null}' if include_usage else b"}"

    def _choice(self, delta: bytes, finish_reason: bytes = b"null") -> bytes:
        return sse_data(
            b'%s,"choices":[{"index":0,"delta":%s,"logprobs":null,"finish_reason":%s}]%s'
            % (self._head, delta, finish_reason, self._tail)
        )

    def role(self) -> bytes:
        """The first chunk: the assistant role and empty content."""
        return self._choice(b'{"role":"assistant","content":""}')

    def content(self, text_json: bytes) -> bytes:
        """A content delta; ``text_json`` is a JSON string literal, quotes included."""
        return self._choice(b'{"content":%s}' % text_json)

    def reasoning(self, text_json: bytes) -> bytes:
        """A reasoning delta; ``text_json`` is a JSON string literal, quotes included."""
        return self._choice(b'{"reasoning_content":%s}' % text_json)

    def tool_call(self, event: Event) -> bytes:
        """A tool call's event: its opening (id, name, ``arguments: ""``) on its first
        event, then its argument piece (none for an empty piece)."""
        p = piece(event)
        out = b""
        if p.id is not None:
            opening = {
                "index": p.index,
                "id": p.id,
                "type": "function",
                "function": {"name": p.name or "", "arguments": ""},
            }
            out = self._choice(b'{"tool_calls":[%s]}' % _encode(opening))
        if p.text:
            args = {"index": p.index, "function": {"arguments": p.text}}
            out += self._choice(b'{"tool_calls":[%s]}' % _encode(args))
        return out

    def finish(self, reason: str) -> bytes:
        """The chunk that ends the answer: an empty delta and the finish reason."""
        return self._choice(b"{}", _encode(reason))

    def usage(self, completion_tokens: int) -> bytes:
        """The usage chunk: no choices, the token counts."""
        return sse_data(
            b'%s,"choices":[],"usage":%s}'
            % (self._head, _encode(usage(self.prompt_tokens, completion_tokens)))
        )

    def frames(self, events: Iterable[Event]) -> bytes:
        """A batch of log events as one write; the terminal event ends the stream."""
        out: list[bytes] = []
        for event in events:
            if event.type == "token":
                out.append(self.content(token_text_json(event)))
                continue
            if event.type == "reasoning":
                out.append(self.reasoning(token_text_json(event)))
                continue
            if event.type == "tool_call":
                out.append(self.tool_call(event))
                continue
            end = outcome(self.stream_id, event)
            if isinstance(end, GenerationError):
                out.append(error_frame(end))
                continue
            out.append(self.finish(end))
            if self.include_usage:
                out.append(self.usage(event.seq))  # a done event's seq counts its tokens
            out.append(DONE)
        return b"".join(out)


def token_texts(events: Iterable[Event]) -> list[str]:
    """The text of each token event (the non-streamed answer decodes them once)."""
    return [str(event_fields(e)["text"]) for e in events if e.type == "token"]


def message(blocks: list[Block]) -> dict[str, Any]:
    """The non-streamed answer's ``message``: its text, and ``reasoning_content`` and
    ``tool_calls`` when it had them (``content`` is then ``null`` if there is no text)."""
    text = joined(blocks, "text")
    calls = [b for b in blocks if b.kind == "tool_call"]
    out: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if any(b.kind == "reasoning" for b in blocks):
        out["reasoning_content"] = joined(blocks, "reasoning")
    if calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.text}}
            for c in calls
        ]
    return out


def completion_of(
    events: list[Event],
    *,
    stream_id: str,
    created: int,
    model: str,
    finish_reason: str,
    prompt_tokens: int,
) -> bytes:
    """The non-streamed answer of a whole stream's events (the last one its ``done``)."""
    return completion(
        stream_id=stream_id,
        created=created,
        model=model,
        text="",
        finish_reason=finish_reason,
        prompt_tokens=prompt_tokens,
        completion_tokens=events[-1].seq,
        message_=message(fold(events)),
    )


def completion(
    *,
    stream_id: str,
    created: int,
    model: str,
    text: str,
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
    message_: dict[str, Any] | None = None,
) -> bytes:
    """The non-streamed answer: one ``chat.completion`` object (``message_``: the message
    with its typed parts, else one of ``text``)."""
    return _encode(
        {
            "id": completion_id(stream_id),
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message_ or {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": usage(prompt_tokens, completion_tokens),
        }
    )


def model_object(model: str, created: int) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": created, "owned_by": "tokenwire"}


def model_list(models: Sequence[str], created: int) -> bytes:
    """``GET /v1/models``: ``{"object":"list","data":[{"id","object","created","owned_by"}]}``."""
    return _encode({"object": "list", "data": [model_object(m, created) for m in models]})


def model_body(model: str, created: int) -> bytes:
    """``GET /v1/models/{model}``: one model object."""
    return _encode(model_object(model, created))
