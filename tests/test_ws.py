"""The WebSocket endpoint: several streams per socket, bad messages, abuse close codes."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from server.sources.synthetic import synthetic_text
from tests.conftest import MakeServer, base_url, create
from tests.readers import text_of


@pytest.fixture
def server_store(store_url: str) -> str:
    """Every test here runs on the memory store and on Redis (one process)."""
    return store_url


FAST = {"tokens_per_s": 0, "ttft_ms": 0}


async def read_generated(
    ws: aiohttp.ClientWebSocketResponse, n: int
) -> tuple[list[str], dict[str, list[dict[str, Any]]]]:
    """Read until ``n`` streams generated on ``ws`` ended: their ids in the order of their
    ``created`` messages, and each one's events."""
    created: list[str] = []
    by_stream: dict[str, list[dict[str, Any]]] = {}
    async with asyncio.timeout(10):
        while len([s for s in by_stream.values() if s and s[-1]["type"] == "done"]) < n:
            msg = await ws.receive_json()
            if msg["type"] == "created":
                created.append(msg["stream"])
                by_stream[msg["stream"]] = []
            else:
                by_stream[msg["stream"]].append(msg)
    return created, by_stream


async def test_two_streams_share_one_socket(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(f"{base_url(server)}/api/ws") as ws:
        await ws.send_json({"op": "generate", "prompt": "one", "max_tokens": 30, "params": FAST})
        await ws.send_json({"op": "generate", "prompt": "two", "max_tokens": 20, "params": FAST})
        created, by_stream = await read_generated(ws, 2)
    one, two = created
    assert [e["seq"] for e in by_stream[one]] == list(range(31))
    assert [e["seq"] for e in by_stream[two]] == list(range(21))
    assert text_of(by_stream[one]) == "".join(synthetic_text("one", 0, 30))
    assert text_of(by_stream[two]) == "".join(synthetic_text("two", 0, 20))


async def test_created_messages_follow_the_order_of_the_generates(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    """Six ``generate``s sent at once: the ``created`` messages come in the same order (a
    client tells its streams apart by it), though each pump writes its own ``created``
    with the stream's first events; on the Redis store the pumps' first reads end in any
    order, and the second ``created`` once came first."""
    prompts = [f"order {i}" for i in range(6)]
    async with session.ws_connect(f"{base_url(server)}/api/ws") as ws:
        for prompt in prompts:
            await ws.send_json(
                {"op": "generate", "prompt": prompt, "max_tokens": 5, "params": FAST}
            )
        created, by_stream = await read_generated(ws, 6)
    texts = [text_of(by_stream[sid]) for sid in created]
    assert texts == ["".join(synthetic_text(p, 0, 5)) for p in prompts]


BAD_MESSAGES = [
    ("not json", {"code": "bad_json", "message": "message is not valid JSON"}),
    ("[1, 2]", {"code": "bad_json", "message": "message must be a JSON object"}),
    (
        '{"op": "dance"}',
        {
            "code": "unknown_op",
            "message": "op must be one of 'generate', 'subscribe', 'cancel', 'auth'",
        },
    ),
    (
        '{"op": "subscribe"}',
        {"code": "invalid_field", "message": "stream: must be a non-empty string"},
    ),
    (
        '{"op": "subscribe", "stream": "x", "after": "3"}',
        {"code": "invalid_field", "message": "after: must be an integer >= -1"},
    ),
    (
        '{"op": "subscribe", "stream": "nope"}',
        {
            "code": "unknown_stream",
            "message": "no stream 'nope'",
            "stream": "nope",
            "op": "subscribe",
        },
    ),
    (
        '{"op": "cancel", "stream": "nope"}',
        {"code": "unknown_stream", "message": "no stream 'nope'", "stream": "nope", "op": "cancel"},
    ),
    (
        '{"op": "generate", "prompt": 3}',
        {"code": "invalid_field", "message": "prompt: must be a string", "op": "generate"},
    ),
    (
        '{"op": "generate", "prompt": "x", "max_tokens": 99999}',
        {
            "code": "invalid_field",
            "message": "max_tokens: must be an integer from 1 to 4096",
            "op": "generate",
        },
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD_MESSAGES, ids=[t for t, _ in BAD_MESSAGES])
async def test_bad_message_gets_an_error_and_the_socket_stays_usable(
    server: TestServer, session: aiohttp.ClientSession, text: str, expected: dict[str, Any]
) -> None:
    async with session.ws_connect(f"{base_url(server)}/api/ws") as ws:
        await ws.send_str(text)
        assert await ws.receive_json() == {"type": "error", **expected}
        await ws.send_json({"op": "generate", "prompt": "ok", "max_tokens": 3, "params": FAST})
        assert (await ws.receive_json())["type"] == "created"
        events = [await ws.receive_json() for _ in range(4)]
        assert [e["type"] for e in events] == ["token", "token", "token", "done"]


async def test_binary_message_is_refused_politely(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(f"{base_url(server)}/api/ws") as ws:
        await ws.send_bytes(b"\x00\x01")
        assert await ws.receive_json() == {
            "type": "error",
            "code": "bad_json",
            "message": "binary messages are not supported; send JSON text",
        }
        await ws.send_json({"op": "generate", "prompt": "ok", "max_tokens": 1, "params": FAST})
        assert (await ws.receive_json())["type"] == "created"


async def test_oversized_message_closes_with_1009(
    make_server: MakeServer, session: aiohttp.ClientSession
) -> None:
    srv = await make_server(ws_max_msg_bytes=1024)
    async with session.ws_connect(f"{base_url(srv)}/api/ws") as ws:
        await ws.send_str(orjson.dumps({"op": "generate", "prompt": "x" * 2000}).decode())
        msg = await ws.receive()
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert msg.data == 1009


async def test_message_flood_closes_with_1008(
    make_server: MakeServer, session: aiohttp.ClientSession
) -> None:
    srv = await make_server(ws_max_msgs_per_s=5)
    async with session.ws_connect(f"{base_url(srv)}/api/ws") as ws:
        for _ in range(20):
            await ws.send_str('{"op": "cancel", "stream": "nope"}')
        codes = []
        async with asyncio.timeout(10):
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    assert orjson.loads(msg.data)["code"] == "unknown_stream"
        codes.append(ws.close_code)
    assert codes == [1008]


async def test_ping_flood_closes_with_1008(
    make_server: MakeServer, session: aiohttp.ClientSession
) -> None:
    """Pings count in ``ws_max_msgs_per_s`` like messages (aiohttp would answer them
    inside ``receive()``, uncounted)."""
    srv = await make_server(ws_max_msgs_per_s=5)
    async with session.ws_connect(f"{base_url(srv)}/api/ws", autoping=False) as ws:
        for _ in range(200):
            await ws.ping()
        async with asyncio.timeout(10):
            async for _ in ws:
                pass
        assert ws.close_code == 1008


async def test_resubscribe_on_the_same_socket_replaces_the_position(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    sid = await create(session, server, max_tokens=10, params=FAST)
    async with session.ws_connect(f"{base_url(server)}/api/ws") as ws:
        await ws.send_json({"op": "subscribe", "stream": sid, "after": 7})
        got = [await ws.receive_json() for _ in range(3)]
        assert [e["seq"] for e in got] == [8, 9, 10]
        await ws.send_json({"op": "subscribe", "stream": sid, "after": 4})
        got = [await ws.receive_json() for _ in range(6)]
        assert [e["seq"] for e in got] == [5, 6, 7, 8, 9, 10]


async def test_subscribe_past_the_end_gets_an_end_message(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    sid = await create(session, server, max_tokens=2, params=FAST)
    async with session.ws_connect(f"{base_url(server)}/api/ws") as ws:
        await ws.send_json({"op": "subscribe", "stream": sid})
        assert [(await ws.receive_json())["seq"] for _ in range(3)] == [0, 1, 2]
        await ws.send_json({"op": "subscribe", "stream": sid, "after": 2})
        assert await ws.receive_json() == {"type": "end", "stream": sid}
        # Past the end: refused at once (no reader can have seen seq 3), never a silence.
        await ws.send_json({"op": "subscribe", "stream": sid, "after": 3})
        assert await ws.receive_json() == {
            "type": "error",
            "code": "position_out_of_range",
            "message": f"position 3 is past the end of stream {sid!r}: no event with that seq "
            "has been appended (resume from the last seq you received)",
            "stream": sid,
            "op": "subscribe",
        }
