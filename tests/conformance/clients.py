"""What the conformance tests share: URLs, a request log, Node runs and a test page."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
NODE_CLIENTS = HERE / "node_clients.mjs"
SCENARIOS = HERE / "scenarios.js"
NODE_FLAGS = ("--experimental-websocket", "--experimental-eventsource")
PAGE = "/test/conformance.html"
PAGE_HTML = """<!doctype html>
<meta charset="utf-8">
<title>tokenwire conformance</title>
<link rel="icon" href="data:,">
<script type="module">
import * as scenarios from "/test/scenarios.js";
window.scenarios = scenarios;
window.ready = true;
</script>
"""


def ws_url(srv: TestServer, path: str) -> str:
    return f"ws://127.0.0.1:{srv.port}{path}"


@dataclass(slots=True)
class Seen:
    """One request the server got."""

    method: str
    path: str
    last_event_id: str | None
    status: int | None = None


def add_request_log(app: web.Application) -> list[Seen]:
    """Record every request's method, path and ``Last-Event-ID``, in the order they came,
    and its status once answered (``None`` for one whose connection was cut)."""
    seen: list[Seen] = []

    @web.middleware
    async def record(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        entry = Seen(request.method, request.path, request.headers.get("Last-Event-ID"))
        seen.append(entry)
        resp = await handler(request)
        entry.status = resp.status
        return resp

    app.middlewares.append(record)
    return seen


def add_test_page(app: web.Application) -> None:
    """The page Chromium runs the scenarios on, and the scenarios module it imports."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE_HTML, content_type="text/html")

    async def module(request: web.Request) -> web.Response:
        return web.Response(text=SCENARIOS.read_text(), content_type="text/javascript")

    app.router.add_get(PAGE, page)
    app.router.add_get("/test/scenarios.js", module)


async def run_node(scenario: str, options: dict[str, Any]) -> Any:
    """Run one scenario of ``node_clients.mjs``; its JSON result."""
    node = shutil.which("node")
    assert node is not None, "node is not on PATH"
    proc = await asyncio.create_subprocess_exec(
        node,
        *NODE_FLAGS,
        str(NODE_CLIENTS),
        scenario,
        json.dumps(options),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    try:
        async with asyncio.timeout(40):
            stdout, stderr = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, stderr.decode()[-2000:]
    return json.loads(stdout)
