"""The REST routes: create, status, cancel, health and metrics."""

from __future__ import annotations

import orjson
from aiohttp import web

from server.appkeys import HUB, METRICS
from server.security import WEBSOCKET_PATH
from server.transports.streaming import client_address, read_json
from server.validation import parse_create_body
from wire import TRANSPORTS


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def links(stream_id: str) -> dict[str, str]:
    """Where to read a stream on each transport (one socket serves every stream), and itself."""
    base = f"/api/streams/{stream_id}"
    paths: dict[str, str] = {t: WEBSOCKET_PATH if t == "ws" else f"{base}/{t}" for t in TRANSPORTS}
    return {**paths, "self": base}


async def create_stream(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    parsed = parse_create_body(await read_json(request), hub.settings, hub.sources)
    stream = await hub.start(parsed, client_address(request))
    return _json(
        {"id": stream.id, "links": links(stream.id)},
        status=201,
        headers={"Location": f"/api/streams/{stream.id}"},
    )


async def stream_status(request: web.Request) -> web.Response:
    return _json(await request.app[HUB].status(request.match_info["id"]))


async def cancel_stream(request: web.Request) -> web.Response:
    await request.app[HUB].cancel(request.match_info["id"])
    return web.Response(status=204)


async def info(request: web.Request) -> web.Response:
    """What a client (the demo page) needs to offer choices: the enabled sources, each with
    its model and params' defaults, the request limits, and whether routes need a token."""
    hub = request.app[HUB]
    s = hub.settings
    sources = [
        {
            "name": name,
            "model": source.served_model(),
            "default": name == s.source,
            "params": source.param_defaults(),
        }
        for name, source in hub.sources.items()
    ]
    limits = {
        "default_max_tokens": s.default_max_tokens,
        "max_tokens": s.max_tokens_cap,
        "max_prompt_chars": s.max_prompt_chars,
        "max_ttft_ms": s.max_ttft_ms,
        "max_tokens_per_s": s.max_tokens_per_s,
    }
    return _json({"sources": sources, "limits": limits, "auth": s.auth_token is not None})


async def healthz(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    return _json({"status": "closing" if hub.closing else "ok", "live_streams": hub.live})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[METRICS].render(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )
