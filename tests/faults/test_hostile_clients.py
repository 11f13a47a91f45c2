"""Hostile and odd clients, by class: each test covers every instance of its class that the
server has, derived from what the server declares (the route table, the headers it reads,
its positions and its rate limits), so a new route or header is covered as it lands.

- every route with every HTTP version line (raw sockets): HTTP/1.0 gets what HTTP/1.1
  gets (a stream close-delimited), HTTP/0.9 and HTTP/2.0 get 505 and create nothing;
- every body route with each ``Content-Encoding``: a body that is not what its coding
  says is 400, an encoded body is read, an unknown coding is 415;
- every header the server reads, with bytes that are not UTF-8, on every route: never a
  5xx, never an error logged;
- every position at and past both ends of a live and of a finished stream, on every
  transport: the same outcome everywhere (past the end: 416 / a WebSocket error);
- every rate limit with control frames: pings and pongs count in ``ws_max_msgs_per_s``.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import re
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import brotli
import orjson
import pytest
from aiohttp import hdrs
from backports import zstd

from clients.decoders import NDJSONDecoder, SSEDecoder
from server.appkeys import HUB
from server.routes import ROUTES, Route
from server.security import WEBSOCKET_PATH, needs_token
from tests.faults.hostile import (
    BODY_ROUTES,
    Answer,
    Served,
    body_of,
    exchange,
    request_bytes,
    route_id,
    served,
    target,
)

JSON = {"Content-Type": "application/json"}


#: Anthropic's error types by status (its API reference, "Errors"); any other 4xx is
#: ``invalid_request_error``.
ANTHROPIC_TYPES = {401: "authentication_error", 403: "permission_error", 413: "request_too_large"}


def error(route_path: str, status: int, code: str, message: str) -> dict[str, Any]:
    """The exact error body a route answers with (Anthropic's shape on /v1/messages,
    OpenAI's under the rest of /v1/)."""
    if route_path == "/v1/messages":
        kind = ANTHROPIC_TYPES.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )
        return {"type": "error", "error": {"type": kind, "message": message}}
    if route_path.startswith("/v1/"):
        kind = "server_error" if status >= 500 else "invalid_request_error"
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return {"error": {"code": code, "message": message}}


async def create_stream(
    srv: Served, max_tokens: int = 5, token: str | None = None, **params: Any
) -> str:
    body = orjson.dumps(
        {"prompt": "hi", "max_tokens": max_tokens, "params": params or {"tokens_per_s": 50}}
    )
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    ans = await exchange(
        srv.port,
        request_bytes("POST", "/api/streams", headers={**JSON, **auth}, body=body),
        until_close=False,
    )
    assert ans.status == 201, ans
    return str(ans.json()["id"])


# --- every route with every HTTP version line ---


@pytest.mark.parametrize("version", ["HTTP/0.9", "HTTP/2.0"])
@pytest.mark.parametrize("route", ROUTES, ids=route_id)
async def test_a_version_not_spoken_is_505_and_creates_nothing(route: Route, version: str) -> None:
    async with served() as srv:
        sid = await create_stream(srv)
        before = srv.streams
        ans = await exchange(
            srv.port,
            request_bytes(
                route.method, target(route, sid), version=version, headers=JSON, body=body_of(route)
            ),
        )
        assert (ans.status, ans.headers["content-type"]) == (505, "application/json")
        assert ans.json() == error(
            route.path,
            505,
            "http_version_not_supported",
            f"{version} is not supported here: send HTTP/1.1 (or HTTP/1.0)",
        )
        assert ans.closed
        assert srv.streams == before


def _normalised(body: bytes, stream_ids: set[str]) -> bytes:
    """A streamed body with what differs between two streams of the same request (ids,
    times) replaced."""
    for sid in stream_ids:
        body = body.replace(sid.encode(), b"ID")
    return re.sub(rb'"(t|created|created_at)":\d+', rb'"\1":0', body)


