"""Serving an app outside pytest-aiohttp's ``TestServer`` (in a thread, or from a script)."""

from __future__ import annotations

import asyncio

from aiohttp import web


async def start_app(app: web.Application) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on a free loopback port; the runner (``cleanup()`` it) and the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server  # noqa: SLF001 - the port the OS chose
    assert isinstance(server, asyncio.Server)
    return runner, int(server.sockets[0].getsockname()[1])
