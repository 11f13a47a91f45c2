"""A real bandwidth limit for the lab: the kernel's ``tbf`` qdisc on the loopback of a
network namespace of its own (root only; this kernel has no ``netem``, but ``tbf`` works).

``with tbf_namespace(8_000) as ns:`` makes a namespace, brings its ``lo`` up with an
Ethernet-sized MTU (1500, so that the token bucket meters packets a link would carry, not
64 KiB loopback segments), and puts a token bucket of ``rate_kbit`` on it; ``ns.argv(cmd)``
runs a command inside (``ip netns exec``); on exit the namespace is deleted.

Every loopback packet inside the namespace crosses that one queue, so the rate caps the
sum of all the hops inside (a lab cell's bytes cross ``lo`` once per hop: client to
shaper, shaper to proxy, proxy to server, and back), and what exceeds the bucket's queue
(``latency_ms`` of it) is dropped by the kernel: real TCP retransmits, real QUIC loss,
which the userspace shaper cannot make. ``tokenwire bench --net --tbf-kbit N`` runs the
whole lab inside one (docs/network.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

#: The MTU set on the namespace's loopback (bytes).
MTU = 1500


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def unavailable() -> str | None:
    """Why this machine cannot give the lab a ``tbf`` namespace, in one line, or None."""
    if os.geteuid() != 0:
        return "tbf in a network namespace needs root (ip netns add, tc qdisc add)"
    for tool in ("ip", "tc"):
        if shutil.which(tool, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin") is None:
            return f"{tool} is not installed (iproute2)"
    return None


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str
    rate_kbit: float

    def argv(self, cmd: Sequence[str]) -> list[str]:
        """``cmd`` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *cmd]

    def qdisc(self) -> dict[str, int]:
        """The token bucket's counters: ``bytes`` and ``packets`` sent, ``drops``."""
        r = _run("ip", "netns", "exec", self.name, "tc", "-s", "-j", "qdisc", "show", "dev", "lo")
        (q,) = (q for q in json.loads(r.stdout) if q.get("kind") == "tbf")
        return {k: int(q[k]) for k in ("bytes", "packets", "drops")}


@contextmanager
def tbf_namespace(
    rate_kbit: float, *, latency_ms: float = 50.0, name: str | None = None
) -> Iterator[Namespace]:
    """A fresh network namespace whose loopback is capped at ``rate_kbit`` (1000 bit/s)
    by ``tbf`` (a bucket of 10 ms of the rate, at least two packets; at most
    ``latency_ms`` of queue before the kernel drops). Deleted on exit."""
    if not rate_kbit > 0:
        raise ValueError(f"a tbf rate must be above 0 kbit/s, not {rate_kbit:g}")
    why = unavailable()
    if why is not None:
        raise RuntimeError(why)
    ns = Namespace(name or f"tokenwire-tbf-{os.getpid()}", rate_kbit)
    made = _run("ip", "netns", "add", ns.name)
    if made.returncode != 0:
        raise RuntimeError(f"ip netns add {ns.name}: {made.stderr.strip()}")
    try:
        burst = max(int(rate_kbit * 1000 / 8 * 0.01), 2 * (MTU + 14))
        for argv in (
            ["ip", "link", "set", "lo", "mtu", str(MTU)],
            ["ip", "link", "set", "lo", "up"],
            ["tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", f"{rate_kbit:g}kbit",
             "burst", str(burst), "latency", f"{latency_ms:g}ms"],
        ):  # fmt: skip
            r = _run(*ns.argv(argv))
            if r.returncode != 0:
                raise RuntimeError(f"{' '.join(argv)} in {ns.name}: {r.stderr.strip()}")
        yield ns
    finally:
        _run("ip", "netns", "del", ns.name)
