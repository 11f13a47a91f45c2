"""A tokenwire server whose source emits typed parts, and a stand-in that records requests,
for the JS client's tests (``clients/js/test/parts.client.test.mjs``) and the demo's.

``python -m tests.parts_server`` serves both on free loopback ports, prints one JSON line
``{"url": ..., "standin": ...}`` and runs until it is terminated.

- ``url``: tokenwire with source ``parts`` (:class:`Scripts`): the prompt ``long`` streams
  :data:`LONG`, any other ``SCRIPT`` (``tests/test_typed_parts.py``).
- ``standin``: ``POST /api/streams``, ``POST /api/chunked`` and ``/api/ws`` record the body
  (or first WebSocket message) as it came, then answer a tiny stream: for the prompt
  ``bad``, a tool call whose arguments are not JSON. ``GET /seen`` lists what was recorded;
  ``GET /healthz`` answers as tokenwire's (``tokenwire stream`` asks first).
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web

import clients
from server.app import create_app
from server.settings import Settings
from server.sources.base import GenerationRequest, Reasoning, SourceItem, TokenSource, ToolCallDelta
from tests.serving import start_app
from tests.test_typed_parts import SCRIPT, ScriptedParts

#: A long call: reasoning, then 60 argument pieces, then text (a cut lands inside the call).
LONG_ARGS = ['{"q":"', *("\u00e9\U0001f600x"[i % 3] for i in range(57)), '"', "}"]
LONG: tuple[SourceItem, ...] = (
    Reasoning("think "),
    Reasoning("\u2713"),
    ToolCallDelta(0, "", id="call_long", name="search"),
    *(ToolCallDelta(0, a) for a in LONG_ARGS),
    "done.",
)


class Scripts(TokenSource):
    """The script the prompt names: ``long`` (:data:`LONG`), else ``SCRIPT``."""

    name = "parts"
    typed_parts = True

    async def stream(self, request: GenerationRequest) -> AsyncIterator[SourceItem]:
        script = ScriptedParts(LONG if request.prompt == "long" else SCRIPT)
        async for item in script.stream(request):
            await asyncio.sleep(0.002)  # a pace a cut can fall into, still quick
            yield item


EMPTY = hashlib.sha256(b"").hexdigest()


def standin_events(prompt: str) -> list[dict[str, Any]]:
    """What the stand-in streams after ``created``."""
    if prompt != "bad":
        return [{"stream": "s1", "seq": 0, "type": "done", "finish_reason": "stop",
                 "tokens": 0, "sha256": EMPTY, "t": 1}]  # fmt: skip
    args = "{nope"
    call = {"index": 0, "id": "c", "name": "f", "sha256": hashlib.sha256(args.encode()).hexdigest()}
    return [
        {"stream": "s1", "seq": 0, "type": "tool_call", "index": 0, "id": "c", "name": "f",
         "args": args, "t": 1},
        {"stream": "s1", "seq": 1, "type": "done", "finish_reason": "tool_calls", "tokens": 0,
         "sha256": EMPTY, "parts": {"tool_calls": [call]}, "t": 2},
    ]  # fmt: skip


def standin(seen: list[str]) -> web.Application:
    """The recording stand-in (see the module's docstring)."""

    async def create(request: web.Request) -> web.Response:
        seen.append((await request.read()).decode())
        return web.json_response({"id": "s1"}, status=201)

    async def chunked(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        seen.append(raw.decode())
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        await resp.write(b'{"type":"created","stream":"s1"}\n')
        for ev in standin_events(orjson.loads(raw).get("prompt", "")):
            await resp.write(orjson.dumps(ev) + b"\n")
        return resp

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        first = (await sock.receive()).data
        seen.append(first)
        await sock.send_str('{"type":"created","stream":"s1"}')
        for ev in standin_events(orjson.loads(first).get("prompt", "")):
            await sock.send_str(orjson.dumps(ev).decode())
        await sock.close()
        return sock

    async def seen_list(request: web.Request) -> web.Response:
        return web.json_response(seen)

    app = web.Application()
    app.router.add_post("/api/streams", create)
    app.router.add_post("/api/chunked", chunked)
    app.router.add_get("/api/ws", ws)
    app.router.add_get("/seen", seen_list)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})  # ``tokenwire stream`` asks first

    app.router.add_get("/healthz", healthz)
    return app


async def main() -> None:
    app = create_app(
        Settings(sse_retry_ms=50, max_streams_per_client=1000),
        sources={"parts": Scripts()},
        js_dir=clients.JS_DIR,
    )
    runner, port = await start_app(app)
    standin_runner, standin_port = await start_app(standin([]))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    line = {"url": f"http://127.0.0.1:{port}", "standin": f"http://127.0.0.1:{standin_port}"}
    sys.stdout.write(orjson.dumps(line).decode() + "\n")
    sys.stdout.flush()
    await stop.wait()
    await standin_runner.cleanup()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
