"""tokenwire with a latency probe: ``python -m bench.probe serve [tokenwire serve options]``.

The server is tokenwire's own (``tokenwire.cli``), unchanged; this module only adds, for
the benchmark, three routes that switch a probe on and off and read it:

- ``POST /bench/probe`` (on, emptied), ``DELETE /bench/probe`` (off), ``GET /bench/probe``
  (``{"latency_ns": [...], "first_token_ns": [...], "writes": N, "sampled": N}``).

While it is on, the writes that hand events to a socket are wrapped (SSE and chunked:
``StreamResponse.write``, and ``StreamResponse.write_eof`` with a stream's last bytes;
long polling: ``Response.write_eof``, which writes the body through it;
WebSocket: ``SocketSession._write_frames``, one transport write per batch), and after such a
write returns (the bytes are in the kernel's socket buffer, or in the transport's buffer
when the socket is full) it records:

- **server latency**, every ``SAMPLE_EVERY``-th write: now minus the ``t`` of the first
  (oldest) event in the written bytes, or minus the request's arrival if that came later
  (a long poll's batch logged before the poll). ``t`` is stamped when the event is encoded, right
  before it is appended to the log, in the same synchronous step. So the figure is an
  event's time from its append to the log to the write that hands it to the socket, the
  oldest event of its batch (the batch's worst), in the server alone: no client, no loopback;
- **first token**: per create-and-stream request (SSE, chunked) from the moment the request
  reached the app (the first middleware) to the write that carries ``seq`` 0; per WebSocket
  ``generate`` from the call to ``Hub.start`` (the message was read and parsed) to that
  write. With ``ttft_ms=0`` this is the server's own time from a new stream to its first
  token.

Off, nothing is wrapped: the server runs exactly as ``tokenwire serve``. On, each wrapped
write costs one more coroutine frame and a few comparisons (about a microsecond), which
the CPU figures of a probed run include. docs/bench.md, "The peer race".
"""

from __future__ import annotations

import contextvars
import sys
import time
from array import array
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web

#: Every how many writes one is sampled for the server latency.
SAMPLE_EVERY = 4
#: At most this many samples are kept (a long run keeps its first ones).
MAX_SAMPLES = 500_000
PATH = "/bench/probe"

#: The current request's (or WebSocket generate's) start, whether its first token was
#: written, and its kind (0 HTTP, 1 WebSocket, 2 the probe's own answer):
#: ``[start_ns, written, kind]``. Set in the
#: request's task; the pump tasks it starts afterwards inherit it.
_START: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "probe_start", default=None
)


class Probe:
    """The samples, and the wrappers it puts in place while on."""

    def __init__(self) -> None:
        self.latency_ns = array("q")
        self.first_token_ns = array("q")
        self.writes = 0
        self.on = False
        self._undo: list[Callable[[], None]] = []

    def after_write(self, data: bytes) -> None:
        now = time.time_ns()
        box = _START.get()
        if box is not None and box[2] == 2:
            return  # the probe's own answer
        if box is not None and not box[1] and b'"seq":0,' in data:
            box[1] = 1
            if len(self.first_token_ns) < MAX_SAMPLES:
                self.first_token_ns.append(now - box[0])
        self.writes += 1
        if self.writes % SAMPLE_EVERY or len(self.latency_ns) >= MAX_SAMPLES:
            return
        i = data.find(b'"t":')
        if i < 0:
            return
        j = data.find(b"}", i)
        try:
            t = int(data[i + 4 : j])
        except ValueError:
            return
        # An event logged before this request came (a long poll's batch, a subscriber
        # from an earlier seq) waited for the client, not the server: count from the request.
        self.latency_ns.append(now - max(t, box[0] if box is not None else 0))

    def switch_on(self) -> None:
        self.latency_ns = array("q")
        self.first_token_ns = array("q")
        self.writes = 0
        if self.on:
            return
        from server.transports.ws import SocketSession

        probe = self

        def wrap(owner: Any, name: str, data_of: Callable[[Any, Sequence[Any]], Any]) -> None:
            original = owner.__dict__[name]

            async def wrapped(self: Any, *args: Any) -> Any:
                result = await original(self, *args)
                data = data_of(self, args)
                if isinstance(data, bytes | bytearray | memoryview):
                    probe.after_write(bytes(data))
                return result

            setattr(owner, name, wrapped)
            self._undo.append(lambda: setattr(owner, name, original))

        def wrap_sync(owner: Any, name: str) -> None:
            original = owner.__dict__[name]

            def wrapped(self: Any, data: bytes) -> Any:
                result = original(self, data)
                probe.after_write(bytes(data))
                return result

            setattr(owner, name, wrapped)
            self._undo.append(lambda: setattr(owner, name, original))

        wrap(web.StreamResponse, "write", lambda _self, args: args[0] if args else None)
        # (A stream's last bytes, and a Response's body: Response.write_eof passes it on.)
        wrap(web.StreamResponse, "write_eof", lambda _self, args: args[0] if args else None)
        wrap_sync(SocketSession, "_write_frames")
        self.on = True

    def switch_off(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
        self.on = False

    def as_json(self) -> dict[str, Any]:
        return {
            "on": self.on,
            "writes": self.writes,
            "sampled": len(self.latency_ns),
            "latency_ns": self.latency_ns.tolist(),
            "first_token_ns": self.first_token_ns.tolist(),
        }


PROBE = Probe()


@web.middleware
async def stamp_start(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """When a request reached the app (only while the probe is on; not the WebSocket
    upgrade: its streams start at ``Hub.start``)."""
    if PROBE.on:
        # A WebSocket's streams start at each generate (Hub.start), not at the upgrade.
        websocket = request.path == "/api/ws"
        _START.set([0, 1, 1] if websocket else [time.time_ns(), 0, 0])
    return await handler(request)


async def probe_route(request: web.Request) -> web.Response:
    _START.set([0, 1, 2])  # this answer is no stream's
    if request.method == "POST":
        PROBE.switch_on()
    elif request.method == "DELETE":
        PROBE.switch_off()
    return web.json_response(PROBE.as_json())


def install() -> None:
    """Wrap ``server.app.create_app`` so the app it builds has the probe's routes, its
    middleware (first) and, for WebSocket streams, a stamp at ``Hub.start``."""
    import server.app
    from server.appkeys import HUB

    create_app = server.app.create_app

    def create_app_with_probe(*args: Any, **kwargs: Any) -> web.Application:
        app = create_app(*args, **kwargs)
        app.middlewares.insert(0, stamp_start)
        for method in ("GET", "POST", "DELETE"):
            app.router.add_route(method, PATH, probe_route)
        hub = app[HUB]
        start = hub.start

        async def create_stamped(*a: Any, **kw: Any) -> Any:
            box = _START.get()
            if PROBE.on and (box is None or box[2]):
                _START.set([time.time_ns(), 0, 1])  # a WebSocket generate
            record = await start(*a, **kw)
            return record

        hub.start = create_stamped  # type: ignore[method-assign]
        return app

    server.app.create_app = create_app_with_probe


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m bench.probe serve ...``: ``tokenwire serve ...`` with the probe routes."""
    from tokenwire.cli import main as tokenwire_main

    install()
    tokenwire_main(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
