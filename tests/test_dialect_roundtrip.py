"""Property: any text pieces, framed by the Responses and Messages dialects and fed to the
official SDKs' own SSE parsers one byte at a time, reassemble exactly (the deltas, and the
whole text the Responses ``*.done`` events join from the pieces' JSON literals); and so do
reasoning and tool-call argument pieces in all three dialects (Chat Completions too)."""

from __future__ import annotations

import hashlib
import json

from anthropic._streaming import SSEDecoder as AnthropicDecoder
from hypothesis import given, settings
from hypothesis import strategies as st
from openai._streaming import SSEDecoder as OpenAIDecoder

from server.events import Event, PartEncoder, done_event, token_event
from server.framing.anthropic import MessageFramer
from server.framing.openai import ChunkFramer
from server.framing.responses import ResponseFramer, ResponseMeta

#: Any Unicode scalar value but a lone surrogate (no ``str`` a source sends holds one), and
#: the characters that matter to SSE and JSON.
PIECE = st.one_of(
    st.text(
        alphabet=st.one_of(
            st.characters(blacklist_categories=("Cs",)),
            st.sampled_from(["\r", "\n", "\x00", "\u2028", "\ufeff", '"', "\\", ":"]),
        ),
        min_size=1,
        max_size=12,
    ),
    st.sampled_from(["data: x", "\n\nevent: error\n\n", "\r\n", "\\u0000"]),
)
PIECES = st.lists(PIECE, min_size=1, max_size=8)


def one_byte_at_a_time(raw: bytes) -> list[bytes]:
    return [raw[i : i + 1] for i in range(len(raw))]


@settings(max_examples=150, deadline=None)
@given(pieces=PIECES)
def test_responses_reassemble(pieces: list[str]) -> None:
    events = [token_event("s", i, p) for i, p in enumerate(pieces)]
    events.append(done_event("s", len(pieces), "stop", len(pieces), "x"))
    meta = ResponseMeta(stream_id="s", created_at=0, model="m", max_output_tokens=9, input_tokens=1)
    framer = ResponseFramer(meta)
    raw = framer.opening() + framer.frames(events)
    got = [
        json.loads(sse.data) for sse in OpenAIDecoder().iter_bytes(iter(one_byte_at_a_time(raw)))
    ]
    assert [e["sequence_number"] for e in got] == list(range(4 + len(pieces) + 4))
    assert [e["delta"] for e in got if e["type"] == "response.output_text.delta"] == pieces
    text = "".join(pieces)
    assert got[-4]["text"] == text
    assert got[-1]["response"]["output"][0]["content"][0]["text"] == text


@settings(max_examples=150, deadline=None)
@given(pieces=PIECES)
def test_messages_reassemble(pieces: list[str]) -> None:
    events = [token_event("s", i, p) for i, p in enumerate(pieces)]
    events.append(done_event("s", len(pieces), "length", len(pieces), "x"))
    framer = MessageFramer(stream_id="s", model="m", input_tokens=1)
    raw = framer.start() + framer.frames(events)
    got = [
        (sse.event, json.loads(sse.data))
        for sse in AnthropicDecoder().iter_bytes(iter(one_byte_at_a_time(raw)))
    ]
    assert all(name == data["type"] for name, data in got)
    assert [d["delta"]["text"] for n, d in got if n == "content_block_delta"] == pieces
    assert got[-2][1]["usage"] == {"output_tokens": len(pieces)}


def typed_events(reasoning: list[str], args: list[str], text: list[str]) -> list[Event]:
    """Reasoning pieces, one tool call's argument pieces, answer pieces, then ``done``."""
    encode = PartEncoder("s")
    events = [encode.reasoning(i, p) for i, p in enumerate(reasoning)]
    for i, piece in enumerate(args):
        seq = len(events)
        events.append(encode.tool_call(seq, 0, piece, *(("call_0", "f") if i == 0 else ())))
    events.extend(encode(len(events), p) for p in text)
    events.append(done_event("s", len(events), "tool_calls", len(text), "x"))
    return events


@settings(max_examples=100, deadline=None)
@given(reasoning=PIECES, args=PIECES, text=PIECES)
def test_chat_completions_typed_parts_reassemble(
    reasoning: list[str], args: list[str], text: list[str]
) -> None:
    framer = ChunkFramer(stream_id="s", created=0, model="m", include_usage=False, prompt_tokens=1)
    raw = framer.role() + framer.frames(typed_events(reasoning, args, text))
    got = [
        json.loads(sse.data)
        for sse in OpenAIDecoder().iter_bytes(iter(one_byte_at_a_time(raw)))
        if sse.data != "[DONE]"
    ]
    deltas = [c["choices"][0]["delta"] for c in got]
    assert [d["reasoning_content"] for d in deltas if "reasoning_content" in d] == reasoning
    calls = [d["tool_calls"][0]["function"]["arguments"] for d in deltas if "tool_calls" in d]
    assert calls == ["", *args]
    assert [d["content"] for d in deltas if "content" in d] == ["", *text]
    assert got[-1]["choices"][0]["finish_reason"] == "tool_calls"


@settings(max_examples=100, deadline=None)
@given(reasoning=PIECES, args=PIECES, text=PIECES)
def test_responses_typed_parts_reassemble(
    reasoning: list[str], args: list[str], text: list[str]
) -> None:
    meta = ResponseMeta(
        stream_id="s", created_at=0, model="m", max_output_tokens=9, input_tokens=1, typed=True
    )
    framer = ResponseFramer(meta)
    raw = framer.opening() + framer.frames(typed_events(reasoning, args, text))
    got = [
        json.loads(sse.data) for sse in OpenAIDecoder().iter_bytes(iter(one_byte_at_a_time(raw)))
    ]
    assert [e["sequence_number"] for e in got] == list(range(len(got)))

    def of(kind: str, key: str) -> list[str]:
        return [e[key] for e in got if e["type"] == kind]

    assert of("response.reasoning_text.delta", "delta") == reasoning
    assert of("response.reasoning_text.done", "text") == ["".join(reasoning)]
    assert of("response.function_call_arguments.delta", "delta") == args
    assert of("response.function_call_arguments.done", "arguments") == ["".join(args)]
    assert of("response.output_text.delta", "delta") == text
    reasoning_item, call, message = got[-1]["response"]["output"]
    assert reasoning_item["content"][0]["text"] == "".join(reasoning)
    assert call["arguments"] == "".join(args)
    assert message["content"][0]["text"] == "".join(text)


@settings(max_examples=100, deadline=None)
@given(reasoning=PIECES, args=PIECES, text=PIECES)
def test_messages_typed_parts_reassemble(
    reasoning: list[str], args: list[str], text: list[str]
) -> None:
    framer = MessageFramer(stream_id="s", model="m", input_tokens=1, typed=True, thinking=True)
    raw = framer.start() + framer.frames(typed_events(reasoning, args, text))
    got = [
        json.loads(sse.data) for sse in AnthropicDecoder().iter_bytes(iter(one_byte_at_a_time(raw)))
    ]
    deltas = [e["delta"] for e in got if e["type"] == "content_block_delta"]

    def of(kind: str, key: str) -> list[str]:
        return [d[key] for d in deltas if d["type"] == kind]

    assert of("thinking_delta", "thinking") == reasoning
    assert of("signature_delta", "signature") == [
        hashlib.sha256("".join(reasoning).encode()).hexdigest()
    ]
    assert of("input_json_delta", "partial_json") == args
    assert of("text_delta", "text") == text
    assert got[-2]["delta"]["stop_reason"] == "tool_use"
