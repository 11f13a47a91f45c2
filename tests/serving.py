"""Serving an app outside pytest-aiohttp's ``TestServer`` (in a thread, or from a script)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.test_utils import TestServer


async def start_app(app: web.Application) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on a free loopback port; the runner (``cleanup()`` it) and the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server  # noqa: SLF001 - the port the OS chose
    assert isinstance(server, asyncio.Server)
    return runner, int(server.sockets[0].getsockname()[1])


#: What :func:`ws_closing_mid_stream` sends after the client's first message, then 1011.
MID_STREAM_MESSAGES = (
    '{"type":"created","stream":"s1"}',
    '{"stream":"s1","seq":0,"type":"token","text":"a","t":1}',
)


@contextlib.asynccontextmanager
async def ws_closing_mid_stream() -> AsyncIterator[TestServer]:
    """A server whose ``/api/ws`` answers the first message with a stream's ``created`` and
    one token (:data:`MID_STREAM_MESSAGES`), then closes with 1011 before any terminal event."""

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive()
        for message in MID_STREAM_MESSAGES:
            await ws.send_str(message)
        await ws.close(code=1011, message=b"boom")
        return ws

    app = web.Application()
    app.router.add_get("/api/ws", ws_handler)
    srv = TestServer(app, host="127.0.0.1", port=0)
    await srv.start_server()
    try:
        yield srv
    finally:
        await srv.close()
