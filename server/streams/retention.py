"""Retention: the finished streams kept for late readers, oldest first, within bounds.

A finished stream's log is kept for ``retention_s`` so that late readers and resumes can
read it, but never beyond the bounds on retained memory: events and bytes, in total and
per client. Past a bound, the oldest finished streams (of that client, for a per-client
bound) are forgotten first, exactly as at the end of ``retention_s``: their reads answer
``410 gone``. Live streams are not counted here; ``max_log_events`` and the caps on live
streams bound them.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Literal

from server.settings import Settings

Bound = Literal["retention_s", "total_events", "total_bytes", "client_events", "client_bytes"]


@dataclass(slots=True)
class _Kept:
    client: str
    finished_at: float
    events: int
    nbytes: int


class Retention:
    """The finished streams in the order they finished, and what they take."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._kept: OrderedDict[str, _Kept] = OrderedDict()
        self._by_client: dict[str, OrderedDict[str, None]] = {}
        self._client_events: Counter[str] = Counter()
        self._client_bytes: Counter[str] = Counter()
        self.events = 0
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._kept)

    def add(
        self, stream_id: str, client: str, finished_at: float, events: int, nbytes: int
    ) -> list[tuple[str, Bound]]:
        """Keep a stream that just finished; return the streams to forget to stay within
        the bounds (oldest first; possibly this one, if it alone passes a bound)."""
        self._kept[stream_id] = _Kept(client, finished_at, events, nbytes)
        self._by_client.setdefault(client, OrderedDict())[stream_id] = None
        self.events += events
        self.nbytes += nbytes
        self._client_events[client] += events
        self._client_bytes[client] += nbytes
        evict: list[tuple[str, Bound]] = []
        while (bound := self._client_over(client)) is not None:
            victim = next(iter(self._by_client[client]))
            self.remove(victim)
            evict.append((victim, bound))
        while (bound := self._total_over()) is not None:
            victim = next(iter(self._kept))
            self.remove(victim)
            evict.append((victim, bound))
        return evict

    def _client_over(self, client: str) -> Bound | None:
        s = self.settings
        if s.max_retained_events_per_client and (
            self._client_events[client] > s.max_retained_events_per_client
        ):
            return "client_events"
        if s.max_retained_bytes_per_client and (
            self._client_bytes[client] > s.max_retained_bytes_per_client
        ):
            return "client_bytes"
        return None

    def _total_over(self) -> Bound | None:
        s = self.settings
        if s.max_retained_events and self.events > s.max_retained_events:
            return "total_events"
        if s.max_retained_bytes and self.nbytes > s.max_retained_bytes:
            return "total_bytes"
        return None

    def remove(self, stream_id: str) -> None:
        kept = self._kept.pop(stream_id, None)
        if kept is None:
            return
        client = kept.client
        mine = self._by_client[client]
        del mine[stream_id]
        if not mine:
            del self._by_client[client]
        self.events -= kept.events
        self.nbytes -= kept.nbytes
        self._client_events[client] -= kept.events
        self._client_bytes[client] -= kept.nbytes
        if not self._client_events[client] and not self._client_bytes[client]:
            del self._client_events[client]
            del self._client_bytes[client]

    def expired(self, before: float) -> list[str]:
        """The streams that finished before ``before`` (oldest first), removed."""
        out: list[str] = []
        for stream_id, kept in self._kept.items():
            if kept.finished_at >= before:
                break
            out.append(stream_id)
        for stream_id in out:
            self.remove(stream_id)
        return out
