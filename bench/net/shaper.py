"""The link shaper: a userspace TCP relay (and, for HTTP/3, a UDP datagram relay on the same
port number) between a client and a path's front that adds one-way latency, a bandwidth
cap, jitter, and stalls that end in a cut.

This kernel has no ``netem``, and a userspace relay cannot drop packets (TCP would resend
them anyway), so loss is modelled as what the application sees of it: a stall, then a cut.
The timing is sans-I/O (:class:`Link`: when do ``n`` bytes that entered at ``t`` leave the
far end; :func:`stall_after`: when a connection stalls), table-tested without sockets;
:class:`Shaper` only moves bytes on that schedule and counts them (the bytes on the wire,
TLS and HTTP/2 framing included, since it sits in front of the intermediary).

:data:`PROFILES` declares the named links once; docs/network.md copies the table.
Over UDP (QUIC) the relay forwards datagrams per client address (a **flow**) on the same
schedule; a datagram that would wait longer than :data:`QUEUE_S` behind the cap is dropped
(a bottleneck's tail drop: QUIC's congestion control needs a loss to slow down), and a stall
drops every datagram of its flow, then the cut black-holes the flow for good (a UDP
relay has no reset to send: the client learns of the cut from its own idle timeout).

(``bench/cutproxy.py`` cuts after a byte budget; this relay cuts after a time. Both keep the
same shape: one task per direction, abort both sockets on a cut.)
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from bench.relay import Relay

#: How many bytes the relay reads at once (one scheduling unit).
CHUNK = 16 * 1024
#: The longest a datagram may queue behind the cap before it is dropped (s).
QUEUE_S = 0.25
#: The largest datagram the UDP relay reads (QUIC's are at most ~1500 on loopback paths).
DATAGRAM = 65_535
#: A UDP flow without a datagram for this long is forgotten (s).
FLOW_IDLE_S = 120.0


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

    def offer(self, now: float, nbytes: int, queue_s: float = QUEUE_S) -> float | None:
        """A datagram's departure, like :meth:`send`, or None when it would queue longer
        than ``queue_s`` behind the cap (dropped; the link's schedule is unchanged)."""
        if self._free_at - now > queue_s:
            return None
        return self.send(now, nbytes)


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
    #: TCP connections and UDP flows (client addresses).
    connections: int = 0
    cuts: int = 0
    #: Of ``up``/``down``: UDP payload bytes (QUIC), delivered.
    udp_up: int = 0
    udp_down: int = 0
    #: Datagrams dropped (queue full behind the cap, a stall, or a cut flow).
    dropped: int = 0

    def copy(self) -> Counts:
        return Counts(*(getattr(self, f.name) for f in fields(self)))

    def __sub__(self, other: Counts) -> Counts:
        return Counts(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))

    def __add__(self, other: Counts) -> Counts:
        return Counts(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


class Shaper(Relay):
    """A loopback TCP relay to ``127.0.0.1:upstream_port`` shaped like ``profile``.

    ``async with Shaper(port, PROFILES["4g"]) as s:`` then connect to ``s.port``; ``s.counts``
    has the bytes each way (``down``: towards the client). With ``udp=True`` it also relays
    datagrams from UDP ``s.port`` to UDP ``upstream_port`` (QUIC: caddy serves HTTP/3 on
    the UDP port of its TCP port's number)."""

    def __init__(
        self, upstream_port: int, profile: Profile, *, seed: int = 0, udp: bool = False
    ) -> None:
        super().__init__()
        self.upstream_port = upstream_port
        self.profile = profile
        self.rng = random.Random(seed)
        self.counts = Counts()
        self.udp = udp
        self._datagrams: DatagramRelay | None = None

    @property
    def open_connections(self) -> int:
        return len(self._tasks)

    async def wait_closed(self, limit_s: float) -> bool:
        """Wait (at most ``limit_s``) until no TCP connection is open: a reading's last
        bytes and cut are counted before the next reading's count starts. UDP flows have
        no end to wait for (QUIC's closing datagrams come within the reading)."""
        deadline = asyncio.get_running_loop().time() + limit_s
        while self._tasks:
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    @property
    def open_flows(self) -> int:
        return 0 if self._datagrams is None else len(self._datagrams.flows)

    async def __aenter__(self) -> Shaper:
        for _ in range(20):  # the UDP port of the TCP listener's number may be taken
            await super().__aenter__()
            if not self.udp:
                return self
            try:
                self._datagrams = DatagramRelay(self, self.port)
                return self
            except OSError:
                await super().__aexit__(None, None, None)
        raise RuntimeError("no loopback port free for both TCP and UDP")

    async def __aexit__(self, *exc: object) -> None:
        if self._datagrams is not None:
            self._datagrams.close()
            self._datagrams = None
        await super().__aexit__(*exc)

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


class _Queue:
    """One direction of one UDP flow: datagrams leave in order at their scheduled times."""

    def __init__(self, loop: asyncio.AbstractEventLoop, send: Callable[[bytes], None]) -> None:
        self.loop = loop
        self.send = send
        self.items: deque[tuple[float, bytes]] = deque()
        self.timer: asyncio.TimerHandle | None = None

    def push(self, at: float, data: bytes) -> None:
        self.items.append((at, data))
        if self.timer is None:
            self.timer = self.loop.call_at(at, self._flush)

    def _flush(self) -> None:
        self.timer = None
        now = self.loop.time()
        while self.items and self.items[0][0] <= now:
            self.send(self.items.popleft()[1])
        if self.items:
            self.timer = self.loop.call_at(self.items[0][0], self._flush)

    def clear(self) -> int:
        n = len(self.items)
        self.items.clear()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        return n


class _Flow:
    """One client address's datagrams: its own upstream socket (so replies find it), a
    :class:`Link` and a queue each way, and its life before a stall."""

    def __init__(self, relay: DatagramRelay, front: socket.socket, addr: tuple[Any, ...]) -> None:
        shaper, loop = relay.shaper, relay.loop
        self.relay = relay
        self.front = front
        self.addr = addr
        self.last = loop.time()
        self.state = "open"  # then "stalled", then "cut" (black-holed)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.connect(("127.0.0.1", relay.upstream_port))
        self.links = {d: Link(shaper.profile, shaper.rng) for d in ("up", "down")}
        self.queues = {
            "up": _Queue(loop, self._send_up),
            "down": _Queue(loop, self._send_down),
        }
        loop.add_reader(self.sock, self._read_upstream)
        self.timers: list[asyncio.TimerHandle] = []
        life = stall_after(shaper.profile, shaper.rng)
        if life is not None:
            self.timers.append(loop.call_later(life, self._stall))

    def take(self, direction: str, data: bytes) -> None:
        counts = self.relay.shaper.counts
        self.last = self.relay.loop.time()
        if self.state != "open":
            counts.dropped += 1
            return
        at = self.links[direction].offer(self.last, len(data))
        if at is None:
            counts.dropped += 1
            return
        self.queues[direction].push(at, data)

    def _send_up(self, data: bytes) -> None:
        try:
            self.sock.send(data)
        except OSError:  # a full buffer or nobody listening: a lost datagram
            self.relay.shaper.counts.dropped += 1
            return
        self.relay.shaper.counts.up += len(data)
        self.relay.shaper.counts.udp_up += len(data)

    def _send_down(self, data: bytes) -> None:
        try:
            self.front.sendto(data, self.addr)
        except OSError:
            self.relay.shaper.counts.dropped += 1
            return
        self.relay.shaper.counts.down += len(data)
        self.relay.shaper.counts.udp_down += len(data)

    def _read_upstream(self) -> None:
        for _ in range(64):  # bounded per wake-up: the loop serves the others too
            try:
                data = self.sock.recv(DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. ICMP port unreachable: nothing to relay
                return
            self.take("down", data)

    def _stall(self) -> None:
        self.state = "stalled"  # silence both ways, then the cut
        self.relay.shaper.counts.dropped += sum(q.clear() for q in self.queues.values())
        self.timers.append(self.relay.loop.call_later(self.relay.shaper.profile.stall_s, self._cut))

    def _cut(self) -> None:
        self.state = "cut"
        self.relay.shaper.counts.cuts += 1

    def close(self) -> None:
        for t in self.timers:
            t.cancel()
        for q in self.queues.values():
            q.clear()
        self.relay.loop.remove_reader(self.sock)
        self.sock.close()


class DatagramRelay:
    """The shaper's UDP side: datagrams to ``127.0.0.1:port`` go, shaped per flow (client
    address), to ``127.0.0.1:shaper.upstream_port`` and the replies come back the same
    way. Raises OSError if the UDP port is taken."""

    def __init__(self, shaper: Shaper, port: int) -> None:
        self.shaper = shaper
        self.upstream_port = shaper.upstream_port
        self.loop = asyncio.get_running_loop()
        # Both loopbacks: a browser resolves ``localhost`` (the name HTTP/3 needs, for SNI)
        # to ::1 first.
        self.socks: list[socket.socket] = []
        try:
            for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
                sock = socket.socket(family, socket.SOCK_DGRAM)
                self.socks.append(sock)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((host, port))
                sock.setblocking(False)
        except OSError:
            for sock in self.socks:
                sock.close()
            raise
        self.flows: dict[tuple[Any, ...], _Flow] = {}
        for sock in self.socks:
            self.loop.add_reader(sock, self._read_clients, sock)
        self._sweeper = self.loop.call_later(FLOW_IDLE_S, self._sweep)

    def _read_clients(self, sock: socket.socket) -> None:
        for _ in range(64):
            try:
                data, addr = sock.recvfrom(DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            flow = self.flows.get(addr)
            if flow is None:
                flow = self.flows[addr] = _Flow(self, sock, addr)
                self.shaper.counts.connections += 1
            flow.take("up", data)

    def _sweep(self) -> None:
        now = self.loop.time()
        for addr, flow in list(self.flows.items()):
            if now - flow.last > FLOW_IDLE_S:
                flow.close()
                del self.flows[addr]
        self._sweeper = self.loop.call_later(FLOW_IDLE_S, self._sweep)

    def close(self) -> None:
        self._sweeper.cancel()
        for flow in self.flows.values():
            flow.close()
        self.flows.clear()
        for sock in self.socks:
            self.loop.remove_reader(sock)
            sock.close()
