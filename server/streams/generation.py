"""The generation: the one task per stream that runs its source and appends to its log.

It appends content events ``seq = 0, 1, ...`` (answer ``token``s and, when the request
asks for them, ``reasoning`` and ``tool_call`` pieces) and always exactly one terminal event
(``done`` or ``error``), whatever happens to the source: a normal end, ``max_tokens``, a
cancel (its reason set on the record first), the generation timeout, or a failure.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

from server.errors import SourceError, StoreUnavailable
from server.events import DoneReason, Event, PartEncoder, done_event, error_event
from server.sources.base import Finish, GenerationRequest, Reasoning, TokenSource, ToolCallDelta
from server.store.base import LogStore
from server.streams.record import StreamRecord

log = logging.getLogger("tokenwire.hub")


class _Call:
    __slots__ = ("digest", "id", "name")

    def __init__(self, call_id: str, name: str) -> None:
        self.id = call_id
        self.name = name
        self.digest = hashlib.sha256()


class TypedParts:
    """A stream's reasoning and tool calls as the generation appends them: the events that
    carry them, and the digests ``done.parts`` reports (see docs/protocol.md)."""

    __slots__ = ("calls", "encode", "reasoning", "reasoning_tokens", "stream")

    def __init__(self, stream: str, encode: PartEncoder) -> None:
        self.stream = stream
        self.encode = encode
        self.reasoning = hashlib.sha256()
        self.reasoning_tokens = 0
        self.calls: dict[int, _Call] = {}

    def event(self, seq: int, item: Reasoning | ToolCallDelta) -> Event | None:
        """The event for one piece at ``seq`` (``None`` for an empty piece), counted in the
        digests before it is appended, as the answer's tokens are."""
        if isinstance(item, Reasoning):
            if not item.text:
                return None
            self.reasoning.update(item.text.encode())
            self.reasoning_tokens += 1
            return self.encode.reasoning(seq, item.text)
        index = item.index
        call = self.calls.get(index)
        if call is None:
            if isinstance(index, bool) or not isinstance(index, int) or index < 0:
                raise SourceError("source_error", f"tool call index {index!r} is not valid")
            call_id = item.id or f"call_{self.stream}_{index}"
            call = self.calls[index] = _Call(call_id, item.name or "")
            call.digest.update(item.args.encode())
            return self.encode.tool_call(seq, index, item.args, call_id, call.name)
        if not item.args:
            return None
        call.digest.update(item.args.encode())
        return self.encode.tool_call(seq, index, item.args)

    def summary(self) -> dict[str, Any] | None:
        """``done.parts``: ``None`` if the stream had neither reasoning nor tool calls."""
        out: dict[str, Any] = {}
        if self.reasoning_tokens:
            out["reasoning"] = {
                "tokens": self.reasoning_tokens,
                "sha256": self.reasoning.hexdigest(),
            }
        if self.calls:
            out["tool_calls"] = [
                {"index": i, "id": c.id, "name": c.name, "sha256": c.digest.hexdigest()}
                for i, c in sorted(self.calls.items())
            ]
        return out or None


async def generate(
    stream: StreamRecord,
    source: TokenSource,
    req: GenerationRequest,
    store: LogStore,
    timeout_s: float,
) -> tuple[Event, DoneReason]:
    """Run ``source`` into ``stream``'s log; return the terminal event appended, and the
    finish reason (meaningful when the event is ``done``)."""
    digest = hashlib.sha256()
    token_event = PartEncoder(stream.id)
    parts: TypedParts | None = None  # made at the first typed piece (most streams have none)
    append = store.append
    seq = 0
    tokens = 0  # the answer's token events (``seq`` also counts the typed parts)
    final: Event
    reason: DoneReason | None = None
    try:
        async with asyncio.timeout(timeout_s or None):
            agen = source.stream(req)
            try:
                async for item in agen:
                    if isinstance(item, str):
                        if not item:
                            continue
                        digest.update(item.encode())
                        tokens += 1
                        await append(stream.id, token_event(seq, item))
                    elif isinstance(item, Finish):
                        reason = item.reason
                        break
                    else:
                        if parts is None:
                            parts = TypedParts(stream.id, token_event)
                        event = parts.event(seq, item)
                        if event is None:
                            continue
                        await append(stream.id, event)
                    seq += 1
                    stream.tokens = seq
                    if seq >= req.max_tokens:  # even if a source overruns
                        reason = "length"
                        break
            finally:
                await agen.aclose()  # type: ignore[attr-defined]
        if reason is None:
            reason = "tool_calls" if parts is not None and parts.calls else "stop"
        final = done_event(
            stream.id, seq, reason, tokens, digest.hexdigest(), parts.summary() if parts else None
        )
    except asyncio.CancelledError:
        if stream.cancel_reason is None:
            raise
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        seq = stream.tokens = await store.settle(stream.id)  # an interrupted append completed
        if stream.cancel_reason == "shutdown":
            final = error_event(stream.id, seq, "shutdown", "the server is shutting down")
        else:
            reason = "cancelled"
            final = done_event(
                stream.id,
                seq,
                reason,
                tokens,
                digest.hexdigest(),
                parts.summary() if parts else None,
            )
    except TimeoutError:
        seq = stream.tokens = await store.settle(stream.id)
        final = error_event(
            stream.id, seq, "generation_timeout", f"generation took longer than {timeout_s:g} s"
        )
    except StoreUnavailable:
        raise  # the log cannot take a final event either: the hub ends the stream here
    except SourceError as e:
        final = error_event(stream.id, seq, e.code, e.message)
    except Exception as e:
        log.exception("source %s failed on stream %s", source.name, stream.id)
        final = error_event(stream.id, seq, "source_error", f"{type(e).__name__}: {e}")
    await store.append(stream.id, final)
    return final, reason or "stop"
