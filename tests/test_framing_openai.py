"""The ``/v1`` framing, table-tested: events in, exact bytes out, read back by the SDK's parser."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai._streaming import SSEDecoder

from server.errors import ApiError, GenerationError, InvalidRequest, ModelNotFound, TooManyStreams
from server.events import (
    Event,
    done_event,
    error_event,
    token_event,
    token_text_json,
)
from server.framing.openai import (
    DONE,
    ChunkFramer,
    completion,
    completion_of,
    error_frame,
    model_body,
    model_list,
    outcome,
    token_texts,
)
from server.framing.sse import PING
from tests.typed_events import CONTENT

HEAD = (
    b'data: {"id":"chatcmpl-s1","object":"chat.completion.chunk","created":1700000000,"model":"m"'
)
TOK = Event(0, "token", b'{"stream":"s1","seq":0,"type":"token","text":"a\\"b\\n","t":1}')
STOP = Event(1, "done", b'{"stream":"s1","seq":1,"type":"done","finish_reason":"stop","tokens":1}')
LENGTH = Event(1, "done", b'{"stream":"s1","seq":1,"type":"done","finish_reason":"length"}')
CANCELLED = Event(1, "done", b'{"stream":"s1","seq":1,"type":"done","finish_reason":"cancelled"}')
FAILED = Event(
    1, "error", b'{"stream":"s1","seq":1,"type":"error","code":"upstream_error","message":"boom"}'
)


def framer(include_usage: bool = False) -> ChunkFramer:
    return ChunkFramer(
        stream_id="s1", created=1700000000, model="m", include_usage=include_usage, prompt_tokens=3
    )


def sdk_events(raw: bytes) -> list[str]:
    """The data of every event the official SDK's own SSE parser dispatches."""
    return [sse.data for sse in SSEDecoder().iter_bytes(iter([raw]))]


# -- chunks ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("events", "include_usage", "expected"),
    [
        (
            [TOK],
            False,
            HEAD + b',"choices":[{"index":0,"delta":{"content":"a\\"b\\n"},"logprobs":null,'
            b'"finish_reason":null}]}\n\n',
        ),
        (
            [TOK],
            True,
            HEAD + b',"choices":[{"index":0,"delta":{"content":"a\\"b\\n"},"logprobs":null,'
            b'"finish_reason":null}],"usage":null}\n\n',
        ),
        (
            [STOP],
            False,
            HEAD + b',"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}'
            b"\n\ndata: [DONE]\n\n",
        ),
        (
            [LENGTH],
            True,
            HEAD + b',"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"length"}],'
            b'"usage":null}\n\n'
            + HEAD
            + b',"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}'
            b"\n\ndata: [DONE]\n\n",
        ),
        (
            [CANCELLED],
            True,
            b'data: {"error":{"message":"stream s1 was cancelled (DELETE, a WebSocket cancel, or '
            b'no reader for the grace period)","type":"invalid_request_error","param":null,'
            b'"code":"cancelled"}}\n\n',
        ),
        (
            [FAILED],
            False,
            b'data: {"error":{"message":"boom","type":"server_error","param":null,'
            b'"code":"upstream_error"}}\n\n',
        ),
        ([], False, b""),
    ],
    ids=["token", "token-usage", "stop", "length-usage", "cancelled", "error", "empty"],
)
def test_frames(events: list[Event], include_usage: bool, expected: bytes) -> None:
    assert framer(include_usage).frames(events) == expected


def test_role_chunk() -> None:
    assert framer().role() == (
        HEAD + b',"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
        b'"logprobs":null,"finish_reason":null}]}\n\n'
    )


def test_batch_is_the_frames_joined() -> None:
    f = framer(include_usage=True)
    assert f.frames([TOK, STOP]) == f.frames([TOK]) + f.frames([STOP])


def test_head_escapes_model_and_id() -> None:
    f = ChunkFramer(
        stream_id="a-_Z", created=1, model='o"dd/모델', include_usage=False, prompt_tokens=0
    )
    chunk = json.loads(f.role().removeprefix(b"data: "))
    assert (chunk["id"], chunk["model"], chunk["created"]) == ("chatcmpl-a-_Z", 'o"dd/모델', 1)


