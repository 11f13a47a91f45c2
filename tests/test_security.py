"""Who may talk to the server: Host, Origin, CORS and the bearer token.

First the pure decisions of :mod:`server.security`, as tables; then each on a real server
on a real port (exact statuses, headers and bodies), the WebSocket's ways to authenticate,
the official openai SDK with an ``api_key``, and a hostile page in real Chromium that tries
to read the API and hijack a WebSocket from another origin.
"""

from __future__ import annotations

import asyncio
import base64
import os
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser

from server.allowlists import HostList, OriginList, normalize_origin
from server.security import (
    EXPOSED_HEADERS,
    bearer_token,
    http_origin_verdict,
    needs_token,
    preflight_headers,
    websocket_origin_allowed,
)
from server.settings import Settings
from server.settings import from_args as settings_from_args
from server.sources.synthetic import synthetic_text
from tests.conftest import MakeServer, base_url, console_problems
from tests.faults.hostile import exchange, request_bytes
from tokenwire.cli import build_parser

TOKEN = "s3cret-token"
FAST = {"tokens_per_s": 0, "ttft_ms": 0}
EVIL = "http://evil.example"


def err(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


# --- the pure decisions ---


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://example.com", "http://example.com"),
        ("HTTPS://Example.COM", "https://example.com"),
        ("http://example.com:80", "http://example.com"),
        ("https://example.com:443", "https://example.com"),
        ("https://example.com:8443", "https://example.com:8443"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("null", None),
        ("", None),
        ("example.com", None),
        ("ws://example.com", None),
        ("file:///etc", None),
        ("http://example.com/", None),
        ("http://example.com/path", None),
        ("http://example.com?q", None),
        ("http://user@example.com", None),
        ("http://example.com:99999", None),
        ("http://example.com:x", None),
    ],
)
def test_normalize_origin(text: str, expected: str | None) -> None:
    assert normalize_origin(text) == expected


def test_origin_list_parse() -> None:
    assert OriginList.parse("", "cors_origins") == OriginList()
    assert not OriginList.parse(" , ", "cors_origins")
    assert OriginList.parse("*", "cors_origins") == OriginList(any=True)
    parsed = OriginList.parse("https://a.example:443, http://B.example:8080", "x")
    assert parsed.origins == {"https://a.example", "http://b.example:8080"}
    assert parsed.allows("https://A.example")
    assert not parsed.allows("http://a.example")
    with pytest.raises(ValueError, match=r"^cors_origins: 'a\.example' is not an origin"):
        OriginList.parse("a.example", "cors_origins")
    with pytest.raises(ValueError, match=r"^ws_allowed_origins: '\*' allows every origin"):
        OriginList.parse("*, https://a.example", "ws_allowed_origins")


@pytest.mark.parametrize(
    ("allowed", "listen", "host", "expected"),
    [
        ("", "127.0.0.1", "127.0.0.1:8080", True),
        ("", "127.0.0.1", "localhost:8080", True),
        ("", "127.0.0.1", "app.localhost", True),
        ("", "127.0.0.1", "127.9.9.9", True),
        ("", "127.0.0.1", "[::1]:8080", True),
        ("", "127.0.0.1", None, True),  # no Host: HTTP/1.0, not a browser
        ("", "127.0.0.1", "evil.example:8080", False),  # DNS rebinding
        ("", "127.0.0.1", "localhost.evil.example", False),
        ("", "127.0.0.1", "10.0.0.1", False),
        ("", "localhost", "evil.example", False),
        ("", "0.0.0.0", "evil.example", True),  # not loopback: any name
        ("", "::", "anything", True),
        ("*", "127.0.0.1", "evil.example", True),
        ("api.example, other.example", "0.0.0.0", "API.example:443", True),
        ("api.example", "0.0.0.0", "localhost", False),
    ],
)
def test_host_list(allowed: str, listen: str, host: str | None, expected: bool) -> None:
    assert HostList.parse(allowed, listen).allows(host) is expected


OWN = "http://127.0.0.1:8080"


