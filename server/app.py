"""The app factory: ``create_app(settings) -> web.Application``, and ``serve()``."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import resource
import signal
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
from aiohttp import HttpVersion10, HttpVersion11, hdrs, web
from aiohttp.web_urldispatcher import MatchInfoError, UrlMappingMatchInfo

from server.allowlists import host_name, is_loopback_name
from server.appkeys import HUB, METRICS, SETTINGS, SOCKETS, Closable
from server.connections import CONNECTIONS, ConnectionGuard, connection_middleware
from server.errors import (
    ApiError,
    MethodNotAllowed,
    NotFound,
    StoreUnavailable,
    TooLarge,
    VersionNotSupported,
)
from server.hub import Hub
from server.metrics import Metrics
from server.routes import ROUTES, error_body
from server.security import POLICY, Policy, add_response_headers, check_request
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
    # The dialects' routes answer in their API's shape, so its SDKs parse the error.
    resp = web.Response(
        body=orjson.dumps(error_body(err, request.path)),
        status=err.status,
        content_type="application/json",
        headers=err.headers(),
    )
    if err.close_connection:
        resp.force_close()
        resp.headers[hdrs.CONNECTION] = "close"
    return resp


#: The HTTP versions answered: HTTP/1.0 (what nginx speaks to its upstream by default; a
#: stream is then close-delimited) and HTTP/1.1.
HTTP_VERSIONS = (HttpVersion10, HttpVersion11)


class Router(web.UrlDispatcher):
    """aiohttp's router, except that a request no route matches (its 404 or 405) meets the
    routes' :func:`expect_handler` too: aiohttp's default would invite the body with ``100
    Continue``, and answer an expectation that is not UTF-8 with a 500."""

    async def resolve(self, request: web.Request) -> UrlMappingMatchInfo:
        match = await super().resolve(request)
        if isinstance(match, MatchInfoError):
            match.route._expect_handler = expect_handler
        return match


def check_version(request: web.Request) -> None:
    """Refuse a request line of another version (``HTTP/0.9``, ``HTTP/2.0``: aiohttp's
    parser takes them) with 505, before any route runs, so nothing is created for it."""
    if request.version not in HTTP_VERSIONS:
        major, minor = request.version
        raise VersionNotSupported(
            f"HTTP/{major}.{minor} is not supported here: send HTTP/1.1 (or HTTP/1.0)"
        )


async def expect_handler(request: web.Request) -> web.StreamResponse | None:
    """``Expect: 100-continue``: refuse a body over ``max_body_bytes`` (413) before the
    client sends it, instead of inviting it with ``100 Continue``; any other expectation is
    417. (aiohttp runs this before the middlewares: the answers are built here.)"""
    expect = request.headers.get(hdrs.EXPECT, "")
    if request.version != HttpVersion11:
        return None  # HTTP/1.0 has no 100 Continue (RFC 9110 §10.1.1): ignore it
    if expect.lower() != "100-continue":
        err: ApiError = ApiError(
            f"unknown expectation {expect!r}: only 100-continue is understood",
            code="expectation_failed",
        )
        err.status = 417
        err.close_connection = True
        request.content.feed_eof()
        return _error_response(err, request)
    limit = request.app[SETTINGS].max_body_bytes
    length = request.content_length
    if length is not None and length > limit:
        too_large = TooLarge(f"request body is larger than {limit} bytes", code="body_too_large")
        too_large.close_connection = True  # the client may send the body anyway
        request.content.feed_eof()  # and it is not read: no lingering for it
        return _error_response(too_large, request)
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # (as aiohttp's own handler: the answer starts now)
    return None


@web.middleware
async def app_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """What every request meets before its route, in one coroutine (a middleware each
    cost a coroutine and a call per request): the HTTP version (505,
    :func:`check_version`), then who may talk (Host, Origin, CORS preflight, token:
    :func:`server.security.check_request`); and every error, theirs and the route's,
    leaves as ``{"error": {"code", "message"}}`` with a fitting status (under ``/v1/``:
    ``{"error": {"message", "type", "param", "code"}}``)."""
    try:
        check_version(request)
        preflight = check_request(request)
        if preflight is not None:
            return preflight
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
    # The connection marks (which keep the header and idle timers off while a request is in
    # the app), then the one middleware: the version and security checks inside its error
    # handling, so their refusals are JSON too.
    with warnings.catch_warnings():  # ("router argument is deprecated": it is still the way)
        warnings.simplefilter("ignore", DeprecationWarning)
        app = web.Application(
            router=Router(),
            middlewares=[connection_middleware, app_middleware],
            client_max_size=settings.max_body_bytes,
        )
    app[CONNECTIONS] = ConnectionGuard(settings)
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
            app.router.add_get(
                path, route.handler, allow_head=route.allow_head, expect_handler=expect_handler
            )
        else:
            app.router.add_route(route.method, path, route.handler, expect_handler=expect_handler)
    # The demo page, and the JS client it uses (for anyone's page too: plain ES modules).
    page = _files(STATIC_DIR, "index.html", index="index.html")
    app.router.add_get("/", page, expect_handler=expect_handler)
    app.router.add_get("/static/{name}", _files(STATIC_DIR, "*.*"), expect_handler=expect_handler)
    if js_dir is not None:
        app.router.add_get(
            "/js/{name}", _files(js_dir, "*.js"), allow_head=False, expect_handler=expect_handler
        )
    return app


async def drain(app: web.Application) -> None:
    """First step of a graceful stop, while the listener still accepts connections.

    Every live stream ends with its final event; then, for ``shutdown_drain_s``, clients
    between two long polls (or reconnecting) can still come and fetch it. The runner's
    cleanup afterwards closes WebSockets with 1001 and waits for open responses.
    """
    await app[HUB].shutdown()
    await asyncio.sleep(app[SETTINGS].shutdown_drain_s)


def exposure_notice(settings: Settings) -> str | None:
    """What remote clients get from a server listening beyond loopback without
    ``allowed_hosts`` (said once at start-up), or ``None`` on loopback or with a host list."""
    if settings.allowed_hosts or is_loopback_name(host_name(settings.host) or settings.host):
        return None
    who = (
        "every API route needs the --auth-token"
        if settings.auth_token
        else "there is no --auth-token, so anyone who reaches the port can create, read and "
        "cancel streams"
    )
    return (
        f"listening on {settings.host} without --allowed-hosts: requests for any Host name are "
        f"answered (no DNS-rebinding check) and {who}; set --allowed-hosts to the names "
        "clients use, and --auth-token"
    )


def raise_open_files_limit() -> tuple[int, int]:
    """Raise ``RLIMIT_NOFILE``'s soft limit to the hard limit (each connection is a file
    descriptor; a soft limit of 1,024 is a few hundred clients); return both (``run()``
    logs them once it listens, so a failure to listen is the first thing said)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:
            log.warning("could not raise the open files limit to %d: %s", target, e)
    return soft, hard


