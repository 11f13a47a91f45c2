"""Admission: the caps a new stream must pass, and the counts they are checked against.

A stream is counted from :meth:`Admission.admit` until :meth:`Admission.release` (when its
generation ended): live streams, per client, unpaced, and the sum of requested paces.
"""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple

from server.errors import ServerBusy, TooManyStreams
from server.settings import Settings
from server.streams.record import StreamRecord


class Counts(NamedTuple):
    """What the caps are checked against: live streams, this client's, unpaced, paces."""

    live: int
    client: int
    unpaced: int
    pace: float


def refuse(settings: Settings, counts: Counts, unpaced: bool, pace: float) -> None:
    """Raise the error a new stream gets with ``counts`` already live (or nothing)."""
    s = settings
    if counts.live >= s.max_live_streams:
        raise ServerBusy(
            f"{counts.live} streams are live; the server limit is {s.max_live_streams}",
            code="too_many_streams",
            retry_after=5,
        )
    if counts.client >= s.max_streams_per_client:
        raise TooManyStreams(
            f"this client has {counts.client} live streams; "
            f"the limit per client is {s.max_streams_per_client}",
            retry_after=5,
        )
    if unpaced and counts.unpaced >= s.max_unpaced_streams:
        raise ServerBusy(
            f"{counts.unpaced} unpaced streams (tokens_per_s=0) are live; "
            f"the limit is {s.max_unpaced_streams}",
            code="too_many_unpaced_streams",
            retry_after=5,
        )
    if s.max_total_tokens_per_s and counts.pace + pace > s.max_total_tokens_per_s:
        raise ServerBusy(
            f"the live streams ask for {counts.pace:.10g} tokens/s; {pace:.10g} more would "
            f"pass the server's limit of {s.max_total_tokens_per_s:.10g}",
            code="pace_budget_exceeded",
            retry_after=5,
        )


class Admission:
    """The caps of one process (``max_live_streams``, per client, unpaced, pace budget)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.live = 0
        self._per_client: Counter[str] = Counter()
        self._unpaced = 0
        self._pace = 0.0  # the sum of the live streams' requested paces

    def check(self, client: str, unpaced: bool, pace: float) -> None:
        """Raise the error a new stream with these traits gets, or nothing if it fits."""
        refuse(
            self.settings,
            Counts(self.live, self._per_client[client], self._unpaced, self._pace),
            unpaced,
            pace,
        )

    async def enter(self, stream: StreamRecord) -> None:
        """Check the caps and count the stream (atomically, for a shared admission)."""
        self.check(stream.client, stream.unpaced, stream.pace)
        self.admit(stream)

    async def leave(self, stream: StreamRecord) -> None:
        """Stop counting a stream whose generation ended."""
        self.release(stream)

    async def start(self) -> None:  # noqa: B027 - for a shared admission
        """Begin (a shared admission joins the cluster's counts)."""

    async def aclose(self) -> None:  # noqa: B027 - for a shared admission
        """Stop (at shutdown)."""

    def admit(self, stream: StreamRecord) -> None:
        """Count a stream that passed :meth:`check`."""
        self.live += 1
        self._per_client[stream.client] += 1
        self._unpaced += stream.unpaced
        self._pace += stream.pace

    def release(self, stream: StreamRecord) -> None:
        """Stop counting a stream whose generation ended."""
        self.live -= 1
        self._per_client[stream.client] -= 1
        if not self._per_client[stream.client]:
            del self._per_client[stream.client]
        self._unpaced -= stream.unpaced
        self._pace = self._pace - stream.pace if self.live else 0.0  # (no float drift at rest)
