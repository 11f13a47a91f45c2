"""What the hostile-client tests share: a server served the way ``tokenwire serve`` serves
(``server.app.make_runner`` + ``listen``: the connection guard in front of aiohttp), raw
HTTP over plain sockets, and the route table's routes as requests one can send.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

import clients
from server.app import create_app, listen, make_runner
from server.appkeys import HUB
from server.routes import ROUTES, Route
from server.settings import Settings

#: A stream that ends within a second: 5 tokens at 50/s.
QUICK = {"tokens_per_s": 50, "ttft_ms": 0}


@dataclass
class Served:
    app: web.Application
    port: int
    host: str = "127.0.0.1"

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def live(self) -> int:
        return self.app[HUB].live

    @property
    def streams(self) -> int:
        """Every stream the hub knows (live or finished): nothing may be created by a refusal."""
        return len(self.app[HUB].streams)


@asynccontextmanager
async def served(**overrides: Any) -> AsyncIterator[Served]:
    """A real server on a free loopback port, through ``listen()`` as ``run()`` does."""
    settings = Settings(**{"grace_s": 5.0, "heartbeat_s": 5.0, "port": 0, **overrides})
    app = create_app(settings, js_dir=clients.JS_DIR)
    runner = make_runner(app)
    await runner.setup()
    listener = await listen(runner, settings)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield Served(app, port)
    finally:
        listener.close()
        await runner.cleanup()


@dataclass
class Answer:
    """One HTTP answer read off a raw socket."""

    status: int
    reason: str
    version: str
    headers: dict[str, str]
    body: bytes
    #: The connection was closed after the answer (read to EOF).
    closed: bool = False
    raw: bytes = field(default=b"", repr=False)

    def json(self) -> Any:
        return orjson.loads(self.body)


def parse_answer(data: bytes, *, closed: bool) -> Answer:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version, status, reason = (lines[0].split(" ", 2) + [""])[:3]
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = dechunk(body)
    elif "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return Answer(int(status), reason, version, headers, body, closed, data)


def dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return out


async def exchange(
    port: int,
    data: bytes,
    *,
    wait: float = 10.0,
    until_close: bool = True,
    local_host: str | None = None,
) -> Answer:
    """Send ``data`` on a new connection and read the answer: to EOF (``until_close``), or
    to the end of one answer with a Content-Length."""
    local = (local_host, 0) if local_host else None
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=local)
    got = b""
    closed = False
    try:
        writer.write(data)
        async with asyncio.timeout(wait):
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    closed = True
                    break
                got += chunk
                if _switched(got) or (not until_close and _complete(got)):
                    break
    finally:
        writer.transport.abort()
    assert got, "no answer at all"
    return parse_answer(got, closed=closed)


def _switched(data: bytes) -> bool:
    """A whole ``101 Switching Protocols`` head: what follows is WebSocket frames."""
    return data.startswith(b"HTTP/1.1 101 ") and b"\r\n\r\n" in data


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    if re.match(rb"HTTP/1\.[01] (204|304) ", head):
        return True
    if re.search(rb"(?im)^transfer-encoding:\s*chunked", head):
        return body.endswith(b"0\r\n\r\n")
    match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return match is not None and len(body) >= int(match.group(1))


def request_bytes(
    method: str,
    target: str,
    *,
    version: str = "HTTP/1.1",
    headers: dict[str, str] | None = None,
    raw_headers: bytes = b"",
    body: bytes = b"",
) -> bytes:
    """A request as bytes. ``Host`` is added unless given; ``raw_headers`` are sent as they
    are (bytes that are not UTF-8)."""
    given_host = raw_headers.lower().startswith(b"host:")
    all_headers = {**({} if given_host else {"Host": "127.0.0.1"}), **(headers or {})}
    if body or method in ("POST", "PUT"):
        all_headers.setdefault("Content-Length", str(len(body)))
    lines = "".join(f"{k}: {v}\r\n" for k, v in all_headers.items())
    return (
        f"{method} {target} {version}\r\n{lines}".encode("latin-1") + raw_headers + b"\r\n" + body
    )


# --- the route table as requests ---

#: A valid body for each ``components/schemas`` body name the route table uses.
BODIES: dict[str, dict[str, Any]] = {
    # With typed parts, so the hostile cases cover their validation and events too: 8
    # reasoning pieces, then the forced call's opening and the first argument pieces.
    "CreateBody": {
        "prompt": "hi",
        "max_tokens": 12,
        "params": {**QUICK, "tokens_per_s": 200},
        "reasoning_effort": "low",
        "tools": [{"name": "f", "parameters": {"properties": {"q": {"type": "string"}}}}],
        "tool_choice": "f",
    },
    "ChatBody": {
        "model": "synthetic",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 5,
        "stream": True,
        "params": QUICK,
    },
    "ResponsesBody": {
        "model": "synthetic",
        "input": "hi",
        "max_output_tokens": 5,
        "stream": True,
        "params": QUICK,
    },
    "MessagesBody": {
        "model": "synthetic",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 5,
        "stream": True,
        "params": QUICK,
    },
}


def route_id(route: Route) -> str:
    return f"{route.method} {route.path}"


def target(route: Route, stream_id: str) -> str:
    """The route's path with its placeholders filled (a stream id, the synthetic model)."""
    return (
        route.path.replace("{id}", stream_id)
        .replace("{response_id}", stream_id)
        .replace("{model}", "synthetic")
    )


def body_of(route: Route) -> bytes:
    return orjson.dumps(BODIES[route.body]) if route.body else b""


BODY_ROUTES = [r for r in ROUTES if r.body is not None]


async def eventually(predicate: Callable[[], bool], within: float = 10.0) -> None:
    """Wait (polling) until ``predicate()`` holds; fail after ``within`` seconds."""
    for _ in range(int(within / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"still not true after {within} s")