@pytest.mark.parametrize(
    ("origin", "cors", "expected"),
    [
        (None, "", "none"),
        (OWN, "", "same"),
        ("http://127.0.0.1:8080", "*", "same"),
        ("http://127.0.0.1:8081", "", "refused"),
        ("http://localhost:8080", "", "refused"),
        ("https://127.0.0.1:8080", "", "refused"),
        ("null", "", "refused"),
        ("null", "*", "cross"),
        (EVIL, "", "refused"),
        (EVIL, "https://good.example", "refused"),
        (EVIL, "*", "cross"),
        ("https://good.example", "https://good.example", "cross"),
        ("https://good.example:443", "https://good.example", "cross"),
    ],
)
def test_http_origin_verdict(origin: str | None, cors: str, expected: str) -> None:
    assert http_origin_verdict(origin, OWN, OriginList.parse(cors, "cors_origins")) == expected


@pytest.mark.parametrize(
    ("origin", "allowed", "expected"),
    [
        (None, "", True),
        (OWN, "", True),
        ("http://127.0.0.1:8081", "", False),
        (EVIL, "", False),
        ("null", "", False),
        (EVIL, EVIL, True),
        (EVIL, "*", True),
        ("https://evil.example", EVIL, False),
    ],
)
def test_websocket_origin(origin: str | None, allowed: str, expected: bool) -> None:
    allowlist = OriginList.parse(allowed, "ws_allowed_origins")
    assert websocket_origin_allowed(origin, OWN, allowlist) is expected


GOOD = "https://good.example"


@pytest.mark.parametrize(
    ("cors", "method", "asked", "expected"),
    [
        (
            GOOD,
            "POST",
            "Content-Type, Authorization",
            {
                "Access-Control-Allow-Origin": GOOD,
                "Access-Control-Allow-Methods": "GET, POST",
                "Access-Control-Max-Age": "600",
                "Access-Control-Allow-Headers": "content-type, authorization",
            },
        ),
        (
            "*",
            "GET",
            None,
            {
                "Access-Control-Allow-Origin": "*",
                "Access-Control-Allow-Methods": "GET, POST",
                "Access-Control-Max-Age": "600",
            },
        ),
        (GOOD, "PUT", None, None),  # not a method of the route
        (GOOD, "POST", "x-ok, bad header", None),  # not a header name
    ],
)
def test_preflight_headers(
    cors: str, method: str, asked: str | None, expected: dict[str, str] | None
) -> None:
    cors_list = OriginList.parse(cors, "cors_origins")
    assert preflight_headers(GOOD, cors_list, method, asked, ["POST", "GET"]) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("Bearer abc", "abc"),
        ("bearer   abc  ", "abc"),
        ("BEARER abc", "abc"),
        ("Bearer", None),
        ("Bearer ", None),
        ("Basic YWxhZGRpbjpvcGVu", None),
        ("abc", None),
    ],
)
def test_bearer_token(header: str | None, expected: str | None) -> None:
    assert bearer_token(header) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/streams", True),
        ("/api/streams/x/sse", True),
        ("/api/ws", True),
        ("/api/nothing", True),
        ("/v1/chat/completions", True),
        ("/v1/models", True),
        ("/metrics", True),
        ("/api/info", False),
        ("/healthz", False),
        ("/openapi.json", False),
        ("/", False),
        ("/static/demo.js", False),
        ("/js/tokenwire.js", False),
    ],
)
def test_needs_token(path: str, expected: bool) -> None:
    assert needs_token(path) is expected


def test_settings_refuse_bad_values() -> None:
    with pytest.raises(ValueError, match="^auth_token must be a non-empty string"):
        Settings(auth_token="")
    with pytest.raises(ValueError, match="^auth_token must be a non-empty string"):
        Settings(auth_token="two words")
    with pytest.raises(ValueError, match=r"^cors_origins: 'evil' is not an origin"):
        Settings(cors_origins="evil")
    with pytest.raises(ValueError, match=r"^allowed_hosts: '\*' allows every host"):
        Settings(allowed_hosts="*, a.example")
    assert TOKEN not in repr(Settings(auth_token=TOKEN))


def test_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENWIRE_AUTH_TOKEN", "from-env")
    monkeypatch.setenv("TOKENWIRE_CORS_ORIGINS", GOOD)
    ns = build_parser().parse_args(["serve", "--ws-allowed-origins", "*"])
    s = settings_from_args(ns)
    assert (s.auth_token, s.cors_origins, s.ws_allowed_origins) == ("from-env", GOOD, "*")
    ns = build_parser().parse_args(["serve", "--auth-token", "from-flag"])
    assert settings_from_args(ns).auth_token == "from-flag"


