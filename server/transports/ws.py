"""WebSocket: ``GET /api/ws``, JSON text messages, several streams per socket.

A :class:`SocketSession` per socket: authentication (header or first ``auth`` message),
the client's commands (:mod:`server.ws_commands`), one pump task per subscribed stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import typing

from aiohttp import HttpVersion11, WSCloseCode, WSMsgType, hdrs, web
from aiohttp.abc import AbstractStreamWriter

from server.appkeys import HUB, METRICS, SETTINGS, SOCKETS
from server.connections import CONNECTIONS
from server.errors import (
    ApiError,
    BadRequest,
    StreamGone,
    Unauthorized,
    UpgradeRequired,
)
from server.events import Event, created_message, end_message
from server.framing.ws import ws_error, ws_text_frame, ws_text_frames
from server.hub import Hub, StreamRecord, Subscription
from server.metrics import Metrics
from server.security import POLICY, bearer_token, token_matches
from server.settings import Settings
from server.transports.streaming import client_address, free_write, send_deadline
from server.validation import parse_create_body
from server.ws_commands import (
    Auth,
    Cancel,
    ClientMessage,
    Generate,
    Subscribe,
    parse_client_message,
)

log = logging.getLogger("tokenwire.ws")

#: The headers aiohttp reads to accept a WebSocket handshake.
HANDSHAKE_HEADERS = (
    hdrs.UPGRADE,
    hdrs.CONNECTION,
    hdrs.SEC_WEBSOCKET_KEY,
    hdrs.SEC_WEBSOCKET_VERSION,
    hdrs.SEC_WEBSOCKET_PROTOCOL,
    hdrs.SEC_WEBSOCKET_EXTENSIONS,
)

#: Per socket, how long to wait for pumps to flush final events before a shutdown close.
FLUSH_ON_SHUTDOWN_S = 1.0


class _TokenBucket:
    """Allows ``rate`` messages per second with bursts up to ``rate``."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.stamp = time.monotonic()

    def take(self) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class _Turn:
    """A ``generate``'s place in its socket's order of ``created`` messages: it writes its
    own after ``before`` is done, and marks ``mine`` done once written (or its pump ended)."""

    __slots__ = ("before", "mine")

    def __init__(self, before: asyncio.Future[None] | None, mine: asyncio.Future[None]) -> None:
        self.before = before
        self.mine = mine

    async def wait(self) -> None:
        if self.before is not None and not self.before.done():
            await asyncio.shield(self.before)

    def done(self) -> None:
        if not self.mine.done():
            self.mine.set_result(None)


