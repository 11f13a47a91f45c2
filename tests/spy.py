"""A synthetic source that records what the hub does to it (for cancel tests)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from server.sources.base import Finish, GenerationRequest
from server.sources.synthetic import SyntheticSource


class SpySource(SyntheticSource):
    """SyntheticSource that counts pieces and sees its generator close."""

    def __init__(self, **kw: float) -> None:
        super().__init__(**kw)
        self.yielded: dict[str, int] = {}
        self.closed: dict[str, asyncio.Event] = {}
        self.cancelled: dict[str, bool] = {}

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str | Finish]:
        key = request.prompt
        self.yielded[key] = 0
        self.closed[key] = asyncio.Event()
        self.cancelled[key] = False
        try:
            async for item in super().stream(request):
                if isinstance(item, str):
                    self.yielded[key] += 1
                yield item
        except asyncio.CancelledError:
            self.cancelled[key] = True
            raise
        finally:
            self.closed[key].set()


def spy_sources(**kw: float) -> tuple[SpySource, dict[str, SyntheticSource]]:
    spy = SpySource(**kw)
    return spy, {"synthetic": spy}
