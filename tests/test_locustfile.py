"""``bench/locustfile.py``: its stream check on exact event tables, and its users under
Locust's own headless runner, alone and distributed (master + 2 workers).

Locust runs as a subprocess: it monkey-patches the process for gevent, which must never
happen to pytest's asyncio process. The server is the suite's real one (``make_server``).
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench.dialects import DialectReader
from bench.runner import LOCUST_HEADLESS
from clients.check import IncompleteStream, StreamCheck
from clients.decoders import SSEDecoder
from server.events import done_event, token_event
from server.framing.anthropic import MessageFramer
from server.framing.responses import ResponseFramer, ResponseMeta
from tests.conftest import MakeServer, base_url

SID = "StWNx7bsU3jQNt7N"


# ---------------------------------------------------------------------------------------
# The check, on tables of events (no Locust, no I/O)


def token(seq: int, text: str, t: int = 0) -> dict[str, Any]:
    return {"stream": SID, "seq": seq, "type": "token", "text": text, "t": t}


def done_of(texts: list[str], reason: str = "length") -> dict[str, Any]:
    sha = hashlib.sha256("".join(texts).encode()).hexdigest()
    n = len(texts)
    return {
        "stream": SID,
        "seq": n,
        "type": "done",
        "finish_reason": reason,
        "tokens": n,
        "sha256": sha,
    }


Reports = list[tuple[str, float, int]]


def checker(max_tokens: int | None = 3) -> tuple[StreamCheck, Reports]:
    reports: Reports = []
    check = StreamCheck(
        lambda name, ms, nbytes: reports.append((name, ms, nbytes)),
        sent_ns=1_000_000_000,
        max_tokens=max_tokens,
    )
    return check, reports


def test_a_whole_stream_reports_ttft_gaps_latency_and_bytes() -> None:
    check, reports = checker()
    check.received(40)  # the created message
    assert check.event({"type": "created", "stream": SID}, 1_001_000_000) is False
    check.received(100)
    assert check.event(token(0, "He", t=1_004_000_000), 1_005_000_000) is False
    check.received(120)  # two tokens in one read
    assert check.event(token(1, "llo", t=1_020_000_000), 1_025_500_000) is False
    assert check.event(token(2, "!", t=1_021_000_000), 1_025_500_000) is False
    check.received(200)
    assert check.event(done_of(["He", "llo", "!"]), 1_026_000_000) is True
    check.end()
    assert reports == [
        ("ttft", 5.0, 140),
        ("transport_latency", 1.0, 0),
        ("itl", 20.5, 120),
        ("transport_latency", 5.5, 0),
        ("itl", 0.0, 0),
        ("transport_latency", 4.5, 0),
    ]
    assert (check.tokens, check.bytes, check.stream_id) == (3, 460, SID)


def feed(check: StreamCheck, events: list[dict[str, Any]]) -> None:
    for ev in events:
        check.event(ev, 2)


@pytest.mark.parametrize(
    ("events", "message"),
    [
        pytest.param([token(0, "a"), token(2, "c")], "a gap: seq 2 where 1 was expected", id="gap"),
        pytest.param(
            [token(0, "a"), token(1, "b"), token(1, "b")],
            "out of order: seq 1 where 2 was expected",
            id="duplicate",
        ),
        pytest.param(
            [token(0, "a"), {**token(1, "b"), "stream": "other"}],
            f"event of stream other in {SID}",
            id="another stream",
        ),
        pytest.param(
            [token(0, "a"), token(1, "b"), token(2, "X"), done_of(["a", "b", "c"])],
            "sha256 of the received text differs from the done event's",
            id="digest",
        ),
        pytest.param(
            [token(0, "a"), token(1, "b"), done_of(["a", "b", "c"])],
            "done says 3 tokens at seq 3, 2 arrived",
            id="missing tail",
        ),
        pytest.param(
            [token(0, "a"), token(1, "b"), done_of(["a", "b"])],
            "length finish after 2 of 3",
            id="short length finish",
        ),
        pytest.param(
            [token(0, "a"), done_of(["a"], "cancelled")],
            "stream finished 'cancelled' after 1 tokens",
            id="cancelled",
        ),
        pytest.param(
            [token(0, "a"), {"type": "error", "code": "shutdown", "message": "bye"}],
            "error event shutdown: bye",
            id="error event",
        ),
        pytest.param(
            [*(token(i, c) for i, c in enumerate("abc")), done_of(list("abc")), token(3, "d")],
            "a message after the terminal event",
            id="after done",
        ),
        pytest.param(
            [{"type": "end", "stream": SID}], f"end of stream {SID} without a done", id="ws end"
        ),
    ],
)
def test_an_incomplete_stream_raises(events: list[dict[str, Any]], message: str) -> None:
    check, _ = checker()
    check.event({"type": "created", "stream": SID}, 1)
    with pytest.raises(IncompleteStream, match=message):
        feed(check, events)


def test_a_stream_cut_before_done_fails_at_its_end() -> None:
    check, _ = checker()
    check.event({"type": "created", "stream": SID}, 1)
    check.event(token(0, "a"), 2)
    with pytest.raises(IncompleteStream, match="ended without a done event after 1 tokens"):
        check.end()


def chunk(content: str | None = None, finish: str | None = None) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "usage": None}


def test_openai_chunks_then_the_streams_own_done() -> None:
    check, reports = checker()
    check.stream_id = SID
    check.openai_chunk({"choices": [{"delta": {"role": "assistant", "content": ""}}]}, 2_000_000)
    for i, text in enumerate(["a", "b", "c"]):
        check.received(10)
        check.openai_chunk(chunk(text), 1_000_000_000 + (i + 1) * 1_000_000)
    check.openai_chunk(chunk(finish="length"), 0)
    check.openai_chunk({"choices": [], "usage": {"completion_tokens": 3}}, 0)
    check.openai_done()
    check.done(done_of(["a", "b", "c"]))
    check.end()
    # No server timestamp in OpenAI's chunks: no transport latency.
    assert reports == [("ttft", 1.0, 10), ("itl", 1.0, 10), ("itl", 1.0, 10)]


def feed_openai(check: StreamCheck, chunks: list[dict[str, Any]]) -> None:
    for c in chunks:
        check.openai_chunk(c, 1)
    check.openai_done()


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        pytest.param(
            [
                chunk("a"),
                chunk(finish="length"),
                {"choices": [], "usage": {"completion_tokens": 2}},
            ],
            "usage says 2 completion tokens, 1 content chunks arrived",
            id="usage",
        ),
        pytest.param([chunk("a")], r"\[DONE\] after finish_reason None", id="no finish reason"),
        pytest.param(
            [chunk("a"), {"error": {"code": "cancelled", "message": "gone"}}],
            "in-band error cancelled: gone",
            id="in-band error",
        ),
    ],
)
def test_openai_stream_failures(chunks: list[dict[str, Any]], message: str) -> None:
    check, _ = checker(max_tokens=1)
    with pytest.raises(IncompleteStream, match=message):
        feed_openai(check, chunks)


def dialect_bytes(dialect: str, pieces: list[str], reason: str) -> bytes:
    """A whole stream of ``dialect`` as the server frames it."""
    events = [token_event(SID, i, p) for i, p in enumerate(pieces)]
    events.append(done_event(SID, len(pieces), reason, len(pieces), "x"))  # type: ignore[arg-type]
    if dialect == "responses":
        meta = ResponseMeta(
            stream_id=SID, created_at=0, model="m", max_output_tokens=9, input_tokens=1
        )
        framer = ResponseFramer(meta)
        return framer.opening() + framer.frames(events)
    messages = MessageFramer(stream_id=SID, model="m", input_tokens=1)
    return messages.start() + messages.frames(events)


def feed_dialect(dialect: str, raw: bytes, check: StreamCheck) -> DialectReader:
    reader = DialectReader(dialect, check)
    for msg in SSEDecoder().feed(raw):
        reader.feed(msg.event, msg.data, 1)
    return reader


@pytest.mark.parametrize("dialect", ["responses", "anthropic"])
@pytest.mark.parametrize("reason", ["stop", "length"])
def test_a_dialect_stream_checked_as_chunks(dialect: str, reason: str) -> None:
    check, _ = checker(max_tokens=2)
    reader = feed_dialect(dialect, dialect_bytes(dialect, ["a", "b"], reason), check)
    assert reader.done
    assert (check.finished, check.tokens, check.finish_reason) == (True, 2, reason)
    check.done(done_of(["a", "b"], reason))
    check.end()


@pytest.mark.parametrize(
    ("dialect", "mangle", "message"),
    [
        (
            "responses",
            lambda raw: raw.replace(b'"sequence_number":5', b'"sequence_number":6'),
            "sequence_number 6 after 4",
        ),
        (
            "responses",
            lambda raw: raw + b'event: x\ndata: {"type":"x","sequence_number":99}\n\n',
            "an event after the end",
        ),
        (
            "anthropic",
            lambda raw: raw.replace(b'"output_tokens":2', b'"output_tokens":3'),
            "usage says 3 completion tokens, 2 content chunks arrived",
        ),
        (
            "anthropic",
            lambda raw: raw.replace(b"event: message_delta", b"event: ping"),
            "event 'ping' carries type 'message_delta'",
        ),
    ],
    ids=["responses-gap", "responses-after-end", "anthropic-usage", "anthropic-names"],
)
def test_a_broken_dialect_stream_fails(
    dialect: str, mangle: Callable[[bytes], bytes], message: str
) -> None:
    check, _ = checker(max_tokens=2)
    with pytest.raises(IncompleteStream, match=message):
        feed_dialect(dialect, mangle(dialect_bytes(dialect, ["a", "b"], "stop")), check)


# ---------------------------------------------------------------------------------------
# The users under Locust's headless runner


STREAM_LABELS = ("SSE", "WS", "POLL", "CHUNKED", "OPENAI", "RESPONSES", "ANTHROPIC")
#: The dialects' events carry no server timestamp: no transport latency.
DIALECT_LABELS = ("OPENAI", "RESPONSES", "ANTHROPIC")
FANOUT_LABELS = ("SSE-FANOUT", "WS-FANOUT", "POLL-FANOUT", "CHUNKED-FANOUT")


async def run_locust(
    base: str, out: Path, *args: str
) -> tuple[dict[tuple[str, str], dict[str, str]], str]:
    """Locust headless against ``base``; its CSV stats rows by (Type, Name), and its output."""
    proc = await asyncio.create_subprocess_exec(
        *LOCUST_HEADLESS,
        "--only-summary",
        "-H",
        base,
        *("--csv", str(out / "run"), "--json-file", str(out / "run")),
        *("-t", "40s", "--stop-timeout", "15", *args),
        cwd=out,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = output.decode(errors="replace")
    assert proc.returncode == 0, text
    with (out / "run_stats.csv").open(newline="") as f:
        rows = {(row["Type"], row["Name"]): row for row in csv.DictReader(f)}
    return rows, text


def count(rows: dict[tuple[str, str], dict[str, str]], label: str, name: str) -> int:
    row = rows[(label, name)]
    assert row["Failure Count"] == "0", (label, name, row)
    return int(row["Request Count"])


async def test_every_user_class_under_locust(make_server: MakeServer, tmp_path: Path) -> None:
    # A server with a bearer token: every route the users take needs it.
    srv = await make_server(max_streams_per_client=1000, retention_s=10.0, auth_token="b-tok")
    classes = ["SSEUser", "WSUser", "PollUser", "ChunkedUser", "OpenAIUser"]
    classes += ["ResponsesUser", "AnthropicUser"]
    classes += ["SSEFanout", "WSFanout", "PollFanout", "ChunkedFanout"]
    rows, output = await run_locust(
        base_url(srv),
        tmp_path,
        *("-u", "11", "-r", "50", "--tw-run-time", "1.5", "--tw-tokens", "10"),
        *("--tw-pace", "50", "--tw-ttft-ms", "20", "--tw-token", "b-tok", *classes),
    )
    ours = {
        (label, name)
        for label in STREAM_LABELS + FANOUT_LABELS
        for name in ("ttft", "itl", "stream_total", "transport_latency")
        if label not in DIALECT_LABELS or name != "transport_latency"
    }
    http = {
        ("POST", "/api/sse"),
        ("POST", "/api/chunked"),
        ("POST", "/api/streams"),
        ("GET", "/api/streams/[id]/poll"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/api/streams/[id]/poll (openai check)"),
        ("POST", "/v1/responses"),
        ("GET", "/api/streams/[id]/poll (responses check)"),
        ("POST", "/v1/messages"),
        ("GET", "/api/streams/[id]/poll (anthropic check)"),
        ("GET", "/api/streams/[id]/sse"),
        ("GET", "/api/streams/[id]/chunked"),
        ("WS", "connect"),
        ("WS-FANOUT", "connect"),
        ("", "Aggregated"),
    }
    assert set(rows) == ours | http, output
    assert rows[("", "Aggregated")]["Failure Count"] == "0"
    for label in STREAM_LABELS:
        streams = count(rows, label, "stream_total")
        assert streams >= 2, (label, output)  # 1.5 s of streams of 0.2 s
        assert count(rows, label, "ttft") == streams
        assert count(rows, label, "itl") == 9 * streams
        if label not in DIALECT_LABELS:
            assert count(rows, label, "transport_latency") == 10 * streams
    for label in FANOUT_LABELS:  # one subscriber each, one shared stream, read once
        assert count(rows, label, "stream_total") == 1
        assert count(rows, label, "ttft") == 1
        assert count(rows, label, "itl") == 9
        assert count(rows, label, "transport_latency") == 10
    assert count(rows, "WS-FANOUT", "connect") == 1
    stats = {(e["method"], e["name"]): e for e in json.loads((tmp_path / "run.json").read_text())}
    for label in STREAM_LABELS + FANOUT_LABELS:
        # Bytes per token: every byte up to the last token is in ttft/itl, every byte in
        # stream_total (a last poll carries the last token and done in one response).
        per_token = stats[(label, "ttft")]["total_content_length"]
        per_token += stats[(label, "itl")]["total_content_length"]
        assert 0 < per_token <= stats[(label, "stream_total")]["total_content_length"], label


async def test_distributed_master_and_two_workers_users_picked_by_tag(
    make_server: MakeServer, tmp_path: Path
) -> None:
    srv = await make_server(max_streams_per_client=1000)
    rows, output = await run_locust(
        base_url(srv),
        tmp_path,
        *("--processes", "2", "-u", "4", "-r", "50", "--tw-run-time", "1.5"),
        *("--tw-tokens", "10", "--tw-pace", "50", "--tw-ttft-ms", "20", "--tags", "sse", "ws"),
    )
    assert "2 workers connected" in output
    assert '{"SSEUser": 2, "WSUser": 2} (4 total users)' in output  # picked by tag
    for label in ("SSE", "WS"):
        # Every stream the two workers started was read to its end and reached the master.
        streams = count(rows, label, "stream_total")
        assert streams >= 4, output
        assert count(rows, label, "ttft") == streams
        assert count(rows, label, "itl") == 9 * streams
        assert count(rows, label, "transport_latency") == 10 * streams