# --- on a real server ---


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> tuple[int, dict[str, str], Any]:
    async with session.request(method, url, headers=headers, data=data) as resp:
        raw = await resp.read()
        return resp.status, dict(resp.headers), orjson.loads(raw) if raw else None


def handshake(origin: str | None = None, token: str | None = None) -> dict[str, str]:
    """The headers of a WebSocket handshake, sent as a plain request to read the answer."""
    headers = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
    }
    if origin is not None:
        headers["Origin"] = origin
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


async def live_streams(session: aiohttp.ClientSession, srv: TestServer) -> int:
    async with session.get(f"{base_url(srv)}/healthz") as resp:
        return int((await resp.json())["live_streams"])


async def test_a_foreign_host_is_refused(
    make_server: MakeServer, session: aiohttp.ClientSession
) -> None:
    """DNS rebinding: a page of evil.example re-pointed at 127.0.0.1 still says its name."""
    srv = await make_server()
    url = f"{base_url(srv)}/api/streams"
    status, headers, body = await call(
        session, "POST", url, headers={"Host": "evil.example"}, data=b'{"prompt":"x"}'
    )
    assert (status, body) == (
        403,
        err(
            "host_not_allowed", "this server does not answer to Host 'evil.example' (allowed_hosts)"
        ),
    )
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert await live_streams(session, srv) == 0
    status, _, _ = await call(
        session, "GET", f"{base_url(srv)}/healthz", headers={"Host": "localhost"}
    )
    assert status == 200
    srv = await make_server(allowed_hosts="evil.example")
    status, _, _ = await call(
        session, "GET", f"{base_url(srv)}/healthz", headers={"Host": "evil.example:80"}
    )
    assert status == 200


async def test_a_page_of_another_origin_is_refused_without_cors(
    make_server: MakeServer, session: aiohttp.ClientSession
) -> None:
    srv = await make_server()
    base = base_url(srv)
    for method, path in [("POST", "/api/streams"), ("GET", "/api/info"), ("OPTIONS", "/api/sse")]:
        status, headers, body = await call(
            session,
            method,
            base + path,
            headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"},
            data=b'{"prompt":"x"}',
        )
        assert (method, status, body) == (
            method,
            403,
            err(
                "origin_not_allowed",
                f"requests from pages of {EVIL} are not allowed (cors_origins)",
            ),
        )
        assert "Access-Control-Allow-Origin" not in headers
    assert await live_streams(session, srv) == 0
    # The page's own origin (a browser sends it on POST) is fine.
    status, _, _ = await call(
        session, "POST", base + "/api/streams", headers={"Origin": base}, data=b'{"prompt":"x"}'
    )
    assert status == 201


