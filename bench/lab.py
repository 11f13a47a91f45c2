"""The bench's lab bench: a tokenwire server to measure, and the machine's CPU and memory.

Every benchmark spawns ``python -m tokenwire serve`` the same way (a free loopback port,
stream caps raised, no total pace budget), waits for ``/healthz``, and reads CPU and memory
the same way: psutil (a process's user + system time and RSS; the machine's busy time).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import psutil

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------
# The server under test


@dataclass(slots=True)
class Server:
    """A tokenwire server: spawned by :func:`spawn_server` (``proc``), or given by URL."""

    base: str
    pid: int | None
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    retention_s: float = 0.0
    """The spawned server's ``--retention-s`` (0: its default)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn_server(
    cap: int,
    tokens_cap: int,
    retention_s: float,
    extra: Sequence[str],
    module: str = "tokenwire",
    repo: Path = REPO,
) -> Server:
    """Start ``python -m tokenwire serve`` on a free loopback port with the stream caps
    raised to ``cap`` and the total pace budget off (the streams are the measurement);
    its output goes to a temporary log file. (``module``: ``bench.probe`` serves the same
    with the latency probe's routes; ``repo``: the checkout whose code runs.)"""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        module,
        "serve",
        *("--host", "127.0.0.1", "--port", str(port)),
        *("--max-unpaced-streams", str(cap), "--max-live-streams", str(cap)),
        *("--max-streams-per-client", str(cap), "--max-tokens-cap", str(tokens_cap)),
        *("--max-total-tokens-per-s", "0"),
        *(["--retention-s", str(retention_s)] if retention_s else []),
        *extra,
    ]
    fd, name = tempfile.mkstemp(prefix="tokenwire-bench-server-", suffix=".log")
    with os.fdopen(fd, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=repo,
            env={**os.environ, "PYTHONPATH": str(repo)},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return Server(f"http://127.0.0.1:{port}", proc.pid, proc, Path(name), retention_s)


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A ``redis-server`` on a free loopback port, no persistence, its files in
    ``directory``; the process and its URL (``redis://127.0.0.1:PORT/0``) once it answers."""
    port = free_port()
    proc = subprocess.Popen(
        [
            shutil.which("redis-server") or "/usr/bin/redis-server",
            *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)),
            *("--save", "", "--appendonly", "no", "--logfile", str(directory / "redis.log")),
        ],
        stdin=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(200):
        if subprocess.run(
            ["redis-cli", "-p", str(port), "ping"], capture_output=True, check=False
        ).stdout.startswith(b"PONG"):
            return proc, url
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise SystemExit(f"redis-server did not start; see {directory / 'redis.log'}")


def stop_server(server: Server) -> int | None:
    """SIGTERM a spawned server and wait for it (SIGKILL after 15 s); its exit code."""
    proc = server.proc
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def wait_ready(server: Server, limit_s: float) -> None:
    """Until the server answers ``/healthz`` (SystemExit if it exits or never answers)."""
    deadline = time.monotonic() + limit_s
    while True:
        if server.proc is not None and server.proc.poll() is not None:
            raise SystemExit(
                f"the server exited with {server.proc.returncode}; see {server.log_path}"
            )
        try:
            get_json(f"{server.base}/healthz", 1.0)
            return
        except (OSError, ValueError):
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"no server answering at {server.base} after {limit_s:g} s"
                ) from None
            time.sleep(0.1)


def wait_idle(base: str, limit_s: float = 30.0, every_s: float = 0.2) -> None:
    """Until the server has no live stream (the previous run fully ended)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            health = get_json(f"{base}/healthz")
        except (OSError, ValueError) as e:
            raise SystemExit(f"server at {base} stopped answering /healthz: {e!r}") from None
        if health.get("live_streams", 0) == 0:
            return
        time.sleep(every_s)
    print(f"warning: server still has live streams after {limit_s:g} s", file=sys.stderr)


def check_loopback(url: str) -> None:
    """Refuse a target that is not on this machine's loopback (unless --allow-remote)."""
    host = urlsplit(url).hostname
    if not host:
        raise SystemExit(f"{url!r} has no host")
    try:
        addrs = {str(ai[4][0]) for ai in socket.getaddrinfo(host, None)}
    except socket.gaierror as e:
        raise SystemExit(f"cannot resolve {host!r}: {e}") from None
    remote = sorted(a for a in addrs if not ipaddress.ip_address(a.split("%")[0]).is_loopback)
    if remote:
        raise SystemExit(
            f"{host} resolves to non-loopback {', '.join(remote)}: this benchmark loads the "
            "target heavily; pass --allow-remote if you really mean it"
        )


def comma_separated_ints(text: str) -> list[int]:
    """``1,100,1000`` as a command-line value: integers >= 1."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"need integers >= 1: {text!r}")
    return values


def raise_nofile(concurrency: int) -> str:
    """Raise the soft open-files limit for c client sockets (a spawned server inherits it)."""
    need = 3 * concurrency + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    if soft != resource.RLIM_INFINITY and soft < need:
        print(f"warning: open-files limit {soft} < {need} needed", file=sys.stderr)
    return str(soft)


# ---------------------------------------------------------------------------------------
# CPU and memory (psutil: imported when used, since ``tokenwire serve`` imports the
# runner's arguments and the bench extra may not be installed)

MIB = 1024 * 1024


def process_usage(pid: int | None) -> tuple[float | None, int | None]:
    """A process's CPU seconds (user + system) and resident memory in bytes, or Nones."""
    if pid is None:
        return None, None
    import psutil

    try:
        p = psutil.Process(pid)
        t = p.cpu_times()
        return t.user + t.system, p.memory_info().rss
    except psutil.Error:
        return None, None


def machine_busy_s() -> float:
    """CPU seconds all cores spent not idle (nor waiting for I/O) since boot."""
    import psutil

    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0) - _guest(t)


def _guest(t: Any) -> float:
    # Linux counts guest time inside user time too: count it once, as /proc/stat's sum does.
    return float(getattr(t, "guest", 0.0) + getattr(t, "guest_nice", 0.0))


class TreeCPU:
    """CPU seconds of a process and its children (Locust's workers), summed over their
    lives: each pid's last reading is kept after it exits."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.root: psutil.Process = psutil.Process(pid)
        self.seen: dict[int, float] = {}

    def seconds(self) -> float:
        import psutil

        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            procs = []
        for p in procs:
            try:
                t = p.cpu_times()
                self.seen[p.pid] = t.user + t.system
            except psutil.Error:
                pass
        return sum(self.seen.values())

    def rss(self) -> int | None:
        """Resident bytes of the process and its children now (None if it is gone)."""
        import psutil

        try:
            procs = [self.root, *self.root.children(recursive=True)]
            return sum(p.memory_info().rss for p in procs)
        except psutil.Error:
            return None
