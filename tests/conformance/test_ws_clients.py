"""WebSocket through clients nobody here wrote: the ``websockets`` library,
``websocket-client``, Node's ``WebSocket`` (``--experimental-websocket``) and Chromium's.

Each runs the same scenario on two sockets: A generates; once A has seq 5, B subscribes
after seq 2; once B has its first event, A cancels. Both then read to the end: A every
event from 0, B the same events from 3, both ending with ``done`` / ``cancelled``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol

import pytest
import websocket
from playwright.async_api import Browser
from websockets.asyncio.client import connect

from server.sources.synthetic import synthetic_text
from tests.conformance.clients import PAGE, add_test_page, run_node, ws_url
from tests.conftest import MakeServer, base_url, console_problems

PROMPT = "ws conformance"
#: The hard cases (CR/LF, quotes, backslashes, CJK, emoji) through foreign parsers.
PARAMS = {"tokens_per_s": 100, "ttft_ms": 0, "corpus": "hard-cases"}
BODY = {"prompt": PROMPT, "max_tokens": 500, "params": PARAMS}
Msg = dict[str, Any]


class Conn(Protocol):
    async def send(self, msg: Msg) -> None: ...
    async def next(self) -> Msg: ...
    async def close(self) -> None: ...


class WebsocketsConn:
    """The ``websockets`` library's asyncio client."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    @classmethod
    async def open(cls, url: str) -> WebsocketsConn:
        return cls(await connect(url))

    async def send(self, msg: Msg) -> None:
        await self.ws.send(json.dumps(msg))

    async def next(self) -> Msg:
        return dict(json.loads(await self.ws.recv()))

    async def close(self) -> None:
        await self.ws.close()


class WebsocketClientConn:
    """``websocket-client``: blocking calls, each in a thread."""

    def __init__(self, ws: websocket.WebSocket) -> None:
        self.ws = ws

    @classmethod
    async def open(cls, url: str) -> WebsocketClientConn:
        return cls(await asyncio.to_thread(websocket.create_connection, url, timeout=20))

    async def send(self, msg: Msg) -> None:
        await asyncio.to_thread(self.ws.send, json.dumps(msg))

    async def next(self) -> Msg:
        return dict(json.loads(await asyncio.to_thread(self.ws.recv)))

    async def close(self) -> None:
        await asyncio.to_thread(self.ws.close)


def terminal(msg: Msg) -> bool:
    return msg.get("type") in ("done", "error")


async def until(conn: Conn, stop: Any) -> list[Msg]:
    out = []
    for _ in range(10_000):
        msg = await conn.next()
        out.append(msg)
        if stop(msg):
            return out
    raise AssertionError("no end")


async def generate_subscribe_cancel(opener: Any, url: str) -> dict[str, Any]:
    """The scenario of tests/conformance/scenarios.js, in Python."""
    a: Conn = await opener(url)
    await a.send({"op": "generate", **BODY})
    created = await a.next()
    a_events = await until(a, lambda m: m["seq"] >= 5 or terminal(m))
    b: Conn = await opener(url)
    await b.send({"op": "subscribe", "stream": created["stream"], "after": 2})
    b_events = await until(b, lambda m: True)
    await a.send({"op": "cancel", "stream": created["stream"]})
    a_events += await until(a, terminal)
    if not terminal(b_events[-1]):
        b_events += await until(b, terminal)
    await a.close()
    await b.close()
    return {"created": created, "aEvents": a_events, "bEvents": b_events}


def check(result: dict[str, Any]) -> None:
    created, a, b = result["created"], result["aEvents"], result["bEvents"]
    assert created["type"] == "created"
    sid = created["stream"]
    last = a[-1]
    assert (last["type"], last["finish_reason"]) == ("done", "cancelled")
    n = last["seq"]
    assert n >= 6
    assert last["tokens"] == n
    assert [e["seq"] for e in a] == list(range(n + 1))
    assert [e["seq"] for e in b] == list(range(3, n + 1))
    assert all(e["stream"] == sid for e in a + b)
    assert "".join(e["text"] for e in a[:-1]) == "".join(synthetic_text(PROMPT, 0, n, "hard-cases"))
    # B got the very same events (``t`` as a double: JavaScript holds it so).
    for x, y in zip(a[3:], b, strict=True):
        assert float(x.pop("t")) == float(y.pop("t"))
        assert x == y


@pytest.mark.parametrize(
    "opener",
    [WebsocketsConn.open, WebsocketClientConn.open],
    ids=["websockets", "websocket-client"],
)
async def test_python_websocket_clients(make_server: MakeServer, opener: Any) -> None:
    srv = await make_server()
    async with asyncio.timeout(30):
        check(await generate_subscribe_cancel(opener, ws_url(srv, "/api/ws")))


async def test_node_websocket(make_server: MakeServer) -> None:
    srv = await make_server()
    check(await run_node("ws", {"url": ws_url(srv, "/api/ws"), "body": BODY}))


async def test_chromium_websocket(make_server: MakeServer, browser: Browser) -> None:
    srv = await make_server(setup=add_test_page)
    page = await browser.new_page()
    problems = console_problems(page)
    await page.goto(f"{base_url(srv)}{PAGE}")
    await page.wait_for_function("window.ready === true")
    result = await page.evaluate(
        "(o) => window.scenarios.generateSubscribeCancel(WebSocket, o.url, o.body)",
        {"url": ws_url(srv, "/api/ws"), "body": BODY},
    )
    check(result)
    assert problems == []
