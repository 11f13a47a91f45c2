"""The sweeper: cancel streams nobody reads, forget finished streams past retention."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from server.settings import Settings
from server.streams.record import CancelReason, StreamRecord
from server.streams.registry import StreamRegistry
from server.streams.retention import Bound, Retention

log = logging.getLogger("tokenwire.hub")


class Sweeper:
    """Runs :meth:`sweep` every ``period`` seconds (a fraction of grace and retention)."""

    def __init__(
        self,
        settings: Settings,
        registry: StreamRegistry,
        retention: Retention,
        cancel: Callable[[StreamRecord, CancelReason], None],
        forget: Callable[[str, Bound], None],
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.retention = retention
        self.cancel = cancel
        self.forget = forget
        self.period = max(0.05, min(1.0, settings.grace_s / 4, settings.retention_s / 4))

    async def sweep(self) -> None:
        """Cancel abandoned streams (no reader here, nor in another process, for
        ``grace_s``); forget finished ones past retention."""
        now_mono = time.monotonic()
        grace = self.settings.grace_s
        unread = [
            stream
            for stream in self.registry
            if stream.state == "running"
            and stream.cancel_reason is None
            and stream.total_subscribers == 0
            and now_mono - stream.last_present >= grace
        ]
        for stream in unread:
            if not await self.registry.present_elsewhere(stream, grace):
                self.cancel(stream, "abandoned")
        for stream_id in self.retention.expired(time.time() - self.settings.retention_s):
            self.forget(stream_id, "retention_s")
        await self.registry.check_owners()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            try:
                await self.sweep()
            except Exception:  # (a store hiccup must not end the sweeping)
                log.exception("sweep failed")
