"""The link shaper: a userspace TCP relay between a client and a path's front that adds
one-way latency, a bandwidth cap, jitter, and stalls that end in a cut.

This kernel has no ``netem``, and a userspace relay cannot drop packets (TCP would resend
them anyway), so loss is modelled as what the application sees of it: a stall, then a cut.
The timing is sans-I/O (:class:`Link`: when do ``n`` bytes that entered at ``t`` leave the
far end; :func:`stall_after`: when a connection stalls), table-tested without sockets;
:class:`Shaper` only moves bytes on that schedule and counts them (the bytes on the wire,
TLS and HTTP/2 framing included, since it sits in front of the intermediary).

:data:`PROFILES` declares the named links once; docs/network.md copies the table.
(``bench/cutproxy.py`` cuts after a byte budget; this relay cuts after a time. Both keep the
same shape: one task per direction, abort both sockets on a cut.)
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass

from bench.relay import Relay

#: How many bytes the relay reads at once (one scheduling unit).
CHUNK = 16 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    """A named link: each direction gets the same latency, jitter and cap."""

    name: str
    #: Added one-way delay, each direction (ms).
    latency_ms: float
    #: Each chunk's delay varies by up to this much either way (ms); order is kept.
    jitter_ms: float = 0.0
    #: The bandwidth cap per direction (kbit/s = 1000 bit/s); None: uncapped.
    rate_kbps: float | None = None
    #: The mean time a connection lives before it stalls (s, exponential); None: never.
    stall_every_s: float | None = None
    #: How long a stall lasts before the connection is cut (s).
    stall_s: float = 0.0
    summary: str = ""

    @property
    def rate_bytes_per_s(self) -> float | None:
        return None if self.rate_kbps is None else self.rate_kbps * 1000 / 8


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(name="lan", latency_ms=0.0, summary="loopback as it is"),
        Profile(
            name="wifi",
            latency_ms=5.0,
            jitter_ms=3.0,
            rate_kbps=50_000,
            summary="home Wi-Fi: 10 ms RTT, 50 Mbit/s",
        ),
        Profile(
            name="4g",
            latency_ms=35.0,
            jitter_ms=10.0,
            rate_kbps=10_000,
            summary="good 4G: 70 ms RTT, 10 Mbit/s",
        ),
        Profile(
            name="3g",
            latency_ms=150.0,
            jitter_ms=30.0,
            rate_kbps=750,
            summary="3G (like Chrome's Fast 3G upload): 300 ms RTT, 750 kbit/s",
        ),
        Profile(
            name="flaky",
            latency_ms=35.0,
            jitter_ms=20.0,
            rate_kbps=10_000,
            stall_every_s=3.0,
            stall_s=1.0,
            summary="4G that stalls: a connection lives ~3 s, then 1 s of silence and a cut",
        ),
    )
}


class Link:
    """One direction's schedule: when bytes that entered at ``now`` leave the far end.

    The cap serializes bytes (a chunk starts when the previous one finished); the latency
    (plus jitter) comes after; a chunk never overtakes the one before it."""

    def __init__(self, profile: Profile, rng: random.Random) -> None:
        self.profile = profile
        self.rng = rng
        self._free_at = 0.0
        self._last_out = 0.0

    def send(self, now: float, nbytes: int) -> float:
        p = self.profile
        start = max(now, self._free_at)
        rate = p.rate_bytes_per_s
        self._free_at = start + (nbytes / rate if rate else 0.0)
        delay = p.latency_ms + (self.rng.uniform(-p.jitter_ms, p.jitter_ms) if p.jitter_ms else 0)
        out = max(self._free_at + max(0.0, delay) / 1000, self._last_out)
        self._last_out = out
        return out


def stall_after(profile: Profile, rng: random.Random) -> float | None:
    """How long a new connection lives before it stalls (s), or None if it never does."""
    if profile.stall_every_s is None:
        return None
    return rng.expovariate(1 / profile.stall_every_s)


@dataclass(slots=True)
class Counts:
    """What crossed the shaper: bytes each way, connections, and cuts."""

    up: int = 0
    down: int = 0
    connections: int = 0
    cuts: int = 0

    def copy(self) -> Counts:
        return Counts(self.up, self.down, self.connections, self.cuts)

    def __sub__(self, other: Counts) -> Counts:
        return Counts(
            self.up - other.up,
            self.down - other.down,
            self.connections - other.connections,
            self.cuts - other.cuts,
        )


class Shaper(Relay):
    """A loopback TCP relay to ``127.0.0.1:upstream_port`` shaped like ``profile``.

    ``async with Shaper(port, PROFILES["4g"]) as s:`` then connect to ``s.port``; ``s.counts``
    has the bytes each way (``down``: towards the client)."""

    def __init__(self, upstream_port: int, profile: Profile, *, seed: int = 0) -> None:
        super().__init__()
        self.upstream_port = upstream_port
        self.profile = profile
        self.rng = random.Random(seed)
        self.counts = Counts()

    @property
    def open_connections(self) -> int:
        return len(self._tasks)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.counts.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            self._writers.discard(writer)
            self._tasks.discard(task)
            return
        self._writers.add(up_writer)
        stalled = asyncio.Event()

        def cut() -> None:  # one side is gone: so is the connection
            writer.transport.abort()
            up_writer.transport.abort()

        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer, "up", stalled, cut)),
            asyncio.create_task(self._pipe(up_reader, writer, "down", stalled, cut)),
        ]
        life = stall_after(self.profile, self.rng)
        try:
            if life is None:
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
                # One side closed: let the other finish what is scheduled, then close.
                await asyncio.wait(pipes, timeout=30)
            else:
                done, _ = await asyncio.wait(pipes, timeout=life)
                if not done:
                    stalled.set()  # silence, then the cut
                    await asyncio.sleep(self.profile.stall_s)
                    self.counts.cuts += 1
                else:
                    await asyncio.wait(pipes, timeout=30)
        finally:
            for t in pipes:
                t.cancel()
            for t in pipes:
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await t
            for w in (writer, up_writer):
                w.transport.abort()
                self._writers.discard(w)
            self._tasks.discard(task)

    async def _pipe(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        direction: str,
        stalled: asyncio.Event,
        cut: Callable[[], None],
    ) -> None:
        link = Link(self.profile, self.rng)
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=64)
        loop = asyncio.get_running_loop()

        async def deliver() -> None:
            alive = True
            while True:
                at, data = await queue.get()
                if not data:
                    if alive and dst.can_write_eof():
                        with contextlib.suppress(OSError):
                            dst.write_eof()
                    return
                if not alive:
                    continue  # keep taking what the reader queues, until its end
                wait = at - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if stalled.is_set():
                    await asyncio.Event().wait()  # silence until the cut
                try:
                    dst.write(data)
                    if direction == "up":
                        self.counts.up += len(data)
                    else:
                        self.counts.down += len(data)
                    await dst.drain()
                except (ConnectionError, OSError, RuntimeError):
                    alive = False
                    cut()  # the reader's read ends too

        sender = asyncio.create_task(deliver())
        try:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(CHUNK):
                    await queue.put((link.send(loop.time(), len(data)), data))
            # The end (EOF or a reset) goes through the queue too, after what is scheduled.
            await queue.put((0.0, b""))
            await sender
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await sender
