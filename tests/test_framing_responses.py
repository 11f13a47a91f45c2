"""The Responses framing, table-tested: log events in, exact bytes out, read back by the
official SDK's own SSE parser and event types."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from openai._models import construct_type_unchecked
from openai._streaming import SSEDecoder
from openai.types.responses import ResponseStreamEvent

from server.events import Event, done_event
from server.framing.responses import (
    OPENING,
    ResponseFramer,
    ResponseMeta,
    error_frame,
    message_id,
    response_id,
    sequence_number,
    stream_of,
    tool_object,
)
from server.sources.base import Tool
from tests.typed_events import CONTENT, ENC

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


# -- typed parts -------------------------------------------------------------------------------

PARTS = CONTENT
TYPED = replace(
    META,
    typed=True,
    reasoning_effort="low",
    tools=(tool_object(Tool(name="f", parameters={"type": "object"})),),
    tool_choice={"type": "function", "name": "f"},
)


def run_typed(events: list[Event], starting_after: int = -1) -> list[dict[str, Any]]:
    framer = ResponseFramer(TYPED, starting_after)
    return sdk_events(framer.opening() + framer.frames(events))


def brief(e: dict[str, Any]) -> tuple[Any, ...]:
    """An event's type, output index and what it carries."""
    carried = e.get("delta", e.get("text", e.get("arguments", e.get("item", {}).get("type"))))
    return (e["sequence_number"], e["type"], e.get("output_index"), carried)


def test_typed_parts_as_items() -> None:
    got = run_typed([*PARTS, done_event("s1", 7, "tool_calls", 1, "x")])
    assert [brief(e) for e in got] == [
        (0, "response.created", None, None),
        (1, "response.in_progress", None, None),
        (2, "response.output_item.added", 0, "reasoning"),
        (3, "response.reasoning_text.delta", 0, "think ✓"),
        (4, "response.reasoning_text.delta", 0, ' "more"'),
        (5, "response.reasoning_text.done", 0, 'think ✓ "more"'),
        (6, "response.output_item.done", 0, "reasoning"),
        (7, "response.output_item.added", 1, "function_call"),
        (8, "response.function_call_arguments.delta", 1, '{"a":'),  # no delta for ""
        (9, "response.function_call_arguments.delta", 1, "1}"),
        (10, "response.function_call_arguments.done", 1, '{"a":1}'),
        (11, "response.output_item.done", 1, "function_call"),
        (12, "response.output_item.added", 2, "function_call"),
        (13, "response.function_call_arguments.delta", 2, "{}"),
        (14, "response.function_call_arguments.done", 2, "{}"),
        (15, "response.output_item.done", 2, "function_call"),
        (16, "response.output_item.added", 3, "message"),
        (17, "response.content_part.added", 3, None),
        (18, "response.output_text.delta", 3, "ok"),
        (19, "response.output_text.done", 3, "ok"),
        (20, "response.content_part.done", 3, None),
        (21, "response.output_item.done", 3, "message"),
        (22, "response.completed", None, None),
    ]
    for e in got:  # every event is one the SDK's own union knows
        parsed = construct_type_unchecked(value=e, type_=ResponseStreamEvent)  # type: ignore[arg-type]
        assert parsed.type == e["type"]
    assert got[2]["item"] == {
        "id": "rs_s1_0",
        "type": "reasoning",
        "summary": [],
        "content": [],
        "status": "in_progress",
    }
    assert got[7]["item"] == {
        "id": "fc_s1_1",
        "type": "function_call",
        "status": "in_progress",
        "arguments": "",
        "call_id": "call_0",
        "name": "f",
    }
    final = got[-1]["response"]
    assert final["output"] == [
        {
            "id": "rs_s1_0",
            "type": "reasoning",
            "summary": [],
            "content": [{"type": "reasoning_text", "text": 'think ✓ "more"'}],
            "status": "completed",
        },
        {**got[7]["item"], "status": "completed", "arguments": '{"a":1}'},
        {
            "id": "fc_s1_2",
            "type": "function_call",
            "status": "completed",
            "arguments": "{}",
            "call_id": "call_1",
            "name": "g",
        },
        {
            "id": "msg_s1_3",
            "type": "message",
            "status": "completed",
            "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": "ok"}],
            "role": "assistant",
        },
    ]
    assert [e["item"] for e in got if e["type"] == "response.output_item.done"] == final["output"]
    assert (final["status"], final["usage"]["output_tokens"]) == ("completed", 7)
    assert final["usage"]["output_tokens_details"] == {"reasoning_tokens": 2}
    assert final["reasoning"] == {"effort": "low", "summary": None}
    assert final["tool_choice"] == {"type": "function", "name": "f"}
    assert final["tools"] == [
        {
            "type": "function",
            "name": "f",
            "description": None,
            "parameters": {"type": "object"},
            "strict": None,
        }
    ]


@pytest.mark.parametrize("starting_after", [-1, 1, 2, 6, 9, 15, 17, 21, 22])
def test_a_resumed_typed_read_is_the_tail_of_the_first(starting_after: int) -> None:
    events = [*PARTS, done_event("s1", 7, "tool_calls", 1, "x")]
    assert run_typed(events, starting_after) == [
        e for e in run_typed(events) if e["sequence_number"] > starting_after
    ]


def test_typed_batches_make_the_same_bytes_as_one() -> None:
    events = [*PARTS, done_event("s1", 7, "length", 1, "x")]
    one, split = ResponseFramer(TYPED), ResponseFramer(TYPED)
    assert one.frames(events) == b"".join(split.frames([e]) for e in events)


@pytest.mark.parametrize(
    ("events", "outputs"),
    [
        ([done_event("s1", 0, "stop", 0, "x")], [("message", "completed", "")]),
        ([PARTS[0], done_event("s1", 1, "length", 0, "x")], [("reasoning", "incomplete", None)]),
        (
            [PARTS[0], PARTS[6], FAILED._replace(seq=2)],
            [("reasoning", "completed", None), ("message", "incomplete", "ok")],
        ),
    ],
    ids=["empty-answer", "length-in-reasoning", "failed-in-text"],
)
def test_typed_endings(events: list[Event], outputs: list[tuple[str, str, str | None]]) -> None:
    framer = ResponseFramer(TYPED)
    framer.frames(events)
    output = json.loads(framer.response())["output"]
    assert [
        (i["type"], i["status"], i["content"][0]["text"] if i["type"] == "message" else None)
        for i in output
    ] == outputs


def test_a_text_only_response_meeting_parts_closes_its_message() -> None:
    """A stream read without typed parts asked for (one created on /api/streams): the
    message opened before the first token closes when a part comes."""
    got = run([TOK0, ENC.reasoning(1, "r"), done_event("s1", 2, "stop", 1, "x")])
    assert [(e["type"], e.get("output_index")) for e in got[4:]] == [
        ("response.output_text.delta", 0),
        ("response.output_text.done", 0),
        ("response.content_part.done", 0),
        ("response.output_item.done", 0),
        ("response.output_item.added", 1),
        ("response.reasoning_text.delta", 1),
        ("response.reasoning_text.done", 1),
        ("response.output_item.done", 1),
        ("response.completed", None),
    ]
    assert [e["sequence_number"] for e in got] == list(range(len(got)))
