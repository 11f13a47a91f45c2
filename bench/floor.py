"""The floor at a pace: what the cheapest Python servers on this machine spend to send
``--streams`` x ``--pace`` small frames a second over loopback TCP, beside tokenwire's
paced figure (``bench.pace``) and issue 13's goal (25% of a core for 200 x 50/s).

``python -m bench.floor --streams 200 --pace 50 --warmup 2 --window 5 [--frame-bytes N]
[--pin] [--repeat N] [--veth]``

Every variant is a server in a subprocess of its own (``serve``), started one after the
other in the same run (rounds interleave the variants), and sends every connection the same
pre-encoded frames (frame ``k`` is the same bytes on every connection; all frames have one
length, by default the length of a real tokenwire SSE token event from
``server.events.TokenEncoder`` and ``server.framing.sse.sse_frame``) at ``--pace`` a second,
``--frames`` of them, then closes:

- ``raw-shared``: uvloop, a bare ``asyncio.Protocol`` (no HTTP), ONE timer on 1 ms ticks
  that writes the due frames with ``transport.write``: Python + uvloop + the kernel.
- ``raw-tasks``: the same protocol, one task per connection, ``asyncio.sleep`` per frame
  (what a task per stream costs on top).
- ``aiohttp-tasks``: a bare aiohttp handler per stream (``StreamResponse``, ``await
  resp.write``, sleep), as ``bench/peers/aiohttp_peer.py`` paces; the body has a
  Content-Length, so its bytes are the same frames (no chunk framing).
- ``syscall-only``: no event loop: blocking ``socket.send`` from one plain loop on the same
  1 ms ticks (``time.sleep`` between them): the send syscalls plus the least Python that
  calls them.
- ``c-send``: the same loop in C (``C_SEND``, built with ``cc`` on first use): the send
  syscalls alone, the floor of any server on this kernel. (``perf`` here has no hardware
  counters, and ``perf trace``/``strace -c`` add their own cost to every syscall they time,
  so neither gives a send's true cost.)

The load is a lean uvloop client (this process) that opens every connection, checks every
byte against the expected frames (exact count and order), and counts them. After
``--warmup`` s it takes the server's psutil user + system time over ``--window`` s: **% of
one core** and **µs per frame** (CPU over the frames received in the window), beside
``os.getloadavg()``; its system part (``sys_pct``) is the kernel's share. With
``--pin`` the server runs on CPU 0, the client on the rest (as ``bench.race --pin``). With
``--veth`` (root, iproute2) the servers run in a network namespace of their own behind a
veth pair: a real device between the two stacks instead of ``lo`` (both hand the packet
to the receiving CPU's backlog; whether the receiver's TCP work is still charged to the
sender is what the figures tell).

It prints a table and one JSON line (medians over ``--repeat`` rounds). docs/bench.md,
"The floor at a pace".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import math
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import psutil
import uvloop

from bench.lab import REPO, free_port, raise_nofile
from bench.race import SERVER_CPU
from server.events import TokenEncoder
from server.framing.sse import sse_frame

VARIANTS: Final = ("raw-shared", "raw-tasks", "aiohttp-tasks", "syscall-only", "c-send")
#: The shared timer's tick (s): due frames go out on the next tick.
TICK_S: Final = 0.001
#: What a frame starts with; then its zero-padded index, an event line, a data line.
_HEAD: Final = b"id: %06d\nevent: token\ndata: "
#: The HTTP request the aiohttp variant answers (the raw servers ignore what they read).
REQUEST: Final = b"GET /floor HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
#: The JSON line's fields per variant.
FIELDS: Final = (
    "cpu_pct",
    "sys_pct",
    "us_per_frame",
    "frames_per_s",
    "frames_in_window",
    "exact",
    "connections",
    "load1",
)
NETNS: Final = "tokenwire-floor"
VETH_SERVER: Final = "10.231.0.1"
VETH_CLIENT: Final = "10.231.0.2"


def token_frame_bytes() -> int:
    """The byte length of a real tokenwire SSE token event: a 16-character stream id
    (``secrets.token_urlsafe(12)``, as the hub makes them), ``seq`` 100, a word piece."""
    return len(sse_frame(TokenEncoder(secrets.token_urlsafe(12))(100, " token")))


def min_frame_bytes() -> int:
    return len(_HEAD % 0) + 2


def frames_of(count: int, size: int) -> list[bytes]:
    """``count`` SSE frames of exactly ``size`` bytes each, frame ``k`` carrying ``k``."""
    out = []
    for k in range(count):
        head = _HEAD % k
        out.append(head + b"x" * (size - len(head) - 2) + b"\n\n")
    return out


def slots_of(pace: float) -> int:
    """Ticks per frame period: a connection's frames go out every ``slots`` ticks."""
    return max(1, round(1.0 / (pace * TICK_S)))


