"""A loopback TCP proxy that cuts connections from the server side after N bytes.

Each new connection takes the next budget from ``cuts``; once they are used up,
connections pass through untouched. The cut closes both sides abruptly, wherever the
byte count falls: mid-header, mid-frame, mid-UTF-8 character.

With ``shared=True`` the budgets count the bytes of all connections together (the next
budget starts after each cut, on whichever connection carries the bytes), so short
connections (a create request, a long poll) do not use a budget up unspent.

With ``match=b"..."`` a connection takes a budget only once a request containing it has
gone through (e.g. ``b"/sse"``: an EventSource's request, not the create request or the
page before it on the same kept-alive connection); the budget counts the bytes after it.

With ``mid_char=True`` a cut moves forward from its byte count to the next UTF-8
continuation byte, so the client is left holding the first part of a multi-byte
character (the cut waits for the next such byte if a read has none past the count);
``mid_char_cuts`` counts the cuts that landed so.

``cut_next()`` arms a cut on command instead: the next bytes the server sends, on whichever
connection, are forwarded only in part (the first half) and that connection is cut. This
suits a browser, whose connections are reused in ways a per-connection budget cannot
predict.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from bench.relay import Relay


def _continuation(byte: int) -> bool:
    return 0x80 <= byte <= 0xBF


def _cut_point(data: bytes, budget: int, mid_char: bool) -> int | None:
    """Where to cut ``data`` with ``budget`` bytes left to forward, or None to pass it all."""
    if budget > len(data) or (budget == len(data) and mid_char):
        return None
    if not mid_char:
        return budget
    return next((i for i in range(budget, len(data)) if _continuation(data[i])), None)


class CutProxy(Relay):
    def __init__(
        self,
        upstream_port: int,
        cuts: list[int],
        *,
        mid_char: bool = False,
        shared: bool = False,
        match: bytes | None = None,
        linger_s: float = 0.0,
    ) -> None:
        super().__init__()
        self.upstream_port = upstream_port
        #: How long the bytes before a cut are left to the client before the cut: a client
        #: (Chromium) that reads the last bytes and the reset together may drop those bytes.
        self.linger_s = linger_s
        self.cuts: deque[int] = deque(cuts)
        self.mid_char = mid_char
        self.shared = shared
        self.match = match
        self._shared_budget: int | None = None
        self.connections = 0
        self.cut_count = 0
        self.mid_char_cuts = 0
        self._armed = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut_next(self) -> None:
        """Cut the connection that next carries bytes from the server, halfway through them."""
        self._armed = True

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        budget: int | None = None
        matched = self.match is None
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            self._writers.discard(writer)
            self._tasks.discard(task)
            return
        self._writers.add(up_writer)

        async def client_to_server() -> None:
            nonlocal matched
            with contextlib.suppress(ConnectionError):
                while data := await reader.read(65536):
                    matched = matched or (self.match is not None and self.match in data)
                    up_writer.write(data)
                    await up_writer.drain()

        forward = asyncio.create_task(client_to_server())
        try:
            while data := await up_reader.read(65536):
                if budget is None and matched and not self.shared and self.cuts:
                    budget = self.cuts.popleft()
                if self.shared:
                    if self._shared_budget is None and self.cuts:
                        self._shared_budget = self.cuts.popleft()
                    budget = self._shared_budget
                if self._armed:
                    self._armed = False
                    budget = len(data) // 2
                if budget is not None:
                    at = _cut_point(data, budget, self.mid_char)
                    if at is not None:
                        writer.write(data[:at])
                        await writer.drain()
                        if self.linger_s:
                            await asyncio.sleep(self.linger_s)
                        self.cut_count += 1
                        self.mid_char_cuts += at < len(data) and _continuation(data[at])
                        self._shared_budget = None
                        break
                    budget = max(0, budget - len(data))
                    if self.shared:
                        self._shared_budget = budget
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
                self._writers.discard(w)
            self._tasks.discard(task)
