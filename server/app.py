"""The app factory: ``create_app(settings) -> web.Application``, and ``serve()``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

import orjson
from aiohttp import web

from server.appkeys import HUB, METRICS, SETTINGS, SOCKETS, Closable
from server.errors import ApiError, MethodNotAllowed, NotFound, StoreUnavailable, TooLarge
from server.hub import Hub
from server.metrics import Metrics
from server.routes import ROUTES
from server.security import POLICY, Policy, add_response_headers, security_middleware
from server.settings import Settings
from server.sources import build_sources
from server.sources.base import TokenSource
from server.store import LogStore, build_store

log = logging.getLogger("tokenwire.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATIC_DIR = Path(__file__).parent / "static"

CONTENT_TYPES = {
    ".js": "text/javascript",  # RFC 9239
    ".css": "text/css",
    ".html": "text/html",
    ".svg": "image/svg+xml",
}
# The demo page loads nothing from elsewhere and runs no inline script; model output is
# text, and this policy would stop a script even if some ever slipped into the DOM.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}


def _files(directory: Path, pattern: str, *, index: str | None = None) -> Handler:
    """Serve the files of ``directory`` matching ``pattern`` by name, read once at start;
    ``index`` answers a request with no name."""
    files = {
        p.name: (p.read_bytes(), CONTENT_TYPES[p.suffix]) for p in sorted(directory.glob(pattern))
    }
    # (X-Content-Type-Options comes with every answer: security.add_response_headers.)
    headers = {"Cache-Control": "no-cache", **PAGE_HEADERS}

    async def handler(request: web.Request) -> web.StreamResponse:
        found = files.get(request.match_info.get("name", index or ""))
        if found is None:
            raise NotFound(f"no file {request.path}")
        body, content_type = found
        return web.Response(body=body, content_type=content_type, charset="utf-8", headers=headers)

    return handler


def _error_response(err: ApiError, request: web.Request) -> web.Response:
    # The OpenAI-compatible routes answer in OpenAI's shape, so its SDKs parse the error.
    body = err.openai_body() if request.path.startswith("/v1/") else err.body()
    return web.Response(
        body=orjson.dumps(body),
        status=err.status,
        content_type="application/json",
        headers=err.headers(),
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as ``{"error": {"code", "message"}}`` with a fitting status
    (under ``/v1/``: ``{"error": {"message", "type", "param", "code"}}``)."""
    try:
        return await handler(request)
    except ApiError as e:
        return _error_response(e, request)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS].max_body_bytes
        return _error_response(
            TooLarge(f"request body is larger than {limit} bytes", code="body_too_large"), request
        )
    except web.HTTPNotFound:
        return _error_response(NotFound(f"no route {request.method} {request.path}"), request)
    except web.HTTPMethodNotAllowed as e:
        err = _error_response(
            MethodNotAllowed(f"{request.method} is not allowed on {request.path}"), request
        )
        err.headers["Allow"] = ", ".join(sorted(e.allowed_methods))
        return err
    except web.HTTPException as e:
        if e.status < 400:
            raise
        # Whatever else aiohttp refuses with (a malformed body, ...) still leaves as JSON.
        error = ApiError(e.text or e.reason, code=e.reason.lower().replace(" ", "_"))
        error.status = e.status
        return _error_response(error, request)
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error_response(ApiError("internal server error"), request)


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    hub = app[HUB]
    await hub.open()
    for source in hub.sources.values():
        await source.start()
    sweeper = asyncio.create_task(hub.run_sweeper(), name="tokenwire-sweeper")
    yield
    sweeper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sweeper
    await hub.aclose()


async def _on_shutdown(app: web.Application) -> None:
    # Live streams end with a final event; sockets flush it and close with 1001.
    await app[HUB].shutdown()
    conns: set[Closable] = app[SOCKETS]
    await asyncio.gather(*(c.shutdown() for c in list(conns)))


def create_app(
    settings: Settings | None = None,
    *,
    sources: Mapping[str, TokenSource] | None = None,
    store: LogStore | None = None,
    js_dir: Path | None = None,
) -> web.Application:
    """Build the tokenwire application. ``sources``/``store`` override the defaults;
    ``js_dir``, when given, is served at ``/js/`` (the JS client, for the demo page and
    anyone's page)."""
    settings = settings or Settings()
    # The error middleware is outermost, so the security checks' refusals are JSON too.
    app = web.Application(
        middlewares=[error_middleware, security_middleware],
        client_max_size=settings.max_body_bytes,
    )
    metrics = Metrics()
    app[SETTINGS] = settings
    app[POLICY] = Policy.from_settings(settings)
    app.on_response_prepare.append(add_response_headers)
    app[METRICS] = metrics
    app[SOCKETS] = set[Closable]()
    app[HUB] = Hub(
        settings,
        store or build_store(settings),
        sources if sources is not None else build_sources(settings),
        metrics,
    )
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_on_shutdown)

    for route in ROUTES:
        path = route.router_path or route.path
        if route.method == "GET":
            app.router.add_get(path, route.handler, allow_head=route.allow_head)
        else:
            app.router.add_route(route.method, path, route.handler)
    # The demo page, and the JS client it uses (for anyone's page too: plain ES modules).
    app.router.add_get("/", _files(STATIC_DIR, "index.html", index="index.html"))
    app.router.add_get("/static/{name}", _files(STATIC_DIR, "*.*"))
    if js_dir is not None:
        app.router.add_get("/js/{name}", _files(js_dir, "*.js"), allow_head=False)
    return app


async def drain(app: web.Application) -> None:
    """First step of a graceful stop, while the listener still accepts connections.

    Every live stream ends with its final event; then, for ``shutdown_drain_s``, clients
    between two long polls (or reconnecting) can still come and fetch it. The runner's
    cleanup afterwards closes WebSockets with 1001 and waits for open responses.
    """
    await app[HUB].shutdown()
    await asyncio.sleep(app[SETTINGS].shutdown_drain_s)


async def run(
    settings: Settings, stop: asyncio.Event | None = None, *, js_dir: Path | None = None
) -> None:
    """Serve until ``stop`` is set (or SIGINT/SIGTERM), then stop gracefully."""
    app = create_app(settings, js_dir=js_dir)
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=settings.shutdown_timeout_s,
    )
    await runner.setup()
    site = web.TCPSite(
        runner,
        settings.host,
        settings.port,
        backlog=settings.backlog,
        reuse_port=settings.workers > 1 or None,  # workers share the port (server/workers.py)
    )
    await site.start()
    log.info(
        "tokenwire serving on http://%s:%d (node %s, store %s)",
        settings.host,
        settings.port,
        settings.node,
        "memory" if settings.store == "memory" else "redis",
    )
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log.info("stopping: ending live streams")
        await drain(app)
    finally:
        await runner.cleanup()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def serve(settings: Settings, *, js_dir: Path | None = None) -> None:
    """Run the server until SIGINT/SIGTERM, with uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        try:
            runner.run(run(settings, js_dir=js_dir))
        except StoreUnavailable as e:  # at start: say so in one line, exit non-zero
            raise SystemExit(f"tokenwire: {e.message}") from None
