"""What every Python peer serves, without I/O: the create body, the events' bytes, the framing.

The peers differ only in how they move these bytes (their stack's routes, streaming
responses, WebSockets and broadcast); what they send is tokenwire's, byte for byte:

- the text is :func:`server.sources.synthetic.synthetic_text` for the prompt and seed;
- each event is encoded once, with msgspec like ``server/events.py`` and in the same key
  order, stamped with ``time.time_ns()`` when it is made;
- the framing is tokenwire's (``server/framing/``): SSE ``id:``/``event:``/``data:``,
  an NDJSON line, a poll batch ``{"events":[...],"next":N,"done":B}``.

Pacing is a schedule (:meth:`Generation.due`) that each peer sleeps on with its own
clock (``asyncio.sleep``, ``gevent.sleep``). The synthetic source's ``jitter`` is accepted
and ignored: peers pace at exactly ``1 / tokens_per_s`` (jitter changes no byte and, on
average, no rate).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple

import msgspec

from server.sources.synthetic import synthetic_text

DEFAULT_MAX_TOKENS: Final = 256
MAX_TOKENS: Final = 4096
MAX_PROMPT_CHARS: Final = 8000
DEFAULT_TOKENS_PER_S: Final = 30.0
MAX_TOKENS_PER_S: Final = 5000.0
DEFAULT_TTFT_MS: Final = 200.0
MAX_TTFT_MS: Final = 10_000.0
DEFAULT_POLL_TIMEOUT_S: Final = 25.0
MAX_POLL_TIMEOUT_S: Final = 60.0
#: Events in one long-poll answer at most (tokenwire's batch limit).
MAX_POLL_BATCH: Final = 512
#: How long a finished stream stays readable (fan-out readers and polls after the end);
#: short, so a benchmark's finished streams do not pile up in the heap.
RETENTION_S: Final = 10.0
PARAMS: Final = frozenset({"ttft_ms", "tokens_per_s", "jitter", "seed"})
FIELDS: Final = frozenset({"prompt", "max_tokens", "source", "params"})

EventType = Literal["token", "done"]

_encode = msgspec.json.Encoder().encode


class BadRequest(Exception):
    """A request the peer refuses: ``400 {"error":{"code","message"}}``."""

    def __init__(self, message: str, code: str = "invalid_field") -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def body(self) -> bytes:
        return error_body(self.code, self.message)

    def ws_message(self) -> str:
        return ws_error(self.code, self.message)


def error_body(code: str, message: str) -> bytes:
    """tokenwire's error shape: ``{"error":{"code":"…","message":"…"}}``."""
    return _encode({"error": {"code": code, "message": message}})


def ws_error(code: str, message: str) -> str:
    """A WebSocket error message, as tokenwire sends it: ``{"type":"error","code","message"}``."""
    return _encode({"type": "error", "code": code, "message": message}).decode()


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateRequest:
    """A validated create body (``POST /api/streams``, ``/api/sse``, ``/api/chunked``, a
    WebSocket ``generate``)."""

    prompt: str
    max_tokens: int = DEFAULT_MAX_TOKENS
    seed: int = 0
    tokens_per_s: float = DEFAULT_TOKENS_PER_S
    ttft_ms: float = DEFAULT_TTFT_MS


def _number(params: dict[str, Any], name: str, default: float, maximum: float) -> float:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= maximum:
        raise BadRequest(f"params.{name}: must be a number from 0 to {maximum:g}")
    return float(value)


def parse_create(body: Any, ignore: Sequence[str] = ()) -> CreateRequest:
    """Check a decoded create body (``ignore``: extra keys allowed, e.g. the WebSocket
    ``op``); :class:`BadRequest` names the first field at fault."""
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object", code="bad_json")
    unknown = sorted(set(body) - FIELDS - set(ignore))
    if unknown:
        raise BadRequest(f"{unknown[0]}: unknown field (allowed: max_tokens, params, prompt)")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or len(prompt) > MAX_PROMPT_CHARS:
        raise BadRequest(f"prompt: must be a string of at most {MAX_PROMPT_CHARS} characters")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise BadRequest(f"max_tokens: must be an integer from 1 to {MAX_TOKENS}")
    if not 1 <= max_tokens <= MAX_TOKENS:
        raise BadRequest(f"max_tokens: must be an integer from 1 to {MAX_TOKENS}")
    if body.get("source") not in (None, "synthetic"):
        raise BadRequest("source: only 'synthetic' is served here", code="unknown_source")
    params = body.get("params")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise BadRequest("params: must be an object")
    bad = sorted(set(params) - PARAMS)
    if bad:
        raise BadRequest(f"params.{bad[0]}: unknown (allowed: {', '.join(sorted(PARAMS))})")
    seed = params.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise BadRequest("params.seed: must be an integer >= 0")
    _number(params, "jitter", 0.0, 1.0)
    return CreateRequest(
        prompt=prompt,
        max_tokens=max_tokens,
        seed=seed,
        tokens_per_s=_number(params, "tokens_per_s", DEFAULT_TOKENS_PER_S, MAX_TOKENS_PER_S),
        ttft_ms=_number(params, "ttft_ms", DEFAULT_TTFT_MS, MAX_TTFT_MS),
    )


def parse_json(raw: bytes | str) -> Any:
    """A request body or WebSocket message as JSON; :class:`BadRequest` if it is not."""
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError as e:
        raise BadRequest(f"not valid JSON: {e}", code="bad_json") from None


