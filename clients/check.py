"""Is this stream whole? Sans-I/O checks of what a reader received (no socket, no loop).

:func:`place` (is this ``seq`` the next, one already had, or past a gap) and
:class:`TextDigest` (does the text match ``done.sha256``) state both rules once: the
clients' ``Stream`` (which drops a repeat after a resume) and the bench's strict
:class:`StreamCheck` use them, and ``clients/js/check.js`` mirrors them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any, Literal

Report = Callable[[str, float, int], None]
"""``report(metric, milliseconds, nbytes)``."""

FINISHED = ("length", "stop")
"""``finish_reason`` values of an answer that ended normally."""


Place = Literal["next", "repeat", "gap"]


def place(seq: int, last_seq: int) -> Place:
    """Where ``seq`` stands after ``last_seq`` (-1: none yet): the ``next`` one, a ``repeat``
    of one already had (a resume overlapped, or out of order), or past a ``gap``."""
    if seq == last_seq + 1:
        return "next"
    return "repeat" if seq <= last_seq else "gap"


class TextDigest:
    """The SHA-256 of a stream's token text, fed token by token, for ``done.sha256``."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()

    def update(self, text: str) -> None:
        self._sha.update(text.encode())

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the UTF-8 text so far."""
        return self._sha.hexdigest()

    def matches(self, done: Mapping[str, Any]) -> bool:
        """True if the ``done`` event's ``sha256`` is that of the text so far."""
        return bool(done.get("sha256") == self.sha256)


class IncompleteStream(Exception):
    """A stream that did not arrive whole: a gap, a wrong digest, an error, a cut."""


