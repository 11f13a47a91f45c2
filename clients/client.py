"""The Python client: ``Client`` (create, read, resume, cancel) and ``Stream``, the resume
loop over one reader per transport (``clients/readers.py``). The twin of
``clients/js/client.js``; ``clients/js/README.md`` tells how each transport is read,
resumed and measured.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from clients.check import CONTENT, PartsDigest, place
from clients.errors import (
    ConnectionLost,
    DigestMismatch,
    InvalidToolCall,
    ProtocolError,
    StreamFailed,
)
from clients.parts import Part, PartReader, ToolCall
from clients.readers import READERS, Event, Sent, Tap, create_stream, raise_for_error
from wire import TRANSPORTS, Transport


@dataclass
class StreamStats:
    """What one stream measured, on the client side: times in ns (``time.perf_counter_ns()``;
    latencies: receive ``time.time_ns()`` minus the event's ``t``), ``summary()`` in ms."""

    transport: str
    started_ns: int = field(default_factory=time.perf_counter_ns)
    first_token_ns: int | None = None
    last_token_ns: int | None = None
    gaps_ns: list[int] = field(default_factory=list)
    latencies_ns: list[int] = field(default_factory=list)
    tokens: int = 0
    bytes_received: int = 0
    requests: int = 0
    reconnects: int = 0
    #: Events received again after a resume (dropped, never yielded).
    duplicates: int = 0

    def token(self, recv_perf_ns: int, recv_wall_ns: int, t: int) -> None:
        if self.first_token_ns is None:
            self.first_token_ns = recv_perf_ns
        elif self.last_token_ns is not None:
            self.gaps_ns.append(recv_perf_ns - self.last_token_ns)
        self.last_token_ns = recv_perf_ns
        self.latencies_ns.append(recv_wall_ns - t)
        self.tokens += 1

    @property
    def ttft_s(self) -> float | None:
        """Time to first token, seconds: reading started to first token received."""
        if self.first_token_ns is None:
            return None
        return (self.first_token_ns - self.started_ns) / 1e9

    def summary(self) -> dict[str, Any]:
        """Medians and p95s in milliseconds, counts as they are."""

        def ms(values: list[int], q: float) -> float | None:
            if not values:
                return None
            ordered = sorted(values)
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6

        return {
            "transport": self.transport,
            "tokens": self.tokens,
            "ttft_ms": None if self.ttft_s is None else self.ttft_s * 1e3,
            "gap_p50_ms": statistics.median(self.gaps_ns) / 1e6 if self.gaps_ns else None,
            "gap_p95_ms": ms(self.gaps_ns, 0.95),
            "latency_p50_ms": (
                statistics.median(self.latencies_ns) / 1e6 if self.latencies_ns else None
            ),
            "latency_p95_ms": ms(self.latencies_ns, 0.95),
            "bytes_received": self.bytes_received,
            "requests": self.requests,
            "reconnects": self.reconnects,
        }


def backoff_s(attempt: int, first_s: float, max_s: float) -> float:
    """The wait before reconnect ``attempt`` (0, 1, ...): doubling from ``first_s`` up to
    ``max_s``, plus up to 25% jitter so that clients cut at once do not come back at once."""
    return min(max_s, first_s * 2.0**attempt) * (1 + 0.25 * random.random())


ENDED = "the response ended before the stream's last event"


class Stream:
    """One stream read over one transport: an async iterator of its events (the log's
    events as they are: ``token``, ``reasoning``, ``tool_call``, then ``done``), or, through
    :meth:`parts`, of its parts (:class:`~clients.parts.Text`, ``Reasoning``, ``ToolCall``,
    ``ToolCallDone``). Either way it resumes after a cut, drops repeats, refuses gaps and
    checks ``done``'s digests (the answer text's and ``parts``)."""

    def __init__(
        self,
        client: Client,
        transport: Transport,
        *,
        body: dict[str, Any] | None = None,
        stream_id: str | None = None,
        after: int = -1,
        resume: bool = True,
    ) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}")
        self.client = client
        self.transport = transport
        #: The stream id (None until the server tells it).
        self.id = stream_id
        #: The position this reader started from (-1: the beginning).
        self.after = after
        #: The seq of the last event yielded.
        self.last_seq = after
        self.resume = resume
        self.stats = StreamStats(transport)
        #: The ``done`` event, once it arrived.
        self.done: Event | None = None
        #: True once the ``done`` sha256 matched; None if not checked (read from ``after``).
        self.digest_ok: bool | None = None
        self._body = body
        self._pieces: list[str] = []
        self._digest = PartsDigest()
        self._parts = PartReader()
        #: The parts the last event yielded made, and a call's bad arguments, for parts().
        self._fresh: list[Part] = []
        self._invalid: InvalidToolCall | None = None
        self._retry_ms: int | None = None
        self._started = False

    @property
    def text(self) -> str:
        """The answer text: the text of the ``token`` events yielded, concatenated."""
        return "".join(self._pieces)

    @property
    def reasoning(self) -> str:
        """The text of the ``reasoning`` events yielded, concatenated."""
        return self._parts.reasoning

    @property
    def tool_calls(self) -> list[ToolCall]:
        """The tool calls yielded so far, in index order, each with its argument text so
        far (whole once the stream is done)."""
        return self._parts.tool_calls

    async def parts(self) -> AsyncIterator[Part]:
        """Read the stream as parts: ``Text``, ``Reasoning``, ``ToolCall`` (each piece of a
        call's arguments) and ``ToolCallDone`` (a call's whole arguments, parsed), in the
        log's order. Raises :class:`~clients.errors.InvalidToolCall` when a complete call's
        arguments are not JSON. Like iterating the stream, this reads it once."""
        if self._started:
            raise TypeError("a Stream can be iterated only once")
        self._started = True
        async with aclosing(self._run()) as events:
            async for _ in events:
                if self._invalid is not None:
                    raise self._invalid
                for part in self._fresh:
                    yield part

    def __aiter__(self) -> AsyncIterator[Event]:
        if self._started:
            raise TypeError("a Stream can be iterated only once")
        self._started = True
        return self._run()

    async def collect(self) -> list[Event]:
        """Read the whole stream; returns its events."""
        return [ev async for ev in self]

    async def _run(self) -> AsyncGenerator[Event, None]:
        """The resume loop: read, drop repeats, refuse gaps, measure, check the digest."""
        read = READERS[self.transport]
        failures = 0  # failed connections in a row
        self.stats.started_ns = time.perf_counter_ns()
        while True:
            # Without an id nothing was delivered yet: the reader creates again (the
            # half-created stream is abandoned and the server cancels it after its grace).
            reader = read(self.client, stream_id=self.id, after=self.last_seq, body=self._body)
            try:
                async with aclosing(reader):
                    async for got in reader:
                        if isinstance(got, Sent):
                            self.stats.requests += 1
                            continue
                        self.stats.bytes_received += got.nbytes
                        if got.retry_ms is not None:
                            self._retry_ms = got.retry_ms
                        for ev in got.messages:
                            kind = ev.get("type")
                            if kind == "created":
                                self.id = str(ev["stream"])
                                continue
                            if kind == "end":  # the stream ended at or before our position
                                return
                            if not isinstance(ev.get("seq"), int):
                                continue  # a control message this client does not know
                            where = place(ev["seq"], self.last_seq)
                            if where == "repeat":  # a resume overlapped what we have
                                self.stats.duplicates += 1
                                continue
                            if where == "gap":
                                raise ProtocolError(
                                    f"expected seq {self.last_seq + 1}, got {ev['seq']}"
                                )
                            self.last_seq = ev["seq"]
                            failures = 0
                            self._take_parts(ev)
                            if kind in CONTENT:
                                if kind == "token":
                                    self._pieces.append(ev["text"])
                                self._digest.update(ev)
                                self.stats.token(got.perf_ns, got.wall_ns, ev["t"])
                                yield ev
                                continue
                            if kind == "done":
                                self.done = ev
                                self._check_digest(ev)
                                yield ev
                                return
                            yield ev
                            raise StreamFailed(str(ev["code"]), str(ev["message"]))
                raise ConnectionLost(ENDED)
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as e:
                lost = e
            except TimeoutError as e:
                lost = ConnectionLost(f"timed out: {e}")
            if not self.resume or failures >= self.client.max_reconnects:
                if isinstance(lost, ConnectionLost):
                    raise lost
                raise ConnectionLost(str(lost)) from lost
            c = self.client
            first_s = c.backoff_s if self._retry_ms is None else self._retry_ms / 1000
            await asyncio.sleep(backoff_s(failures, first_s, c.max_backoff_s))
            failures += 1
            self.stats.reconnects += 1

    def _take_parts(self, ev: Event) -> None:
        """The parts an event makes, kept for :meth:`parts` (a call's bad arguments too:
        they fail ``parts()``, not a reader of events)."""
        try:
            self._fresh = self._parts.feed(ev)
        except InvalidToolCall as e:
            self._fresh, self._invalid = [], e

    def _check_digest(self, done: Event) -> None:
        """Before ``done`` is yielded: its ``sha256``, ``tokens`` and ``parts`` against what
        arrived, when every event was seen."""
        if self.after >= 0:
            return
        mismatch = self._digest.mismatch(done)
        if mismatch is not None:
            self.digest_ok = False
            raise DigestMismatch(mismatch[1], mismatch[2], mismatch[0])
        self.digest_ok = True


