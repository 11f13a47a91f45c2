"""The log store interface: append-only per-stream logs, read from any position.

A store keeps, for each stream id, the events ``seq = 0, 1, 2, ...`` appended by the
stream's one generation. Readers never take anything away: fan-out, late join and resume
are all ``read(stream, after=seq)``. A store may forget old events (a retention cap); a
read from a forgotten position raises :class:`~server.errors.StreamGone`, never returns a
silent gap.

Implementations must make ``read`` wait efficiently (no polling loop) and must not let
the number of readers grow memory: readers hold only their own position.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

from server.events import Event


class LogStore(ABC):
    """Append-only event logs keyed by stream id."""

    #: Whether :meth:`append_now` works: an append that completes in the caller's step,
    #: without awaiting (the pacing clock then appends a paced stream's tokens itself).
    appends_now: ClassVar[bool] = False

    @abstractmethod
    async def open(self, stream_id: str) -> None:
        """Create an empty log for a new stream."""

    @abstractmethod
    async def append(self, stream_id: str, event: Event) -> None:
        """Append the next event (its ``seq`` is the log's next position).

        A terminal event (``done``/``error``) closes the log: nothing follows it.
        """

    def append_now(self, stream_id: str, event: Event) -> None:
        """``append()``, completed before it returns; only where :attr:`appends_now`."""
        raise NotImplementedError

    async def settle(self, stream_id: str) -> int:
        """Wait for an append interrupted by a cancel to complete; the log's next seq.

        ``append`` is all or nothing even when the task awaiting it is cancelled: the
        generation asks here what its next ``seq`` is before it appends its final event.
        """
        raise NotImplementedError

    @abstractmethod
    async def read(
        self, stream_id: str, after: int, *, limit: int, wait: float | None
    ) -> list[Event]:
        """Events with ``seq > after``, at most ``limit``, oldest first.

        If none exist yet and the log is open, wait up to ``wait`` seconds (``None``:
        no limit) for one; return ``[]`` when that time passes, or at once if the log is closed.
        Raises ``StreamGone`` if ``after + 1`` is older than what is retained and
        ``UnknownStream`` if there is no such log.
        """

    async def read_pushing(
        self,
        stream_id: str,
        after: int,
        *,
        limit: int,
        wait: float | None,
        push: Callable[[Event], bool],
    ) -> list[Event]:
        """``read()``; while it waits, a store may offer each new token to ``push`` first,
        synchronously in the appender's step. If ``push(event)`` returns ``True`` the
        reader has taken it (written it) and keeps waiting from there, without a wake-up;
        otherwise the read returns it as ``read()`` would. Terminal events are never pushed.
        A ``wait`` limit counts from the last pushed token. By default: a plain ``read()``.
        """
        return await self.read(stream_id, after, limit=limit, wait=wait)

    @abstractmethod
    async def drop(self, stream_id: str) -> None:
        """Forget a stream's log (after its retention period). Wakes waiting readers."""

    @abstractmethod
    async def retained(self, stream_id: str) -> tuple[int, int]:
        """How many events the log keeps, and about how many bytes of memory they take
        (what the retained-memory bounds count for a finished stream)."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect, before the server accepts requests (``StoreUnavailable`` if it cannot)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections at shutdown."""
