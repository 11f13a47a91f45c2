"""Bounds on connections, below HTTP: what a slow or hostile client can hold.

aiohttp times out nothing while a request's headers or body trickle in (a connection that
sends one byte every few seconds, or nothing at all, stays open: slowloris), and counts
no connections per client. :class:`ConnectionGuard` is the listener's protocol factory,
in front of aiohttp's: each :class:`GuardedConnection` passes every byte on to aiohttp's
protocol and keeps

- a cap on open connections per client address (``max_connections_per_client``): one
  more is answered ``429 too_many_connections`` (JSON, ``Retry-After``) and closed;
- the header timeout (``header_timeout_s``): from the connection's start, or from the
  first byte of a later request, to the request reaching the app; then ``408
  request_timeout`` if anything came (nothing at all: just closed) and closed;
- the idle timeout (``idle_timeout_s``): a kept-alive connection with no new request;
- on a WebSocket, RFC 6455 §5.1: a client frame that is not masked closes it with 1002.

The body timeout (``body_timeout_s``) is where the body is read
(``transports.streaming.read_json``). Requests mark their start and end through
:func:`connection_middleware`; a server started without the guard (``aiohttp``'s test
server) simply has no connection to mark.

States of a connection::

    open ──► waiting (header_timeout_s) ──first byte──► receiving (header_timeout_s)
                 ▲                                           │ request reaches the app
                 │ response done                             ▼
    idle (idle_timeout_s) ◄──────────────────────────── in request (no timer)
        └──first byte──► receiving
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import cast

import orjson
from aiohttp import web

from server.framing.ws import ClientFrameScan, ws_close_frame
from server.settings import Settings

log = logging.getLogger("tokenwire.connections")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: How long a refused connection may still send (its request is read and dropped) before it
#: is closed: closing with unread bytes would reset it before the client reads the answer.
REFUSAL_LINGER_S = 1.0


def raw_json_answer(status: int, reason: str, code: str, message: str, extra: str = "") -> bytes:
    """A whole HTTP/1.1 answer with the JSON error body, that closes the connection; for
    the refusals made below aiohttp (no request object exists yet)."""
    body = orjson.dumps({"error": {"code": code, "message": message}})
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class GuardedConnection(asyncio.Protocol):
    """One client connection: aiohttp's protocol behind the bounds of its guard."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.client = ""
        self.counted = False
        self.refused = False
        self.in_request = False
        #: Bytes came since the connection started waiting for a request.
        self.started_request = False
        self.timer: asyncio.TimerHandle | None = None
        #: Set once the connection is a WebSocket: checks each client frame's mask bit.
        self.frames: ClientFrameScan | None = None

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]) if isinstance(peer, tuple) and peer else "local"
        guard = self.guard
        cap = guard.settings.max_connections_per_client
        if cap and guard.per_client[self.client] >= cap:
            self._refuse(cap)
            return
        guard.per_client[self.client] += 1
        guard.open[transport] = self
        self.counted = True
        self.inner.connection_made(transport)
        self._wait(guard.settings.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return  # the request of a refused connection is read and dropped
        if self.frames is not None and not self.frames.feed(data):
            self._close_unmasked()
            return
        if not self.in_request and not self.started_request:
            self.started_request = True
            self._arm(self.guard.settings.header_timeout_s)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self.refused:
            return None  # close
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        if not self.refused:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if not self.refused:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.counted:
            self.counted = False
            guard = self.guard
            guard.open.pop(self.transport, None)
            guard.per_client[self.client] -= 1
            if guard.per_client[self.client] <= 0:
                del guard.per_client[self.client]
        if not self.refused:
            self.inner.connection_lost(exc)

    # --- marks from the app ---

    def request_started(self) -> None:
        self.in_request = True
        self._disarm()

    def request_finished(self) -> None:
        self.in_request = False
        self._wait(self.guard.settings.idle_timeout_s)

    def websocket(self) -> None:
        """The connection becomes a WebSocket: from now on its bytes are client frames."""
        self.frames = ClientFrameScan()

    # --- timers and refusals ---

    def _wait(self, timeout: float) -> None:
        self.started_request = False
        self._arm(timeout)

    def _arm(self, timeout: float) -> None:
        self._disarm()
        if timeout:
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(timeout, self._timed_out)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _timed_out(self) -> None:
        self.timer = None
        transport = self.transport
        if self.in_request or transport is None or transport.is_closing():
            return
        if self.started_request and not transport.get_write_buffer_size():
            timeout = self.guard.settings.header_timeout_s
            log.info("closing a connection of %s: no request within %g s", self.client, timeout)
            transport.write(
                raw_json_answer(
                    408,
                    "Request Timeout",
                    "request_timeout",
                    f"the request's headers did not arrive within {timeout:g} s",
                )
            )
        else:
            log.debug("closing an idle connection of %s", self.client)
        transport.close()

    def _refuse(self, cap: int) -> None:
        self.refused = True
        self.guard.refused += 1
        transport = self.transport
        assert transport is not None
        log.info("refusing a connection of %s: %d are open (the cap)", self.client, cap)
        transport.write(
            raw_json_answer(
                429,
                "Too Many Requests",
                "too_many_connections",
                f"this client address has {cap} open connections; the limit per client is {cap}",
                "Retry-After: 5\r\n",
            )
        )
        if transport.can_write_eof():
            transport.write_eof()
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(REFUSAL_LINGER_S, transport.close)

    def _close_unmasked(self) -> None:
        transport = self.transport
        assert transport is not None
        log.info("closing a WebSocket of %s: a client frame was not masked", self.client)
        self.frames = None
        self.refused = True  # read nothing more; aiohttp sees the connection lost
        transport.write(ws_close_frame(1002, b"client frames must be masked"))
        transport.close()
        self.inner.connection_lost(None)


class ConnectionGuard:
    """The listener's protocol factory: aiohttp's protocol (from ``runner.server``), each
    behind a :class:`GuardedConnection`; and the open connections, per client address."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.factory: Callable[[], asyncio.Protocol] | None = None
        self.per_client: Counter[str] = Counter()
        #: Connections refused at the cap, since start.
        self.refused = 0
        self.open: dict[asyncio.BaseTransport | None, GuardedConnection] = {}

    def __call__(self) -> GuardedConnection:
        assert self.factory is not None, "bind() the guard to a runner's server first"
        return GuardedConnection(self, self.factory())

    def bind(self, factory: Callable[[], asyncio.Protocol]) -> None:
        self.factory = factory

    def find(self, transport: asyncio.BaseTransport | None) -> GuardedConnection | None:
        return self.open.get(transport) if transport is not None else None


CONNECTIONS = web.AppKey("connections", ConnectionGuard)


@web.middleware
async def connection_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Marks a request's time in the app: no header or idle timer runs meanwhile."""
    conn = request.app[CONNECTIONS].find(request.transport)
    if conn is None:
        return await handler(request)
    conn.request_started()
    try:
        return await handler(request)
    finally:
        conn.request_finished()
