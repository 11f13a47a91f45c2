"""``tbf`` in a network namespace (``bench/net/netns.py``): a real kernel bandwidth limit
on the namespace's loopback. Real ``ip netns`` and ``tc`` (the tests run as root here)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.net.netns import MTU, tbf_namespace, unavailable

#: Inside the namespace: 1 MB from one loopback socket to another, timed by the receiver.
TRANSFER = """
import socket, threading, time
srv = socket.create_server(("127.0.0.1", 0))
port = srv.getsockname()[1]
def send():
    c, _ = srv.accept()
    c.sendall(bytes(1_000_000))
    c.close()
threading.Thread(target=send).start()
s = socket.create_connection(("127.0.0.1", port))
t0, got = time.monotonic(), 0
while data := s.recv(65536):
    got += len(data)
print(got, round(time.monotonic() - t0, 3))
"""


def test_this_machine_allows_tbf_in_a_namespace() -> None:
    assert unavailable() is None


def test_tbf_caps_a_real_transfer_on_the_namespaces_loopback() -> None:
    """8 Mbit/s: 1 MB takes at least ~1 s (a lower bound: the kernel never passes it
    faster), and the bucket counted at least the payload."""
    with tbf_namespace(8_000, name="tokenwire-tbf-test") as ns:
        out = subprocess.run(
            ns.argv([sys.executable, "-c", TRANSFER]),
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        got, seconds = out.stdout.split()
        stats = ns.qdisc()
        mtu = subprocess.run(
            ns.argv(["cat", "/sys/class/net/lo/mtu"]), capture_output=True, text=True, check=True
        ).stdout.strip()
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert got == "1000000"
    assert float(seconds) >= 0.9
    assert stats["bytes"] >= 1_000_000
    assert mtu == str(MTU)
    assert "tokenwire-tbf-test" in listed
    after = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "tokenwire-tbf-test" not in after  # deleted on exit


@pytest.mark.parametrize("rate", [0, -5])
def test_a_bad_rate_is_refused_in_one_line(rate: float) -> None:
    with pytest.raises(ValueError, match=f"^a tbf rate must be above 0 kbit/s, not {rate}$"):
        with tbf_namespace(rate):
            pass


def test_the_lab_runs_inside_a_tbf_namespace(tmp_path: Path) -> None:
    """``tokenwire bench --net --tbf-kbit N``: the lab (server, shaper, client) runs in a
    namespace capped by tbf; its cells end exact and the report says what the bucket
    passed and dropped."""
    from tokenwire.cli import main

    args = ["bench", "--net", "--quick", "--net-paths", "direct", "--net-profiles", "lan"]
    args += ["--net-clients", "python", "--tbf-kbit", "4000", "--out", str(tmp_path)]
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert {(r["transport"], r["exact"], r["error"]) for r in rows} == {
        (t, True, None) for t in ("sse", "ws", "poll", "chunked")
    }
    note = (tmp_path / "report.md").read_text().rsplit("\n\n", 1)[1]
    assert re.fullmatch(
        r"Run inside a network namespace whose loopback tbf capped at 4000 kbit/s \(every hop "
        r"inside shares it\): \d+ bytes in \d+ packets passed it, \d+ packets dropped\.\n",
        note,
    )


def test_bench_net_refuses_a_bad_tbf_rate_in_one_line() -> None:
    from tokenwire.cli import main

    with pytest.raises(SystemExit) as e:
        main(["bench", "--net", "--tbf-kbit", "0"])
    assert (
        e.value.code
        == "tokenwire bench --net: --tbf-kbit: a tbf rate must be above 0 kbit/s, not 0"
    )
