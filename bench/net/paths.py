"""The lab's paths: the intermediaries between a client and tokenwire, each started from its
config in ``bench/net/conf/`` on free loopback ports in a temporary directory (never as a
system service), and the lab's certificates, made at run time with the ``openssl`` CLI.

:data:`PATHS` declares each path once: its binary, its config template, what it speaks in
front (scheme, ALPN protocols, HTTP/3), whether it passes WebSocket, and its idle timeout
as deployed. A template's ``{{name}}`` fields are filled by :func:`fill`; ``{{idle_timeout}}``
defaults to the deployed value, and the lab may shorten it (``--idle-timeout``) so that a
quiet period longer than it fits in a run.

What the Debian 12 builds support (checked with ``nginx -V``, ``haproxy -vv``, ``caddy
version``, ``curl --version``): nginx 1.22 has ``http_v2_module`` and no HTTP/3; haproxy 2.6
is built without QUIC (``-QUIC``); caddy 2.6.2 serves HTTP/3; curl 7.88 has HTTP2 and no
HTTP3 (so curl reads HTTP/3 paths over HTTP/2). docs/network.md keeps the list.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

CONF_DIR = Path(__file__).resolve().parent / "conf"

Scheme = Literal["http", "https"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PathSpec:
    """One way from a client to tokenwire."""

    name: str
    summary: str
    #: The executable (None: straight to the server).
    binary: str | None = None
    #: The config template in ``bench/net/conf/``.
    conf: str | None = None
    scheme: Scheme = "http"
    #: What a client may speak to the front: ``http/1.1``, ``h2`` (ALPN), ``h3`` (QUIC).
    protocols: tuple[str, ...] = ("http/1.1",)
    #: The idle timeout as deployed (nginx ``proxy_read_timeout``, haproxy client/server).
    idle_timeout_s: float | None = None
    #: Whether the config passes a WebSocket upgrade.
    passes_ws: bool = True

    def executable(self) -> str:
        """The binary's full path (``/usr/sbin`` too: not on every user's PATH)."""
        assert self.binary is not None
        found = shutil.which(self.binary, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
        if found is None:
            raise RuntimeError(f"{self.binary} is not installed (make system-deps)")
        return found

    def argv(self, conf: Path) -> list[str]:
        exe = self.executable()
        if self.binary == "nginx":
            return [exe, "-p", str(conf.parent), "-c", str(conf)]
        if self.binary == "haproxy":
            return [exe, "-db", "-f", str(conf)]
        return [exe, "run", "--config", str(conf), "--adapter", "caddyfile"]


PATHS: dict[str, PathSpec] = {
    p.name: p
    for p in (
        PathSpec(name="direct", summary="straight to tokenwire (aiohttp), no intermediary"),
        PathSpec(
            name="nginx-default",
            summary="nginx: bare proxy_pass (HTTP/1.0 upstream, buffering on, no upgrade lines)",
            binary="nginx",
            conf="nginx-default.conf",
            idle_timeout_s=60.0,
            passes_ws=False,
        ),
        PathSpec(
            name="nginx-default-ws",
            summary="nginx: proxy_pass with the WebSocket upgrade lines (buffering on)",
            binary="nginx",
            conf="nginx-default-ws.conf",
            idle_timeout_s=60.0,
        ),
        PathSpec(
            name="nginx-buffering",
            summary="nginx buffering: X-Accel-Buffering ignored, gzip on for event streams",
            binary="nginx",
            conf="nginx-buffering.conf",
            idle_timeout_s=60.0,
        ),
        PathSpec(
            name="nginx-gzip",
            summary="nginx: gzip on for event streams, X-Accel-Buffering honoured (buffering on)",
            binary="nginx",
            conf="nginx-gzip.conf",
            idle_timeout_s=60.0,
        ),
        PathSpec(
            name="nginx-stream",
            summary="nginx for streaming: HTTP/2 over TLS, buffering off, WebSocket passed",
            binary="nginx",
            conf="nginx-stream.conf",
            scheme="https",
            protocols=("http/1.1", "h2"),
            idle_timeout_s=3600.0,
        ),
        PathSpec(
            name="haproxy",
            summary="haproxy, HTTP mode, Debian's timeouts (client/server 50 s)",
            binary="haproxy",
            conf="haproxy.cfg",
            idle_timeout_s=50.0,
        ),
        PathSpec(
            name="caddy",
            summary="caddy: reverse_proxy over TLS, HTTP/1.1, HTTP/2 and HTTP/3",
            binary="caddy",
            conf="Caddyfile",
            scheme="https",
            protocols=("http/1.1", "h2", "h3"),
        ),
    )
}

_FIELD = re.compile(r"\{\{(\w+)\}\}")


def fill(template: str, values: dict[str, str]) -> str:
    """A config template with its ``{{name}}`` fields filled; a field without a value is an
    error (a config never starts half-filled)."""
    missing = sorted({m for m in _FIELD.findall(template) if m not in values})
    if missing:
        raise ValueError(f"no value for {', '.join(missing)}")
    return _FIELD.sub(lambda m: values[m.group(1)], template)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A free loopback port (TCP, or UDP too for a port that will also serve QUIC)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if kind == socket.SOCK_STREAM:
            return port
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            try:
                u.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free loopback port")


def _seconds(s: float) -> str:
    return f"{int(s * 1000)}ms"


# ---------------------------------------------------------------------------------------
# Certificates


@dataclass(frozen=True, slots=True)
class Certs:
    """The lab's CA and a leaf for 127.0.0.1 and localhost (PEM files)."""

    ca: Path
    cert: Path
    key: Path

    def spki_sha256(self) -> str:
        """The leaf's public key hash, base64: what Chromium's
        ``--ignore-certificate-errors-spki-list`` takes."""
        der = subprocess.run(
            ["openssl", "x509", "-in", str(self.cert), "-pubkey", "-noout"],
            check=True,
            capture_output=True,
        ).stdout
        pub = subprocess.run(
            ["openssl", "pkey", "-pubin", "-outform", "der"],
            input=der,
            check=True,
            capture_output=True,
        ).stdout
        return base64.b64encode(hashlib.sha256(pub).digest()).decode()


