"""A loopback TCP proxy that cuts connections from the server side after N bytes.

Each new connection takes the next budget from ``cuts``; once they are used up,
connections pass through untouched. The cut closes both sides abruptly, wherever the
byte count falls: mid-header, mid-frame, mid-UTF-8 character.

``cut_next()`` arms a cut on command instead: the next bytes the server sends, on whichever
connection, are forwarded only in part (the first half) and that connection is cut. This
suits a browser, whose connections are reused in ways a per-connection budget cannot
predict.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque


class CutProxy:
    def __init__(self, upstream_port: int, cuts: list[int]) -> None:
        self.upstream_port = upstream_port
        self.cuts: deque[int] = deque(cuts)
        self.connections = 0
        self.cut_count = 0
        self._armed = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def cut_next(self) -> None:
        """Cut the connection that next carries bytes from the server, halfway through them."""
        self._armed = True

    async def __aenter__(self) -> CutProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        budget = self.cuts.popleft() if self.cuts else None
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def client_to_server() -> None:
            with contextlib.suppress(ConnectionError):
                while data := await reader.read(65536):
                    up_writer.write(data)
                    await up_writer.drain()

        forward = asyncio.create_task(client_to_server())
        try:
            while data := await up_reader.read(65536):
                if self._armed:
                    self._armed = False
                    budget = len(data) // 2
                if budget is not None:
                    if len(data) >= budget:
                        writer.write(data[:budget])
                        await writer.drain()
                        self.cut_count += 1
                        break
                    budget -= len(data)
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            forward.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await forward
            for w in (writer, up_writer):
                w.transport.abort()
            self._tasks.discard(task)
