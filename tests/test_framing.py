"""Sans-I/O framing, table-tested: events in, exact bytes out."""

from __future__ import annotations

import typing

import pytest

from server.events import (
    Event,
    EventType,
    created_message,
    done_event,
    event_fields,
    token_event,
)
from server.framing.longpoll import poll_body
from server.framing.ndjson import HEARTBEAT, ndjson_lines
from server.framing.sse import PING, sse_control, sse_data, sse_frame, sse_frames, sse_retry
from server.framing.ws import ws_text_frame, ws_text_frames
from wire import EVENT_TYPES

TOK = Event(3, "token", b'{"stream":"s","seq":3,"type":"token","text":"a\\r\\nb","t":1}')
DONE = Event(4, "done", b'{"stream":"s","seq":4,"type":"done","finish_reason":"stop"}')


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            TOK,
            b'id: 3\nevent: token\ndata: {"stream":"s","seq":3,"type":"token",'
            b'"text":"a\\r\\nb","t":1}\n\n',
        ),
        (
            DONE,
            b'id: 4\nevent: done\ndata: {"stream":"s","seq":4,"type":"done",'
            b'"finish_reason":"stop"}\n\n',
        ),
    ],
)
def test_sse_frame(event: Event, expected: bytes) -> None:
    assert sse_frame(event) == expected


def test_sse_batch_control_retry_ping() -> None:
    assert sse_frames([TOK, DONE]) == sse_frame(TOK) + sse_frame(DONE)
    assert sse_frames([]) == b""
    assert sse_retry(1500) == b"retry: 1500\n\n"
    assert PING == b": ping\n\n"
    assert sse_control("created", created_message("abc")) == (
        b'event: created\ndata: {"type":"created","stream":"abc"}\n\n'
    )


def test_event_types_are_the_wire_names() -> None:
    assert typing.get_args(EventType) == EVENT_TYPES


def test_sse_data() -> None:
    assert sse_data(b"[DONE]") == b"data: [DONE]\n\n"
    assert sse_data(b'{"a":1}') == b'data: {"a":1}\n\n'


def test_event_fields_reads_back_the_encoded_json() -> None:
    assert event_fields(TOK) == {"stream": "s", "seq": 3, "type": "token", "text": "a\r\nb", "t": 1}
    token = token_event("s", 0, 'x"\n🙂')
    assert event_fields(token)["text"] == 'x"\n🙂'
    done = event_fields(done_event("s", 2, "length", 2, "ab"))
    assert {k: done[k] for k in ("seq", "finish_reason", "tokens", "sha256")} == {
        "seq": 2,
        "finish_reason": "length",
        "tokens": 2,
        "sha256": "ab",
    }


def test_ndjson() -> None:
    assert ndjson_lines([TOK, DONE]) == TOK.data + b"\n" + DONE.data + b"\n"
    assert HEARTBEAT == b"\n"


@pytest.mark.parametrize(
    ("events", "after", "done", "expected"),
    [
        ([], -1, False, b'{"events":[],"next":-1,"done":false}'),
        ([], 7, True, b'{"events":[],"next":7,"done":true}'),
        ([TOK], 2, False, b'{"events":[' + TOK.data + b'],"next":3,"done":false}'),
        (
            [TOK, DONE],
            2,
            True,
            b'{"events":[' + TOK.data + b"," + DONE.data + b'],"next":4,"done":true}',
        ),
    ],
)
def test_poll_body(events: list[Event], after: int, done: bool, expected: bytes) -> None:
    assert poll_body(events, after, done) == expected


@pytest.mark.parametrize(
    ("size", "head"),
    [
        (0, b"\x81\x00"),
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e\x00\x7e"),
        (65535, b"\x81\x7e\xff\xff"),
        (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_ws_text_frame_headers(size: int, head: bytes) -> None:
    data = b"x" * size
    assert ws_text_frame(data) == head + data


def test_ws_text_frames_are_one_message_per_event() -> None:
    events = [token_event("s", 0, "a"), token_event("s", 1, "b")]
    assert ws_text_frames(events) == b"".join(bytes([0x81, len(e.data)]) + e.data for e in events)