def _stream_id(ans: Answer, sid: str) -> str:
    return ans.headers.get("tokenwire-stream", sid)


@pytest.mark.parametrize("route", ROUTES, ids=route_id)
async def test_http_1_0_gets_what_http_1_1_gets(route: Route) -> None:
    """Streams over HTTP/1.0 are close-delimited (no chunked coding, ``Connection:
    close``), byte for byte the stream HTTP/1.1 gets; every other answer has the same
    status."""
    async with served() as srv:
        answers: dict[str, tuple[Answer, str]] = {}
        for version in ("HTTP/1.1", "HTTP/1.0"):
            sid = await create_stream(srv)
            request = request_bytes(
                route.method,
                target(route, sid),
                version=version,
                headers={**JSON, "Connection": "close"},
                body=body_of(route),
            )
            ans = await exchange(srv.port, request)
            answers[version] = (ans, _stream_id(ans, sid))
    (one, one_id), (zero, zero_id) = answers["HTTP/1.1"], answers["HTTP/1.0"]
    assert zero.status == one.status < 500, (zero, one)
    assert zero.version == "HTTP/1.0"
    assert "transfer-encoding" not in zero.headers
    if one.headers.get("transfer-encoding") == "chunked":  # a stream
        assert zero.headers["connection"] == "close"
        assert zero.closed
        assert _normalised(zero.body, {zero_id}) == _normalised(one.body, {one_id})
        assert zero.body.rstrip().endswith((b"[DONE]", b"}")), zero.body[-200:]
    if route.path == WEBSOCKET_PATH:
        assert zero.json()["error"]["code"] == "upgrade_required"


# --- every body route with each Content-Encoding ---

ENCODE: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": zstd.compress,
}
body_routes = pytest.mark.parametrize("route", BODY_ROUTES, ids=route_id)


@body_routes
@pytest.mark.parametrize("coding", sorted(ENCODE))
async def test_a_body_that_is_not_its_content_encoding_is_400(route: Route, coding: str) -> None:
    async with served() as srv:
        headers = {**JSON, "Content-Encoding": coding}
        ans = await exchange(
            srv.port, request_bytes("POST", route.path, headers=headers, body=body_of(route))
        )
        assert ans.status == 400
        assert ans.json() == error(
            route.path,
            400,
            "bad_encoding",
            f"request body is not valid {coding} (its Content-Encoding)",
        )
        assert ans.closed
        assert ans.headers["connection"] == "close"
        assert srv.streams == 0


@body_routes
@pytest.mark.parametrize("coding", sorted(ENCODE))
async def test_a_body_in_its_content_encoding_is_read(route: Route, coding: str) -> None:
    async with served() as srv:
        headers = {**JSON, "Content-Encoding": coding, "Connection": "close"}
        body = ENCODE[coding](body_of(route))
        request = request_bytes("POST", route.path, headers=headers, body=body)
        ans = await exchange(srv.port, request)
        assert ans.status in (200, 201), ans
        assert srv.streams == 1


@body_routes
@pytest.mark.parametrize("coding", ["xyz", "gzip, br", "x-gzip", "compress"])
async def test_an_unknown_content_encoding_is_415(route: Route, coding: str) -> None:
    """Only what aiohttp decodes is taken; anything else (an unknown coding, a list of
    codings, an alias) is 415 with the codings taken in ``Accept-Encoding``."""
    async with served() as srv:
        headers = {**JSON, "Content-Encoding": coding}
        ans = await exchange(
            srv.port,
            request_bytes("POST", route.path, headers=headers, body=body_of(route)),
            until_close=False,
        )
        assert ans.status == 415
        assert ans.headers["accept-encoding"] == "gzip, deflate, br, zstd, identity"
        assert ans.json() == error(
            route.path,
            415,
            "unsupported_encoding",
            f"Content-Encoding {coding!r} is not supported; send the body as it is, or "
            "encoded with one of: gzip, deflate, br, zstd",
        )
        assert srv.streams == 0


