"""The real sources behind the real server: openai (via the SDK and a stand-in) and hf."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.conftest import MakeServer, base_url, create
from tests.openai_standin import Behavior, OpenAIStandIn
from tests.readers import TRANSPORTS, read, text_of

PIECES = ["Hel", "lo", ", ", "세계", " 🚀", "\r\n", "data: x", "\\"]


@pytest.fixture
async def standin() -> AsyncIterator[OpenAIStandIn]:
    async with OpenAIStandIn() as s:
        yield s


async def test_openai_source_over_all_transports(
    make_server: MakeServer, session: aiohttp.ClientSession, standin: OpenAIStandIn
) -> None:
    standin.behavior = Behavior(pieces=[*PIECES[:3], "", None, *PIECES[3:]], finish_reason="stop")
    srv = await make_server(source="openai", base_url=standin.url, api_key="sk-test", model="m1")
    base = base_url(srv)
    sid = await create(session, srv, prompt="say hello", max_tokens=50, source="openai")
    results = await asyncio.gather(*(read(session, base, t, sid) for t in TRANSPORTS))
    for events in results:
        assert events == results[0]
    events = results[0]
    assert [e["text"] for e in events[:-1]] == PIECES
    done = events[-1]
    assert {k: done[k] for k in ("type", "seq", "finish_reason", "tokens", "sha256")} == {
        "type": "done",
        "seq": len(PIECES),
        "finish_reason": "stop",
        "tokens": len(PIECES),
        "sha256": hashlib.sha256("".join(PIECES).encode()).hexdigest(),
    }
    body = standin.requests[-1].body
    assert body["model"] == "m1"
    assert body["messages"] == [{"role": "user", "content": "say hello"}]
    assert body["max_tokens"] == 50
    assert body["stream"] is True
    assert standin.requests[-1].authorization == "Bearer sk-test"


async def test_openai_upstream_error_becomes_error_event(
    make_server: MakeServer, session: aiohttp.ClientSession, standin: OpenAIStandIn
) -> None:
    standin.behavior = Behavior(pieces=["a", "b", "c"], error_after=2)
    srv = await make_server(source="openai", base_url=standin.url, api_key="k")
    sid = await create(session, srv, source="openai")
    events = await read(session, base_url(srv), "sse", sid)
    assert [e["type"] for e in events] == ["token", "token", "error"]
    assert text_of(events) == "ab"
    err = events[-1]
    assert err["seq"] == 2
    assert err["code"] == "upstream_error"
    assert err["message"].startswith("upstream error event: ")


async def test_openai_http_error_before_stream(
    make_server: MakeServer, session: aiohttp.ClientSession, standin: OpenAIStandIn
) -> None:
    standin.behavior = Behavior(status=429)
    srv = await make_server(source="openai", base_url=standin.url, api_key="k")
    sid = await create(session, srv, source="openai")
    events = await read(session, base_url(srv), "chunked", sid)
    assert len(events) == 1
    assert events[0]["seq"] == 0
    assert events[0]["code"] == "upstream_error"
    assert events[0]["message"].startswith("upstream answered HTTP 429 (rate_limit_exceeded): ")


async def test_cancel_closes_the_upstream_stream(
    make_server: MakeServer, session: aiohttp.ClientSession, standin: OpenAIStandIn
) -> None:
    standin.behavior = Behavior(pieces=["x"] * 10_000, delay=0.01)
    srv = await make_server(source="openai", base_url=standin.url, api_key="k")
    base = base_url(srv)
    sid = await create(session, srv, source="openai", max_tokens=4096)
    await read(session, base, "ws", sid, limit=3)
    async with session.delete(f"{base}/api/streams/{sid}") as resp:
        assert resp.status == 204
    record = standin.requests[-1]
    async with asyncio.timeout(10):
        await record.disconnect_seen.wait()
    events = await read(session, base, "poll", sid)
    assert events[-1]["finish_reason"] == "cancelled"
    assert record.disconnected is True
    assert record.pieces_written < 10_000


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    import torch

    from tests.tinymodel import build_tiny_gpt2

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors; spare the shared CPU
    yield build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))
    torch.set_num_threads(threads)


async def test_hf_source_over_all_transports(
    make_server: MakeServer, session: aiohttp.ClientSession, tiny_model: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    srv = await make_server(source="hf", model=str(tiny_model))
    base = base_url(srv)
    sid = await create(session, srv, prompt="Emoji:", max_tokens=24, source="hf")
    results = await asyncio.gather(*(read(session, base, t, sid) for t in TRANSPORTS))
    for events in results:
        assert events == results[0]
    events = results[0]
    # The text is exactly what generate() gives for the same model, decoded at once.
    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    ids = tok("Emoji:", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=24, do_sample=False, pad_token_id=tok.eos_token_id)
    new = out[0, ids["input_ids"].shape[1] :].tolist()
    expected = tok.decode(new, skip_special_tokens=True)
    done = events[-1]
    assert done["type"] == "done"
    assert text_of(events) == expected
    assert done["sha256"] == hashlib.sha256(expected.encode()).hexdigest()
    assert done["finish_reason"] == ("stop" if tok.eos_token_id in new else "length")
    assert len(events) - 1 > len(expected.split())  # token by token, not word by word


async def test_hf_cancel_stops_generation(
    make_server: MakeServer, session: aiohttp.ClientSession, tiny_model: Path
) -> None:
    import threading

    from server.sources.hf import THREAD_NAME_PREFIX
    from tests.tinymodel import build_tiny_gpt2

    # Untrained (seeded random weights): greedy decoding repeats tokens and never hits EOS.
    untrained = build_tiny_gpt2(tiny_model.parent / "untrained", train_steps=0)
    srv = await make_server(source="hf", model=str(untrained))
    base = base_url(srv)
    sid = await create(session, srv, prompt="한", max_tokens=4096, source="hf")
    head = await read(session, base, "sse", sid, limit=2)
    async with session.delete(f"{base}/api/streams/{sid}") as resp:
        assert resp.status == 204
    events = await read(session, base, "poll", sid)
    assert events[:2] == head
    assert events[-1]["type"] == "done"
    assert events[-1]["finish_reason"] == "cancelled"
    assert events[-1]["tokens"] < 4096
    workers = [t for t in threading.enumerate() if t.name.startswith(THREAD_NAME_PREFIX)]
    for t in workers:
        await asyncio.to_thread(t.join, 10)
    assert [t for t in workers if t.is_alive()] == []


async def test_hf_refuses_typed_parts(
    make_server: MakeServer, session: aiohttp.ClientSession, tiny_model: Path
) -> None:
    """hf streams text only: asking it for reasoning or tools is a 400 naming the field,
    before anything starts; the same body without them streams."""
    srv = await make_server(source="hf", model=str(tiny_model))
    rule = "source 'hf' streams text only (no reasoning, no tool calls)"
    tools = [{"name": "f"}]
    for fields, field in [
        ({"reasoning_effort": "high"}, "reasoning_effort"),
        ({"tools": tools}, "tools"),
        ({"tools": tools, "tool_choice": "f"}, "tools"),
    ]:
        body = orjson.dumps({"prompt": "hi", "source": "hf", **fields})
        async with session.post(f"{base_url(srv)}/api/streams", data=body) as resp:
            assert resp.status == 400
            assert await resp.json() == {
                "error": {"code": "invalid_field", "message": f"{field}: {rule}"}
            }
    sid = await create(session, srv, prompt="hi", max_tokens=2, source="hf", tools=[])
    events = await read(session, base_url(srv), "poll", sid)
    assert [e["type"] for e in events] == [*(["token"] * (len(events) - 1)), "done"]
    assert "parts" not in events[-1]


async def test_hf_refuses_typed_parts_in_every_dialect(
    make_server: MakeServer, session: aiohttp.ClientSession, tiny_model: Path
) -> None:
    """The dialects refuse reasoning and tools for hf in their own error shapes, naming
    their own field."""
    srv = await make_server(source="hf", model=str(tiny_model))
    base = base_url(srv)
    async with session.get(f"{base}/v1/models") as resp:
        models = [m["id"] for m in (await resp.json())["data"]]
    (model,) = [m for m in models if m != "synthetic"]  # the tiny model's id
    text_only = f"model {model!r} streams text only (no reasoning, no tool calls)."
    hello = [{"role": "user", "content": "hi"}]
    cases = [
        (
            "/v1/chat/completions",
            {"model": model, "messages": hello, "reasoning_effort": "low"},
            {"param": "reasoning_effort"},
        ),
        (
            "/v1/chat/completions",
            {
                "model": model,
                "messages": hello,
                "tools": [{"type": "function", "function": {"name": "f"}}],
            },
            {"param": "tools"},
        ),
        (
            "/v1/responses",
            {"model": model, "input": "hi", "reasoning": {"effort": "high"}},
            {"param": "reasoning.effort"},
        ),
        (
            "/v1/messages",
            {
                "model": model,
                "max_tokens": 2048,
                "messages": hello,
                "thinking": {"type": "enabled", "budget_tokens": 1024},
            },
            {"anthropic": "thinking"},
        ),
    ]
    for route, body, where in cases:
        async with session.post(f"{base}{route}", data=orjson.dumps(body)) as resp:
            assert resp.status == 400, (route, await resp.text())
            got = await resp.json()
        if "anthropic" in where:
            assert got == {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": f"Invalid 'thinking': {text_only}",
                },
            }
        else:
            param = where["param"]
            assert got == {
                "error": {
                    "message": f"Invalid '{param}': {text_only}",
                    "type": "invalid_request_error",
                    "param": param,
                    "code": "invalid_value",
                }
            }
