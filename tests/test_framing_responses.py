"""The Responses framing, table-tested: log events in, exact bytes out, read back by the
official SDK's own SSE parser and event types."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai._models import construct_type_unchecked
from openai._streaming import SSEDecoder
from openai.types.responses import ResponseStreamEvent

from server.events import Event
from server.framing.responses import (
    OPENING,
    ResponseFramer,
    ResponseMeta,
    error_frame,
    message_id,
    response_id,
    sequence_number,
    stream_of,
)

META = ResponseMeta(
    stream_id="s1", created_at=1700000000, model="m", max_output_tokens=2, input_tokens=3
)
TOK0 = Event(0, "token", b'{"stream":"s1","seq":0,"type":"token","text":"a\\"b","t":1}')
TOK1 = Event(1, "token", b'{"stream":"s1","seq":1,"type":"token","text":"\\u00e9\\n","t":2}')
STOP = Event(2, "done", b'{"stream":"s1","seq":2,"type":"done","finish_reason":"stop"}')
LENGTH = Event(2, "done", b'{"stream":"s1","seq":2,"type":"done","finish_reason":"length"}')
CANCELLED = Event(2, "done", b'{"stream":"s1","seq":2,"type":"done","finish_reason":"cancelled"}')
FAILED = Event(
    2, "error", b'{"stream":"s1","seq":2,"type":"error","code":"upstream_error","message":"boom"}'
)


def sdk_events(raw: bytes) -> list[dict[str, Any]]:
    """Every event the SDK's SSE parser dispatches, with its ``event:`` name checked."""
    out = []
    for sse in SSEDecoder().iter_bytes(iter([raw])):
        data = json.loads(sse.data)
        assert sse.event == data["type"]
        assert sse.id is None
        out.append(data)
    return out


def run(events: list[Event], starting_after: int = -1) -> list[dict[str, Any]]:
    framer = ResponseFramer(META, starting_after)
    return sdk_events(framer.opening() + framer.frames(events))


def test_ids_and_numbers() -> None:
    assert response_id("s1") == "resp_s1"
    assert stream_of("resp_s1") == "s1"
    assert stream_of("s1") == "s1"
    assert message_id("s1") == "msg_s1"
    assert OPENING == 4
    assert sequence_number(0) == 4


def test_exact_bytes_of_a_delta() -> None:
    framer = ResponseFramer(META)
    assert framer.frames([TOK0]) == (
        b"event: response.output_text.delta\n"
        b'data: {"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_s1",'
        b'"output_index":0,"content_index":0,"delta":"a\\"b","logprobs":[]}\n\n'
    )


def test_exact_bytes_of_the_opening() -> None:
    opening = ResponseFramer(META, starting_after=1).opening()
    assert opening == (
        b"event: response.output_item.added\n"
        b'data: {"type":"response.output_item.added","sequence_number":2,"output_index":0,'
        b'"item":{"id":"msg_s1","type":"message","status":"in_progress","content":[],'
        b'"role":"assistant"}}\n\n'
        b"event: response.content_part.added\n"
        b'data: {"type":"response.content_part.added","sequence_number":3,"item_id":"msg_s1",'
        b'"output_index":0,"content_index":0,"part":{"type":"output_text","annotations":[],'
        b'"logprobs":[],"text":""}}\n\n'
    )


@pytest.mark.parametrize(
    ("end", "types", "status", "item_status"),
    [
        (
            STOP,
            [
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ],
            "completed",
            "completed",
        ),
        (
            LENGTH,
            [
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.incomplete",
            ],
            "incomplete",
            "incomplete",
        ),
        (CANCELLED, ["response.failed"], "cancelled", "incomplete"),
        (FAILED, ["response.failed"], "failed", "incomplete"),
    ],
    ids=["stop", "length", "cancelled", "error"],
)
def test_a_whole_stream(end: Event, types: list[str], status: str, item_status: str) -> None:
    got = run([TOK0, TOK1, end])
    assert [e["type"] for e in got] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        *types,
    ]
    assert [e["sequence_number"] for e in got] == list(range(len(got)))
    assert [e["delta"] for e in got[4:6]] == ['a"b', "é\n"]
    for e in got:  # every event is one the SDK's own union knows
        parsed = construct_type_unchecked(value=e, type_=ResponseStreamEvent)  # type: ignore[arg-type]
        assert parsed.type == e["type"]
    created = got[0]["response"]
    assert created["id"] == "resp_s1"
    assert created["status"] == "in_progress"
    assert created["output"] == []
    assert created["usage"] is None
    final = got[-1]["response"]
    assert final["status"] == status
    assert final["output"] == [
        {
            "id": "msg_s1",
            "type": "message",
            "status": item_status,
            "content": [
                {"type": "output_text", "annotations": [], "logprobs": [], "text": 'a"bé\n'}
            ],
            "role": "assistant",
        }
    ]
    assert final["usage"] == {
        "input_tokens": 3,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 2,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 5,
    }
    assert final["incomplete_details"] == (
        {"reason": "max_output_tokens"} if status == "incomplete" else None
    )
    assert final["error"] == (
        {"code": "server_error", "message": "upstream_error: boom"} if status == "failed" else None
    )
    if len(types) == 4:
        assert got[6]["text"] == 'a"bé\n'
        assert got[7]["part"]["text"] == 'a"bé\n'


@pytest.mark.parametrize("starting_after", [-1, 0, 3, 4, 5, 6, 8, 9, 100])
def test_a_resumed_read_is_the_tail_of_the_first(starting_after: int) -> None:
    whole = run([TOK0, TOK1, STOP])
    assert run([TOK0, TOK1, STOP], starting_after) == [
        e for e in whole if e["sequence_number"] > starting_after
    ]


def test_batches_make_the_same_bytes_as_one() -> None:
    one = ResponseFramer(META)
    split = ResponseFramer(META)
    assert one.frames([TOK0, TOK1, STOP]) == split.frames([TOK0]) + split.frames([TOK1, STOP])


def test_the_response_object_so_far() -> None:
    framer = ResponseFramer(META, starting_after=10**9)
    assert framer.frames([TOK0]) == b""
    obj = json.loads(framer.response())
    assert obj["status"] == "in_progress"
    assert obj["output"][0]["content"][0]["text"] == 'a"b'
    assert obj["output"][0]["status"] == "in_progress"
    assert obj["usage"] is None
    assert framer.text_json() == b'"a\\"b"'


def test_error_frame() -> None:
    assert error_frame("gone", "fell behind", None) == (
        b'event: error\ndata: {"type":"error","sequence_number":null,"code":"gone",'
        b'"message":"fell behind","param":null}\n\n'
    )