class SocketSession:
    """One WebSocket's state: its authentication, and a pump task per subscribed stream,
    each writing that stream's events."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        hub: Hub,
        metrics: Metrics,
        send_timeout: float,
        client: str,
        transport: asyncio.BaseTransport | None,
        writer: AbstractStreamWriter,
        token: str | None = None,
    ) -> None:
        self.ws = ws
        #: The token the socket must still present (None: authenticated, or none needed).
        self.token = token
        self.client = client
        self.transport = transport
        self.writer = writer
        self.hub = hub
        self.metrics = metrics
        self.send_timeout = send_timeout or None
        self.pumps: dict[str, asyncio.Task[None]] = {}
        #: Done once the last ``generate``'s ``created`` was written (or its pump ended):
        #: each pump writes its ``created`` after the one before (see :meth:`start_pump`).
        self._created: asyncio.Future[None] | None = None

    async def send_error(
        self, err: ApiError, stream: str | None = None, op: str | None = None
    ) -> None:
        if not self.ws.closed:
            await self.ws.send_str(ws_error(err, stream, op))

    def start_pump(self, stream: str | StreamRecord, after: int, first: bytes = b"") -> None:
        """A pump of ``stream`` (its id, or the record just created) from ``after``;
        ``first``: frames it writes before any event, with the events already logged."""
        stream_id = stream if isinstance(stream, str) else stream.id
        old = self.pumps.pop(stream_id, None)
        if old is not None:
            old.cancel()  # a re-subscribe on the same socket replaces the old position
        turn: _Turn | None = None
        if first:
            # ``created`` messages go out in the order of their ``generate``s (a client
            # that sends two on one socket tells them apart by that order), though each
            # pump writes its own, with the first events, from its own task.
            mine = asyncio.get_running_loop().create_future()
            turn = _Turn(self._created, mine)
            self._created = mine
        task = asyncio.create_task(
            self._pump(stream, after, first, turn), name=f"ws-pump-{stream_id}"
        )
        self.pumps[stream_id] = task
        task.add_done_callback(
            lambda t: self.pumps.pop(stream_id, None) if self.pumps.get(stream_id) is t else None
        )

    async def _pump(
        self,
        stream: str | StreamRecord,
        after: int,
        first: bytes = b"",
        turn: _Turn | None = None,
    ) -> None:
        try:
            await self._pump_events(stream, after, first, turn)
        finally:
            if turn is not None:
                turn.done()

    async def _pump_events(
        self, stream: str | StreamRecord, after: int, first: bytes, turn: _Turn | None
    ) -> None:
        ws = self.ws
        stream_id = stream if isinstance(stream, str) else stream.id
        try:
            reading = self.metrics.reading("ws")
            async with reading, self.hub.subscribe(stream, after, "ws") as sub:
                if sub.finished:  # like HTTP's 204: ended, and nothing after ``after``
                    await ws.send_frame(end_message(stream_id), WSMsgType.TEXT)
                    return
                if first:
                    unsent, first = first, b""
                    await self._send_first(sub, unsent, turn)

                def push(event: Event) -> bool:
                    """Write a paced stream's new token from the generation's step, if
                    that cannot wait (else this task wakes and sends it)."""
                    transport = self.transport
                    if ws.closed or transport is None or transport.is_closing():
                        return False
                    data = sub.framed(ws_text_frames, (event,))
                    if not free_write(transport, len(data)):
                        return False
                    self._write_frames(data)
                    self.metrics.sent("ws", 1, len(data))
                    return True

                while not sub.finished and not ws.closed:
                    batch = await sub.next_batch(None, push)
                    if not batch:
                        continue
                    data = sub.framed(ws_text_frames, batch)
                    await self._send_frames(data)
                    self.metrics.sent("ws", len(batch), len(data))
        except StreamGone as e:
            await self._send_unsent(first, turn)
            await self.send_error(e, stream_id)
        except ApiError as e:
            await self._send_unsent(first, turn)  # (``created`` before the error, as always)
            await self.send_error(e, stream_id, "subscribe")
        except TimeoutError:
            log.info("closing a WebSocket: send timed out on %s", stream_id)
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"send timeout")
        except ConnectionResetError:
            pass

    async def _send_unsent(self, first: bytes, turn: _Turn | None) -> None:
        """``first``, if the pump failed before it wrote it."""
        if first and not self.ws.closed:
            if turn is not None:
                await turn.wait()
            with contextlib.suppress(ConnectionResetError):
                await self._send_frames(first)

    async def _send_first(self, sub: Subscription, first: bytes, turn: _Turn | None) -> None:
        """``first`` with the events the log already holds (nothing waits for them): one
        write, where ``created`` and a first token due at once were two."""
        batch = await sub.logged()
        data = first + sub.framed(ws_text_frames, batch) if batch else first
        if turn is not None:
            await turn.wait()
        await self._send_frames(data)
        if turn is not None:
            turn.done()
        if batch:
            self.metrics.sent("ws", len(batch), len(data) - len(first))

    async def _send_frames(self, data: bytes) -> None:
        """Write whole text frames in one write, within the send timeout.

        ``ws.send_frame()`` writes each message on its own (a syscall per event); a batch's
        frames are built once (:func:`ws_text_frames`, the same bytes) and written together.
        Whole frames written synchronously never interleave with aiohttp's control frames,
        and nothing is written once the close handshake started (``ws.closed``).
        """
        transport = self.transport
        if self.ws.closed or transport is None or transport.is_closing():
            raise ConnectionResetError("the WebSocket is closing")
        async with send_deadline(transport, len(data), self.send_timeout):
            self._write_frames(data)
            await self.writer.drain()  # waits only while the buffer is past its high water

    def _write_frames(self, data: bytes) -> None:
        """Hand whole frames to the transport (checked open by the caller)."""
        # uvloop's transports are not asyncio.WriteTransport subclasses: no isinstance.
        typing.cast(asyncio.WriteTransport, self.transport).write(data)

    @property
    def authenticated(self) -> bool:
        return self.token is None

    async def refuse(self, msg: ClientMessage | None) -> None:
        """Before authentication: accept the right ``auth`` message, or answer
        ``unauthorized`` and close with 1008 (policy violation)."""
        if isinstance(msg, Auth):
            if self.token is not None and token_matches(msg.token, self.token):
                self.token = None
                return
            err = Unauthorized("the bearer token is not valid", invalid_token=True)
        else:
            err = Unauthorized(
                'authenticate first: send {"op":"auth","token":"..."} (or the Authorization '
                "header on the handshake)"
            )
        await self.send_error(err, op=None if msg is None else type(msg).__name__.lower())
        await self.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"unauthorized")

    async def close_unless_authenticated(self, after_s: float) -> None:
        """Close the socket with 1008 if it has not authenticated within ``after_s``."""
        await asyncio.sleep(after_s)
        if not self.authenticated:
            await self.send_error(Unauthorized(f"no auth message within {after_s:g} s"))
            await self.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"unauthorized")

    async def handle_binary(self) -> None:
        if not self.authenticated:
            await self.refuse(None)
            return
        await self.send_error(
            BadRequest("binary messages are not supported; send JSON text", code="bad_json")
        )

    async def handle(self, text: str) -> None:
        try:
            msg = parse_client_message(text)
        except ApiError as e:
            if not self.authenticated:
                await self.refuse(None)
            else:
                await self.send_error(e)
            return
        if not self.authenticated:
            await self.refuse(msg)
            return
        op = type(msg).__name__.lower()
        try:
            if isinstance(msg, Auth):
                pass  # already authenticated (or the server needs no token)
            elif isinstance(msg, Generate):
                parsed = parse_create_body(msg.body, self.hub.settings, self.hub.sources)
                stream = await self.hub.start(parsed, self.client)
                # The generation takes its first step first: a first token due at once
                # goes out with ``created``, in one write (the pump's first).
                await asyncio.sleep(0)
                self.start_pump(stream, -1, ws_text_frame(created_message(stream.id)))
            elif isinstance(msg, Subscribe):
                await self.hub.lookup(msg.stream)
                self.start_pump(msg.stream, msg.after)
            elif isinstance(msg, Cancel):
                await self.hub.cancel(msg.stream)
        except ApiError as e:
            await self.send_error(e, getattr(msg, "stream", None), op)

    async def pong(self, data: bytes) -> bool:
        """Answer a client's ping; False if the client is gone (a disconnect, not an error:
        it left while the pong was being written)."""
        try:
            await self.ws.pong(data)
        except ConnectionResetError:
            log.info("a WebSocket client of %s left during a pong", self.client)
            return False
        return True

    async def shutdown(self) -> None:
        """Let pumps flush their final events, then close with 1001 (going away)."""
        await self.close_pumps(flush=FLUSH_ON_SHUTDOWN_S)
        if not self.ws.closed:
            await self.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")

    async def close_pumps(self, flush: float = 0.0) -> None:
        tasks = list(self.pumps.values())
        if flush and tasks:
            await asyncio.wait(tasks, timeout=flush)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t


def ws_response(settings: Settings, *, autoping: bool = True) -> web.WebSocketResponse:
    """A WebSocket response with the endpoint's protocol settings (message size limit,
    heartbeat, no compression); the Autobahn tests' echo route is built with it too.

    ``GET /api/ws`` passes ``autoping=False``: aiohttp then hands it the pings and pongs a
    client sends, so they count against ``ws_max_msgs_per_s`` like any message, and it
    answers the pings itself (:meth:`SocketSession.pong`)."""
    return web.WebSocketResponse(
        heartbeat=settings.ws_heartbeat_s or None,
        max_msg_size=settings.ws_max_msg_bytes,
        compress=False,
        autoping=autoping,
    )


async def websocket(request: web.Request) -> web.WebSocketResponse:
    settings = request.app[SETTINGS]
    ws = ws_response(settings, autoping=False)
    # (aiohttp's own check fails on a value that is not ASCII: it quotes it in an error.)
    if not all(v.isascii() for h in HANDSHAKE_HEADERS for v in request.headers.getall(h, ())):
        raise UpgradeRequired("the WebSocket handshake's headers must be ASCII")
    if not ws.can_prepare(request).ok:
        raise UpgradeRequired(
            "this is the WebSocket endpoint: connect with a WebSocket (version 13) handshake"
        )
    if request.version < HttpVersion11:
        raise UpgradeRequired("a WebSocket handshake needs HTTP/1.1 (RFC 6455, 4.1)")
    token = request.app[POLICY].token
    if token is not None and token_matches(
        bearer_token(request.headers.get(hdrs.AUTHORIZATION)), token
    ):
        token = None  # authenticated by the handshake's header
    conn_guard = request.app[CONNECTIONS].find(request.transport)
    if conn_guard is not None:
        conn_guard.websocket()  # its next bytes are frames: each must be masked
    await ws.prepare(request)
    conn = SocketSession(
        ws,
        request.app[HUB],
        request.app[METRICS],
        settings.send_timeout_s,
        client_address(request),
        request.transport,
        request.writer,
        token,
    )
    sockets = request.app[SOCKETS]
    sockets.add(conn)
    bucket = _TokenBucket(settings.ws_max_msgs_per_s)
    deadline = None
    if not conn.authenticated and settings.ws_auth_timeout_s:
        deadline = asyncio.create_task(conn.close_unless_authenticated(settings.ws_auth_timeout_s))
    try:
        # Every frame the client sends counts, control frames included: a ping flood is a
        # flood (aiohttp answers pings inside receive() unless autoping is off).
        async for msg in ws:
            if not bucket.take():
                await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"message rate limit")
                break
            if msg.type == WSMsgType.TEXT:
                await conn.handle(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await conn.handle_binary()
            elif msg.type == WSMsgType.PING:
                if not await conn.pong(msg.data):
                    break
    finally:
        if deadline is not None:
            deadline.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await deadline
        sockets.discard(conn)
        await conn.close_pumps()
    return ws
