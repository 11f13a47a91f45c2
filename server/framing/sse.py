"""Server-Sent Events framing (WHATWG HTML, "Server-sent events").

An event is framed as ``id: <seq>`` / ``event: <type>`` / ``data: <json>`` and a blank
line. The JSON is one line (JSON escapes CR and LF inside strings), so one ``data:`` line
always suffices and the text cannot inject fields.
"""

from __future__ import annotations

from collections.abc import Iterable

from server.events import Event

#: A comment line and a blank line: keeps proxies and clients from timing out, and a
#: spec-following parser dispatches nothing for it (its data buffer is empty).
PING = b": ping\n\n"


def sse_frame(event: Event) -> bytes:
    """Frame one logged event."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.seq, event.type.encode(), event.data)


def sse_frames(events: Iterable[Event]) -> bytes:
    """Frame a batch of events into one write."""
    return b"".join(sse_frame(e) for e in events)


def sse_retry(milliseconds: int) -> bytes:
    """Set the client's reconnection delay; a field block with no data dispatches nothing."""
    return b"retry: %d\n\n" % milliseconds


def sse_data(data: bytes) -> bytes:
    """An event that is only a ``data:`` line: no ``id:``, no ``event:`` (what ``/v1``
    sends; the OpenAI SDK reads only data, see :mod:`server.framing.openai`)."""
    return b"data: %s\n\n" % data


def sse_control(event_type: str, data: bytes) -> bytes:
    """A control event outside the log (no ``id:``, so ``Last-Event-ID`` is untouched)."""
    return b"event: %s\ndata: %s\n\n" % (event_type.encode(), data)
