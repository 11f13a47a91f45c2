"""The registry of streams: records by id, and the ids that expired (410, not 404)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator, Mapping

from server.errors import StreamGone, UnknownStream
from server.streams.record import StreamRecord

#: How many expired stream ids are remembered to answer 410 instead of 404.
TOMBSTONES = 100_000


class StreamRegistry(ABC):
    """Where the records of streams are kept and found."""

    @abstractmethod
    def add(self, stream: StreamRecord) -> None:
        """Register a new stream."""

    @abstractmethod
    def find(self, stream_id: str) -> StreamRecord | None:
        """The record, or ``None`` if there is none (never raises)."""

    @abstractmethod
    def expired(self, stream_id: str) -> bool:
        """True if the stream existed and was forgotten (a tombstone remains)."""

    @abstractmethod
    def forget(self, stream_id: str) -> None:
        """Drop a record, leaving a tombstone."""

    @abstractmethod
    def __iter__(self) -> Iterator[StreamRecord]:
        """Every registered record (forget none while iterating)."""

    @abstractmethod
    def __len__(self) -> int: ...

    def get(self, stream_id: str) -> StreamRecord:
        """The record; ``StreamGone`` (410) if it expired, ``UnknownStream`` (404) if never."""
        stream = self.find(stream_id)
        if stream is None:
            if self.expired(stream_id):
                raise StreamGone(f"stream {stream_id!r} has expired")
            raise UnknownStream(stream_id)
        return stream


class MemoryRegistry(StreamRegistry):
    """Records in this process's memory; the last ``tombstones`` expired ids remembered."""

    def __init__(self, tombstones: int = TOMBSTONES) -> None:
        self.records: dict[str, StreamRecord] = {}
        self._tombstones: OrderedDict[str, None] = OrderedDict()
        self._max_tombstones = tombstones

    def add(self, stream: StreamRecord) -> None:
        self.records[stream.id] = stream

    def find(self, stream_id: str) -> StreamRecord | None:
        return self.records.get(stream_id)

    def expired(self, stream_id: str) -> bool:
        return stream_id in self._tombstones

    def forget(self, stream_id: str) -> None:
        if self.records.pop(stream_id, None) is None:
            return
        self._tombstones[stream_id] = None
        if len(self._tombstones) > self._max_tombstones:
            self._tombstones.popitem(last=False)

    def __iter__(self) -> Iterator[StreamRecord]:
        return iter(self.records.values())

    def __len__(self) -> int:
        return len(self.records)

    def mapping(self) -> Mapping[str, StreamRecord]:
        return self.records
