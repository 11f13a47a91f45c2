"""The generation: the one task per stream that runs its source and appends to its log.

It appends content events ``seq = 0, 1, ...`` (answer ``token``s and, when the request
asks for them, ``reasoning`` and ``tool_call`` pieces) and always exactly one terminal event
(``done`` or ``error``), whatever happens to the source: a normal end, ``max_tokens``, a
cancel (its reason set on the record first), the generation timeout, or a failure.

Two ways to drive a source, one set of rules (:class:`_Generation`: what each item
appends, the counts, the digests, when the stream ends and with what):

- **iterated**: the task iterates ``source.stream()`` and awaits each append (every source;
  the only way with a store whose appends await, such as Redis).
- **stepped**: a paced source that offers a :class:`~server.sources.base.Stepper`, and a
  store that appends synchronously (``LogStore.appends_now``, the memory store). The
  pacing clock's tick calls the stream's step itself: item, digest, encode, append, and
  the waiting readers' pushes write it, with no future, task wake-up or coroutine per
  token. The task awaits one future for the whole stream, which the step ends (the
  ``Finish``, ``max_tokens``, the generation timeout, or the item's error); cancelling the
  task cancels that future, and the next tick drops the stream.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections.abc import Callable
from typing import Any

from server.errors import SourceError, StoreUnavailable
from server.events import DoneReason, Event, PartEncoder, done_event, error_event
from server.sources.base import (
    Finish,
    GenerationRequest,
    PaceClock,
    Reasoning,
    SourceItem,
    Stepper,
    TokenSource,
    ToolCallDelta,
    pace_clock,
)
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


_EMPTY_SHA256 = hashlib.sha256().hexdigest()


class _Generation:
    """A stream's count, digests and typed parts as items are appended: the one place
    each rule of the generation is stated, whichever way the source is driven."""

    __slots__ = ("digest", "encoder", "max_tokens", "parts", "reason", "seq", "stream", "tokens")

    def __init__(self, stream: StreamRecord, max_tokens: int) -> None:
        self.stream = stream
        self.max_tokens = max_tokens
        # Made at the first event (an idle stream, waiting for its first token, holds
        # neither: a sha256 context is about 250 B of memory, the encoder 140 B).
        self.digest: Any = None  # hashlib's sha256 (its type is private)
        self.encoder: PartEncoder | None = None
        self.parts: TypedParts | None = None  # made at the first typed piece (most have none)
        self.seq = 0
        self.tokens = 0  # the answer's token events (``seq`` also counts the typed parts)
        self.reason: DoneReason | None = None

    def event(self, item: SourceItem) -> Event | None:
        """The event to append for ``item``, counted in the digests; ``None`` for an empty
        piece, and for a ``Finish`` (then :attr:`reason` is set: the stream ends)."""
        encode = self.encoder
        if encode is None:
            encode = self.encoder = PartEncoder(self.stream.id)
        if isinstance(item, str):
            if not item:
                return None
            digest = self.digest
            if digest is None:
                digest = self.digest = hashlib.sha256()
            digest.update(item.encode())
            self.tokens += 1
            return encode(self.seq, item)
        if isinstance(item, Finish):
            self.reason = item.reason
            return None
        if self.parts is None:
            self.parts = TypedParts(self.stream.id, encode)
        return self.parts.event(self.seq, item)

    def appended(self) -> bool:
        """Count the event just appended; ``True`` if that reached ``max_tokens`` (even if
        a source overruns): the stream ends ``length``."""
        self.seq += 1
        self.stream.tokens = self.seq
        if self.seq >= self.max_tokens:
            self.reason = "length"
            return True
        return False

    def done(self, reason: DoneReason) -> Event:
        parts = self.parts
        return done_event(
            self.stream.id,
            self.seq,
            reason,
            self.tokens,
            _EMPTY_SHA256 if self.digest is None else self.digest.hexdigest(),
            parts.summary() if parts else None,
        )

    def finished(self) -> Event:
        """The ``done`` of a stream that ended by itself."""
        if self.reason is None:
            self.reason = "tool_calls" if self.parts is not None and self.parts.calls else "stop"
        return self.done(self.reason)


class _Stepped:
    """A paced stream stepped by the pacing clock (see the module): each tick it is due in
    calls :meth:`step`, which appends its items synchronously."""

    __slots__ = ("append", "clock", "expires", "fut", "gen", "steps", "stream_id")

    def __init__(
        self,
        gen: _Generation,
        steps: Stepper,
        append: Callable[[str, Event], None],
        clock: PaceClock,
        expires: float,
    ) -> None:
        self.gen = gen
        self.steps = steps
        self.append = append
        self.clock = clock
        self.expires = expires  # loop time of the generation timeout (``inf``: none)
        self.stream_id = gen.stream.id
        self.fut: asyncio.Future[None] = clock.loop.create_future()

    def run(self) -> asyncio.Future[None]:
        """Start stepping (the first item here and now if it is due); the future is done
        when the stream ended by itself, or holds the error that ended it."""
        # (a first item due now, ``ttft_ms`` 0, is stepped here: the clock would hold it to
        # the next tick, up to a millisecond on the first token)
        if self.steps.due <= self.clock.loop.time() or not self._schedule():
            self.step()
        return self.fut

    def _schedule(self) -> bool:
        """Ask the clock for the next step (or the timeout); ``False`` if it is due now."""
        if self.expires <= self.steps.due:
            return self.clock.call(self.expires, self.expire)
        return self.clock.call(self.steps.due, self.step)

    def expire(self) -> None:
        if not self.fut.done():
            self.fut.set_exception(TimeoutError())

    def step(self) -> None:
        fut = self.fut
        if fut.done():  # cancelled: the task ends the stream
            return
        gen, steps = self.gen, self.steps
        try:
            if self.expires <= steps.due:
                fut.set_exception(TimeoutError())
                return
            due = steps.due
            while True:
                event = gen.event(steps.next())
                if event is not None:
                    self.append(self.stream_id, event)
                    if gen.appended():
                        break
                elif gen.reason is not None:
                    break
                if steps.due > due:  # the next item is due later: wait for it
                    if not self._schedule():
                        # Behind: still let every other stream run before the next item.
                        self.clock.loop.call_soon(self.step)
                    return
        except Exception as e:  # the task's handlers end the stream, as for ``stream()``
            fut.set_exception(e)
            return
        fut.set_result(None)


async def generate(
    stream: StreamRecord,
    source: TokenSource,
    req: GenerationRequest,
    store: LogStore,
    timeout_s: float,
) -> tuple[Event, DoneReason]:
    """Run ``source`` into ``stream``'s log; return the terminal event appended, and the
    finish reason (meaningful when the event is ``done``)."""
    gen = _Generation(stream, req.max_tokens)
    final: Event
    reason: DoneReason | None = None
    try:
        clock = pace_clock() if store.appends_now else None
        now = clock.loop.time() if clock is not None else 0.0
        steps = source.stepper(req, now) if clock is not None else None
        if clock is not None and steps is not None:
            expires = now + timeout_s if timeout_s else math.inf
            await _Stepped(gen, steps, store.append_now, clock, expires).run()
        else:
            append = store.append
            async with asyncio.timeout(timeout_s or None):
                agen = source.stream(req)
                try:
                    async for item in agen:
                        event = gen.event(item)
                        if event is not None:
                            await append(stream.id, event)
                            if gen.appended():
                                break
                        elif gen.reason is not None:
                            break
                finally:
                    await agen.aclose()  # type: ignore[attr-defined]
        final = gen.finished()
        reason = gen.reason
    except asyncio.CancelledError:
        if stream.cancel_reason is None:
            raise
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        gen.seq = stream.tokens = await store.settle(stream.id)  # an interrupted append completed
        if stream.cancel_reason == "shutdown":
            final = error_event(stream.id, gen.seq, "shutdown", "the server is shutting down")
        else:
            reason = "cancelled"
            final = gen.done(reason)
    except TimeoutError:
        gen.seq = stream.tokens = await store.settle(stream.id)
        final = error_event(
            stream.id, gen.seq, "generation_timeout", f"generation took longer than {timeout_s:g} s"
        )
    except StoreUnavailable:
        raise  # the log cannot take a final event either: the hub ends the stream here
    except SourceError as e:
        final = error_event(stream.id, gen.seq, e.code, e.message)
    except Exception as e:
        log.exception("source %s failed on stream %s", source.name, stream.id)
        final = error_event(stream.id, gen.seq, "source_error", f"{type(e).__name__}: {e}")
    await store.append(stream.id, final)
    return final, reason or "stop"
