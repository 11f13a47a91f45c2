"""The registry of streams: records by id, and the ids that expired (410, not 404)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from server.errors import StreamGone, UnknownStream
from server.streams.record import StreamRecord

#: How many expired stream ids are remembered to answer 410 instead of 404.
TOMBSTONES = 100_000
#: Why a stream is gone, after "stream 'ID' " (a tombstone holds one of a few shared strings).
EXPIRED = "has expired"


class StreamRegistry(ABC):
    """Where the records of streams are kept and found."""

    @abstractmethod
    def add(self, stream: StreamRecord) -> None:
        """Register a new stream."""

    @abstractmethod
    def find(self, stream_id: str) -> StreamRecord | None:
        """The record, or ``None`` if there is none (never raises)."""

    @abstractmethod
    def expired(self, stream_id: str) -> str | None:
        """Why the stream was forgotten, if it existed and its tombstone remains."""

    @abstractmethod
    def forget(self, stream_id: str, why: str = EXPIRED) -> None:
        """Drop a record, leaving a tombstone that answers ``410`` with ``why``."""

    @abstractmethod
    def __iter__(self) -> Iterator[StreamRecord]:
        """Every registered record (forget none while iterating)."""

    @abstractmethod
    def __len__(self) -> int: ...

    # ----- what a registry shared by processes adds (a local registry: nothing) -----

    async def start(self, on_cancel: Callable[[str], None]) -> None:  # noqa: B027
        """Begin: ``on_cancel(id)`` is called when another process cancels a stream."""

    async def aclose(self) -> None:  # noqa: B027
        """Stop (at shutdown)."""

    async def lookup(self, stream_id: str) -> StreamRecord:
        """The record, wherever the stream was made (404/410 as :meth:`get`)."""
        return self.get(stream_id)

    async def status(self, stream_id: str) -> dict[str, Any]:
        """``GET /api/streams/{id}``, with the readers of every process."""
        return self.get(stream_id).status()

    async def published(self, stream: StreamRecord) -> None:  # noqa: B027
        """The stream was created, made progress or finished here: tell the others."""

    async def note(self, stream: StreamRecord, name: str, value: bytes) -> None:
        """Keep ``value`` with the stream's record as ``name``, for every process to read
        (``stream.notes``), for as long as the record lives."""
        stream.notes[name] = value

    async def request_cancel(self, stream_id: str) -> None:  # noqa: B027
        """Cancel a stream that runs in another process."""

    async def reader(self, stream: StreamRecord, reader: str, delta: int) -> None:  # noqa: B027
        """A reader of ``stream`` opened (+1) or closed (-1) here."""

    async def end_open_log(self, stream_id: str, code: str, message: str) -> int | None:
        """End a log its generation could not finish (the store failed), if it is still
        open: an ``error`` event with ``code`` at its next seq. Its seq, -1 if the log was
        closed, None if this registry cannot (a local one never needs to)."""
        return None

    async def check_owners(self) -> None:  # noqa: B027
        """End the streams read here whose generating process was lost."""

    async def present_elsewhere(self, stream: StreamRecord, grace_s: float) -> bool:
        """Whether a reader in another process is reading, or was within ``grace_s``."""
        return False

    def get(self, stream_id: str) -> StreamRecord:
        """The record; ``StreamGone`` (410) if it expired, ``UnknownStream`` (404) if never."""
        stream = self.find(stream_id)
        if stream is None:
            why = self.expired(stream_id)
            if why is not None:
                raise StreamGone(f"stream {stream_id!r} {why}")
            raise UnknownStream(stream_id)
        return stream


class MemoryRegistry(StreamRegistry):
    """Records in this process's memory; the last ``tombstones`` expired ids remembered."""

    def __init__(self, tombstones: int = TOMBSTONES) -> None:
        self.records: dict[str, StreamRecord] = {}
        self._tombstones: OrderedDict[str, str] = OrderedDict()
        self._max_tombstones = tombstones

    def add(self, stream: StreamRecord) -> None:
        self.records[stream.id] = stream

    def find(self, stream_id: str) -> StreamRecord | None:
        return self.records.get(stream_id)

    def expired(self, stream_id: str) -> str | None:
        return self._tombstones.get(stream_id)

    def forget(self, stream_id: str, why: str = EXPIRED) -> None:
        if self.records.pop(stream_id, None) is None:
            return
        self._tombstones[stream_id] = why
        if len(self._tombstones) > self._max_tombstones:
            self._tombstones.popitem(last=False)

    def __iter__(self) -> Iterator[StreamRecord]:
        return iter(self.records.values())

    def __len__(self) -> int:
        return len(self.records)

    def mapping(self) -> Mapping[str, StreamRecord]:
        return self.records