async def test_cors_for_an_allowed_origin(
    make_server: MakeServer, session: aiohttp.ClientSession
) -> None:
    srv = await make_server(cors_origins=f"{GOOD}, https://other.example")
    base = base_url(srv)
    status, headers, body = await call(
        session,
        "OPTIONS",
        base + "/api/streams",
        headers={
            "Origin": GOOD,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,authorization",
        },
    )
    assert (status, body) == (204, None)
    cors = {k: v for k, v in headers.items() if k.startswith("Access-Control-") or k == "Vary"}
    assert cors == {
        "Access-Control-Allow-Origin": GOOD,
        "Access-Control-Allow-Methods": "POST",
        "Access-Control-Allow-Headers": "content-type, authorization",
        "Access-Control-Max-Age": "600",
        "Access-Control-Expose-Headers": EXPOSED_HEADERS,
        "Vary": "Origin",
    }
    async with session.post(
        base + "/api/sse",
        headers={"Origin": GOOD},
        data=orjson.dumps({"prompt": "x", "max_tokens": 2, "params": FAST}),
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Origin"] == GOOD
        assert resp.headers["Access-Control-Expose-Headers"] == EXPOSED_HEADERS
        assert resp.headers["Vary"] == "Origin"
        assert "Access-Control-Allow-Credentials" not in resp.headers
        await resp.read()
    # An error to an allowed origin is readable too; a same-origin request gets no CORS.
    status, headers, body = await call(
        session, "GET", base + "/api/streams/nope", headers={"Origin": GOOD}
    )
    assert (status, body, headers["Access-Control-Allow-Origin"]) == (
        404,
        err("unknown_stream", "no stream 'nope'"),
        GOOD,
    )
    status, headers, _ = await call(session, "GET", base + "/healthz", headers={"Origin": base})
    assert (status, headers.get("Access-Control-Allow-Origin"), headers["Vary"]) == (
        200,
        None,
        "Origin",
    )
    # A preflight for a method the route does not have gets no approval.
    status, headers, body = await call(
        session,
        "OPTIONS",
        base + "/api/streams",
        headers={"Origin": GOOD, "Access-Control-Request-Method": "PUT"},
    )
    assert status == 405
    assert "Access-Control-Allow-Methods" not in headers


async def test_cors_any_origin_never_with_credentials(
    make_server: MakeServer, session: aiohttp.ClientSession
) -> None:
    srv = await make_server(cors_origins="*", auth_token=TOKEN)
    base = base_url(srv)
    # A preflight carries no credentials: it must not need the token.
    status, headers, _ = await call(
        session,
        "OPTIONS",
        base + "/v1/chat/completions",
        headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"},
    )
    assert (status, headers["Access-Control-Allow-Origin"]) == (204, "*")
    status, headers, body = await call(session, "GET", base + "/metrics", headers={"Origin": EVIL})
    assert status == 401
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert "Vary" not in headers
    assert "Access-Control-Allow-Credentials" not in headers


async def test_websocket_origin_check(
    make_server: MakeServer, session: aiohttp.ClientSession
) -> None:
    srv = await make_server()
    base = base_url(srv)
    status, headers, body = await call(session, "GET", base + "/api/ws", headers=handshake(EVIL))
    assert (status, body) == (
        403,
        err(
            "origin_not_allowed",
            f"a page of {EVIL} may not open a WebSocket here (ws_allowed_origins)",
        ),
    )
    assert "Upgrade" not in headers
    # Same origin, or no Origin (not a browser): the handshake goes through.
    for origin in (base, None):
        async with session.ws_connect(base + "/api/ws", origin=origin) as ws:
            await ws.send_json({"op": "generate", "prompt": "x", "max_tokens": 1, "params": FAST})
            assert (await ws.receive_json())["type"] == "created"
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await session.ws_connect(base + "/api/ws", origin="http://localhost:1")
    assert info.value.status == 403
    srv = await make_server(ws_allowed_origins=EVIL)
    async with session.ws_connect(base_url(srv) + "/api/ws", origin=EVIL) as ws:
        await ws.send_json({"op": "generate", "prompt": "x", "max_tokens": 1, "params": FAST})
        assert (await ws.receive_json())["type"] == "created"


async def test_a_plain_get_of_the_websocket_is_426(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    status, headers, body = await call(session, "GET", base_url(server) + "/api/ws")
    assert (status, body) == (
        426,
        err(
            "upgrade_required",
            "this is the WebSocket endpoint: connect with a WebSocket (version 13) handshake",
        ),
    )
    assert (headers["Upgrade"], headers["Sec-WebSocket-Version"]) == ("websocket", "13")


# --- the bearer token ---

PROTECTED = [
    ("POST", "/api/streams"),
    ("GET", "/api/streams/{id}"),
    ("DELETE", "/api/streams/{id}"),
    ("GET", "/api/streams/{id}/sse"),
    ("GET", "/api/streams/{id}/chunked"),
    ("GET", "/api/streams/{id}/poll?timeout=0"),
    ("POST", "/api/sse"),
    ("POST", "/api/chunked"),
    ("GET", "/api/nothing"),
    ("GET", "/metrics"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/synthetic"),
    ("POST", "/v1/chat/completions"),
]
OPEN = ["/", "/static/demo.js", "/js/tokenwire.js", "/healthz", "/api/info", "/openapi.json"]
MISSING = "this server needs a token: send Authorization: Bearer <token>"
INVALID = "the bearer token is not valid"


def openai_err(code: str, message: str, status: int) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": "invalid_request_error" if status < 500 else "server_error",
            "param": None,
            "code": code,
        }
    }


async def test_every_api_route_needs_the_token(
    make_server: MakeServer, session: aiohttp.ClientSession
) -> None:
    srv = await make_server(auth_token=TOKEN)
    base = base_url(srv)
    good = {"Authorization": f"Bearer {TOKEN}"}
    async with session.post(
        base + "/api/streams", data=b'{"prompt":"x","max_tokens":2}', headers=good
    ) as resp:
        assert resp.status == 201
        sid = (await resp.json())["id"]
    chat = orjson.dumps({"model": "synthetic", "messages": [{"role": "user", "content": "x"}]})
    for method, template in PROTECTED:
        url = base + template.format(id=sid)
        body = chat if "chat" in template else b'{"prompt":"x","max_tokens":2}'
        for headers, message, challenge in [
            ({}, MISSING, 'Bearer realm="tokenwire"'),
            ({"Authorization": "Basic eDp5"}, MISSING, 'Bearer realm="tokenwire"'),
            (
                {"Authorization": "Bearer wrong"},
                INVALID,
                'Bearer realm="tokenwire", error="invalid_token"',
            ),
            (
                {"Authorization": f"Bearer {TOKEN}x"},
                INVALID,
                'Bearer realm="tokenwire", error="invalid_token"',
            ),
        ]:
            status, got, payload = await call(session, method, url, headers=headers, data=body)
            expected = (
                openai_err("unauthorized", message, 401)
                if template.startswith("/v1/")
                else err("unauthorized", message)
            )
            assert (method, template, status, payload) == (method, template, 401, expected)
            assert got["WWW-Authenticate"] == challenge
        async with session.request(method, url, headers=good, data=body) as resp:
            assert resp.status != 401, (method, template)
            await resp.read()
    for path in OPEN:
        async with session.get(base + path) as resp:
            assert (path, resp.status) == (path, 200)
    async with session.get(base + "/api/info") as resp:
        assert (await resp.json())["auth"] is True


async def test_the_openai_sdk_sends_its_api_key(make_server: MakeServer) -> None:
    srv = await make_server(auth_token=TOKEN)
    messages: Any = [{"role": "user", "content": "key"}]
    async with openai.AsyncOpenAI(base_url=base_url(srv) + "/v1", api_key=TOKEN) as good:
        answer = await good.chat.completions.create(
            model="synthetic", messages=messages, max_tokens=5
        )
        assert answer.choices[0].message.content == "".join(synthetic_text("key", 0, 5))
    async with openai.AsyncOpenAI(
        base_url=base_url(srv) + "/v1", api_key="wrong", max_retries=0
    ) as bad:
        with pytest.raises(openai.AuthenticationError) as info:
            await bad.chat.completions.create(model="synthetic", messages=messages, stream=True)
    assert info.value.status_code == 401
    assert info.value.body == openai_err("unauthorized", INVALID, 401)["error"]


async def test_websocket_token_in_the_header(
    make_server: MakeServer, session: aiohttp.ClientSession
) -> None:
    srv = await make_server(auth_token=TOKEN)
    url = base_url(srv) + "/api/ws"
    async with session.ws_connect(url, headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        await ws.send_json({"op": "generate", "prompt": "h", "max_tokens": 2, "params": FAST})
        got = [await ws.receive_json() for _ in range(4)]
    assert [m["type"] for m in got] == ["created", "token", "token", "done"]
    # A wrong header is refused before the upgrade, with the JSON error.
    status, headers, body = await call(session, "GET", url, headers=handshake(token="wrong"))
    assert (status, body) == (401, err("unauthorized", INVALID))
    assert headers["WWW-Authenticate"] == 'Bearer realm="tokenwire", error="invalid_token"'


async def test_websocket_token_in_the_first_message(
    make_server: MakeServer, session: aiohttp.ClientSession
) -> None:
    srv = await make_server(auth_token=TOKEN)
    async with session.ws_connect(base_url(srv) + "/api/ws") as ws:
        await ws.send_json({"op": "auth", "token": TOKEN})
        await ws.send_json({"op": "generate", "prompt": "m", "max_tokens": 2, "params": FAST})
        got = [await ws.receive_json() for _ in range(4)]
        assert [m["type"] for m in got] == ["created", "token", "token", "done"]
        await ws.send_json({"op": "auth", "token": "ignored once authenticated"})
        await ws.send_json({"op": "cancel", "stream": "nope"})
        assert (await ws.receive_json())["code"] == "unknown_stream"


async def closed_with(ws: aiohttp.ClientWebSocketResponse) -> tuple[list[Any], int | None]:
    """Every message until the server closes the socket, and its close code."""
    messages = []
    async with asyncio.timeout(10):
        async for msg in ws:
            messages.append(orjson.loads(msg.data))
    return messages, ws.close_code


AUTH_FIRST = (
    'authenticate first: send {"op":"auth","token":"..."} (or the Authorization header on the '
    "handshake)"
)


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        (
            {"op": "auth", "token": "wrong"},
            {"type": "error", "code": "unauthorized", "message": INVALID, "op": "auth"},
        ),
        (
            {"op": "generate", "prompt": "x"},
            {"type": "error", "code": "unauthorized", "message": AUTH_FIRST, "op": "generate"},
        ),
        (
            {"op": "subscribe", "stream": "x"},
            {"type": "error", "code": "unauthorized", "message": AUTH_FIRST, "op": "subscribe"},
        ),
        ("not json", {"type": "error", "code": "unauthorized", "message": AUTH_FIRST}),
        (
            {"op": "auth", "token": 5},
            {"type": "error", "code": "unauthorized", "message": AUTH_FIRST},
        ),
        (b"\x00", {"type": "error", "code": "unauthorized", "message": AUTH_FIRST}),
    ],
    ids=["wrong-token", "generate", "subscribe", "not-json", "token-not-a-string", "binary"],
)
async def test_websocket_without_authentication_closes_with_1008(
    make_server: MakeServer, session: aiohttp.ClientSession, first: Any, expected: dict[str, Any]
) -> None:
    srv = await make_server(auth_token=TOKEN)
    async with session.ws_connect(base_url(srv) + "/api/ws") as ws:
        if isinstance(first, bytes):
            await ws.send_bytes(first)
        elif isinstance(first, str):
            await ws.send_str(first)
        else:
            await ws.send_json(first)
        assert await closed_with(ws) == ([expected], 1008)
    assert await live_streams(session, srv) == 0


