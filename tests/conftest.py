"""Fixtures: a real tokenwire server on a real loopback port, and a client session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Page, async_playwright

import clients
from server.app import create_app
from server.settings import Settings
from server.sources.base import TokenSource
from tests.redis_server import RedisServer

MakeServer = Callable[..., Awaitable[TestServer]]

# Debian's Chromium, driven by Playwright (which never downloads a browser here).
CHROMIUM = "/usr/bin/chromium"
# No sandbox (we run as root); no calls home, which this machine's closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


def console_problems(page: Page) -> list[str]:
    """A list that collects the page's console errors and uncaught exceptions."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    return problems


@pytest.fixture
def server_store() -> str:
    """The ``store`` of the servers ``make_server`` starts; a test module parametrizes
    it over both stores by overriding this fixture with ``store_url``."""
    return "memory"


@pytest.fixture
async def make_server(server_store: str) -> AsyncIterator[MakeServer]:
    """Start servers with settings overrides; all are closed at the end of the test."""
    servers: list[TestServer] = []

    async def make(
        *,
        sources: Mapping[str, TokenSource] | None = None,
        setup: Callable[[web.Application], None] | None = None,
        **overrides: Any,
    ) -> TestServer:
        """``setup`` may add to the app (e.g. a test-only route) before it starts."""
        settings = Settings(
            **{"grace_s": 5.0, "heartbeat_s": 5.0, "store": server_store, **overrides}
        )
        app = create_app(settings, sources=sources, js_dir=clients.JS_DIR)
        if setup is not None:
            setup(app)
        srv = TestServer(app, host="127.0.0.1", port=0)
        await srv.start_server()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        await srv.close()


@pytest.fixture
async def server(make_server: MakeServer) -> TestServer:
    return await make_server()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def base_url(srv: TestServer) -> str:
    return str(srv.make_url("")).rstrip("/")


async def create(session: aiohttp.ClientSession, srv: TestServer, **body: Any) -> str:
    """POST /api/streams and return the new stream's id."""
    body.setdefault("prompt", "hello")
    async with session.post(f"{base_url(srv)}/api/streams", data=orjson.dumps(body)) as resp:
        assert resp.status == 201, await resp.text()
        return str((await resp.json())["id"])


# ----- Redis (issue 16): one real redis-server per test session -----


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest) -> str:
    """``memory``, then the session's Redis (emptied): for tests of what a store decides."""
    if request.param == "memory":
        return "memory"
    return str(request.getfixturevalue("redis_url"))
