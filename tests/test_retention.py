"""Retention of finished streams: the bounds on their memory, oldest forgotten first."""

from __future__ import annotations

import pytest

from server.settings import Settings
from server.streams.retention import Retention

UNBOUNDED = {
    "max_retained_events": 0,
    "max_retained_bytes": 0,
    "max_retained_events_per_client": 0,
    "max_retained_bytes_per_client": 0,
}


def retention(**bounds: int) -> Retention:
    return Retention(Settings(**{**UNBOUNDED, **bounds}))


@pytest.mark.parametrize(
    ("bounds", "evicted"),
    [
        ({}, []),
        ({"max_retained_events": 25}, [("a1", "total_events"), ("b1", "total_events")]),
        ({"max_retained_bytes": 3000}, [("a1", "total_bytes")]),
        ({"max_retained_events_per_client": 20}, [("a1", "client_events")]),
        ({"max_retained_bytes_per_client": 2000}, [("a1", "client_bytes")]),
        # A bound that one stream alone passes forgets that stream too.
        ({"max_retained_events": 5}, [(s, "total_events") for s in ("a1", "b1", "a2", "a3")]),
    ],
)
def test_the_oldest_finished_streams_go_first(
    bounds: dict[str, int], evicted: list[tuple[str, str]]
) -> None:
    kept = retention(**bounds)
    got = []
    # Client a finishes a1, a2, a3 (10 events, 1000 bytes each); b1 between a1 and a2.
    for t, (sid, client) in enumerate([("a1", "a"), ("b1", "b"), ("a2", "a"), ("a3", "a")]):
        got += kept.add(sid, client, float(t), 10, 1000)
    assert got == evicted
    gone = {s for s, _ in evicted}
    assert len(kept) == 4 - len(gone)
    assert (kept.events, kept.nbytes) == (10 * len(kept), 1000 * len(kept))


def test_retention_time_and_removal_release_the_counts() -> None:
    kept = retention(max_retained_events_per_client=25)
    for t, sid in enumerate(["a1", "a2", "b1", "a3"]):
        assert kept.add(sid, sid[0], float(t), 10, 100) == (
            [("a1", "client_events")] if sid == "a3" else []
        )
    assert kept.expired(before=2.0) == ["a2"]
    assert kept.expired(before=2.0) == []
    kept.remove("b1")
    kept.remove("b1")  # twice is harmless
    assert (len(kept), kept.events, kept.nbytes) == (1, 10, 100)
    assert kept.expired(before=10.0) == ["a3"]
    assert (len(kept), kept.events, kept.nbytes) == (0, 0, 0)
    assert kept._by_client == {}
    assert not kept._client_events
    assert not kept._client_bytes
