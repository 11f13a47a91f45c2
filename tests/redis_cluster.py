"""A real Redis Cluster for the tests: three ``redis-server --cluster-enabled yes`` masters
on free loopback ports in a temporary directory, joined by ``redis-cli --cluster create``
(no replicas). Starts in about a second."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.redis_server import REDIS_SERVER, free_port

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def command(port: int, *args: str, timeout: float = 2.0) -> bytes:
    """One inline command to ``127.0.0.1:port``; its raw reply (first read)."""
    with socket.create_connection(("127.0.0.1", port), timeout) as s:
        s.sendall(" ".join(args).encode() + b"\r\n")
        return s.recv(65536)


class RedisCluster:
    """Three cluster masters in ``directory``; ``url`` is tokenwire's store URL for it
    (one startup node: the client discovers the others)."""

    def __init__(self, directory: Path, masters: int = 3) -> None:
        self.directory = directory
        self.ports = [free_port() for _ in range(masters)]
        # (the bus port is named: the default, port + 10000, may be taken or out of range)
        self.bus = {port: free_port() for port in self.ports}
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def start(self) -> None:
        for port in self.ports:
            self._start_node(port)
        for port in self.ports:
            self._wait_pong(port)
        create = subprocess.run(
            [
                REDIS_CLI,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                *("--cluster-replicas", "0", "--cluster-yes"),
            ],
            capture_output=True,
            timeout=30,
            check=False,
        )
        if create.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {create.stdout!r}")
        deadline = time.monotonic() + 15
        while not all(b"cluster_state:ok" in command(p, "CLUSTER", "INFO") for p in self.ports):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster never became ok; see {self.directory}")
            time.sleep(0.05)

    def _start_node(self, port: int) -> None:
        d = self.directory / str(port)
        d.mkdir(exist_ok=True)
        self.procs[port] = subprocess.Popen(
            [
                REDIS_SERVER,
                *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(d)),
                *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                *("--cluster-port", str(self.bus[port])),
                *("--appendonly", "no", "--save", "", "--daemonize", "no"),
                *("--logfile", str(d / "redis.log")),
            ],
            stdin=subprocess.DEVNULL,
        )

    def _wait_pong(self, port: int) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                if command(port, "PING", timeout=0.2).startswith(b"+PONG"):
                    return
            except OSError:
                pass
            if self.procs[port].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server :{port} did not start; see {self.directory}")
            time.sleep(0.05)

    def keyslot(self, key: str) -> int:
        reply = command(self.ports[0], "CLUSTER", "KEYSLOT", key)
        assert reply.startswith(b":"), reply
        return int(reply[1:].strip())

    def master_of(self, key: str) -> int:
        """The port of the master that holds ``key``'s slot."""
        slot = self.keyslot(key)
        for port in self.ports:
            if command(port, "CLUSTER", "COUNTKEYSINSLOT", str(slot)) and self._owns(port, slot):
                return port
        raise AssertionError(f"no master holds slot {slot}")

    def _owns(self, port: int, slot: int) -> bool:
        # CLUSTER NODES: "id host:port@bus flags ... connected 0-5460 ..." for each node.
        reply = command(port, "CLUSTER", "NODES").decode()
        for line in reply.splitlines():
            if "myself" in line:
                for part in line.split()[8:]:
                    low, _, high = part.partition("-")
                    if low.isdigit() and int(low) <= slot <= int(high or low):
                        return True
        return False

    def flush(self) -> None:
        for port in self.ports:
            assert command(port, "FLUSHALL").startswith(b"+OK")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
