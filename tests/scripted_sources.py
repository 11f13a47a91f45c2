"""Synthetic sources that end as a test needs: with an error, or with ``stop``."""

from __future__ import annotations

from collections.abc import AsyncIterator

from server.errors import SourceError
from server.sources.base import Finish, GenerationRequest
from server.sources.synthetic import SyntheticSource


class FailingSource(SyntheticSource):
    """Synthetic pieces, then a ``SourceError`` after ``fail_after`` of them."""

    def __init__(self, fail_after: int, error: SourceError) -> None:
        super().__init__(ttft_ms=0, tokens_per_s=0)
        self.fail_after = fail_after
        self.error = error

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str | Finish]:
        n = 0
        async for item in super().stream(request):
            if n == self.fail_after:
                raise self.error
            n += 1
            yield item


class StoppingSource(SyntheticSource):
    """Synthetic pieces, ending with ``stop`` (the model ended) after ``stop_after``."""

    def __init__(self, stop_after: int) -> None:
        super().__init__(ttft_ms=0, tokens_per_s=0)
        self.stop_after = stop_after

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str | Finish]:
        n = 0
        async for item in super().stream(request):
            if n == self.stop_after:
                yield Finish("stop")
                return
            n += 1
            yield item
