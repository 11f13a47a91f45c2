"""Allowlists of origins and hosts, parsed from the settings' text (pure; no I/O).

:mod:`server.settings` parses them to refuse a bad list at start, naming the setting;
:mod:`server.security` applies them to requests.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}
#: Distinct ``Host``/``Origin`` texts whose parse is remembered (per process). A server sees
#: a handful; the bound keeps made-up values from growing it. Parsing them per request
#: (``urlsplit``, ``ipaddress``) cost about 5% of the long-poll CPU.
PARSE_CACHE = 1024


@lru_cache(maxsize=PARSE_CACHE)
def normalize_origin(text: str) -> str | None:
    """``scheme://host[:port]`` in the form browsers send in ``Origin`` (lower case, no
    default port), or None if ``text`` is not an http(s) origin (``null``, a path, ...)."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if (
        scheme not in _DEFAULT_PORTS
        or not host
        or parts.path
        or parts.query
        or parts.fragment
        or "@" in parts.netloc
    ):
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


@lru_cache(maxsize=PARSE_CACHE)
def own_origin(scheme: str, host: str | None) -> str | None:
    """The server's origin as this request reached it: its scheme and its ``Host``."""
    if not host:
        return None
    return normalize_origin(f"{scheme}://{host}")


@lru_cache(maxsize=PARSE_CACHE)
def host_name(host: str | None) -> str | None:
    """The name in a ``Host`` header (lower case, IPv6 without brackets), without the port."""
    if not host:
        return None
    try:
        return urlsplit(f"//{host}").hostname
    except ValueError:
        return None


@lru_cache(maxsize=PARSE_CACHE)
def is_loopback_name(name: str) -> bool:
    """``localhost``, ``*.localhost`` (RFC 6761: always loopback), 127.0.0.0/8 or ::1."""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class OriginList:
    """A parsed origin allowlist: ``*`` (any origin) or exact origins."""

    any: bool = False
    origins: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, raw: str, setting: str) -> OriginList:
        """Parse ``a, b`` or ``*``; raise ValueError naming ``setting`` on a bad entry."""
        entries = [e.strip() for e in raw.split(",") if e.strip()]
        if "*" in entries:
            if len(entries) > 1:
                raise ValueError(f"{setting}: '*' allows every origin; list nothing else")
            return cls(any=True)
        origins = set()
        for entry in entries:
            origin = normalize_origin(entry)
            if origin is None:
                raise ValueError(
                    f"{setting}: {entry!r} is not an origin (http(s)://host[:port], no path)"
                )
            origins.add(origin)
        return cls(origins=frozenset(origins))

    def __bool__(self) -> bool:
        return self.any or bool(self.origins)

    def allows(self, origin: str) -> bool:
        if self.any:
            return True
        normal = normalize_origin(origin)
        return normal is not None and normal in self.origins


@dataclass(frozen=True, slots=True)
class HostList:
    """The ``Host`` names the server answers to: any, loopback names only, or a list."""

    any: bool = False
    loopback: bool = False
    names: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, raw: str, listen_host: str) -> HostList:
        """``allowed_hosts`` as set; empty means loopback names when ``listen_host`` is a
        loopback address or name, any name otherwise."""
        entries = [e.strip().lower() for e in raw.split(",") if e.strip()]
        if "*" in entries:
            if len(entries) > 1:
                raise ValueError("allowed_hosts: '*' allows every host; list nothing else")
            return cls(any=True)
        if entries:
            names = {host_name(e) for e in entries}
            if None in names:
                raise ValueError(f"allowed_hosts: not host names: {raw!r}")
            return cls(names=frozenset(n for n in names if n))
        listen = host_name(listen_host) or listen_host
        return cls(loopback=True) if is_loopback_name(listen) else cls(any=True)

    def allows(self, host: str | None) -> bool:
        if self.any or host is None:  # no Host (HTTP/1.0): not a browser
            return True
        name = host_name(host)
        if name is None:
            return False
        return name in self.names or (self.loopback and is_loopback_name(name))