# --- every header the server reads, with bytes that are not UTF-8 ---

NOT_UTF8 = b"\xff\xfe\xc3(\x80"
#: Every header the server reads, with the refusal a non-UTF-8 value gets where one does
#: (status, code; None: the route answers as it would anyway, never a 5xx).
READ_HEADERS: dict[str, tuple[int, str] | None] = {
    "Host": (403, "host_not_allowed"),
    "Origin": (403, "origin_not_allowed"),
    "Authorization": (401, "unauthorized"),
    "Last-Event-ID": None,  # 400 on the SSE route (below)
    "Access-Control-Request-Method": None,
    "Access-Control-Request-Headers": None,
    "Content-Encoding": None,  # 415 on body routes (below)
    # Anthropic's token header, read only when there is no Authorization (which is sent).
    "x-api-key": None,
    "Expect": (417, "expectation_failed"),
    # What aiohttp reads for the WebSocket handshake (server.transports.ws.HANDSHAKE_HEADERS).
    "Upgrade": None,
    "Connection": None,
    "Sec-WebSocket-Key": None,
    "Sec-WebSocket-Version": None,
    "Sec-WebSocket-Protocol": None,
    "Sec-WebSocket-Extensions": None,
}
#: What goes before the bytes, so that the value is otherwise what the server looks for
#: (a bearer token, an origin) and its check, not its parse, meets them.
PREFIXES = {"Authorization": b"Bearer ", "Origin": b"http://"}
_READ = re.compile(r"request\.headers\.get\(\s*(hdrs\.([A-Z_]+)|\"([^\"]+)\")")


def test_every_header_the_server_reads_is_in_the_list() -> None:
    """The list above is what ``server/`` reads (``request.headers.get(...)``), so a header
    read tomorrow joins the test below or fails here."""
    read: set[str] = set()
    for path in Path("server").rglob("*.py"):
        for match in _READ.finditer(path.read_text()):
            read.add(getattr(hdrs, match.group(2)) if match.group(2) else match.group(3))
    assert read - {"Content-Type"} <= {h.lower() for h in READ_HEADERS} | set(READ_HEADERS), read
    assert {str(h).lower() for h in read} >= {"authorization", "host", "origin", "expect"}


def _handshake(route: Route) -> dict[str, str]:
    if route.path != WEBSOCKET_PATH:
        return {}
    return {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }


@pytest.mark.parametrize("header", list(READ_HEADERS))
async def test_a_header_that_is_not_utf8_never_gets_a_5xx(
    header: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with served(auth_token="secret", cors_origins="http://app.example") as srv:
        sid = await create_stream(srv, token="secret")
        for route in ROUTES:
            headers = {
                **JSON,
                "Connection": "close",
                **_handshake(route),
                "Authorization": "Bearer secret",
            }
            headers.pop(header, None)
            request = request_bytes(
                route.method,
                target(route, sid),
                headers=headers,
                raw_headers=f"{header}: ".encode() + PREFIXES.get(header, b"") + NOT_UTF8 + b"\r\n",
                body=body_of(route),
            )
            ans = await exchange(srv.port, request, until_close=False)
            assert ans.status < 500, (route.path, ans)
            if ans.status >= 400:
                err = ans.json()["error"]
                code = err.get("code")
                expected = READ_HEADERS[header]
                if header == "Last-Event-ID" and route.path.endswith("/sse"):
                    expected = (400, "invalid_field")
                elif header == "Content-Encoding" and route.body:
                    expected = (415, "unsupported_encoding")
                elif header == "Authorization" and not needs_token(route.path):
                    expected = None
                if expected is not None and "code" not in err:  # Anthropic's shape: a type
                    assert err["type"] == ANTHROPIC_TYPES.get(
                        expected[0], "invalid_request_error"
                    ), (route.path, ans)
                    code = expected[1]
                if expected is not None:
                    assert (ans.status, code) == expected, (route.path, ans)
            elif READ_HEADERS[header] is not None and (
                header != "Authorization" or needs_token(route.path)
            ):
                pytest.fail(f"{route.path}: {header} not refused: {ans}")
    problems = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not problems, [r.getMessage() for r in problems]


# --- every position at and past both ends, on every transport ---

POSITION_READERS = ("sse", "sse-last-event-id", "chunked", "poll", "ws")
MAX = 2**53


async def read_at(
    session: aiohttp.ClientSession, srv: Served, reader: str, sid: str, after: int, want: int
) -> tuple[Any, ...]:
    """What a reader at ``after`` gets: ``("events", seqs)`` (at most ``want``, or to the
    terminal event), ``("ended",)``, or ``("refused", status, error object)``."""
    base = f"{srv.base}/api/streams/{sid}"
    if reader == "ws":
        async with session.ws_connect(f"{srv.base}/api/ws") as ws:
            await ws.send_json({"op": "subscribe", "stream": sid, "after": after})
            seqs: list[int] = []
            while len(seqs) < want:
                msg = await ws.receive_json(timeout=10)
                if msg["type"] == "end":
                    return ("ended",)
                if msg["type"] == "error":
                    return ("refused", None, {k: msg[k] for k in ("code", "message")})
                seqs.append(msg["seq"])
                if msg["type"] in ("done", "error"):
                    break
            return ("events", seqs)
    if reader == "poll":
        async with session.get(f"{base}/poll", params={"after": str(after), "timeout": "5"}) as r:
            body = await r.json()
            if r.status != 200:
                return ("refused", r.status, body["error"])
            if not body["events"] and body["done"]:
                return ("ended",)
            return ("events", [e["seq"] for e in body["events"]][:want])
    if reader == "sse-last-event-id":
        url, params, headers = f"{base}/sse", {}, {"Last-Event-ID": str(after)}
    else:
        url, params, headers = f"{base}/{reader}", {"after": str(after)}, {}
    async with session.get(url, params=params, headers=headers) as r:
        if r.status == 204:
            return ("ended",)
        if r.status != 200:
            return ("refused", r.status, (await r.json())["error"])
        decoder: Any = SSEDecoder() if reader.startswith("sse") else NDJSONDecoder()
        seqs = []
        async for chunk in r.content.iter_any():
            for item in decoder.feed(chunk):
                event = orjson.loads(item.data) if reader.startswith("sse") else item
                seqs.append(event["seq"])
                if len(seqs) >= want or event["type"] in ("done", "error"):
                    return ("events", seqs)
        return ("events", seqs)


def past_the_end(sid: str, after: int) -> tuple[Any, ...]:
    return (
        "refused",
        416,
        {
            "code": "position_out_of_range",
            "message": f"position {after} is past the end of stream {sid!r}: no event with "
            "that seq has been appended (resume from the last seq you received)",
        },
    )


def before_the_start(reader: str) -> tuple[Any, ...]:
    field = "Last-Event-ID" if reader == "sse-last-event-id" else "after"
    message = f"{field}: must be an integer >= -1"
    return ("refused", 400, {"code": "invalid_field", "message": message})


@pytest.mark.parametrize("reader", POSITION_READERS)
async def test_positions_of_a_finished_stream(reader: str) -> None:
    async with served() as srv, aiohttp.ClientSession() as session:
        sid = await create_stream(srv, max_tokens=3, tokens_per_s=0, ttft_ms=0)
        await asyncio.wait_for(srv.app[HUB].wait_finished(sid), 10)
        outcomes = {
            after: await read_at(session, srv, reader, sid, after, 10)
            for after in (-2, -1, 2, 3, 4, MAX)
        }
    expected = {
        -2: before_the_start(reader),
        -1: ("events", [0, 1, 2, 3]),
        2: ("events", [3]),
        3: ("ended",),  # as a reader who has seen the last event: 204, end, done
        4: past_the_end(sid, 4),
        MAX: past_the_end(sid, MAX),
    }
    if reader == "ws":
        expected = {
            k: ("refused", None, v[2]) if v[0] == "refused" else v for k, v in expected.items()
        }
    assert outcomes == expected


@pytest.mark.parametrize("reader", POSITION_READERS)
async def test_positions_of_a_live_stream(reader: str) -> None:
    """A stream at one token a second: seq 0 is there at once, seq 1 a second later, and
    seq 500 not for minutes."""
    async with served() as srv, aiohttp.ClientSession() as session:
        sid = await create_stream(srv, max_tokens=1000, tokens_per_s=1, ttft_ms=0)
        await read_at(session, srv, "poll", sid, -1, 1)  # seq 0 is appended
        outcomes = {
            after: await read_at(session, srv, reader, sid, after, 1)
            for after in (-2, -1, 0, 500, MAX)
        }
    expected = {
        -2: before_the_start(reader),
        -1: ("events", [0]),
        0: ("events", [1]),  # at the end of a live stream: waits for the next event
        500: past_the_end(sid, 500),
        MAX: past_the_end(sid, MAX),
    }
    if reader == "ws":
        expected = {
            k: ("refused", None, v[2]) if v[0] == "refused" else v for k, v in expected.items()
        }
    assert outcomes == expected


# --- every rate limit with control frames ---


async def _closed_with(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    async with asyncio.timeout(10):
        async for _ in ws:
            pass
    return ws.close_code


@pytest.mark.parametrize(
    "send",
    [
        pytest.param(lambda ws: ws.ping(b"p"), id="pings"),
        pytest.param(lambda ws: ws.pong(b"p"), id="pongs"),
        pytest.param(lambda ws: ws.send_str('{"op":"cancel","stream":"nope"}'), id="messages"),
    ],
)
async def test_control_frames_count_in_the_message_rate(
    send: Callable[[aiohttp.ClientWebSocketResponse], Any],
) -> None:
    async with (
        served(ws_max_msgs_per_s=5) as srv,
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{srv.base}/api/ws", autoping=False) as ws,
    ):
        for _ in range(50):
            await send(ws)
        assert await _closed_with(ws) == 1008


async def test_pings_under_the_rate_are_answered() -> None:
    async with (
        served(ws_max_msgs_per_s=5) as srv,
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{srv.base}/api/ws", autoping=False) as ws,
    ):
        await ws.ping(b"one")
        await ws.ping(b"two")
        got = [await ws.receive(timeout=5) for _ in range(2)]
        assert [(m.type, m.data) for m in got] == [
            (aiohttp.WSMsgType.PONG, b"one"),
            (aiohttp.WSMsgType.PONG, b"two"),
        ]
        await ws.send_json({"op": "generate", "prompt": "x", "max_tokens": 1})
        assert (await ws.receive_json(timeout=5))["type"] == "created"


async def test_a_path_no_route_matches_meets_the_same_expect_handling() -> None:
    """aiohttp answers a request no route matches with its own Expect handler (before any
    middleware): ``100 Continue`` for any body, a 500 for an expectation that is not UTF-8.
    tokenwire's router gives those requests the routes' handler."""
    async with served() as srv:
        odd = await exchange(
            srv.port,
            request_bytes("GET", "/no/such/path", raw_headers=b"Expect: " + NOT_UTF8 + b"\r\n"),
            until_close=False,
        )
        assert odd.status == 417, odd
        assert odd.json()["error"]["code"] == "expectation_failed"
        big = await exchange(
            srv.port,
            request_bytes(
                "POST",
                "/no/such/path",
                headers={"Expect": "100-continue", "Content-Length": str(10**9)},
            ),
            until_close=False,
        )
        assert big.status == 413, big
        assert b"100 Continue" not in big.raw
        assert big.json()["error"]["code"] == "body_too_large"