async def test_websocket_authentication_times_out(
    make_server: MakeServer, session: aiohttp.ClientSession
) -> None:
    srv = await make_server(auth_token=TOKEN, ws_auth_timeout_s=0.2)
    async with session.ws_connect(base_url(srv) + "/api/ws") as ws:
        assert await closed_with(ws) == (
            [{"type": "error", "code": "unauthorized", "message": "no auth message within 0.2 s"}],
            1008,
        )


async def test_websocket_auth_message_without_a_server_token_is_ignored(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(base_url(server) + "/api/ws") as ws:
        await ws.send_json({"op": "auth", "token": "anything"})
        await ws.send_json({"op": "generate", "prompt": "x", "max_tokens": 1, "params": FAST})
        assert (await ws.receive_json())["type"] == "created"
    async with session.get(base_url(server) + "/api/info") as resp:
        assert (await resp.json())["auth"] is False


# --- a hostile page in a real browser ---

PROBE = "/probe.html"
PROBE_HTML = """<!doctype html>
<meta charset="utf-8">
<link rel="icon" href="data:,">
<script>
// What a page can do with another origin's API: read it over fetch, open its WebSocket.
window.probe = async (base) => {
  const out = {};
  try {
    const resp = await fetch(base + "/api/streams", {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({prompt: "probe", max_tokens: 2, params: {tokens_per_s: 0}}),
    });
    out.fetch = {status: resp.status, stream: resp.headers.get("Location")};
  } catch (e) {
    out.fetch = {error: e.name};
  }
  out.ws = await new Promise((resolve) => {
    const ws = new WebSocket(base.replace("http", "ws") + "/api/ws");
    ws.onopen = () => ws.send(JSON.stringify({op: "generate", prompt: "hijack", max_tokens: 1}));
    ws.onmessage = (m) => { ws.close(); resolve(JSON.parse(m.data).type); };
    ws.onclose = (e) => resolve("closed " + e.code);
  });
  return out;
};
</script>
"""


def add_probe(app: web.Application) -> None:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PROBE_HTML, content_type="text/html")

    app.router.add_get(PROBE, page)


