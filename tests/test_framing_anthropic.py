"""The Anthropic Messages framing, table-tested: log events in, exact bytes out, read back
by the official SDK's own SSE parser."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from anthropic._streaming import SSEDecoder

from server.errors import GenerationError, InvalidRequest, ModelNotFound, ServerBusy
from server.events import Event, done_event
from server.framing.anthropic import PING, MessageFramer, error_frame, message_id
from tests.typed_events import CONTENT, ENC

TOK = Event(0, "token", b'{"stream":"s1","seq":0,"type":"token","text":"a\\"b","t":1}')
STOP = Event(1, "done", b'{"stream":"s1","seq":1,"type":"done","finish_reason":"stop"}')
LENGTH = Event(1, "done", b'{"stream":"s1","seq":1,"type":"done","finish_reason":"length"}')
CANCELLED = Event(1, "done", b'{"stream":"s1","seq":1,"type":"done","finish_reason":"cancelled"}')
FAILED = Event(
    1, "error", b'{"stream":"s1","seq":1,"type":"error","code":"upstream_error","message":"boom"}'
)


def framer() -> MessageFramer:
    return MessageFramer(stream_id="s1", model="m", input_tokens=3)


def sdk_events(raw: bytes) -> list[tuple[str | None, Any]]:
    return [(sse.event, json.loads(sse.data)) for sse in SSEDecoder().iter_bytes(iter([raw]))]


def test_exact_bytes() -> None:
    f = framer()
    assert f.start() == (
        b"event: message_start\n"
        b'data: {"type":"message_start","message":{"id":"msg_s1","type":"message",'
        b'"role":"assistant","model":"m","content":[],"stop_reason":null,"stop_sequence":null,'
        b'"usage":{"input_tokens":3,"output_tokens":0}}}\n\n'
        b"event: content_block_start\n"
        b'data: {"type":"content_block_start","index":0,'
        b'"content_block":{"type":"text","text":""}}\n\n'
        b'event: ping\ndata: {"type":"ping"}\n\n'
    )
    assert f.frames([TOK, STOP]) == (
        b"event: content_block_delta\n"
        b'data: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"a\\"b"}}\n\n'
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
        b"event: message_delta\n"
        b'data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
        b'"usage":{"output_tokens":1}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    assert message_id("s1") == "msg_s1"
    assert PING == b'event: ping\ndata: {"type":"ping"}\n\n'


@pytest.mark.parametrize(
    ("end", "expected"),
    [
        (
            STOP,
            [
                ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                (
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                        "usage": {"output_tokens": 1},
                    },
                ),
                ("message_stop", {"type": "message_stop"}),
            ],
        ),
        (
            LENGTH,
            [
                ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                (
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
                        "usage": {"output_tokens": 1},
                    },
                ),
                ("message_stop", {"type": "message_stop"}),
            ],
        ),
        (
            CANCELLED,
            [
                (
                    "error",
                    {
                        "type": "error",
                        "error": {
                            "type": "invalid_request_error",
                            "message": "stream s1 was cancelled (DELETE, a WebSocket cancel, "
                            "or no reader for the grace period)",
                        },
                    },
                )
            ],
        ),
        (
            FAILED,
            [("error", {"type": "error", "error": {"type": "api_error", "message": "boom"}})],
        ),
    ],
    ids=["stop", "length", "cancelled", "error"],
)
def test_endings(end: Event, expected: list[tuple[str, Any]]) -> None:
    assert sdk_events(framer().frames([end])) == expected


def test_the_whole_message() -> None:
    assert json.loads(framer().message('a"b', "length", 1)) == {
        "id": "msg_s1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [{"type": "text", "text": 'a"b'}],
        "stop_reason": "max_tokens",
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 1},
    }


@pytest.mark.parametrize(
    ("err", "kind"),
    [
        (InvalidRequest("x", param="p", code="c"), "invalid_request_error"),
        (ModelNotFound("nope"), "not_found_error"),
        (ServerBusy("busy"), "overloaded_error"),
        (GenerationError("upstream_timeout", "slow"), "timeout_error"),
        (GenerationError("upstream_error", "boom"), "api_error"),
    ],
)
def test_error_shape(err: Any, kind: str) -> None:
    assert sdk_events(error_frame(err)) == [
        ("error", {"type": "error", "error": {"type": kind, "message": err.message}})
    ]


# -- typed parts -------------------------------------------------------------------------------

PARTS = [*CONTENT, done_event("s1", 7, "tool_calls", 1, "x")]
SIGNATURE = hashlib.sha256('think ✓ "more"'.encode()).hexdigest()


def typed(thinking: bool = True) -> MessageFramer:
    return MessageFramer(stream_id="s1", model="m", input_tokens=3, typed=True, thinking=thinking)


def block_start(index: int, block: dict[str, Any]) -> tuple[str, Any]:
    return (
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": block},
    )


def delta(index: int, body: dict[str, Any]) -> tuple[str, Any]:
    return ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": body})


def stop(index: int) -> tuple[str, Any]:
    return ("content_block_stop", {"type": "content_block_stop", "index": index})


def test_typed_parts_as_blocks() -> None:
    f = typed()
    got = sdk_events(f.start() + f.frames(PARTS))
    assert got[0][0] == "message_start"
    assert got[1:] == [
        block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
        ("ping", {"type": "ping"}),
        delta(0, {"type": "thinking_delta", "thinking": "think ✓"}),
        delta(0, {"type": "thinking_delta", "thinking": ' "more"'}),
        delta(0, {"type": "signature_delta", "signature": SIGNATURE}),
        stop(0),
        block_start(1, {"type": "tool_use", "id": "call_0", "name": "f", "input": {}}),
        delta(1, {"type": "input_json_delta", "partial_json": '{"a":'}),
        delta(1, {"type": "input_json_delta", "partial_json": "1}"}),
        stop(1),
        block_start(2, {"type": "tool_use", "id": "call_1", "name": "g", "input": {}}),
        delta(2, {"type": "input_json_delta", "partial_json": "{}"}),
        stop(2),
        block_start(3, {"type": "text", "text": ""}),
        delta(3, {"type": "text_delta", "text": "ok"}),
        stop(3),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": 7},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]


def test_without_thinking_reasoning_is_not_sent() -> None:
    f = typed(thinking=False)
    got = sdk_events(f.frames(PARTS))
    assert got[:2] == [
        block_start(0, {"type": "tool_use", "id": "call_0", "name": "f", "input": {}}),
        ("ping", {"type": "ping"}),
    ]
    assert not any("thinking" in json.dumps(d) for _, d in got)


def test_an_empty_typed_answer_is_an_empty_text_block() -> None:
    got = sdk_events(typed().frames([STOP]))
    assert got[:4] == [
        block_start(0, {"type": "text", "text": ""}),
        ("ping", {"type": "ping"}),
        stop(0),
        got[3],
    ]
    assert got[3][1]["delta"]["stop_reason"] == "end_turn"


def test_the_whole_message_with_parts() -> None:
    body = json.loads(typed().message_of(PARTS, "tool_calls"))
    assert body["content"] == [
        {"type": "thinking", "thinking": 'think ✓ "more"', "signature": SIGNATURE},
        {"type": "tool_use", "id": "call_0", "name": "f", "input": {"a": 1}},
        {"type": "tool_use", "id": "call_1", "name": "g", "input": {}},
        {"type": "text", "text": "ok"},
    ]
    assert (body["stop_reason"], body["usage"]) == (
        "tool_use",
        {"input_tokens": 3, "output_tokens": 7},
    )
    assert (
        json.loads(typed(thinking=False).message_of(PARTS, "tool_calls"))["content"]
        == (body["content"][1:])
    )
    broken = [ENC.tool_call(0, 0, '{"a', "call_0", "f"), done_event("s1", 1, "tool_calls", 0, "x")]
    assert json.loads(typed().message_of(broken, "tool_calls"))["content"][0]["input"] == '{"a'