@pytest.mark.parametrize(
    "text",
    ["Hel", "", '"', "\\", ',"t":1', '"text":"x"', "\r\n", "data: x\n\n", "🙂👨‍👩‍👧", "\x00\u2028"],
)
def test_token_text_json_round_trips(text: str) -> None:
    event = token_event("Ab-_0123456789xy", 7, text)
    literal = token_text_json(event)
    assert json.loads(literal) == text
    chunk = json.loads(framer().content(literal).removeprefix(b"data: "))
    assert chunk["choices"][0]["delta"] == {"content": text}


# -- terminal events -------------------------------------------------------------------------


def test_outcome() -> None:
    assert outcome("s1", done_event("s1", 4, "stop", 4, "x")) == "stop"
    assert outcome("s1", done_event("s1", 4, "length", 4, "x")) == "length"
    cancelled = outcome("s1", done_event("s1", 4, "cancelled", 4, "x"))
    assert isinstance(cancelled, GenerationError)
    assert (cancelled.status, cancelled.code) == (409, "cancelled")
    assert cancelled.headers() == {"Tokenwire-Stream": "s1", "x-should-retry": "false"}
    failed = outcome("s1", error_event("s1", 0, "upstream_timeout", "slow"))
    assert isinstance(failed, GenerationError)
    assert (failed.status, failed.code, failed.message) == (504, "upstream_timeout", "slow")
    assert failed.headers() == {"Tokenwire-Stream": "s1"}
    assert GenerationError("shutdown", "m").headers() == {}


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("cancelled", 409, "invalid_request_error"),
        ("shutdown", 503, "server_error"),
        ("upstream_error", 502, "server_error"),
        ("upstream_unavailable", 502, "server_error"),
        ("upstream_timeout", 504, "server_error"),
        ("generation_timeout", 500, "server_error"),
        ("generation_failed", 500, "server_error"),
        ("source_error", 500, "server_error"),
    ],
)
def test_generation_error_status_and_type(code: str, status: int, kind: str) -> None:
    err = GenerationError(code, "m")
    assert err.status == status
    assert err.openai_body() == {
        "error": {"message": "m", "type": kind, "param": None, "code": code}
    }


@pytest.mark.parametrize(
    ("err", "body"),
    [
        (
            InvalidRequest("Bad.", param="n", code="unsupported_value"),
            {
                "message": "Bad.",
                "type": "invalid_request_error",
                "param": "n",
                "code": "unsupported_value",
            },
        ),
        (
            ModelNotFound("x"),
            {
                "message": "The model 'x' does not exist on this server (see GET /v1/models).",
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_found",
            },
        ),
        (
            TooManyStreams("too many", retry_after=5),
            {"message": "too many", "type": "requests", "param": None, "code": "too_many_streams"},
        ),
        (
            ApiError("internal server error"),
            {
                "message": "internal server error",
                "type": "server_error",
                "param": None,
                "code": "internal",
            },
        ),
    ],
    ids=["invalid-request", "model-not-found", "rate-limit", "internal"],
)
def test_openai_error_shape(err: ApiError, body: dict[str, Any]) -> None:
    assert err.openai_body() == {"error": body}
    assert (
        error_frame(err)
        == b"data: " + json.dumps({"error": body}, separators=(",", ":")).encode() + b"\n\n"
    )


# -- what the official SDK's parser makes of it ----------------------------------------------


def test_sdk_parser_reads_each_chunk_and_done() -> None:
    f = framer(include_usage=True)
    raw = f.role() + PING + f.frames([TOK]) + PING + PING + f.frames([STOP])
    data = sdk_events(raw)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert [c["choices"][0]["delta"] if c["choices"] else None for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": 'a"b\n'},
        {},
        None,
    ]
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}


