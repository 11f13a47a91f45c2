"""Fixtures: a real tokenwire server on a real loopback port, and a client session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from server.app import create_app
from server.settings import Settings
from server.sources.base import TokenSource

MakeServer = Callable[..., Awaitable[TestServer]]


@pytest.fixture
async def make_server() -> AsyncIterator[MakeServer]:
    """Start servers with settings overrides; all are closed at the end of the test."""
    servers: list[TestServer] = []

    async def make(
        *,
        sources: Mapping[str, TokenSource] | None = None,
        setup: Callable[[web.Application], None] | None = None,
        **overrides: Any,
    ) -> TestServer:
        """``setup`` may add to the app (e.g. a test-only route) before it starts."""
        settings = Settings(**{"grace_s": 5.0, "heartbeat_s": 5.0, **overrides})
        app = create_app(settings, sources=sources)
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