def make_certs(directory: Path) -> Certs:
    """A fresh lab CA and a server certificate it signed (EC P-256, valid 2 days)."""
    d = directory
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=tokenwire lab CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    run("req", *ec, "-keyout", "key.pem", "-out", "leaf.csr", "-subj", "/CN=127.0.0.1")
    (d / "leaf.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
    )
    run(
        "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "cert.pem", "-days", "2", "-extfile", "leaf.ext",
    )  # fmt: skip
    return Certs(d / "ca.pem", d / "cert.pem", d / "key.pem")


# ---------------------------------------------------------------------------------------
# A running intermediary


@dataclass(frozen=True, slots=True)
class Front:
    """Where a client reaches tokenwire through one path."""

    path: PathSpec
    host: str
    port: int
    #: The temporary directory (config, certificates, logs); None for ``direct``.
    dir: Path | None = None
    certs: Certs | None = None

    @property
    def base(self) -> str:
        return f"{self.path.scheme}://{self.host}:{self.port}"


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{proc.args[0]!s} exited with {proc.returncode}: "  # type: ignore[index]
                + log.read_text(errors="replace")[-2000:]
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {limit_s:g} s")


@contextmanager
def start(name: str, upstream_port: int, *, idle_timeout_s: float | None = None) -> Iterator[Front]:
    """Start path ``name`` in front of a tokenwire server on ``upstream_port``, from its
    config in the repo; stop it (and remove its directory) on exit."""
    spec = PATHS[name]
    if spec.binary is None:
        yield Front(spec, "127.0.0.1", upstream_port)
        return
    spec.executable()  # a missing binary fails before anything is made
    assert spec.conf is not None
    directory = Path(tempfile.mkdtemp(prefix=f"tokenwire-net-{name}-"))
    os.chmod(directory, 0o755)  # nginx's workers (nobody) read below it
    port = free_port(socket.SOCK_DGRAM if "h3" in spec.protocols else socket.SOCK_STREAM)
    certs = make_certs(directory) if spec.scheme == "https" else None
    timeout = idle_timeout_s if idle_timeout_s is not None else spec.idle_timeout_s
    values = {
        "dir": str(directory),
        "port": str(port),
        "upstream": str(upstream_port),
        "http_port": str(free_port()),
        "idle_timeout": _seconds(timeout or 60.0),
    }
    conf = directory / spec.conf
    conf.write_text(fill((CONF_DIR / spec.conf).read_text(), values))
    log = directory / "stdout.log"
    env = {**os.environ, "HOME": str(directory), "XDG_DATA_HOME": str(directory)}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            spec.argv(conf),
            cwd=directory,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    try:
        _wait_port(port, proc, log, 15.0)
        yield Front(spec, "127.0.0.1", port, directory, certs)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(directory, ignore_errors=True)