class Client:
    """A tokenwire client for one server. Use as ``async with Client(url) as c:``."""

    def __init__(
        self,
        base_url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        max_reconnects: int = 10,
        backoff_s: float = 0.1,
        max_backoff_s: float = 5.0,
        poll_timeout_s: float = 25.0,
        token: str | None = None,
        tap: Tap | None = None,
    ) -> None:
        """``max_reconnects``: failed reconnects in a row before giving up; ``backoff_s``:
        the first reconnect delay (SSE: the server's ``retry:``), doubling up to
        ``max_backoff_s``; ``poll_timeout_s``: the long-poll ``timeout``; ``token``: the
        server's ``--auth-token``, sent with every request (``Authorization: Bearer``, or a
        WebSocket's first message ``{"op":"auth"}``, as the JS client must); ``tap``: called
        with each :class:`~clients.readers.Frame` the readers send and read, as they read it
        (it must be quick and must not raise)."""
        self.base_url = base_url.rstrip("/")
        self.token = token
        #: Headers every HTTP request carries (the token's ``Authorization``).
        self.headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        self._session = session
        self._own_session = session is None
        self.max_reconnects = max_reconnects
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.poll_timeout_s = poll_timeout_s
        #: Called with each frame the readers send and read (``Client(tap=...)``).
        self.tap = tap

    def url(self, path: str) -> str:
        """The absolute URL of a path of the server."""
        return f"{self.base_url}{path}"

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def stream(
        self,
        prompt: str,
        *,
        transport: Transport = "sse",
        max_tokens: int | None = None,
        source: str | None = None,
        params: dict[str, Any] | None = None,
        resume: bool = True,
        reasoning_effort: str | None = None,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: Any = None,
    ) -> Stream:
        """Start one generation and read it over ``transport``. ``reasoning_effort``
        (``low`` | ``medium`` | ``high``), ``tools`` (``[{"name", "description"?,
        "parameters"?}]``) and ``tool_choice`` (a tool's name) ask for typed parts; they go
        as top-level fields of the create body (or WebSocket ``generate``), as given."""
        body = _create_body(
            prompt, max_tokens, source, params, reasoning_effort, tools, tool_choice
        )
        return Stream(self, transport, body=body, resume=resume)

    def subscribe(
        self,
        stream_id: str,
        *,
        after: int = -1,
        transport: Transport = "sse",
        resume: bool = True,
    ) -> Stream:
        """Read an existing stream from ``after`` (events with a greater seq)."""
        return Stream(self, transport, stream_id=stream_id, after=after, resume=resume)

    async def create(
        self,
        prompt: str,
        max_tokens: int | None = None,
        source: str | None = None,
        params: dict[str, Any] | None = None,
        *,
        reasoning_effort: str | None = None,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: Any = None,
    ) -> str:
        """Create a stream without reading it; returns its id (the typed-part options as
        :meth:`stream`'s)."""
        body = _create_body(
            prompt, max_tokens, source, params, reasoning_effort, tools, tool_choice
        )
        return await create_stream(self, body)

    async def cancel(self, stream_id: str) -> None:
        """Cancel a stream; it ends with ``done`` / ``cancelled``."""
        async with self.session.delete(
            self.url(f"/api/streams/{stream_id}"), headers=self.headers
        ) as resp:
            await raise_for_error(resp)

    async def status(self, stream_id: str) -> dict[str, Any]:
        async with self.session.get(
            self.url(f"/api/streams/{stream_id}"), headers=self.headers
        ) as resp:
            await raise_for_error(resp)
            return dict(await resp.json())