def make_runner(app: web.Application) -> web.AppRunner:
    """The runner ``run()`` serves ``app`` with (its keep-alive timeout is ``idle_timeout_s``;
    the connection guard keeps the same one, and the header timeout)."""
    settings = app[SETTINGS]
    extra: dict[str, Any] = (
        {"keepalive_timeout": settings.idle_timeout_s} if settings.idle_timeout_s else {}
    )
    return web.AppRunner(
        app,
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=settings.shutdown_timeout_s,
        **extra,
    )


async def listen(runner: web.AppRunner, settings: Settings) -> asyncio.Server:
    """Listen on ``settings.host:port`` (0: any free port) with the connection guard
    (:mod:`server.connections`) in front of the runner's aiohttp protocol. ``runner`` must
    be set up. Stop with ``close()`` before ``runner.cleanup()``."""
    guard = runner.app[CONNECTIONS]
    guard.bind(runner.server)  # type: ignore[arg-type]  # (a protocol factory)
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        guard,
        settings.host,
        settings.port,
        backlog=settings.backlog,
        reuse_address=True,
        reuse_port=settings.workers > 1 or None,  # workers share the port (server/workers.py)
    )


async def run(
    settings: Settings, stop: asyncio.Event | None = None, *, js_dir: Path | None = None
) -> None:
    """Serve until ``stop`` is set (or SIGINT/SIGTERM), then stop gracefully."""
    files, files_hard = raise_open_files_limit()
    app = create_app(settings, js_dir=js_dir)
    runner = make_runner(app)
    await runner.setup()
    listener = await listen(runner, settings)
    log.info(
        "tokenwire serving on http://%s:%d (node %s, store %s)",
        settings.host,
        settings.port,
        settings.node,
        "memory" if settings.store == "memory" else "redis",
    )
    log.info("open files limit: %d (hard limit %d)", files, files_hard)
    if (notice := exposure_notice(settings)) is not None:
        log.warning("%s", notice)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log.info("stopping: ending live streams")
        await drain(app)
    finally:
        listener.close()
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
    # A token's objects are freed by reference counting, not by the cycle collector: run
    # its first generation every 50,000 allocations (default 700), and take what the imports
    # made out of its view. bench.pace, 200 SSE streams x 50 tokens/s, 4 interleaved rounds:
    # 65.9 -> 58.4 ms of server CPU per 1,000 tokens (docs/bench.md).
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        try:
            runner.run(run(settings, js_dir=js_dir))
        except StoreUnavailable as e:  # at start: say so in one line, exit non-zero
            raise SystemExit(f"tokenwire: {e.message}") from None
