"""Prometheus metrics, one registry per app (so tests can build many apps)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import TracebackType

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from wire import READERS, Reader


class Metrics:
    """The server's counters and gauges. Transports count per write, not per byte loop."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.live_streams = Gauge(
            "tokenwire_live_streams", "Streams still generating", registry=self.registry
        )
        #: Open readers by transport: plain integers on every request's path (a
        #: prometheus_client Gauge takes a lock per ``inc``/``dec``), read at scrape time
        #: (``tokenwire_subscribers``).
        self._readers: dict[Reader, list[int]] = {t: [0] for t in READERS}
        self.streams_created = Counter(
            "tokenwire_streams_created",
            "Streams created, by source",
            ["source"],
            registry=self.registry,
        )
        self.streams_finished = Counter(
            "tokenwire_streams_finished",
            "Streams ended, by final state",
            ["state"],
            registry=self.registry,
        )
        self.tokens_generated = Counter(
            "tokenwire_tokens_generated", "Token events appended", registry=self.registry
        )
        #: Events and body bytes written, by transport: plain integers on the write path
        #: (a prometheus_client Counter takes a lock per ``inc``, twice per write), read at
        #: scrape time by :class:`_SentCollector`.
        self._sent: dict[Reader, list[int]] = {t: [0, 0] for t in READERS}
        self.registry.register(_TallyCollector(self._readers, self._sent))
        self.retained_streams = Gauge(
            "tokenwire_retained_streams",
            "Finished streams whose logs are kept for late readers",
            registry=self.registry,
        )
        self.retained_events = Gauge(
            "tokenwire_retained_events",
            "Events in the logs of finished streams",
            registry=self.registry,
        )
        self.retained_bytes = Gauge(
            "tokenwire_retained_bytes",
            "Memory the logs of finished streams take (bytes, as the store counts it)",
            registry=self.registry,
        )
        self.streams_forgotten = Counter(
            "tokenwire_streams_forgotten",
            "Finished streams forgotten, by the bound that forgot them (retention_s, "
            "total_events, total_bytes, client_events, client_bytes)",
            ["bound"],
            registry=self.registry,
        )
        self.node = Gauge(
            "tokenwire_node",
            "This process (--node-id, default host-pid): always 1",
            ["node"],
            registry=self.registry,
        )
        # The labelled children met on every stream's path, looked up once each.
        self._created: dict[str, Counter] = {}
        self._finished: dict[str, Counter] = {}

    def bind_live(self, live: Callable[[], int]) -> None:
        """Read the live count from the hub at scrape time instead of updating it."""
        self.live_streams.set_function(live)

    def bind_retained(
        self, streams: Callable[[], int], events: Callable[[], int], nbytes: Callable[[], int]
    ) -> None:
        """Read the retained figures from the hub at scrape time."""
        self.retained_streams.set_function(streams)
        self.retained_events.set_function(events)
        self.retained_bytes.set_function(nbytes)

    def reading(self, transport: Reader) -> _Reading:
        """``async with metrics.reading(t):`` counts an open reader of transport ``t``
        (each transport counts its own)."""
        return _Reading(self._readers[transport])

    def created(self, source: str) -> None:
        """A stream of ``source`` was created (``tokenwire_streams_created``)."""
        child = self._created.get(source)
        if child is None:
            child = self._created[source] = self.streams_created.labels(source)
        child.inc()

    def finished(self, state: str) -> None:
        """A stream ended in ``state`` (``tokenwire_streams_finished``)."""
        child = self._finished.get(state)
        if child is None:
            child = self._finished[state] = self.streams_finished.labels(state)
        child.inc()

    def sent(self, transport: Reader, events: int, nbytes: int) -> None:
        tally = self._sent[transport]
        tally[0] += events
        tally[1] += nbytes

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _TallyCollector(Collector):
    """``tokenwire_subscribers`` (open readers), ``tokenwire_events_sent_total`` and
    ``tokenwire_bytes_sent_total``, by transport, from the tallies :meth:`Metrics.reading`
    and :meth:`Metrics.sent` keep (one event loop thread writes them)."""

    def __init__(self, readers: dict[Reader, list[int]], sent: dict[Reader, list[int]]) -> None:
        self._readers = readers
        self._sent = sent

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        readers = GaugeMetricFamily(
            "tokenwire_subscribers", "Open subscriptions by transport", labels=["transport"]
        )
        for transport, (n_open,) in self._readers.items():
            readers.add_metric([transport], n_open)
        yield readers
        events = CounterMetricFamily(
            "tokenwire_events_sent", "Events written to clients, by transport", labels=["transport"]
        )
        nbytes = CounterMetricFamily(
            "tokenwire_bytes_sent",
            "Body bytes written to clients, by transport",
            labels=["transport"],
        )
        for transport, (n_events, n_bytes) in self._sent.items():
            events.add_metric([transport], n_events)
            nbytes.add_metric([transport], n_bytes)
        yield events
        yield nbytes


class _Reading:
    """Counts one open reader on a tally while entered."""

    __slots__ = ("_tally",)

    def __init__(self, tally: list[int]) -> None:
        self._tally = tally

    async def __aenter__(self) -> None:
        self._tally[0] += 1

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._tally[0] -= 1