def test_ping_dispatches_nothing_without_ids() -> None:
    assert PING == b": ping\n\n"
    assert DONE == b"data: [DONE]\n\n"
    assert sdk_events(PING * 3) == []
    # Why /v1 never sends ``id:``: the SDK keeps the last id, and then every blank line
    # (the one ending a ping) dispatches an event with empty data, which is not JSON.
    assert sdk_events(b"id: 0\ndata: {}\n\n" + PING) == ["{}", ""]


def test_no_id_event_or_retry_field_in_any_frame() -> None:
    f = framer(include_usage=True)
    raw = f.role() + f.frames([TOK, LENGTH]) + f.frames([CANCELLED]) + f.frames([FAILED])
    lines = raw.split(b"\n")
    assert all(line.startswith(b"data: ") or line == b"" for line in lines)
    assert raw.count(b"\n\n") == len([line for line in lines if line.startswith(b"data: ")])


# -- non-streamed answer and models ----------------------------------------------------------


def test_completion_body() -> None:
    assert json.loads(
        completion(
            stream_id="s1",
            created=5,
            model="synthetic",
            text="Hi 🙂",
            finish_reason="length",
            prompt_tokens=2,
            completion_tokens=3,
        )
    ) == {
        "id": "chatcmpl-s1",
        "object": "chat.completion",
        "created": 5,
        "model": "synthetic",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi 🙂"},
                "logprobs": None,
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5},
    }


def test_token_texts() -> None:
    assert token_texts([TOK, token_event("s1", 1, "🙂"), STOP]) == ['a"b\n', "🙂"]


def test_models() -> None:
    assert model_list(["synthetic", "openai/gpt-x"], 9) == (
        b'{"object":"list","data":['
        b'{"id":"synthetic","object":"model","created":9,"owned_by":"tokenwire"},'
        b'{"id":"openai/gpt-x","object":"model","created":9,"owned_by":"tokenwire"}]}'
    )
    assert model_body("synthetic", 9) == (
        b'{"id":"synthetic","object":"model","created":9,"owned_by":"tokenwire"}'
    )


# -- typed parts -------------------------------------------------------------------------------

PARTS = [*CONTENT, done_event("s1", 7, "tool_calls", 1, "x")]


def test_typed_parts_as_chunks() -> None:
    got = [json.loads(d) for d in sdk_events(framer(include_usage=True).frames(PARTS))[:-1]]
    assert [c["choices"][0]["delta"] if c["choices"] else c["usage"] for c in got] == [
        {"reasoning_content": "think ✓"},
        {"reasoning_content": ' "more"'},
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "f", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]},
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "g", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]},
        {"content": "ok"},
        {},
        {"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10},
    ]
    assert [c["choices"][0]["finish_reason"] for c in got if c["choices"]] == [None] * 8 + [
        "tool_calls"
    ]
    assert sdk_events(framer().frames(PARTS))[-1] == "[DONE]"


def test_a_reasoning_chunk_splices_the_text() -> None:
    assert framer().frames([PARTS[1]]) == (
        HEAD + b',"choices":[{"index":0,"delta":{"reasoning_content":" \\"more\\""},'
        b'"logprobs":null,"finish_reason":null}]}\n\n'
    )


def test_the_whole_completion_with_parts() -> None:
    body = json.loads(
        completion_of(
            PARTS,
            stream_id="s1",
            created=1700000000,
            model="m",
            finish_reason="tool_calls",
            prompt_tokens=3,
        )
    )
    assert body["choices"][0] == {
        "index": 0,
        "message": {
            "role": "assistant",
            "content": "ok",
            "reasoning_content": 'think ✓ "more"',
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"a":1}'},
                },
                {"id": "call_1", "type": "function", "function": {"name": "g", "arguments": "{}"}},
            ],
        },
        "logprobs": None,
        "finish_reason": "tool_calls",
    }
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10}
    # tool calls and no text: content is null
    only_calls = completion_of(
        [*PARTS[2:5], done_event("s1", 3, "tool_calls", 0, "x")],
        stream_id="s1",
        created=1,
        model="m",
        finish_reason="tool_calls",
        prompt_tokens=0,
    )
    assert json.loads(only_calls)["choices"][0]["message"]["content"] is None
