"""The sweeper: cancel streams nobody reads, forget finished streams past retention."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from server.settings import Settings
from server.store.base import LogStore
from server.streams.record import CancelReason, StreamRecord
from server.streams.registry import StreamRegistry


class Sweeper:
    """Runs :meth:`sweep` every ``period`` seconds (a fraction of grace and retention)."""

    def __init__(
        self,
        settings: Settings,
        registry: StreamRegistry,
        store: LogStore,
        cancel: Callable[[StreamRecord, CancelReason], None],
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.store = store
        self.cancel = cancel
        self.period = max(0.05, min(1.0, settings.grace_s / 4, settings.retention_s / 4))

    def sweep(self) -> None:
        """Cancel abandoned streams; forget finished ones past retention."""
        now_mono = time.monotonic()
        now = time.time()
        grace = self.settings.grace_s
        retention = self.settings.retention_s
        expired: list[str] = []
        for stream in self.registry:
            if stream.state == "running":
                if (
                    stream.cancel_reason is None
                    and stream.total_subscribers == 0
                    and now_mono - stream.last_present >= grace
                ):
                    self.cancel(stream, "abandoned")
            elif stream.finished_at is not None and now - stream.finished_at >= retention:
                expired.append(stream.id)
        loop = asyncio.get_running_loop()
        for stream_id in expired:
            self.registry.forget(stream_id)
            loop.create_task(self.store.drop(stream_id))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            self.sweep()