def _create_body(
    prompt: str,
    max_tokens: int | None,
    source: str | None,
    params: dict[str, Any] | None,
    reasoning_effort: str | None = None,
    tools: list[dict[str, Any]] | None = None,
    tool_choice: Any = None,
) -> dict[str, Any]:
    """The create body: only the fields given (``None``: the server's default)."""
    body: dict[str, Any] = {"prompt": prompt}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if source is not None:
        body["source"] = source
    if params:
        body["params"] = params
    if reasoning_effort is not None:
        body["reasoning_effort"] = reasoning_effort
    if tools is not None:
        body["tools"] = tools
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    return body


class SyncStream:
    """A :class:`Stream` for code that is not async: iterate it for the events; ``stats``,
    ``id``, ``text``, ``done`` and ``digest_ok`` are the async stream's."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stream: Stream) -> None:
        self._loop = loop
        #: The async stream it reads.
        self.stream = stream

    @property
    def stats(self) -> StreamStats:
        return self.stream.stats

    @property
    def id(self) -> str | None:
        return self.stream.id

    @property
    def text(self) -> str:
        return self.stream.text

    @property
    def reasoning(self) -> str:
        return self.stream.reasoning

    @property
    def tool_calls(self) -> list[ToolCall]:
        return self.stream.tool_calls

    @property
    def done(self) -> Event | None:
        return self.stream.done

    @property
    def digest_ok(self) -> bool | None:
        return self.stream.digest_ok

    def __iter__(self) -> Iterator[Event]:
        return self._sync(self.stream.__aiter__())

    def parts(self) -> Iterator[Part]:
        """:meth:`Stream.parts`, for code that is not async."""
        return self._sync(self.stream.parts())

    def _sync(self, agen: AsyncIterator[Any]) -> Iterator[Any]:
        try:
            while True:
                try:
                    yield self._loop.run_until_complete(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self._loop.run_until_complete(agen.aclose())  # type: ignore[attr-defined]

    def collect(self) -> list[Event]:
        """Read the whole stream; returns its events."""
        return list(self)


class SyncClient:
    """The same calls for scripts that are not async: ``s = c.stream(...)``, ``for ev in s``,
    then ``s.stats``, as with :class:`Client`."""

    def __init__(self, base_url: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = Client(base_url, **options)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.run_until_complete(self._client.aclose())
            self._loop.close()

    def stream(self, prompt: str, **kwargs: Any) -> SyncStream:
        """:meth:`Client.stream`: iterate the result for the events, then read its ``stats``."""
        return SyncStream(self._loop, self._client.stream(prompt, **kwargs))

    def subscribe(self, stream_id: str, **kwargs: Any) -> SyncStream:
        """:meth:`Client.subscribe`, for code that is not async."""
        return SyncStream(self._loop, self._client.subscribe(stream_id, **kwargs))

    def create(
        self,
        prompt: str,
        max_tokens: int | None = None,
        source: str | None = None,
        params: dict[str, Any] | None = None,
        **options: Any,
    ) -> str:
        """:meth:`Client.create`: a stream made without reading it; returns its id."""
        return self._loop.run_until_complete(
            self._client.create(prompt, max_tokens, source, params, **options)
        )

    def status(self, stream_id: str) -> dict[str, Any]:
        """:meth:`Client.status`."""
        return self._loop.run_until_complete(self._client.status(stream_id))

    def cancel(self, stream_id: str) -> None:
        self._loop.run_until_complete(self._client.cancel(stream_id))
