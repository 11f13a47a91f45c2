"""Is this stream whole? Sans-I/O checks of what a reader received (no socket, no loop).

:func:`place` (is this ``seq`` the next, one already had, or past a gap) and
:class:`PartsDigest` (does what arrived match the ``done`` event: the answer text's
``tokens`` and ``sha256``, and the typed parts' ``parts``) state both rules once: the
clients' ``Stream`` (which drops a repeat after a resume) and the bench's strict
:class:`StreamCheck` use them, and ``clients/js/check.js`` mirrors them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any, Literal

from wire import EVENT_TYPES, TERMINAL

Report = Callable[[str, float, int], None]
"""``report(metric, milliseconds, nbytes)``."""

FINISHED = ("length", "stop", "tool_calls")
"""``finish_reason`` values of an answer that ended normally."""

CONTENT = tuple(t for t in EVENT_TYPES if t not in TERMINAL)
"""The content event types, one ``seq`` space: ``token``, ``reasoning``, ``tool_call``."""


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


class _CallDigest:
    __slots__ = ("digest", "id", "name")

    def __init__(self, call_id: Any, name: Any) -> None:
        self.id = call_id
        self.name = name
        self.digest = TextDigest()


Mismatch = tuple[str, Any, Any]
"""``(field, the done event's value, the value of what arrived)``; ``field`` is a path into
the ``done`` event: ``sha256``, ``tokens``, ``parts.reasoning.sha256``,
``parts.tool_calls[0].id``, ..."""


class PartsDigest:
    """Everything a stream's content events carry, in the form ``done`` reports it, fed
    event by event: the answer text (``tokens``, ``sha256``) and the typed parts
    (``parts``: the reasoning's count and digest, each tool call's index, id, name and
    argument digest). :meth:`mismatch` compares them with the ``done`` event."""

    def __init__(self) -> None:
        #: The answer text's digest (``done.sha256``).
        self.text = TextDigest()
        #: ``token`` events (``done.tokens``).
        self.tokens = 0
        self.reasoning = TextDigest()
        self.reasoning_tokens = 0
        self._calls: dict[int, _CallDigest] = {}

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the answer text so far."""
        return self.text.sha256

    def token(self, text: str) -> None:
        self.text.update(text)
        self.tokens += 1

    def update(self, ev: Mapping[str, Any]) -> None:
        """Count one content event (``token``, ``reasoning`` or ``tool_call``)."""
        kind = ev.get("type")
        if kind == "token":
            self.token(ev["text"])
        elif kind == "reasoning":
            self.reasoning.update(ev["text"])
            self.reasoning_tokens += 1
        elif kind == "tool_call":
            index = ev["index"]
            call = self._calls.get(index)
            if call is None:  # the call's first event names it
                call = self._calls[index] = _CallDigest(ev.get("id"), ev.get("name"))
            call.digest.update(ev["args"])

    def parts(self) -> dict[str, Any] | None:
        """``done.parts`` as what arrived makes it (``None``: neither reasoning nor calls)."""
        out: dict[str, Any] = {}
        if self.reasoning_tokens:
            out["reasoning"] = {"tokens": self.reasoning_tokens, "sha256": self.reasoning.sha256}
        if self._calls:
            out["tool_calls"] = [
                {"index": i, "id": c.id, "name": c.name, "sha256": c.digest.sha256}
                for i, c in sorted(self._calls.items())
            ]
        return out or None

    def mismatch(self, done: Mapping[str, Any]) -> Mismatch | None:
        """The first field where ``done`` differs from what arrived (``sha256`` first, then
        ``tokens``, then ``parts``), or ``None`` when everything matches."""
        server = _flat("", {k: done.get(k) for k in ("sha256", "tokens", "parts")})
        received = _flat("", {"sha256": self.sha256, "tokens": self.tokens, "parts": self.parts()})
        for key in {**server, **received}:
            if server.get(key) != received.get(key):
                return key, server.get(key), received.get(key)
        return None


def _flat(prefix: str, value: Any) -> dict[str, Any]:
    """``value`` as ``{path: leaf}`` (``a.b``, ``a[0].b``), in document order."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    if isinstance(value, list):
        out = {}
        for i, v in enumerate(value):
            out.update(_flat(f"{prefix}[{i}]", v))
        return out
    return {prefix: value}


def describe(mismatch: Mismatch) -> str:
    """One line for a mismatch, the same in both clients (values as JSON)."""
    key, server, received = mismatch
    if key == "sha256":
        return f"sha256 mismatch: server {server}, received text {received}"
    as_json = json.dumps(server, ensure_ascii=False), json.dumps(received, ensure_ascii=False)
    return f"done.{key} mismatch: server {as_json[0]}, received {as_json[1]}"


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

    ``tokens`` counts the content events (``token``, and the typed parts ``reasoning`` and
    ``tool_call``, which share the ``seq`` space and are measured as tokens too).

    A stream is whole when every ``seq`` arrived once and in order, the ``done`` event's
    ``tokens``, ``sha256`` and ``parts`` match what arrived, and nothing follows it. Anything else
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
        self._parts = PartsDigest()
        self._pending = 0
        self._last_ns = 0

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the answer text received so far."""
        return self._parts.sha256

    def received(self, nbytes: int) -> None:
        """Count a block of bytes as it arrived (body, frame or poll response)."""
        self.bytes += nbytes
        self._pending += nbytes

    def event(self, ev: Any, recv_ns: int) -> bool:
        """Check one tokenwire event (or control message); True once the stream ended."""
        if self.finished:
            raise IncompleteStream(f"a message after the terminal event: {str(ev)[:200]}")
        typ = ev.get("type") if isinstance(ev, dict) else None
        if typ in CONTENT:
            if ev.get("stream") != self.stream_id:
                raise IncompleteStream(f"event of stream {ev.get('stream')} in {self.stream_id}")
            seq = ev.get("seq")
            where = place(seq, self.tokens - 1) if isinstance(seq, int) else "repeat"
            if where != "next":
                what = "a gap" if where == "gap" else "out of order"
                raise IncompleteStream(f"{what}: seq {seq} where {self.tokens} was expected")
            self._parts.update(ev)
            self._token(recv_ns, ev.get("t"))
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
                self._parts.token(content)
                self._token(recv_ns, None)
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
        if ev.get("seq") != self.tokens or ev.get("tokens") != self._parts.tokens:
            raise IncompleteStream(
                f"done says {ev.get('tokens')} tokens at seq {ev.get('seq')}, {self.tokens} arrived"
            )
        mismatch = self._parts.mismatch(ev)
        if mismatch is not None and mismatch[0] == "sha256":
            raise IncompleteStream("sha256 of the received text differs from the done event's")
        if mismatch is not None:
            raise IncompleteStream(describe(mismatch))
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

    def _token(self, recv_ns: int, t: int | None) -> None:
        nbytes, self._pending = self._pending, 0
        if self.tokens == 0:
            self.report("ttft", (recv_ns - self.sent_ns) / 1e6, nbytes)
        else:
            self.report("itl", (recv_ns - self._last_ns) / 1e6, nbytes)
        if t is not None:
            self.report("transport_latency", (recv_ns - t) / 1e6, 0)
        self._last_ns = recv_ns
        self.tokens += 1