async def test_a_hostile_page_in_chromium(
    browser: Browser, make_server: MakeServer, session: aiohttp.ClientSession
) -> None:
    """A page on one port (another origin) against servers on other ports: without
    allowlists it can neither read the API nor hijack a WebSocket, and nothing is created;
    with them, both work."""
    hostile = await make_server(setup=add_probe)
    closed = await make_server()
    page = await browser.new_page()
    problems = console_problems(page)
    await page.goto(base_url(hostile) + PROBE)
    assert await page.evaluate("(b) => window.probe(b)", base_url(closed)) == {
        "fetch": {"error": "TypeError"},  # the preflight was refused
        "ws": "closed 1006",  # the handshake was answered 403
    }
    assert await live_streams(session, closed) == 0
    assert len(problems) >= 2  # Chromium logs the CORS refusal and the failed handshake

    origin = base_url(hostile)
    opened = await make_server(cors_origins=origin, ws_allowed_origins=origin)
    result = await page.evaluate("(b) => window.probe(b)", base_url(opened))
    assert result["ws"] == "created"
    assert result["fetch"]["status"] == 201
    assert str(result["fetch"]["stream"]).startswith("/api/streams/")  # exposed
    await page.close()


# --- hostile clients (issue 15) ---


async def test_an_absolute_form_target_is_checked_by_its_authority(
    make_server: MakeServer,
) -> None:
    """RFC 9112 §3.2.2: the authority of ``GET http://evil.example/...`` is what the request
    is for, whatever ``Host`` says."""
    srv = await make_server()
    assert srv.port is not None
    for target in ("http://evil.example/api/info", "http://evil.example:8080/healthz"):
        ans = await exchange(
            srv.port,
            request_bytes("GET", target, headers={"Host": "127.0.0.1"}),
            until_close=False,
        )
        host = target.split("/")[2]
        assert (ans.status, ans.json()) == (
            403,
            err(
                "host_not_allowed",
                f"this server does not answer to Host {host!r} (allowed_hosts)",
            ),
        )
    ans = await exchange(
        srv.port,
        request_bytes("GET", f"http://127.0.0.1:{srv.port}/healthz"),
        until_close=False,
    )
    assert ans.status == 200


