"""The shared decoder vectors (``tests/vectors/*.json``) through the Python decoders.

The JS decoders run the same files (``clients/js/test/decoders.test.mjs``). Each case is
fed chunk by chunk as written, then re-chunked (one byte at a time, and split in two at
every byte boundary): a decoder must give the same events for any chunking of the bytes.
"""

from __future__ import annotations

import dataclasses
import json
import runpy
from pathlib import Path
from typing import Any

import pytest

from clients.check import PartsDigest, describe
from clients.decoders import NDJSONDecoder, SSEDecoder
from clients.errors import InvalidToolCall
from clients.parts import PartReader

VECTORS = Path(__file__).resolve().parent / "vectors"


def load(name: str) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return cases


def chunk_bytes(case: dict[str, Any]) -> list[bytes]:
    """Chunks are "byte strings": each character U+0000..U+00FF is one byte."""
    return [c.encode("latin-1") for c in case["chunks"]]


def rechunkings(chunks: list[bytes]) -> list[list[bytes]]:
    """The same bytes one byte at a time and split in two at every boundary."""
    data = b"".join(chunks)
    out = [[data[i : i + 1] for i in range(len(data))]]
    out += [[data[:i], data[i:]] for i in range(len(data) + 1)]
    return out


SSE_CASES = load("sse.json")
NDJSON_CASES = load("ndjson.json")


def run_sse(chunks: list[bytes]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    dec = SSEDecoder()
    events = [dataclasses.asdict(m) for c in chunks for m in dec.feed(c)]
    return events, {"last_event_id": dec.last_event_id, "retry": dec.retry}


def run_ndjson(chunks: list[bytes]) -> list[Any]:
    dec = NDJSONDecoder()
    return [obj for c in chunks for obj in dec.feed(c)]


@pytest.mark.parametrize("case", SSE_CASES, ids=[c["name"] for c in SSE_CASES])
def test_sse_vector(case: dict[str, Any]) -> None:
    chunks = chunk_bytes(case)
    events, state = run_sse(chunks)
    assert events == case["events"]
    assert state == case["state"]


@pytest.mark.parametrize("case", SSE_CASES, ids=[c["name"] for c in SSE_CASES])
def test_sse_vector_any_chunking(case: dict[str, Any]) -> None:
    for chunks in rechunkings(chunk_bytes(case)):
        assert run_sse(chunks) == (case["events"], case["state"]), chunks


@pytest.mark.parametrize("case", NDJSON_CASES, ids=[c["name"] for c in NDJSON_CASES])
def test_ndjson_vector(case: dict[str, Any]) -> None:
    assert run_ndjson(chunk_bytes(case)) == case["events"]


def test_ndjson_vectors_any_chunking() -> None:
    # Most NDJSON cases are already re-chunkings of one payload; check the others once.
    for case in NDJSON_CASES:
        if case["name"].startswith("multi-byte payload"):
            continue
        for chunks in rechunkings(chunk_bytes(case)):
            assert run_ndjson(chunks) == case["events"], (case["name"], chunks)


def test_ndjson_pending_is_the_unterminated_line() -> None:
    dec = NDJSONDecoder()
    assert dec.feed(b'{"a":1}\n{"b"') == [{"a": 1}]
    assert dec.pending == b'{"b"'


def test_vectors_are_up_to_date() -> None:
    generate = runpy.run_path(str(VECTORS / "generate.py"))
    for path, text in generate["outputs"]().items():
        assert path.read_text(encoding="utf-8") == text, f"run tests/vectors/generate.py ({path})"


def test_every_chunk_is_a_byte_string() -> None:
    for case in SSE_CASES + NDJSON_CASES:
        for chunk in case["chunks"]:
            assert all(ord(ch) < 256 for ch in chunk), case["name"]
    for case in PARTS_CASES:
        assert all(ord(ch) < 256 for ch in case["sse"] + case["ndjson"]), case["name"]


PARTS_CASES = load("parts.json")


def read_parts(events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The parts a PartReader makes of ``events`` (their JSON form), and the error it raised."""
    reader, out = PartReader(), []
    try:
        for ev in events:
            out += [p.to_json() for p in reader.feed(ev)]
    except InvalidToolCall as e:
        return out, {"type": "InvalidToolCall", "index": e.index, "name": e.name,
                     "arguments": e.arguments}  # fmt: skip
    return out, None


@pytest.mark.parametrize("case", PARTS_CASES, ids=[c["name"] for c in PARTS_CASES])
def test_parts_vector_through_both_decoders_at_every_split(case: dict[str, Any]) -> None:
    """The typed events' wire bytes, however chunked, decode to the case's events (the
    ``check:`` cases, the first case's bytes with another ``done``, are decoded whole)."""
    sse, ndjson = case["sse"].encode("latin-1"), case["ndjson"].encode("latin-1")
    split = not case["name"].startswith("check:")
    for chunks in rechunkings([sse]) if split else [[sse]]:
        events, _ = run_sse(chunks)
        assert [json.loads(e["data"]) for e in events] == case["events"]
        assert [e["event"] for e in events] == [e["type"] for e in case["events"]]
    for chunks in rechunkings([ndjson]) if split else [[ndjson]]:
        assert run_ndjson(chunks) == case["events"]


@pytest.mark.parametrize("case", PARTS_CASES, ids=[c["name"] for c in PARTS_CASES])
def test_parts_vector_parts_and_check(case: dict[str, Any]) -> None:
    assert read_parts(case["events"]) == (case["parts"], case["error"])
    if not case["whole"]:
        return
    digest = PartsDigest()
    *content, done = case["events"]
    for ev in content:
        digest.update(ev)
    mismatch = digest.mismatch(done)
    assert (None if mismatch is None else list(mismatch)) == case["mismatch"]


def test_describe_is_the_js_clients_line() -> None:
    """The same lines as ``clients/js/test/parts.test.mjs``."""
    assert describe(("sha256", "ab", "cd")) == "sha256 mismatch: server ab, received text cd"
    assert (
        describe(("parts.tool_calls[1].name", "other", "s\u00e9cond"))
        == 'done.parts.tool_calls[1].name mismatch: server "other", received "s\u00e9cond"'
    )
    assert (
        describe(("parts.reasoning.tokens", None, 1))
        == "done.parts.reasoning.tokens mismatch: server null, received 1"
    )
