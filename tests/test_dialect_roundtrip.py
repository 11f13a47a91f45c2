"""Property: any text pieces, framed by the Responses and Messages dialects and fed to the
official SDKs' own SSE parsers one byte at a time, reassemble exactly (the deltas, and the
whole text the Responses ``*.done`` events join from the pieces' JSON literals)."""

from __future__ import annotations

import json

from anthropic._streaming import SSEDecoder as AnthropicDecoder
from hypothesis import given, settings
from hypothesis import strategies as st
from openai._streaming import SSEDecoder as OpenAIDecoder

from server.events import done_event, token_event
from server.framing.anthropic import MessageFramer
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
