"""Newline-delimited JSON framing for chunked HTTP: one event per line.

An empty line is a heartbeat; clients skip it.
"""

from __future__ import annotations

from collections.abc import Iterable

from server.events import Event

HEARTBEAT = b"\n"


def ndjson_lines(events: Iterable[Event]) -> bytes:
    return b"".join(e.data + b"\n" for e in events)


def ndjson_control(data: bytes) -> bytes:
    return data + b"\n"
