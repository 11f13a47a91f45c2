"""The generation: the one task per stream that runs its source and appends to its log.

It appends tokens ``seq = 0, 1, ...`` and always exactly one terminal event (``done`` or
``error``), whatever happens to the source: a normal end, ``max_tokens``, a cancel (its
reason set on the record first), the generation timeout, or a failure.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging

from server.errors import SourceError, StoreUnavailable
from server.events import DoneReason, Event, TokenEncoder, done_event, error_event
from server.sources.base import Finish, GenerationRequest, TokenSource
from server.store.base import LogStore
from server.streams.record import StreamRecord

log = logging.getLogger("tokenwire.hub")


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
    token_event = TokenEncoder(stream.id)
    append = store.append
    seq = 0
    final: Event
    reason: DoneReason = "stop"
    try:
        async with asyncio.timeout(timeout_s or None):
            agen = source.stream(req)
            try:
                async for item in agen:
                    if isinstance(item, Finish):
                        reason = item.reason
                        break
                    if not item:
                        continue
                    digest.update(item.encode())
                    await append(stream.id, token_event(seq, item))
                    seq += 1
                    stream.tokens = seq
                    if seq >= req.max_tokens:  # even if a source overruns
                        reason = "length"
                        break
            finally:
                await agen.aclose()  # type: ignore[attr-defined]
        final = done_event(stream.id, seq, reason, seq, digest.hexdigest())
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
            final = done_event(stream.id, seq, reason, seq, digest.hexdigest())
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
    return final, reason