async def test_the_cors_origin_is_echoed_normalised(
    make_server: MakeServer, session: aiohttp.ClientSession
) -> None:
    srv = await make_server(cors_origins="http://app.example")
    for sent in ("HTTP://App.Example:80", "http://APP.example", " http://app.example"):
        status, headers, _ = await call(
            session, "GET", f"{base_url(srv)}/api/info", headers={"Origin": sent}
        )
        assert (status, headers["Access-Control-Allow-Origin"]) == (200, "http://app.example")
        status, headers, _ = await call(
            session,
            "OPTIONS",
            f"{base_url(srv)}/api/streams",
            headers={"Origin": sent, "Access-Control-Request-Method": "POST"},
        )
        assert (status, headers["Access-Control-Allow-Origin"]) == (204, "http://app.example")


NOT_UTF8_AUTHORIZATION = b"Authorization: Bearer \xff\xfe\r\n"


async def test_an_authorization_that_is_not_utf8_is_401(make_server: MakeServer) -> None:
    """Over HTTP and on the WebSocket handshake (it was 500: the comparison encoded it)."""
    srv = await make_server(auth_token="secret")
    assert srv.port is not None
    for path, extra in [
        ("/api/streams/x", {}),
        ("/v1/models", {}),
        ("/api/ws", {k: v for k, v in handshake().items() if k != "Origin"}),
    ]:
        ans = await exchange(
            srv.port,
            request_bytes("GET", path, headers=extra, raw_headers=NOT_UTF8_AUTHORIZATION),
            until_close=False,
        )
        assert ans.status == 401, (path, ans)
        assert ans.headers["www-authenticate"] == 'Bearer realm="tokenwire", error="invalid_token"'
        message = "the bearer token is not valid"
        expected = (
            openai_err("unauthorized", message, 401)
            if path.startswith("/v1/")
            else err("unauthorized", message)
        )
        assert ans.json() == expected
