"""The Python client: one API over SSE, WebSocket, long polling and chunked HTTP.

::

    async with Client("http://127.0.0.1:8080") as c:
        stream = c.stream("hello", transport="ws", max_tokens=50)
        async for event in stream:
            print(event["text"] if event["type"] == "token" else event)
        print(stream.stats.summary())

Resume is on by default: when a connection drops before the terminal event the stream
reconnects over the same transport from the last ``seq`` it has (bounded exponential
backoff, honouring SSE ``retry:``), and the caller sees every event exactly once, in
order. At ``done`` the text received is checked against the event's ``sha256``.

``Client(url, token=...)`` talks to a server started with ``--auth-token``: every HTTP
request carries ``Authorization: Bearer <token>``, and a WebSocket sends
``{"op":"auth","token":...}`` as its first message, as the JS client must (a browser cannot
set headers on a WebSocket), so a wrong token fails alike in both: ``ServerError`` with
code ``unauthorized`` (status 401 over HTTP, None over a WebSocket).
"""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from clients.decoders import NDJSONDecoder, SSEDecoder, ws_frame_header
from clients.errors import (
    ClosedByServer,
    ConnectionLost,
    DigestMismatch,
    ProtocolError,
    StreamFailed,
    server_error,
)
from wire import TRANSPORTS, Transport

Event = dict[str, Any]
#: An event with its receive times: ``time.perf_counter_ns()`` and ``time.time_ns()``.
Received = tuple[Event, int, int]


@dataclass
class StreamStats:
    """What one stream measured, on the client side."""

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
    #: Events received again after a resume (dropped, never yielded), as the JS client counts.
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
        """Time to first token: request sent to first token received."""
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


def _header_bytes(resp: aiohttp.ClientResponse) -> int:
    """Size of the response's status line and headers as they came on the wire."""
    status_line = len(f"HTTP/1.1 {resp.status} {resp.reason or ''}")
    return status_line + 2 + sum(len(k) + len(v) + 4 for k, v in resp.raw_headers) + 2


