"""Typed application state keys."""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from server.hub import Hub
from server.metrics import Metrics
from server.settings import Settings


class Closable(Protocol):
    async def shutdown(self) -> None: ...


SETTINGS = web.AppKey("settings", Settings)
HUB = web.AppKey("hub", Hub)
METRICS = web.AppKey("metrics", Metrics)
SOCKETS: web.AppKey[set[Closable]] = web.AppKey("sockets")