# --- the servers -----------------------------------------------------------------------


class RawShared(asyncio.Protocol):
    """A connection of the shared-timer server: no per-connection task, just a counter."""

    __slots__ = ("transport", "sent", "_wheel", "_clock")

    def __init__(self, wheel: list[list[RawShared]], clock: Callable[[], int]) -> None:
        self.sent = 0
        self.transport: asyncio.Transport | None = None
        self._wheel = wheel
        self._clock = clock

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self._wheel[self._clock() % len(self._wheel)].append(self)

    def data_received(self, data: bytes) -> None:
        pass


async def serve_raw_shared(sock: socket.socket, frames: list[bytes], pace: float) -> None:
    loop = asyncio.get_running_loop()
    wheel: list[list[RawShared]] = [[] for _ in range(slots_of(pace))]
    t0 = loop.time()
    tick = 0

    def clock() -> int:
        return tick + 1  # a new connection's first frame goes out on the next tick

    def on_tick() -> None:
        nonlocal tick
        now_tick = int((loop.time() - t0) / TICK_S)
        total = len(frames)
        while tick < now_tick:  # catch up on late ticks, in order
            tick += 1
            slot = wheel[tick % len(wheel)]
            keep = []
            for conn in slot:
                transport = conn.transport
                if transport is None or transport.is_closing():
                    continue
                transport.write(frames[conn.sent])
                conn.sent += 1
                if conn.sent == total:
                    transport.close()
                else:
                    keep.append(conn)
            slot[:] = keep
        # Relative, not call_at(next tick): uvloop's timers have 1 ms granularity and may
        # fire a little early, which would spin; the catch-up above keeps the pace exact.
        loop.call_later(TICK_S, on_tick)

    loop.call_later(TICK_S, on_tick)
    server = await loop.create_server(lambda: RawShared(wheel, clock), sock=sock, backlog=4096)
    await server.serve_forever()


class RawTask(asyncio.Protocol):
    """A connection of the task-per-stream server: its task writes and sleeps."""

    def __init__(self, frames: list[bytes], period: float) -> None:
        self._frames = frames
        self._period = period
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(typing.cast(asyncio.Transport, transport))
        )

    def data_received(self, data: bytes) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self, transport: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        period = self._period
        due = loop.time()
        for frame in self._frames:
            due += period
            await asyncio.sleep(due - loop.time())
            transport.write(frame)
        transport.close()


async def serve_raw_tasks(sock: socket.socket, frames: list[bytes], pace: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: RawTask(frames, 1.0 / pace), sock=sock, backlog=4096)
    await server.serve_forever()


async def serve_aiohttp(sock: socket.socket, frames: list[bytes], pace: float) -> None:
    from aiohttp import web

    period = 1.0 / pace
    length = sum(map(len, frames))

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        resp.content_length = length
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ConnectionResetError):
            await resp.prepare(request)
            due = loop.time()
            for frame in frames:
                due += period
                await asyncio.sleep(due - loop.time())
                await resp.write(frame)
            await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/floor", stream)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock, backlog=4096).start()
    await asyncio.Event().wait()


def serve_syscall_only(sock: socket.socket, frames: list[bytes], pace: float, n: int) -> None:
    """Accept ``n`` connections (blocking), then send on 1 ms ticks from one plain loop.
    A connection's first frame is due one tick after it is accepted, as in raw-shared."""
    slots = slots_of(pace)
    wheel: list[list[list[Any]]] = [[] for _ in range(slots)]  # [socket, sent]
    total = len(frames)
    sock.setblocking(True)
    t0 = time.monotonic()
    tick = 0
    accepted = 0
    sock.settimeout(TICK_S)
    while True:
        while accepted < n:  # accept between ticks until every connection is in
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                break
            conn.setblocking(True)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            now_tick = int((time.monotonic() - t0) / TICK_S)
            wheel[(now_tick + 1) % slots].append([conn, 0])
            accepted += 1
        now_tick = int((time.monotonic() - t0) / TICK_S)
        while tick < now_tick:
            tick += 1
            slot = wheel[tick % slots]
            keep = []
            for entry in slot:
                conn, sent = entry
                conn.send(frames[sent])
                entry[1] = sent = sent + 1
                if sent == total:
                    conn.close()
                else:
                    keep.append(entry)
            slot[:] = keep
        if accepted == n and not any(wheel):
            while True:  # done: stay up (idle) until the client stops this process
                signal.pause()
        delay = t0 + (tick + 1) * TICK_S - time.monotonic()
        if delay > 0 and accepted == n:
            time.sleep(delay)