class StreamCheck:
    """One stream, checked event by event (``event``) or chunk by chunk (``openai_chunk``)
    the way a load-test client reads it: the Locust users (``bench/locustfile.py``) hand it
    each received block and each decoded event.

    It reports what it measured through ``report(name, milliseconds, nbytes)``: ``ttft``,
    from the request that asked for the stream to its first token (``nbytes``: everything
    received until then, the ``created`` message included); ``itl``, each gap between two
    tokens as received (0 within one read; ``nbytes``: the bytes since the previous token,
    so the bytes per token sum exactly); ``transport_latency``, receive time minus the
    event's ``t`` (the server's ``time.time_ns()`` when it logged the token; ``/v1`` chunks
    carry none).

    A stream is whole when every ``seq`` arrived once and in order, the ``done`` event's
    ``tokens`` and ``sha256`` match what arrived, and nothing follows it. Anything else
    raises :class:`IncompleteStream`, which the caller reports as a failure.

    ``sent_ns`` is ``time.time_ns()`` when the request that starts the stream was sent;
    ``max_tokens``, when given, is the count a ``length`` finish must have reached;
    ``stream_id``, when known up front (a subscriber), is checked on every event.
    """

    def __init__(
        self,
        report: Report,
        *,
        sent_ns: int,
        max_tokens: int | None = None,
        stream_id: str | None = None,
    ) -> None:
        self.report = report
        self.sent_ns = sent_ns
        self.max_tokens = max_tokens
        self.stream_id = stream_id
        self.tokens = 0
        self.bytes = 0
        self.finished = False
        self.finish_reason: str | None = None
        self.usage: Mapping[str, Any] | None = None
        self._digest = TextDigest()
        self._pending = 0
        self._last_ns = 0

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the text received so far."""
        return self._digest.sha256

    def received(self, nbytes: int) -> None:
        """Count a block of bytes as it arrived (body, frame or poll response)."""
        self.bytes += nbytes
        self._pending += nbytes

    def event(self, ev: Any, recv_ns: int) -> bool:
        """Check one tokenwire event (or control message); True once the stream ended."""
        if self.finished:
            raise IncompleteStream(f"a message after the terminal event: {str(ev)[:200]}")
        typ = ev.get("type") if isinstance(ev, dict) else None
        if typ == "token":
            if ev.get("stream") != self.stream_id:
                raise IncompleteStream(f"event of stream {ev.get('stream')} in {self.stream_id}")
            seq = ev.get("seq")
            where = place(seq, self.tokens - 1) if isinstance(seq, int) else "repeat"
            if where != "next":
                what = "a gap" if where == "gap" else "out of order"
                raise IncompleteStream(f"{what}: seq {seq} where {self.tokens} was expected")
            self._token(ev["text"], recv_ns, ev.get("t"))
            return False
        if typ == "created" and self.stream_id is None and self.tokens == 0:
            self.stream_id = ev.get("stream")
            return False
        if typ == "done":
            if ev.get("stream") != self.stream_id:
                raise IncompleteStream(f"done of stream {ev.get('stream')} in {self.stream_id}")
            self.done(ev)
            return True
        if typ == "error":
            raise IncompleteStream(f"error event {ev.get('code')}: {ev.get('message')}")
        if typ == "end":  # WebSocket: a subscribe to a finished stream with nothing left
            raise IncompleteStream(f"end of stream {ev.get('stream')} without a done event")
        raise IncompleteStream(f"unexpected message: {str(ev)[:200]}")

    def openai_chunk(self, chunk: Any, recv_ns: int) -> None:
        """Check one ``chat.completion.chunk`` of ``/v1`` (or its in-band error)."""
        if self.finished:
            raise IncompleteStream(f"a chunk after [DONE]: {str(chunk)[:200]}")
        if not isinstance(chunk, dict):
            raise IncompleteStream(f"not a JSON object: {str(chunk)[:200]}")
        if "error" in chunk:
            err = chunk["error"]
            raise IncompleteStream(f"in-band error {err.get('code')}: {err.get('message')}")
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            content = choice.get("delta", {}).get("content")
            if content:
                self._token(content, recv_ns, None)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]

    def openai_done(self) -> None:
        """``data: [DONE]``: the answer must have a finish reason and, when usage was
        sent, as many completion tokens as content chunks arrived."""
        if self.finished:
            raise IncompleteStream("a second [DONE]")
        self.finished = True
        if self.finish_reason not in FINISHED:
            raise IncompleteStream(f"[DONE] after finish_reason {self.finish_reason!r}")
        if self.usage is not None and self.usage.get("completion_tokens") != self.tokens:
            raise IncompleteStream(
                f"usage says {self.usage.get('completion_tokens')} completion tokens, "
                f"{self.tokens} content chunks arrived"
            )
        self._check_count(self.finish_reason)

    def done(self, ev: Mapping[str, Any]) -> None:
        """Compare a ``done`` event with what arrived (for ``/v1``: the stream's own
        ``done``, fetched afterwards, since OpenAI's chunks carry no digest)."""
        self.finished = True
        if ev.get("seq") != self.tokens or ev.get("tokens") != self.tokens:
            raise IncompleteStream(
                f"done says {ev.get('tokens')} tokens at seq {ev.get('seq')}, {self.tokens} arrived"
            )
        if not self._digest.matches(ev):
            raise IncompleteStream("sha256 of the received text differs from the done event's")
        reason = ev.get("finish_reason")
        if reason not in FINISHED:
            raise IncompleteStream(f"stream finished {reason!r} after {self.tokens} tokens")
        self._check_count(reason)

    def end(self) -> None:
        """The response or socket ended: it must have ended with the terminal event."""
        if not self.finished:
            raise IncompleteStream(f"ended without a done event after {self.tokens} tokens")

    def _check_count(self, reason: str | None) -> None:
        if reason == "length" and self.max_tokens is not None and self.tokens != self.max_tokens:
            raise IncompleteStream(f"length finish after {self.tokens} of {self.max_tokens}")

    def _token(self, text: str, recv_ns: int, t: int | None) -> None:
        self._digest.update(text)
        nbytes, self._pending = self._pending, 0
        if self.tokens == 0:
            self.report("ttft", (recv_ns - self.sent_ns) / 1e6, nbytes)
        else:
            self.report("itl", (recv_ns - self._last_ns) / 1e6, nbytes)
        if t is not None:
            self.report("transport_latency", (recv_ns - t) / 1e6, 0)
        self._last_ns = recv_ns
        self.tokens += 1
