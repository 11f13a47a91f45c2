"""Long-poll batch framing: ``{"events":[...],"next":<seq>,"done":<bool>}``.

The events are spliced in as already-encoded JSON, so nothing is decoded and re-encoded.
"""

from __future__ import annotations

from collections.abc import Sequence

from server.events import Event


def poll_body(events: Sequence[Event], after: int, done: bool) -> bytes:
    """The body answering one poll. ``next`` is the seq to pass as ``after`` next time."""
    nxt = events[-1].seq if events else after
    return b'{"events":[%s],"next":%d,"done":%s}' % (
        b",".join(e.data for e in events),
        nxt,
        b"true" if done else b"false",
    )
