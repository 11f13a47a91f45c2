"""Every cap on creating streams, through every way in, with its exact refusal.

A stream can be created five ways: ``POST /api/streams``, ``POST /api/sse``,
``POST /api/chunked``, a WebSocket ``generate`` and ``POST /v1/chat/completions``. Each cap
(per client address, in total, unpaced streams, the total pace, prompt length,
``max_tokens``) must refuse the same way on each: the same code and message, the HTTP
status with ``Retry-After`` where it applies (OpenAI's shape on ``/v1``), or a WebSocket
error message. The per-request checks of query parameters and bodies are in
``tests/test_errors.py``; the WebSocket's size and rate limits in ``tests/test_ws.py``.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from server.errors import openai_type
from tests.conftest import MakeServer, base_url, create


@pytest.fixture
def server_store(store_url: str) -> str:
    """Every test here runs on the memory store and on Redis (one process)."""
    return store_url


ENTRIES = ("streams", "sse", "chunked", "ws", "v1")

#: A stream that stays live for the whole test (one token a second, 1000 tokens).
HOLD = {"tokens_per_s": 1, "ttft_ms": 0}


async def attempt(
    session: aiohttp.ClientSession,
    srv: TestServer,
    entry: str,
    *,
    prompt: str = "x",
    max_tokens: int = 5,
    params: dict[str, Any] | None = None,
) -> tuple[int | None, str | None, dict[str, Any]]:
    """Create a stream through ``entry``; return the refusal: the HTTP status (None over a
    WebSocket), ``Retry-After`` and the error object (``{"code", "message", ...}``)."""
    base = base_url(srv)
    body: dict[str, Any] = {"prompt": prompt, "max_tokens": max_tokens, "params": params or {}}
    if entry == "ws":
        async with session.ws_connect(f"{base}/api/ws") as ws:
            await ws.send_json({"op": "generate", **body})
            msg = await ws.receive_json()
        assert msg.pop("type") == "error", msg
        assert msg.pop("op") == "generate"
        return None, None, msg
    if entry == "v1":
        url = f"{base}/v1/chat/completions"
        body = {
            "model": "synthetic",
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "params": params or {},
        }
    else:
        url = f"{base}/api/{entry}"
    async with session.post(url, data=orjson.dumps(body)) as resp:
        payload = orjson.loads(await resp.read())
        assert resp.status >= 400, payload
        return resp.status, resp.headers.get("Retry-After"), payload["error"]


def refusal(
    entry: str, status: int, code: str, message: str, *, retry: bool
) -> tuple[int | None, str | None, dict[str, Any]]:
    """What ``attempt`` returns for this refusal through ``entry``."""
    if entry == "ws":
        # The WebSocket counterpart of Retry-After: a ``retry_after`` field (seconds).
        hint = {"retry_after": 5} if retry else {}
        return None, None, {"code": code, "message": message, **hint}
    if entry == "v1":
        error = {"message": message, "type": openai_type(status), "param": None, "code": code}
        return status, "5" if retry else None, error
    return status, "5" if retry else None, {"code": code, "message": message}


entries = pytest.mark.parametrize("entry", ENTRIES)


#: A cap: the server's setting, the streams that fill it, the params of one more, and the
#: refusal (status, code, message).
CAPS = [
    pytest.param(
        {"max_streams_per_client": 2},
        [HOLD, HOLD],
        {},
        (429, "too_many_streams", "this client has 2 live streams; the limit per client is 2"),
        id="per-client",
    ),
    pytest.param(
        {"max_live_streams": 2},
        [HOLD, HOLD],
        {},
        (503, "too_many_streams", "2 streams are live; the server limit is 2"),
        id="in-total",
    ),
    pytest.param(
        {"max_unpaced_streams": 1},
        [{"tokens_per_s": 0, "ttft_ms": 10_000}],
        {"tokens_per_s": 0},
        (
            503,
            "too_many_unpaced_streams",
            "1 unpaced streams (tokens_per_s=0) are live; the limit is 1",
        ),
        id="unpaced",
    ),
    # No number of requests, each within the per-stream pace cap, may together ask the
    # synthetic source for more than max_total_tokens_per_s.
    pytest.param(
        {"max_total_tokens_per_s": 100},
        [{"tokens_per_s": 60, "ttft_ms": 10_000}],
        {"tokens_per_s": 50},
        (
            503,
            "pace_budget_exceeded",
            "the live streams ask for 60 tokens/s; 50 more would pass the server's limit of 100",
        ),
        id="total-pace",
    ),
]


@entries
@pytest.mark.parametrize(("settings", "held", "params", "expected"), CAPS)
async def test_caps(
    make_server: MakeServer,
    session: aiohttp.ClientSession,
    entry: str,
    settings: dict[str, Any],
    held: list[dict[str, Any]],
    params: dict[str, Any],
    expected: tuple[int, str, str],
) -> None:
    srv = await make_server(**settings)
    for hold in held:
        await create(session, srv, max_tokens=1000, params=hold)
    assert await attempt(session, srv, entry, params=params) == refusal(
        entry, *expected, retry=True
    )


async def test_total_pace_is_given_back(
    make_server: MakeServer, session: aiohttp.ClientSession
) -> None:
    srv = await make_server(max_total_tokens_per_s=100)
    slow = {"tokens_per_s": 60, "ttft_ms": 10_000}
    held = await create(session, srv, max_tokens=1000, params=slow)
    # Unpaced streams have a cap of their own and do not count here; the rest fits.
    await create(session, srv, max_tokens=1000, params={"tokens_per_s": 40, "ttft_ms": 10_000})
    await create(session, srv, max_tokens=1, params={"tokens_per_s": 0, "ttft_ms": 0})
    # A finished stream gives its pace back.
    async with session.delete(f"{base_url(srv)}/api/streams/{held}") as resp:
        assert resp.status == 204
    async with session.get(f"{base_url(srv)}/api/streams/{held}/poll?after=-1&timeout=5") as resp:
        assert (await resp.json())["done"] is True
    await create(session, srv, max_tokens=1000, params=slow)


async def test_total_pace_off(make_server: MakeServer, session: aiohttp.ClientSession) -> None:
    srv = await make_server(max_total_tokens_per_s=0, max_tokens_per_s=5000)
    for _ in range(3):
        await create(
            session, srv, max_tokens=1000, params={"tokens_per_s": 5000, "ttft_ms": 10_000}
        )


@pytest.mark.parametrize("entry", ["streams", "sse", "chunked", "ws"])
async def test_prompt_and_max_tokens(
    make_server: MakeServer, session: aiohttp.ClientSession, entry: str
) -> None:
    srv = await make_server(max_prompt_chars=10, max_tokens_cap=20)
    assert await attempt(session, srv, entry, prompt="x" * 11) == refusal(
        entry, 413, "prompt_too_long", "prompt is 11 characters; the limit is 10", retry=False
    )
    assert await attempt(session, srv, entry, max_tokens=21) == refusal(
        entry, 400, "invalid_field", "max_tokens: must be an integer from 1 to 20", retry=False
    )
    assert await attempt(session, srv, entry, params={"tokens_per_s": 5001}) == refusal(
        entry,
        400,
        "invalid_field",
        "params.tokens_per_s: must be a number from 0 to 5000",
        retry=False,
    )


async def test_prompt_and_max_tokens_on_v1(
    make_server: MakeServer, session: aiohttp.ClientSession
) -> None:
    srv = await make_server(max_prompt_chars=10, max_tokens_cap=20)
    status, _, error = await attempt(session, srv, "v1", prompt="x" * 11)
    assert (status, error) == (
        400,
        {
            "message": "The messages make a prompt of 11 characters; this server accepts at "
            "most 10.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        },
    )
    status, _, error = await attempt(session, srv, "v1", max_tokens=21)
    assert (status, error["code"], error["param"]) == (400, "integer_above_max_value", "max_tokens")


async def test_websocket_positions_are_bounded(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(f"{base_url(server)}/api/ws") as ws:
        for after in (2**53 + 1, -2, 1.5):
            await ws.send_json({"op": "subscribe", "stream": "x", "after": after})
            assert await ws.receive_json() == {
                "type": "error",
                "code": "invalid_field",
                "message": "after: must be an integer >= -1",
            }