async def _raise_for_error(resp: aiohttp.ClientResponse) -> None:
    if resp.status < 400:
        return
    raw = await resp.read()
    try:
        err = orjson.loads(raw)["error"]
        code, message = str(err["code"]), str(err["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        code, message = "http_error", raw.decode(errors="replace")[:300]
    raise server_error(code, message, resp.status, retry_after=_retry_after(resp))


def _retry_after(resp: aiohttp.ClientResponse) -> float | None:
    """``Retry-After`` in seconds (tokenwire sends delta-seconds), None if absent or not."""
    try:
        return float(resp.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


class Stream:
    """One stream read over one transport; an async iterator of its events."""

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
        self.id = stream_id
        self.after = after
        self.resume = resume
        self.stats = StreamStats(transport)
        self.done: Event | None = None
        #: True once the ``done`` sha256 matched; None if not checked (read from ``after``).
        self.digest_ok: bool | None = None
        self._from_start = after < 0
        self._exhausted = False
        self._body = body
        self._pieces: list[str] = []
        self._digest = hashlib.sha256()
        self._retry_s: float | None = None

    @property
    def text(self) -> str:
        return "".join(self._pieces)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._run()

    async def _run(self) -> AsyncIterator[Event]:
        attempt = 0
        while True:
            creating = self.id is None
            try:
                async for ev, recv_perf, recv_wall in self._read(creating):
                    if ev.get("type") == "created":
                        self.id = str(ev["stream"])
                        continue
                    seq = ev["seq"]
                    if seq <= self.after:
                        self.stats.duplicates += 1  # already delivered before a reconnect
                        continue
                    if seq != self.after + 1:
                        raise ProtocolError(f"expected seq {self.after + 1}, got {seq}")
                    self.after = seq
                    attempt = 0
                    if ev["type"] == "token":
                        text = ev["text"]
                        self._pieces.append(text)
                        self._digest.update(text.encode())
                        self.stats.token(recv_perf, recv_wall, ev["t"])
                        yield ev
                        continue
                    yield ev
                    if ev["type"] == "done":
                        self.done = ev
                        if self._from_start:  # a partial read cannot check the whole text
                            actual = self._digest.hexdigest()
                            if ev["sha256"] != actual:
                                raise DigestMismatch(ev["sha256"], actual)
                            self.digest_ok = True
                        return
                    raise StreamFailed(str(ev["code"]), str(ev["message"]))
                if self._exhausted:  # the stream ended before ``after``: nothing to read
                    return
                raise ConnectionLost("the response ended before the stream's last event")
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as e:
                lost = e
            except TimeoutError as e:
                lost = ConnectionLost(f"timed out: {e}")
            # Without an id nothing was delivered yet: the next attempt creates again (the
            # half-created stream is abandoned and the server cancels it after its grace).
            if not self.resume or attempt >= self.client.max_reconnects:
                if isinstance(lost, ConnectionLost):
                    raise lost
                raise ConnectionLost(str(lost)) from lost
            delay = self._retry_s if self._retry_s is not None else self.client.backoff_s
            await asyncio.sleep(min(self.client.max_backoff_s, delay * (2**attempt)))
            attempt += 1
            self.stats.reconnects += 1

    def _read(self, creating: bool) -> AsyncIterator[Received]:
        """Events as they arrive, each with its receive time (perf counter, wall clock)."""
        if self.transport == "ws":
            return self._read_ws(creating)
        if self.transport == "poll":
            return self._read_poll(creating)
        return self._read_http(creating)

    async def _read_http(self, creating: bool) -> AsyncIterator[Received]:
        """SSE or chunked NDJSON: create-and-stream on the first try, GET on resume."""
        c = self.client
        sse = self.transport == "sse"
        if creating:
            ctx = c.session.post(
                f"{c.base_url}/api/{self.transport}", json=self._body, headers=c.headers
            )
        else:
            headers, params = dict(c.headers), {}
            if sse:
                if self.after >= 0:
                    headers["Last-Event-ID"] = str(self.after)
            else:
                params["after"] = str(self.after)
            ctx = c.session.get(
                f"{c.base_url}/api/streams/{self.id}/{self.transport}",
                headers=headers,
                params=params,
            )
        self.stats.requests += 1
        async with ctx as resp:
            self.stats.bytes_received += _header_bytes(resp)
            await _raise_for_error(resp)
            if resp.status == 204:
                self._exhausted = True
                return
            if creating and "Tokenwire-Stream" in resp.headers:
                self.id = resp.headers["Tokenwire-Stream"]
            decoder: SSEDecoder | NDJSONDecoder = SSEDecoder() if sse else NDJSONDecoder()
            async for chunk in resp.content.iter_any():
                recv_perf, recv_wall = time.perf_counter_ns(), time.time_ns()
                self.stats.bytes_received += len(chunk)
                if isinstance(decoder, SSEDecoder):
                    items: list[Event] = [orjson.loads(m.data) for m in decoder.feed(chunk)]
                    if decoder.retry is not None:
                        self._retry_s = decoder.retry / 1000
                else:
                    items = decoder.feed(chunk)
                for ev in items:
                    yield ev, recv_perf, recv_wall

    async def _read_poll(self, creating: bool) -> AsyncIterator[Received]:
        c = self.client
        if creating:
            self.id = await c.create(**(self._body or {}))
            self.stats.requests += 1
            yield {"type": "created", "stream": self.id}, 0, 0
        after = self.after
        while True:
            self.stats.requests += 1
            async with c.session.get(
                f"{c.base_url}/api/streams/{self.id}/poll",
                params={"after": str(after), "timeout": str(c.poll_timeout_s)},
                headers=c.headers,
            ) as resp:
                self.stats.bytes_received += _header_bytes(resp)
                await _raise_for_error(resp)
                raw = await resp.read()
            recv_perf, recv_wall = time.perf_counter_ns(), time.time_ns()
            self.stats.bytes_received += len(raw)
            body = orjson.loads(raw)
            for ev in body["events"]:
                yield ev, recv_perf, recv_wall
            after = body["next"]
            if body["done"]:
                self._exhausted = True
                return

    async def _read_ws(self, creating: bool) -> AsyncIterator[Received]:
        c = self.client
        self.stats.requests += 1
        async with c.session.ws_connect(f"{c.base_url}/api/ws", autoping=True) as ws:
            if c.token is not None:
                await ws.send_str(orjson.dumps({"op": "auth", "token": c.token}).decode())
            if creating:
                first: dict[str, Any] = {"op": "generate", **(self._body or {})}
            else:
                first = {"op": "subscribe", "stream": self.id, "after": self.after}
            await ws.send_str(orjson.dumps(first).decode())
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                recv_perf, recv_wall = time.perf_counter_ns(), time.time_ns()
                data = msg.data.encode()
                self.stats.bytes_received += len(data) + ws_frame_header(len(data))
                ev = orjson.loads(data)
                if ev.get("type") == "end":
                    self._exhausted = True
                    return
                if ev.get("type") == "error" and "seq" not in ev:
                    raise server_error(str(ev["code"]), str(ev["message"]))
                if "stream" in ev and self.id is not None and ev["stream"] != self.id:
                    continue
                yield ev, recv_perf, recv_wall
                if ev.get("type") in ("done", "error"):
                    return
            raise ClosedByServer(ws.close_code)


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
    ) -> None:
        """``token``: the server's ``--auth-token``, sent with every request."""
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
    ) -> Stream:
        """Start one generation and read it over ``transport``."""
        body = _create_body(prompt, max_tokens, source, params)
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
    ) -> str:
        """Create a stream without reading it; returns its id."""
        body = _create_body(prompt, max_tokens, source, params)
        async with self.session.post(
            f"{self.base_url}/api/streams", json=body, headers=self.headers
        ) as resp:
            await _raise_for_error(resp)
            return str((await resp.json())["id"])

    async def cancel(self, stream_id: str) -> None:
        """Cancel a stream; it ends with ``done`` / ``cancelled``."""
        async with self.session.delete(
            f"{self.base_url}/api/streams/{stream_id}", headers=self.headers
        ) as resp:
            await _raise_for_error(resp)

    async def status(self, stream_id: str) -> dict[str, Any]:
        async with self.session.get(
            f"{self.base_url}/api/streams/{stream_id}", headers=self.headers
        ) as resp:
            await _raise_for_error(resp)
            return dict(await resp.json())


def _create_body(
    prompt: str, max_tokens: int | None, source: str | None, params: dict[str, Any] | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": prompt}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if source is not None:
        body["source"] = source
    if params:
        body["params"] = params
    return body


class SyncClient:
    """The same API for scripts that are not async: ``for ev in SyncClient(url).stream(...)``."""

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

    def _iterate(self, stream: Stream) -> Iterator[Event]:
        agen = stream.__aiter__()
        try:
            while True:
                try:
                    yield self._loop.run_until_complete(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self._loop.run_until_complete(agen.aclose())  # type: ignore[attr-defined]

    def stream(self, prompt: str, **kwargs: Any) -> Iterator[Event]:
        return self._iterate(self._client.stream(prompt, **kwargs))

    def subscribe(self, stream_id: str, **kwargs: Any) -> Iterator[Event]:
        return self._iterate(self._client.subscribe(stream_id, **kwargs))

    def cancel(self, stream_id: str) -> None:
        self._loop.run_until_complete(self._client.cancel(stream_id))