_POSITION = re.compile(r"-1|0|[1-9][0-9]{0,15}")
_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")


def parse_after(raw: str | None, field: str = "after") -> int:
    """``?after=SEQ`` or ``Last-Event-ID``: events with ``seq > SEQ``; absent: -1."""
    if raw is None or raw == "":
        return -1
    if not _POSITION.fullmatch(raw):
        raise BadRequest(f"{field}: must be an integer >= -1")
    return int(raw)


def parse_timeout(raw: str | None) -> float:
    """A long poll's ``?timeout=`` in seconds (0 … 60; absent: 25)."""
    if raw is None:
        return DEFAULT_POLL_TIMEOUT_S
    if not _NUMBER.fullmatch(raw) or not 0 <= float(raw) <= MAX_POLL_TIMEOUT_S:
        raise BadRequest(f"timeout: must be a number from 0 to {MAX_POLL_TIMEOUT_S:g}")
    return float(raw)


def new_stream_id() -> str:
    """A stream id like tokenwire's: 16 URL-safe characters."""
    return secrets.token_urlsafe(12)


class Event(NamedTuple):
    """One event of a stream: its seq, its type and its encoded JSON (no newline)."""

    seq: int
    type: EventType
    data: bytes

    @property
    def terminal(self) -> bool:
        return self.type != "token"


class Generation:
    """One stream's events, made one at a time: a sha256 update and one JSON encode (with
    ``time.time_ns()``) per token, then the ``done`` event."""

    __slots__ = ("_sha", "interval_s", "pieces", "stream_id", "ttft_s")

    def __init__(self, stream_id: str, request: CreateRequest) -> None:
        self.stream_id = stream_id
        self.pieces = synthetic_text(request.prompt, request.seed, request.max_tokens)
        self.ttft_s = request.ttft_ms / 1000.0
        self.interval_s = 1.0 / request.tokens_per_s if request.tokens_per_s else 0.0
        self._sha = hashlib.sha256()

    def __len__(self) -> int:
        return len(self.pieces)

    def due(self, seq: int, start: float) -> float:
        """When token ``seq`` is due on a clock that read ``start`` at the first token
        (an absolute schedule, so pacing does not drift with load)."""
        return start + seq * self.interval_s

    def token(self, seq: int) -> Event:
        text = self.pieces[seq]
        self._sha.update(text.encode())
        return Event(
            seq,
            "token",
            _encode(
                {
                    "stream": self.stream_id,
                    "seq": seq,
                    "type": "token",
                    "text": text,
                    "t": time.time_ns(),
                }
            ),
        )

    def done(self) -> Event:
        n = len(self.pieces)
        return Event(
            n,
            "done",
            _encode(
                {
                    "stream": self.stream_id,
                    "seq": n,
                    "type": "done",
                    "finish_reason": "length",
                    "tokens": n,
                    "sha256": self._sha.hexdigest(),
                    "t": time.time_ns(),
                }
            ),
        )


# ---------------------------------------------------------------------------------------
# Bytes around the events (tokenwire's server/framing/)

#: The SSE preamble tokenwire sends first: the client's reconnection delay.
SSE_RETRY: Final = b"retry: 1000\n\n"
SSE_CONTENT_TYPE: Final = "text/event-stream; charset=utf-8"
NDJSON_CONTENT_TYPE: Final = "application/x-ndjson; charset=utf-8"
#: What tokenwire sends beside an event stream (no caching, no proxy buffering).
STREAM_HEADERS: Final = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}


def created_message(stream_id: str) -> bytes:
    """``{"type":"created","stream":ID}``: the control message naming a new stream."""
    return b'{"type":"created","stream":"%s"}' % stream_id.encode()


def sse_frame(event: Event) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.seq, event.type.encode(), event.data)


def sse_created(stream_id: str) -> bytes:
    """The ``created`` control event (no ``id:``, so ``Last-Event-ID`` is untouched)."""
    return b"event: created\ndata: %s\n\n" % created_message(stream_id)


def ndjson_line(data: bytes) -> bytes:
    return data + b"\n"


def poll_body(events: Sequence[Event], after: int, done: bool) -> bytes:
    """``{"events":[...],"next":N,"done":B}``; ``next`` is the seq to pass as ``after``."""
    nxt = events[-1].seq if events else after
    return b'{"events":[%s],"next":%d,"done":%s}' % (
        b",".join(e.data for e in events),
        nxt,
        b"true" if done else b"false",
    )


def health_body(live_streams: int) -> bytes:
    return b'{"status":"ok","live_streams":%d}' % live_streams


def stream_links(stream_id: str) -> dict[str, str]:
    base = f"/api/streams/{stream_id}"
    return {
        "sse": f"{base}/sse",
        "ws": "/api/ws",
        "poll": f"{base}/poll",
        "chunked": f"{base}/chunked",
        "self": base,
    }


def created_body(stream_id: str) -> bytes:
    """``POST /api/streams``' 201 body: ``{"id":ID,"links":{...}}``."""
    return _encode({"id": stream_id, "links": stream_links(stream_id)})


def unknown_stream(stream_id: str) -> bytes:
    return error_body("unknown_stream", f"no stream {stream_id!r}")


class Counter:
    """Live generations, for ``/healthz``'s ``live_streams`` (one per peer process)."""

    __slots__ = ("live",)

    def __init__(self) -> None:
        self.live = 0

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        self.live += 1
        try:
            yield
        finally:
            self.live -= 1
