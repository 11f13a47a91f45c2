"""A loopback TCP relay's listener and lifecycle, shared by the cutting proxy
(:mod:`bench.cutproxy`) and the link shaper (:mod:`bench.net.shaper`).

A subclass implements ``_handle(reader, writer)`` (one client connection) and registers the
connection's task and writer in ``_tasks`` and ``_writers`` while it runs.
"""

from __future__ import annotations

import asyncio
from typing import Self


class Relay:
    """Listens on a free loopback port while entered (``async with``); on exit, ends the
    open connections by aborting their sockets rather than by cancelling their tasks
    (asyncio 3.11 logs an error for a cancelled connection task), then waits for them."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=5)
            for t in pending:
                t.cancel()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError
