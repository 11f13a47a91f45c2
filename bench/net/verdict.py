"""What a reading means, without I/O: streamed or one lump, latency percentiles, bytes per
token, and the known reasons a cell fails (table-tested in tests/test_net_shaper.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from bench.stats import percentile

Delivery = Literal["stream", "lump", "none"]

#: A stream counts as streamed when its tokens arrived over at least this share of the time
#: the source took to emit them; a buffering intermediary delivers them within one read
#: (a spread near 0). Low, so that a loaded machine's hiccup is not taken for buffering.
STREAM_SHARE = 0.2


def delivery(tokens: int, first_ns: int | None, last_ns: int | None, span_s: float) -> Delivery:
    """``stream`` if the arrivals spread over at least :data:`STREAM_SHARE` of the source's
    ``span_s``, ``lump`` if they came together at the end, ``none`` if nothing came."""
    if tokens == 0 or first_ns is None or last_ns is None:
        return "none"
    if tokens < 2 or span_s <= 0:
        return "stream"
    return "stream" if (last_ns - first_ns) / 1e9 >= STREAM_SHARE * span_s else "lump"


def latency_ms(latencies_ns: Sequence[int]) -> tuple[float | None, float | None, float | None]:
    """p50, p95, p99 (nearest rank) in ms."""
    ordered = sorted(x / 1e6 for x in latencies_ns)
    return percentile(ordered, 50), percentile(ordered, 95), percentile(ordered, 99)


def per_token(nbytes: int, tokens: int) -> float | None:
    return nbytes / tokens if tokens else None
