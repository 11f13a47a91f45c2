"""A local stand-in for the OpenAI Chat Completions API, for tests.

It is a real aiohttp server on a real loopback port, so the official ``openai`` SDK talks
to it over HTTP exactly as it would talk to the cloud. It speaks the streaming format the
way OpenAI does::

    data: {"object": "chat.completion.chunk", ..., "delta": {"role": "assistant", "content": ""}}
    data: {... "delta": {"content": "Hel"} ...}
    data: {... "delta": {}, "finish_reason": "stop"}
    data: {... "choices": [], "usage": {...}}        (only with stream_options.include_usage)
    data: [DONE]

(each event is one ``data:`` line followed by a blank line, no ``id:``/``retry:`` fields).

What it does is scripted with a :class:`Behavior`: the pieces to send, a delay between
them, the finish reason, an HTTP error answered before streaming, an in-band error event,
a clean close or an abrupt connection drop mid-stream, a hold that waits for
:meth:`OpenAIStandIn.release` (or the client's disconnect). Every request is recorded in a
:class:`RequestRecord`: its body, its headers, how many chunks were written, and whether
and when the client disconnected, so a test can check that the upstream saw a cancelled
stream go away and stopped producing.

Usage::

    async with OpenAIStandIn() as standin:
        standin.behavior = Behavior(pieces=["Hello", " world"])
        client = openai.AsyncOpenAI(base_url=standin.url, api_key="sk-test")
        ...
        record = standin.requests[-1]

The server runs with ``handler_cancellation=True``: when a client drops its connection the
handler is cancelled at its current ``await`` and the record is marked disconnected at once.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web

__all__ = ["Behavior", "OpenAIStandIn", "RequestRecord", "default_error", "tool_call_deltas"]

_DEFAULT_ERRORS: dict[int, dict[str, Any]] = {
    400: {
        "message": "Invalid request.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    },
    401: {
        "message": "Incorrect API key provided: sk-wrong. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    },
    404: {
        "message": "The model `no-such-model` does not exist or you do not have access to it.",
        "type": "invalid_request_error",
        "param": None,
        "code": "model_not_found",
    },
    429: {
        "message": "Rate limit reached for gpt-test in organization org-test on requests per "
        "min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s.",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    },
    500: {
        "message": "The server had an error while processing your request. Sorry about that!",
        "type": "server_error",
        "param": None,
        "code": None,
    },
    503: {
        "message": "The engine is currently overloaded, please try again later.",
        "type": "server_error",
        "param": None,
        "code": None,
    },
}

#: The in-band error sent by ``Behavior(error_after=N)`` unless ``Behavior.error`` says otherwise.
DEFAULT_INBAND_ERROR: dict[str, Any] = {
    "message": "The server had an error while processing your request. Sorry about that!",
    "type": "server_error",
    "param": None,
    "code": None,
}


def default_error(status: int) -> dict[str, Any]:
    """The ``error`` object OpenAI answers with for an HTTP ``status`` (a copy)."""
    err = _DEFAULT_ERRORS.get(status)
    if err is None:
        err = {"message": f"HTTP {status}", "type": "server_error", "param": None, "code": None}
    return dict(err)


@dataclass(frozen=True, kw_only=True)
class Behavior:
    """How the stand-in answers one ``POST /v1/chat/completions``.

    Positions ``N`` in ``*_after`` fields count content pieces: ``error_after=2`` sends the
    role chunk and pieces 0 and 1, then the error. ``N == len(pieces)`` means after the last
    piece, before the finish chunk.
    """

    #: Content of each delta after the role chunk. ``""`` sends ``{"content": ""}``,
    #: ``None`` sends an empty delta ``{}``: both carry no text. A mapping is sent as the
    #: delta itself, to script typed parts: ``{"reasoning_content": "Hm"}`` (as vLLM and
    #: DeepSeek send reasoning), ``{"tool_calls": [{"index": 0, "id": "call_1", "type":
    #: "function", "function": {"name": "f", "arguments": ""}}]}``, then ``{"tool_calls":
    #: [{"index": 0, "function": {"arguments": "{\"a"}}]}`` (see :func:`tool_call_deltas`).
    pieces: Sequence[str | Mapping[str, Any] | None] = ("Hello", ",", " world", "!")
    #: Seconds slept before each piece (0: no sleep, but the handler still yields).
    delay: float = 0.0
    #: ``finish_reason`` of the final chunk; ``None`` sends no finish chunk at all.
    finish_reason: str | None = "stop"
    #: Whether ``data: [DONE]`` ends the stream.
    send_done: bool = True
    #: Answer this HTTP status with an OpenAI error body instead of streaming.
    status: int | None = None
    #: The ``error`` object for ``status`` or ``error_after`` (default: OpenAI's wording).
    error: Mapping[str, Any] | None = None
    #: Raw (non-JSON) body of the ``status`` answer instead of an error object, e.g. the
    #: HTML page of a proxy's 502; sent as ``text/html``.
    error_text: str | None = None
    #: Extra headers of the HTTP error answer (e.g. ``{"retry-after": "20"}``).
    error_headers: Mapping[str, str] = field(default_factory=dict)
    #: After this many pieces send ``data: {"error": {...}}`` and end the response.
    error_after: int | None = None
    #: After this many pieces end the response cleanly, without finish chunk or ``[DONE]``.
    close_after: int | None = None
    #: After this many pieces drop the TCP connection (no terminating chunk).
    abort_after: int | None = None
    #: After this many pieces wait until :meth:`OpenAIStandIn.release` or a disconnect.
    hold_after: int | None = None
    #: Send a usage chunk with empty ``choices`` before ``[DONE]``: ``None`` follows the
    #: request's ``stream_options.include_usage`` like OpenAI, ``True``/``False`` force it.
    usage: bool | None = None
    #: Wait (before sending any header) until :meth:`OpenAIStandIn.release` or a disconnect.
    stall_before_headers: bool = False


@dataclass(eq=False)
class RequestRecord:
    """What the stand-in saw and did for one request."""

    method: str
    path: str
    headers: dict[str, str] = field(repr=False)
    #: The decoded JSON body (``None`` for a body-less request or invalid JSON).
    body: Any
    behavior: Behavior | None = None
    #: HTTP status answered (200 for a stream).
    status: int | None = None
    #: Every ``data:`` JSON event written (role, content, finish, usage, error), not ``[DONE]``.
    chunks_written: int = 0
    #: Content pieces written (including empty ones).
    pieces_written: int = 0
    #: ``data: [DONE]`` was written.
    done_sent: bool = False
    #: The stand-in dropped the connection itself (``Behavior.abort_after``).
    aborted: bool = False
    #: The client went away before the handler finished.
    disconnected: bool = False
    #: ``chunks_written`` when the disconnect was noticed.
    chunks_at_disconnect: int | None = None
    #: ``time.monotonic()`` when the disconnect was noticed.
    disconnected_at: float | None = None
    #: Set once the handler has returned (nothing more can be written after that).
    ended: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    #: Set when the disconnect is noticed.
    disconnect_seen: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    #: Set when the first content piece has been written.
    first_piece_sent: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def authorization(self) -> str | None:
        """The ``Authorization`` header as sent."""
        return self.headers.get("Authorization")

    def mark_disconnected(self) -> None:
        """Record that the client went away (idempotent)."""
        if not self.disconnected:
            self.disconnected = True
            self.chunks_at_disconnect = self.chunks_written
            self.disconnected_at = time.monotonic()
            self.disconnect_seen.set()


class OpenAIStandIn:
    """An OpenAI-compatible HTTP server on ``127.0.0.1`` (random port) for tests.

    ``url`` is the SDK's ``base_url`` (ends in ``/v1``). ``behavior`` is the default script;
    :meth:`enqueue` adds one-shot scripts used (first in, first out) by the next requests.
    When ``api_key`` is set, any other bearer token gets OpenAI's 401.
    """

    def __init__(
        self,
        *,
        behavior: Behavior | None = None,
        api_key: str | None = None,
        models: Sequence[str] = ("gpt-test",),
    ) -> None:
        self.behavior = behavior or Behavior()
        self.api_key = api_key
        self.models = tuple(models)
        #: Every request, in arrival order.
        self.requests: list[RequestRecord] = []
        self._queue: deque[Behavior] = deque()
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._ids = itertools.count(1)
        self._url: str | None = None
        self._request_seen = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL for the SDK, e.g. ``http://127.0.0.1:41234/v1``."""
        if self._url is None:
            raise RuntimeError("OpenAIStandIn is not started")
        return self._url

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT`` without the ``/v1`` prefix."""
        return self.url.removesuffix("/v1")

    def make_app(self) -> web.Application:
        """The aiohttp application (also usable with pytest-aiohttp's ``aiohttp_server``)."""
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._models)
        return app

    async def start(self) -> None:
        """Listen on a free loopback port."""
        runner = web.AppRunner(
            self.make_app(), handler_cancellation=True, shutdown_timeout=1.0, access_log=None
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self._url = f"http://{host}:{port}/v1"

    async def close(self) -> None:
        """Stop listening, end held handlers and close open connections."""
        self._release.set()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> OpenAIStandIn:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- scripting ---------------------------------------------------------------------

    def enqueue(self, *behaviors: Behavior) -> None:
        """Use these scripts for the next requests, one each, before ``behavior`` again."""
        self._queue.extend(behaviors)

    def configure(self, **changes: Any) -> Behavior:
        """Change fields of the default ``behavior``; return the new one."""
        self.behavior = replace(self.behavior, **changes)
        return self.behavior

    def release(self) -> None:
        """Let every held (``hold_after`` / ``stall_before_headers``) handler go on."""
        self._release.set()

    async def wait_request(self, count: int = 1) -> RequestRecord:
        """Wait until ``count`` requests have arrived; return the ``count``-th one."""
        while len(self.requests) < count:
            self._request_seen.clear()
            await self._request_seen.wait()
        return self.requests[count - 1]

    # -- handlers ----------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        data = [
            {"id": model, "object": "model", "created": 1700000000, "owned_by": "tokenwire"}
            for model in self.models
        ]
        return web.json_response({"object": "list", "data": data})

    def _record(self, request: web.Request, body: Any) -> RequestRecord:
        record = RequestRecord(
            method=request.method, path=request.path, headers=dict(request.headers), body=body
        )
        self.requests.append(record)
        self._request_seen.set()
        return record

    @staticmethod
    def _error_response(
        status: int, error: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> web.Response:
        return web.json_response({"error": dict(error)}, status=status, headers=headers)

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        record = self._record(request, body)
        try:
            return await self._answer(request, record)
        except (asyncio.CancelledError, ConnectionResetError):
            # handler_cancellation: the client went away while we awaited something;
            # ConnectionResetError: a write found the transport closed.
            if not record.aborted:
                record.mark_disconnected()
            raise
        finally:
            record.ended.set()

    async def _answer(self, request: web.Request, record: RequestRecord) -> web.StreamResponse:
        if self.api_key is not None:
            if request.headers.get("Authorization") != f"Bearer {self.api_key}":
                record.status = 401
                return self._error_response(401, default_error(401))
        body = record.body
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            record.status = 400
            err = default_error(400)
            err["message"] = "We could not parse the JSON body of your request."
            return self._error_response(400, err)

        behavior = self._queue.popleft() if self._queue else self.behavior
        record.behavior = behavior
        if behavior.stall_before_headers:
            await self._release.wait()
        if behavior.status is not None:
            record.status = behavior.status
            if behavior.error_text is not None:
                return web.Response(
                    status=behavior.status,
                    text=behavior.error_text,
                    content_type="text/html",
                    headers=behavior.error_headers,
                )
            error = behavior.error if behavior.error is not None else default_error(behavior.status)
            return self._error_response(behavior.status, error, behavior.error_headers)

        model = body.get("model") or self.models[0]
        if not body.get("stream"):
            record.status = 200
            return web.json_response(self._completion(behavior, model))

        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        send_usage = include_usage if behavior.usage is None else behavior.usage
        stream = _ChunkWriter(
            record=record,
            model=str(model),
            completion_id=f"chatcmpl-standin{next(self._ids):06d}",
            include_usage=include_usage,
        )
        resp = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "X-Request-Id": f"req_standin{len(self.requests):06d}",
            },
        )
        record.status = 200
        await resp.prepare(request)
        await stream.send(resp, {"role": "assistant", "content": "", "refusal": None})

        pieces = list(behavior.pieces)
        for index in range(len(pieces) + 1):
            if behavior.hold_after == index:
                await self._release.wait()
            if behavior.error_after == index:
                error = behavior.error if behavior.error is not None else DEFAULT_INBAND_ERROR
                await stream.write_event(resp, {"error": dict(error)})
                await resp.write_eof()
                return resp
            if behavior.close_after == index:
                await resp.write_eof()
                return resp
            if behavior.abort_after == index:
                assert request.transport is not None
                record.aborted = True
                request.transport.abort()
                # The handler is cancelled by the connection loss; wait for it.
                await asyncio.Event().wait()
            if index == len(pieces):
                break
            if behavior.delay > 0:
                await asyncio.sleep(behavior.delay)
            piece = pieces[index]
            if piece is None:
                delta: Mapping[str, Any] = {}
            elif isinstance(piece, str):
                delta = {"content": piece}
            else:
                delta = piece
            await stream.send(resp, dict(delta))
            record.pieces_written += 1
            record.first_piece_sent.set()
            # Yield even when there is no delay so cancellations and other streams get a turn.
            await asyncio.sleep(0)

        if behavior.finish_reason is not None:
            await stream.send(resp, {}, finish_reason=behavior.finish_reason)
        if send_usage:
            completion_tokens = sum(1 for p in pieces if p)
            await stream.write_event(
                resp,
                stream.chunk(
                    [],
                    usage={
                        "prompt_tokens": 7,
                        "completion_tokens": completion_tokens,
                        "total_tokens": 7 + completion_tokens,
                        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                        "completion_tokens_details": {
                            "reasoning_tokens": 0,
                            "audio_tokens": 0,
                            "accepted_prediction_tokens": 0,
                            "rejected_prediction_tokens": 0,
                        },
                    },
                ),
            )
        if behavior.send_done:
            await resp.write(b"data: [DONE]\n\n")
            record.done_sent = True
        await resp.write_eof()
        return resp

    def _completion(self, behavior: Behavior, model: Any) -> dict[str, Any]:
        """A non-streamed ``chat.completion`` carrying the concatenated pieces."""
        text = "".join(p for p in behavior.pieces if isinstance(p, str))
        return {
            "id": f"chatcmpl-standin{next(self._ids):06d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(model),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": behavior.finish_reason or "stop",
                }
            ],
            "usage": {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8},
            "system_fingerprint": "fp_standin",
        }


