"""Every HTTP error of the wire contract: exact status, headers and body."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import MakeServer, base_url, create
from wire import READERS


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    async with session.request(method, url, data=data, headers=headers) as resp:
        raw = await resp.read()
        assert resp.headers.get("Content-Type", "").startswith("application/json"), raw
        return resp.status, dict(resp.headers), orjson.loads(raw)


def err(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


CREATE_400 = [
    (b"", err("bad_json", "request body is empty; expected a JSON object")),
    (b"[1]", err("bad_json", "body must be a JSON object")),
    (b'{"prompt": 5}', err("invalid_field", "prompt: must be a string")),
    (b"{}", err("invalid_field", "prompt: must be a string")),
    (
        b'{"prompt": "x", "colour": 1}',
        err(
            "invalid_field",
            "colour: unknown field (allowed: max_tokens, params, prompt, reasoning_effort,"
            " source, tool_choice, tools)",
        ),
    ),
    (
        b'{"prompt": "x", "max_tokens": 0}',
        err("invalid_field", "max_tokens: must be an integer from 1 to 4096"),
    ),
    (
        b'{"prompt": "x", "max_tokens": 4097}',
        err("invalid_field", "max_tokens: must be an integer from 1 to 4096"),
    ),
    (
        b'{"prompt": "x", "max_tokens": true}',
        err("invalid_field", "max_tokens: must be an integer from 1 to 4096"),
    ),
    (
        b'{"prompt": "x", "source": "hf"}',
        err("unknown_source", "source 'hf' is not enabled on this server (enabled: synthetic)"),
    ),
    (b'{"prompt": "x", "params": []}', err("invalid_field", "params: must be an object")),
    (
        b'{"prompt": "x", "params": {"tokens_per_s": 1e9}}',
        err("invalid_field", "params.tokens_per_s: must be a number from 0 to 5000"),
    ),
    (
        b'{"prompt": "x", "params": {"jitter": "a"}}',
        err("invalid_field", "params.jitter: must be a number from 0 to 1"),
    ),
    (
        b'{"prompt": "x", "params": {"ttft_ms": -1}}',
        err("invalid_field", "params.ttft_ms: must be a number from 0 to 10000"),
    ),
    (
        b'{"prompt": "x", "params": {"seed": 1.5}}',
        err("invalid_field", "params.seed: must be an integer from 0 to 2^63-1"),
    ),
    (
        b'{"prompt": "x", "params": {"temperature": 1}}',
        err(
            "invalid_field",
            "params.temperature: unknown parameter"
            " (allowed: corpus, jitter, seed, tokens_per_s, ttft_ms)",
        ),
    ),
    (
        b'{"prompt": "x", "params": {"corpus": "poems"}}',
        err("invalid_field", "params.corpus: must be one of: prose, hard-cases"),
    ),
]


@pytest.mark.parametrize("path", ["/api/streams", "/api/sse", "/api/chunked"])
@pytest.mark.parametrize(("body", "expected"), CREATE_400, ids=[b.decode() for b, _ in CREATE_400])
async def test_bad_create_body_is_400(
    server: TestServer,
    session: aiohttp.ClientSession,
    path: str,
    body: bytes,
    expected: dict[str, Any],
) -> None:
    status, _, payload = await call(session, "POST", base_url(server) + path, data=body)
    assert (status, payload) == (400, expected)


async def test_bad_json_message_names_the_position(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    status, _, payload = await call(
        session, "POST", base_url(server) + "/api/streams", data=b'{"prompt": '
    )
    assert status == 400
    assert payload["error"]["code"] == "bad_json"
    assert payload["error"]["message"].startswith("request body is not valid JSON: ")


async def test_unknown_stream_is_404_on_every_route(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    base = base_url(server)
    expected = err("unknown_stream", "no stream 'nope'")
    for method, path in [
        ("GET", "/api/streams/nope"),
        ("DELETE", "/api/streams/nope"),
        ("GET", "/api/streams/nope/sse"),
        ("GET", "/api/streams/nope/chunked"),
        ("GET", "/api/streams/nope/poll"),
    ]:
        status, _, payload = await call(session, method, base + path)
        assert (method, path, status, payload) == (method, path, 404, expected)


async def test_unknown_route_and_method(server: TestServer, session: aiohttp.ClientSession) -> None:
    base = base_url(server)
    status, _, payload = await call(session, "GET", base + "/api/nothing")
    assert (status, payload) == (404, err("not_found", "no route GET /api/nothing"))
    status, headers, payload = await call(session, "PUT", base + "/api/streams")
    assert (status, payload) == (
        405,
        err("method_not_allowed", "PUT is not allowed on /api/streams"),
    )
    assert headers["Allow"] == "POST"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("after=x", "after: must be an integer >= -1"),
        ("after=", "after: must be an integer >= -1"),
        ("timeout=", "timeout: must be a number from 0 to 60"),
        ("after=-2", "after: must be an integer >= -1"),
        ("after=1.5", "after: must be an integer >= -1"),
        ("after=%2B5", "after: must be an integer >= -1"),
        ("after=007", "after: must be an integer >= -1"),
        ("after=1_0", "after: must be an integer >= -1"),
        ("after=%D9%A3", "after: must be an integer >= -1"),  # an Arabic-Indic digit
        ("after=9007199254740993", "after: must be an integer >= -1"),  # 2^53 + 1
        ("timeout=abc", "timeout: must be a number from 0 to 60"),
        ("timeout=inf", "timeout: must be a number from 0 to 60"),
        ("timeout=1_0", "timeout: must be a number from 0 to 60"),
        ("timeout=1e9", "timeout: must be a number from 0 to 60"),
        ("timeout=61", "timeout: must be a number from 0 to 60"),
        ("timeout=-1", "timeout: must be a number from 0 to 60"),
        ("timeout=nan", "timeout: must be a number from 0 to 60"),
    ],
)
async def test_bad_poll_query_is_400(
    server: TestServer, session: aiohttp.ClientSession, query: str, message: str
) -> None:
    sid = await create(session, server, max_tokens=2)
    status, _, payload = await call(
        session, "GET", f"{base_url(server)}/api/streams/{sid}/poll?{query}"
    )
    assert (status, payload) == (400, err("invalid_field", message))


async def test_bad_resume_position_is_400(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    sid = await create(session, server, max_tokens=2)
    base = f"{base_url(server)}/api/streams/{sid}"
    status, _, payload = await call(session, "GET", f"{base}/sse", headers={"Last-Event-ID": "x"})
    assert (status, payload) == (
        400,
        err("invalid_field", "Last-Event-ID: must be an integer >= -1"),
    )
    status, _, payload = await call(session, "GET", f"{base}/chunked?after=z")
    assert (status, payload) == (400, err("invalid_field", "after: must be an integer >= -1"))
    # Last-Event-ID wins over ?after=, which must be valid all the same.
    status, _, payload = await call(
        session, "GET", f"{base}/sse?after=-2", headers={"Last-Event-ID": "0"}
    )
    assert (status, payload) == (400, err("invalid_field", "after: must be an integer >= -1"))


@pytest.mark.parametrize("path", ["/api/streams", "/api/sse", "/api/chunked"])
async def test_body_too_large_is_413(
    make_server: MakeServer, session: aiohttp.ClientSession, path: str
) -> None:
    srv = await make_server(max_body_bytes=1024)
    body = orjson.dumps({"prompt": "x" * 2000})
    status, _, payload = await call(session, "POST", base_url(srv) + path, data=body)
    assert (status, payload) == (
        413,
        err("body_too_large", "request body is larger than 1024 bytes"),
    )


async def test_prompt_too_long_is_413(
    make_server: MakeServer, session: aiohttp.ClientSession
) -> None:
    srv = await make_server(max_prompt_chars=10)
    status, _, payload = await call(
        session, "POST", base_url(srv) + "/api/streams", data=b'{"prompt": "\xc3\xa9lan vital!"}'
    )
    assert (status, payload) == (
        413,
        err("prompt_too_long", "prompt is 11 characters; the limit is 10"),
    )


SLOW = {"tokens_per_s": 1, "ttft_ms": 0}


async def test_per_client_cap_is_429_with_retry_after(
    make_server: MakeServer, session: aiohttp.ClientSession
) -> None:
    srv = await make_server(max_streams_per_client=2)
    base = base_url(srv)
    a = await create(session, srv, max_tokens=50, params=SLOW)
    await create(session, srv, max_tokens=50, params=SLOW)
    body = orjson.dumps({"prompt": "3", "params": SLOW})
    status, headers, payload = await call(session, "POST", base + "/api/streams", data=body)
    assert (status, payload) == (
        429,
        err("too_many_streams", "this client has 2 live streams; the limit per client is 2"),
    )
    assert headers["Retry-After"] == "5"
    # Cancelling one frees its slot.
    async with session.delete(f"{base}/api/streams/{a}") as resp:
        assert resp.status == 204
    from tests.readers import read

    await read(session, base, "poll", a)
    await create(session, srv, max_tokens=50, params=SLOW)


async def test_total_cap_is_503_with_retry_after(
    make_server: MakeServer, session: aiohttp.ClientSession
) -> None:
    srv = await make_server(max_live_streams=1)
    await create(session, srv, max_tokens=50, params=SLOW)
    body = orjson.dumps({"prompt": "2"})
    status, headers, payload = await call(session, "POST", base_url(srv) + "/api/sse", data=body)
    assert (status, payload) == (
        503,
        err("too_many_streams", "1 streams are live; the server limit is 1"),
    )
    assert headers["Retry-After"] == "5"


async def test_unpaced_cap_is_503(make_server: MakeServer, session: aiohttp.ClientSession) -> None:
    srv = await make_server(max_unpaced_streams=1)
    await create(session, srv, max_tokens=50, params={"tokens_per_s": 0, "ttft_ms": 5000})
    await create(session, srv, max_tokens=50, params=SLOW)  # paced streams are not counted
    body = orjson.dumps({"prompt": "x", "params": {"tokens_per_s": 0}})
    status, headers, payload = await call(
        session, "POST", base_url(srv) + "/api/streams", data=body
    )
    assert (status, payload) == (
        503,
        err(
            "too_many_unpaced_streams",
            "1 unpaced streams (tokens_per_s=0) are live; the limit is 1",
        ),
    )
    assert headers["Retry-After"] == "5"


async def test_create_answers_201_with_links(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    async with session.post(
        base_url(server) + "/api/streams", data=b'{"prompt": "hi", "max_tokens": 3}'
    ) as resp:
        assert resp.status == 201
        body = await resp.json()
        sid = body["id"]
        assert resp.headers["Location"] == f"/api/streams/{sid}"
    assert body == {
        "id": sid,
        "links": {
            "sse": f"/api/streams/{sid}/sse",
            "ws": "/api/ws",
            "poll": f"/api/streams/{sid}/poll",
            "chunked": f"/api/streams/{sid}/chunked",
            "self": f"/api/streams/{sid}",
        },
    }


async def test_status_healthz_and_metrics(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    from tests.readers import read

    base = base_url(server)
    sid = await create(session, server, max_tokens=5, params={"tokens_per_s": 0, "ttft_ms": 0})
    await read(session, base, "sse", sid)
    await read(session, base, "chunked", sid)
    async with session.get(f"{base}/api/streams/{sid}") as resp:
        st = await resp.json()
    assert {
        k: st[k] for k in ("id", "state", "source", "tokens", "max_tokens", "finish_reason")
    } == {
        "id": sid,
        "state": "done",
        "source": "synthetic",
        "tokens": 5,
        "max_tokens": 5,
        "finish_reason": "length",
    }
    assert st["subscribers"] == dict.fromkeys(READERS, 0)
    async with session.get(f"{base}/healthz") as resp:
        assert await resp.json() == {"status": "ok", "live_streams": 0}
    async with session.get(f"{base}/metrics") as resp:
        assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = await resp.text()
    lines = set(text.splitlines())
    assert "tokenwire_live_streams 0.0" in lines
    assert 'tokenwire_events_sent_total{transport="sse"} 6.0' in lines
    assert 'tokenwire_events_sent_total{transport="chunked"} 6.0' in lines
    assert 'tokenwire_subscribers{transport="ws"} 0.0' in lines
    assert 'tokenwire_streams_created_total{source="synthetic"} 1.0' in lines
    assert "tokenwire_tokens_generated_total 5.0" in lines


async def test_the_js_client_is_served(server: TestServer, session: aiohttp.ClientSession) -> None:
    from pathlib import Path

    for name in ("tokenwire.js", "decoders.js", "errors.js"):
        async with session.get(f"{base_url(server)}/js/{name}") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "text/javascript; charset=utf-8"
            assert await resp.read() == (Path("clients/js") / name).read_bytes()
    async with session.get(f"{base_url(server)}/js/nope.js") as resp:
        assert resp.status == 404
        assert await resp.json() == {
            "error": {"code": "not_found", "message": "no file /js/nope.js"}
        }


@pytest.mark.parametrize("path", ["/api/streams", "/api/sse", "/v1/chat/completions"])
async def test_expect_100_continue_over_the_cap_is_413_before_any_100(
    make_server: MakeServer, path: str
) -> None:
    """The client waits for ``100 Continue`` before sending the body; a body over the cap
    is refused instead, so it is never sent (the first bytes back are the 413)."""
    srv = await make_server(max_body_bytes=1024)
    assert srv.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    try:
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2000\r\n"
            "Expect: 100-continue\r\n\r\n".encode()
        )
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 413 "), head
            assert b"\r\nConnection: close\r\n" in head
            body = await reader.read()
    finally:
        writer.close()
    message = "request body is larger than 1024 bytes"
    expected = (
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": "body_too_large",
            }
        }
        if path.startswith("/v1/")
        else err("body_too_large", message)
    )
    assert orjson.loads(body) == expected


async def test_expect_100_continue_within_the_cap_is_invited(server: TestServer) -> None:
    assert server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    body = b'{"prompt":"x","max_tokens":1}'
    try:
        writer.write(
            b"POST /api/streams HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(body)
        )
        async with asyncio.timeout(10):
            assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(body)
            answer = await reader.read()
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 201 Created\r\n")


async def test_an_unknown_expectation_is_417(server: TestServer) -> None:
    assert server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: teapot\r\n\r\n")
        async with asyncio.timeout(10):
            answer = await reader.read()
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 417 Expectation Failed\r\n")
    assert orjson.loads(body) == err(
        "expectation_failed", "unknown expectation 'teapot': only 100-continue is understood"
    )
