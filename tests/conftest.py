"""Fixtures: a real tokenwire server on a real loopback port, and a client session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Page, async_playwright

import clients
from server.app import create_app
from server.settings import Settings
from server.sources.base import TokenSource
from tests.redis_cluster import RedisCluster
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


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium, started by Playwright, closed at the end."""
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


# One Chromium for a whole module (starting one takes a second or two): a module whose
# tests share the module's event loop (``pytestmark = pytest.mark.asyncio(loop_scope=
# "module")``) takes ``module_browser`` and ``module_make_server`` as its ``browser`` and
# ``make_server``. Each test's pages (their contexts) are closed after it.
@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_chromium() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


@pytest_asyncio.fixture(loop_scope="module")
async def module_browser(module_chromium: Browser) -> AsyncIterator[Browser]:
    yield module_chromium
    for context in module_chromium.contexts:
        await context.close()


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


@asynccontextmanager
async def serving(store: str = "memory") -> AsyncIterator[MakeServer]:
    """Start servers with settings overrides (on ``store``); all are closed at the end."""
    servers: list[TestServer] = []

    async def make(
        *,
        sources: Mapping[str, TokenSource] | None = None,
        setup: Callable[[web.Application], None] | None = None,
        **overrides: Any,
    ) -> TestServer:
        """``setup`` may add to the app (e.g. a test-only route) before it starts."""
        settings = Settings(**{"grace_s": 5.0, "heartbeat_s": 5.0, "store": store, **overrides})
        app = create_app(settings, sources=sources, js_dir=clients.JS_DIR)
        if setup is not None:
            setup(app)
        srv = TestServer(app, host="127.0.0.1", port=0)
        await srv.start_server()
        servers.append(srv)
        return srv

    try:
        yield make
    finally:
        for srv in servers:
            await srv.close()


@pytest.fixture
async def make_server(server_store: str) -> AsyncIterator[MakeServer]:
    """Start servers with settings overrides; all are closed at the end of the test."""
    async with serving(server_store) as make:
        yield make


@pytest_asyncio.fixture(loop_scope="module")
async def module_make_server() -> AsyncIterator[MakeServer]:
    """``make_server`` for a module whose tests share its event loop."""
    async with serving() as make:
        yield make


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


#: The contract subset, ``pytest -m contract``: the wire (framing, vectors, names), the
#: synthetic text, errors, the four transports and the WebSocket commands, ``/v1``, both
#: Python clients and the command line, on real servers, with the core and ``dev`` extras
#: only (no torch, no bench or peers stacks). ``make test`` runs it on every Python of
#: ``EXTRA_PYTHONS`` (Makefile), and the whole suite on the main one.
CONTRACT_MODULES = frozenset(
    {
        "test_framing.py",
        "test_framing_openai.py",
        "test_vectors.py",
        "test_wire_names.py",
        "test_synthetic.py",
        "test_errors.py",
        "test_transports.py",
        "test_ws.py",
        "test_v1.py",
        "test_client.py",
        "test_client_cli.py",
        "test_cli.py",
    }
)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Under ``-m contract``, the other test modules are not even imported (they may need
    torch or the bench stacks, which the contract environments do not install)."""
    if config.getoption("markexpr") != "contract" or collection_path.suffix != ".py":
        return None
    name = collection_path.name
    return True if name.startswith("test_") and name not in CONTRACT_MODULES else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the contract subset: the tests of :data:`CONTRACT_MODULES` but those marked
    ``hf`` (they need torch)."""
    for item in items:
        if (
            item.path.name in CONTRACT_MODULES
            and item.path.parent.name == "tests"
            and item.get_closest_marker("hf") is None
        ):
            item.add_marker(pytest.mark.contract)


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


# ----- Redis Cluster: one real 3-master cluster per test session (tests/redis_cluster.py) -----


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster_url(redis_cluster: RedisCluster) -> str:
    """The session's Redis Cluster (``redis+cluster://``, one node), emptied for this test."""
    redis_cluster.flush()
    return redis_cluster.url