def tool_call_deltas(
    index: int, call_id: str, name: str, arguments: Sequence[str]
) -> list[dict[str, Any]]:
    """The deltas of one streamed tool call as OpenAI sends them: the first names the call
    (``id``, ``type``, ``function.name``, ``arguments: ""``), each next one carries a piece
    of its arguments."""
    first = {
        "tool_calls": [
            {
                "index": index,
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }
        ]
    }
    rest = [
        {"tool_calls": [{"index": index, "function": {"arguments": piece}}]} for piece in arguments
    ]
    return [first, *rest]


@dataclass
class _ChunkWriter:
    """Builds and writes ``chat.completion.chunk`` events for one stream."""

    record: RequestRecord
    model: str
    completion_id: str
    include_usage: bool
    created: int = field(default_factory=lambda: int(time.time()))

    def chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        """One chunk object in OpenAI's field order."""
        obj: dict[str, Any] = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "service_tier": "default",
            "system_fingerprint": "fp_standin",
            "choices": choices,
        }
        if self.include_usage:
            obj["usage"] = None
        obj.update(extra)
        return obj

    async def send(
        self, resp: web.StreamResponse, delta: dict[str, Any], finish_reason: str | None = None
    ) -> None:
        """Write one chunk with a single choice carrying ``delta``."""
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        await self.write_event(resp, self.chunk([choice]))

    async def write_event(self, resp: web.StreamResponse, obj: Mapping[str, Any]) -> None:
        """Write ``data: <json>`` and the blank line; count it."""
        payload = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
        await resp.write(b"data: " + payload.encode() + b"\n\n")
        self.record.chunks_written += 1