#: ``c-send``: syscall-only without Python: accept every connection, then blocking ``send``
#: on 1 ms ticks (``clock_nanosleep`` to absolute ticks), connection ``i`` in slot
#: ``i % slots``; the same frames; prints ``ready`` once listening. Built with ``cc``.
C_SEND: Final = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
  const char *host = argv[1]; int port = atoi(argv[2]), n = atoi(argv[3]);
  int slots = atoi(argv[4]), total = atoi(argv[5]), size = atoi(argv[6]), pin = atoi(argv[7]);
  if (pin >= 0) { cpu_set_t set; CPU_ZERO(&set); CPU_SET(pin, &set);
    sched_setaffinity(0, sizeof set, &set); }
  char *frames = malloc((size_t)total * size);
  for (int k = 0; k < total; k++) {
    char *f = frames + (size_t)k * size;
    int h = snprintf(f, size, "id: %06d\nevent: token\ndata: ", k);
    memset(f + h, 'x', size - h - 2); f[size - 2] = '\n'; f[size - 1] = '\n';
  }
  int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  inet_pton(AF_INET, host, &a.sin_addr);
  if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 4096)) { perror("listen"); return 1; }
  printf("ready\n"); fflush(stdout);
  int *fd = malloc(sizeof(int) * n), *sent = calloc(n, sizeof(int));
  for (int i = 0; i < n; i++) {
    fd[i] = accept(ls, NULL, NULL);
    setsockopt(fd[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
  for (long tick = 1, left = n; left > 0; tick++) {
    t.tv_nsec += 1000000; if (t.tv_nsec >= 1000000000) { t.tv_nsec -= 1000000000; t.tv_sec++; }
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL);
    for (int i = (int)(tick % slots); i < n; i += slots) {
      if (sent[i] == total) continue;
      send(fd[i], frames + (size_t)sent[i] * size, size, 0);
      if (++sent[i] == total) { close(fd[i]); left--; }
    }
  }
  for (;;) pause();
}
"""


def c_send_binary() -> str:
    """Build ``C_SEND`` once per source into a cache dir; the binary's path."""
    import hashlib
    import tempfile

    tag = hashlib.sha256(C_SEND.encode()).hexdigest()[:12]
    out = os.path.join(tempfile.gettempdir(), f"tokenwire-floor-c-send-{tag}")
    if not os.path.exists(out):
        src = out + ".c"
        with open(src, "w") as f:
            f.write(C_SEND)
        cc = subprocess.run(
            ["cc", "-O2", "-o", out + ".tmp", src], capture_output=True, text=True, timeout=60
        )
        if cc.returncode != 0:
            raise SystemExit(f"bench.floor: cc failed: {cc.stderr.strip()}")
        os.replace(out + ".tmp", out)
    return out


def serve(ns: argparse.Namespace) -> None:
    if ns.pin:
        os.sched_setaffinity(0, {SERVER_CPU})
    frames = frames_of(ns.frames, ns.frame_bytes)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((ns.host, ns.port))
    sock.listen(4096)
    print("ready", flush=True)
    if ns.variant == "syscall-only":
        serve_syscall_only(sock, frames, ns.pace, ns.streams)
        return
    run = {
        "raw-shared": serve_raw_shared,
        "raw-tasks": serve_raw_tasks,
        "aiohttp-tasks": serve_aiohttp,
    }[ns.variant]
    sock.setblocking(False)
    uvloop.run(run(sock, frames, ns.pace))


# --- the client ------------------------------------------------------------------------


class Reader(asyncio.Protocol):
    """One connection: every byte checked against the expected body, in order."""

    def __init__(self, expected: bytes, http: bool, done: asyncio.Future[None]) -> None:
        self.expected = expected
        self.got = 0
        self.bad: str | None = None
        self._head: bytes | None = b"" if http else None
        self._done = done
        self._http = http

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._http:
            typing.cast(asyncio.Transport, transport).write(REQUEST)

    def data_received(self, data: bytes) -> None:
        if self._head is not None:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self._head[:end], self._head[end + 4 :]
            self._head = None
            status = head.split(b"\r\n", 1)[0]
            if not status.startswith(b"HTTP/1.1 200 "):
                self.bad = self.bad or f"status line {status!r}"
        if self.bad is None and self.expected[self.got : self.got + len(data)] != data:
            self.bad = f"byte {self.got}: frames out of order, wrong or extra"
        self.got += len(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.bad is None:
            self.bad = f"connection lost: {exc!r}"
        if not self._done.done():
            self._done.set_result(None)


@dataclass
class Plan:
    streams: int
    pace: float
    warmup: float
    window: float
    frames: int
    frame_bytes: int
    repeat: int
    pin: bool
    veth: bool
    rps: bool
    variants: tuple[str, ...]


@dataclass
class Sample:
    cpu_pct: float
    sys_pct: float
    us_per_frame: float | None
    frames_per_s: float
    frames_in_window: int
    exact: bool
    connections: int
    load1: float
    errors: list[str] = field(default_factory=list)


def server_argv(plan: Plan, variant: str, host: str, port: int) -> list[str]:
    if variant == "c-send":
        pin = str(SERVER_CPU) if plan.pin else "-1"
        sizes = (plan.streams, slots_of(plan.pace), plan.frames, plan.frame_bytes)
        argv = [c_send_binary(), host, str(port), *map(str, sizes), pin]
        return ["ip", "netns", "exec", NETNS, *argv] if plan.veth else argv
    argv = [
        *(sys.executable, "-m", "bench.floor", "serve", variant),
        *("--host", host, "--port", str(port), "--streams", str(plan.streams)),
        *("--pace", str(plan.pace), "--frames", str(plan.frames)),
        *("--frame-bytes", str(plan.frame_bytes)),
    ]
    if plan.pin:
        argv.append("--pin")
    if plan.veth:
        argv = ["ip", "netns", "exec", NETNS, *argv]
    return argv


def spawn(plan: Plan, variant: str, host: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = server_argv(plan, variant, host, port)
    return subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


async def measure(plan: Plan, variant: str) -> Sample:
    host = VETH_SERVER if plan.veth else "127.0.0.1"
    port = free_port()
    proc = spawn(plan, variant, host, port)
    try:
        assert proc.stdout is not None
        line = await asyncio.to_thread(proc.stdout.readline)
        if line != b"ready\n":
            raise SystemExit(f"bench.floor: the {variant} server did not start ({line!r})")
        return await drive(plan, variant, host, port, psutil.Process(proc.pid))
    finally:
        stop(proc)


async def drive(plan: Plan, variant: str, host: str, port: int, server: psutil.Process) -> Sample:
    loop = asyncio.get_running_loop()
    frames = frames_of(plan.frames, plan.frame_bytes)
    expected = b"".join(frames)
    http = variant == "aiohttp-tasks"
    readers: list[Reader] = []
    dones: list[asyncio.Future[None]] = []
    errors: list[str] = []
    for _ in range(plan.streams):
        done: asyncio.Future[None] = loop.create_future()
        try:
            _, reader = await loop.create_connection(
                functools.partial(Reader, expected, http, done), host, port
            )
        except OSError as e:
            errors.append(f"connect: {e!r}")
            continue
        readers.append(reader)
        dones.append(done)
    await asyncio.sleep(plan.warmup)
    c0, got0, t0 = server.cpu_times(), sum(r.got for r in readers), time.perf_counter()
    await asyncio.sleep(plan.window)
    c1, got1, t1 = server.cpu_times(), sum(r.got for r in readers), time.perf_counter()
    load1 = os.getloadavg()[0]
    # Every stream ends by itself after its frames; allow twice its length, and a margin.
    _, pending = (
        await asyncio.wait(dones, timeout=2 * plan.frames / plan.pace + 10)
        if dones
        else (
            set(),
            set(),
        )
    )
    if pending:
        errors.append(f"{len(pending)} connections did not end")
    for r in readers:
        if r.bad is not None:
            errors.append(r.bad)
        elif r.got != len(expected):
            errors.append(f"received {r.got} bytes of {len(expected)}")
    span = t1 - t0
    in_window = (got1 - got0) // plan.frame_bytes
    sys_s = c1.system - c0.system
    cpu = c1.user - c0.user + sys_s
    return Sample(
        cpu_pct=100.0 * cpu / span,
        sys_pct=100.0 * sys_s / span,
        us_per_frame=1e6 * cpu / in_window if in_window else None,
        frames_per_s=in_window / span,
        frames_in_window=in_window,
        exact=not errors and len(readers) == plan.streams,
        connections=len(readers),
        load1=load1,
        errors=errors[:5],
    )


def median(xs: Sequence[float | None]) -> float | None:
    known = [x for x in xs if x is not None]
    return statistics.median(known) if known else None


def summarize(samples: Sequence[Sample]) -> dict[str, Any]:
    return {
        "cpu_pct": median([s.cpu_pct for s in samples]),
        "sys_pct": median([s.sys_pct for s in samples]),
        "us_per_frame": median([s.us_per_frame for s in samples]),
        "frames_per_s": median([s.frames_per_s for s in samples]),
        "frames_in_window": int(statistics.median(s.frames_in_window for s in samples)),
        "exact": all(s.exact for s in samples),
        "connections": min(s.connections for s in samples),
        "load1": median([s.load1 for s in samples]),
        "errors": [e for s in samples for e in s.errors][:5],
    }


@contextlib.contextmanager
def veth_pair(rps_cpus: set[int] | None) -> Iterator[None]:
    """A namespace for the servers behind a veth pair to this one (root, iproute2); with
    ``rps_cpus``, the client side's receive processing steered to those cores (RPS)."""

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)

    subprocess.run(["ip", "netns", "del", NETNS], capture_output=True, timeout=30, check=False)
    ip("netns", "add", NETNS)
    try:
        ip("link", "add", "twfloor0", "type", "veth", "peer", "name", "twfloor1", "netns", NETNS)
        ip("addr", "add", f"{VETH_CLIENT}/24", "dev", "twfloor0")
        ip("link", "set", "twfloor0", "up")
        ip("netns", "exec", NETNS, "ip", "addr", "add", f"{VETH_SERVER}/24", "dev", "twfloor1")
        ip("netns", "exec", NETNS, "ip", "link", "set", "twfloor1", "up")
        ip("netns", "exec", NETNS, "ip", "link", "set", "lo", "up")
        if rps_cpus:
            mask = format(sum(1 << c for c in rps_cpus), "x")
            with open("/sys/class/net/twfloor0/queues/rx-0/rps_cpus", "w") as f:
                f.write(mask)
        yield
    finally:
        subprocess.run(["ip", "link", "del", "twfloor0"], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", NETNS], capture_output=True, timeout=30)


def veth_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "--veth needs root (ip netns add, ip link add ... type veth)"
    if shutil.which("ip") is None:
        return "--veth needs iproute2's ip"
    return None


async def run(plan: Plan) -> dict[str, list[Sample]]:
    samples: dict[str, list[Sample]] = {v: [] for v in plan.variants}
    for _ in range(plan.repeat):
        for variant in plan.variants:  # interleaved: one of each per round
            samples[variant].append(await measure(plan, variant))
    return samples


def report(plan: Plan, samples: dict[str, list[Sample]]) -> dict[str, Any]:
    return {
        "floor": {
            "streams": plan.streams,
            "pace": plan.pace,
            "frames_per_s_due": plan.streams / (slots_of(plan.pace) * TICK_S),
            "frame_bytes": plan.frame_bytes,
            "frames": plan.frames,
            "warmup": plan.warmup,
            "window": plan.window,
            "repeat": plan.repeat,
            "pin": plan.pin,
            "net": ("veth+rps" if plan.rps else "veth") if plan.veth else "loopback",
            "variants": {v: summarize(s) for v, s in samples.items()},
        }
    }


def print_report(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    f = doc["floor"]
    table = Table(
        title=(
            f"the floor: {f['streams']} streams x {f['pace']:g}/s, {f['frame_bytes']}-byte "
            f"frames, {f['net']}, median of {f['repeat']}"
        )
    )
    for col in ("variant", "% of a core", "kernel %", "µs/frame", "frames/s", "exact", "load1"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for name, v in f["variants"].items():
        us = v["us_per_frame"]
        table.add_row(
            name,
            f"{v['cpu_pct']:.1f}",
            f"{v['sys_pct']:.1f}",
            "-" if us is None else f"{us:.1f}",
            f"{v['frames_per_s']:.0f}",
            "yes" if v["exact"] else "NO",
            f"{v['load1']:.2f}",
        )
    Console(file=sys.stderr).print(table)
    for name, v in f["variants"].items():
        for e in v["errors"]:
            print(f"{name}: {e}", file=sys.stderr)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.split("\n")[0])
    p.add_argument("--streams", type=int, default=200)
    p.add_argument("--pace", type=float, default=50.0, help="frames per second per stream")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--window", type=float, default=5.0)
    p.add_argument("--frames", type=int, default=0, help="per stream (default: outlast the window)")
    p.add_argument("--frame-bytes", type=int, default=0, help="default: a tokenwire SSE token")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--pin", action="store_true", help="server on CPU 0, this client on the rest")
    p.add_argument("--veth", action="store_true", help="servers in a netns behind a veth pair")
    p.add_argument(
        "--rps",
        action="store_true",
        help="with --veth --pin: the client side's receive work on the client's cores (RPS)",
    )
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--quick", action="store_true", help="3 streams, 20 frames, 0.5 s window")
    sub = p.add_subparsers(dest="cmd")
    s = sub.add_parser("serve", help="(internal) one server")
    s.add_argument("variant", choices=VARIANTS[:-1])
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--streams", type=int, required=True)
    s.add_argument("--pace", type=float, required=True)
    s.add_argument("--frames", type=int, required=True)
    s.add_argument("--frame-bytes", type=int, required=True)
    s.add_argument("--pin", action="store_true")
    return p.parse_args(argv)


def plan_of(ns: argparse.Namespace) -> Plan | str:
    """The plan, or why the arguments make none (one line)."""
    if ns.quick:
        ns.streams, ns.frames, ns.warmup, ns.window = 3, 20, 0.1, 0.5
    size = ns.frame_bytes or token_frame_bytes()
    variants = tuple(v for v in ns.variants.split(",") if v)
    if unknown := [v for v in variants if v not in VARIANTS]:
        return f"unknown variants {unknown}; known: {', '.join(VARIANTS)}"
    if not variants:
        return "--variants names none"
    if size < min_frame_bytes():
        return f"--frame-bytes must be at least {min_frame_bytes()}"
    if ns.streams < 1 or ns.pace <= 0 or ns.repeat < 1 or ns.window <= 0 or ns.warmup < 0:
        return "--streams, --pace, --repeat and --window must be positive, --warmup >= 0"
    frames = ns.frames or math.ceil(ns.pace * (ns.warmup + ns.window + 1.0))
    if frames < 1 or frames > 999_999:
        return "--frames must be between 1 and 999999"
    pin = bool(ns.pin)
    if pin and (os.cpu_count() or 1) < 2:
        print("--pin: a second core is missing; running unpinned", file=sys.stderr)
        pin = False
    if "c-send" in variants and shutil.which("cc") is None:
        return "c-send needs a C compiler (cc); leave it out with --variants"
    if ns.veth and (why := veth_unavailable()):
        return why
    if ns.rps and not (ns.veth and pin):
        return "--rps needs --veth and --pin"
    return Plan(
        streams=ns.streams,
        pace=ns.pace,
        warmup=ns.warmup,
        window=ns.window,
        frames=frames,
        frame_bytes=size,
        repeat=ns.repeat,
        pin=pin,
        veth=bool(ns.veth),
        rps=bool(ns.rps),
        variants=variants,
    )


def main(argv: Sequence[str] | None = None) -> int:
    ns = parse(argv)
    if ns.cmd == "serve":
        serve(ns)
        return 0
    plan = plan_of(ns)
    if isinstance(plan, str):
        print(f"bench.floor: {plan}", file=sys.stderr)
        return 2
    raise_nofile(plan.streams)  # the servers inherit it
    if plan.pin:
        os.sched_setaffinity(0, {c for c in os.sched_getaffinity(0) if c != SERVER_CPU})
    client_cpus = os.sched_getaffinity(0)
    with veth_pair(client_cpus if plan.rps else None) if plan.veth else contextlib.nullcontext():
        samples = uvloop.run(run(plan))
    doc = report(plan, samples)
    print_report(doc)
    print(json.dumps(doc), flush=True)
    return 0 if all(v["exact"] for v in doc["floor"]["variants"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
