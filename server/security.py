"""Who may talk to the server: the Host check, the Origin check, CORS and the bearer token.

Pure decisions over header values (table-tested), applied to every request by
:func:`check_request` (from the app's one middleware): Host (403), Origin (403), CORS
preflight (204), token (401).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from aiohttp import hdrs, web
from yarl import URL

from server.allowlists import HostList, OriginList, normalize_origin, own_origin
from server.errors import Forbidden, Unauthorized
from server.settings import Settings

#: The WebSocket route: its Origin check uses ``ws_allowed_origins``, and its token may
#: come in the first message instead of the handshake.
WEBSOCKET_PATH = "/api/ws"

#: Response headers a cross-origin page may read (beyond the CORS-safelisted ones, which
#: include Content-Length and Content-Type).
EXPOSED_HEADERS = (
    "Location, Tokenwire-Stream, Retry-After, X-Request-Id, WWW-Authenticate, x-should-retry"
)
#: How long a browser may cache a preflight answer, in seconds.
PREFLIGHT_MAX_AGE = "600"

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP header name (RFC 9110 token)

Verdict = Literal["none", "same", "cross", "refused"]


# --- origins and hosts ---


def http_origin_verdict(origin: str | None, own: str | None, cors: OriginList) -> Verdict:
    """How to treat an HTTP request's ``Origin``: ``none`` (no header: not a cross-origin
    browser request), ``same`` (the server's own), ``cross`` (a foreign origin CORS allows)
    or ``refused``."""
    if origin is None:
        return "none"
    normal = normalize_origin(origin)
    if normal is not None and normal == own:
        return "same"
    return "cross" if cors.allows(origin) else "refused"


def websocket_origin_allowed(origin: str | None, own: str | None, allowed: OriginList) -> bool:
    """A WebSocket handshake: no ``Origin`` (not a browser), the own origin, or listed."""
    if origin is None:
        return True
    normal = normalize_origin(origin)
    return (normal is not None and normal == own) or allowed.allows(origin)


# --- CORS ---


def cors_headers(origin: str, cors: OriginList) -> dict[str, str]:
    """The CORS headers of an answer to an allowed cross-origin request. No credentials."""
    return {
        "Access-Control-Allow-Origin": "*" if cors.any else origin,
        "Access-Control-Expose-Headers": EXPOSED_HEADERS,
    }


def preflight_headers(
    origin: str,
    cors: OriginList,
    method: str,
    request_headers: str | None,
    allowed_methods: Iterable[str],
) -> dict[str, str] | None:
    """The answer to a preflight (``OPTIONS`` with ``Access-Control-Request-Method``) from an
    allowed origin, or None to refuse it: the method is not one the route has, or a
    requested header name is not a valid token. Requested headers are echoed: the origin
    is trusted, and clients such as the openai SDK send headers of their own."""
    methods = sorted(set(allowed_methods))
    if method not in methods:
        return None
    asked = [h.strip().lower() for h in (request_headers or "").split(",") if h.strip()]
    if not all(_TOKEN.fullmatch(h) for h in asked):
        return None
    headers = {
        "Access-Control-Allow-Origin": "*" if cors.any else origin,
        "Access-Control-Allow-Methods": ", ".join(methods),
        "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
    }
    if asked:
        headers["Access-Control-Allow-Headers"] = ", ".join(asked)
    return headers


# --- the token ---


def bearer_token(authorization: str | None) -> str | None:
    """The token of ``Authorization: Bearer <token>`` (scheme case-insensitive), or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison (``hmac.compare_digest``), so timing tells nothing.

    ``given`` may hold the surrogates aiohttp decodes a header's non-UTF-8 bytes to: they
    are compared as the bytes that were sent (and never match a settings token)."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


def needs_token(path: str) -> bool:
    """The API routes: ``/api/*`` but ``/api/info``, ``/v1/*`` and ``/metrics``. The page,
    its files, the JS client, ``/healthz``, ``/api/info`` and ``/openapi.json`` stay open
    (they hold nothing secret, and the page needs ``/api/info`` to know it must ask)."""
    if path == "/api/info":
        return False
    return path.startswith(("/api/", "/v1/")) or path == "/metrics"


def check_token(authorization: str | None, expected: str) -> None:
    """Raise :class:`Unauthorized` unless ``authorization`` carries ``expected``."""
    given = bearer_token(authorization)
    if given is None:
        raise Unauthorized("this server needs a token: send Authorization: Bearer <token>")
    if not token_matches(given, expected):
        raise Unauthorized("the bearer token is not valid", invalid_token=True)


# --- the policy and the middleware ---


@dataclass(frozen=True, slots=True)
class Policy:
    """The settings that decide who may talk to the server, parsed once."""

    token: str | None
    hosts: HostList
    ws_origins: OriginList
    cors: OriginList

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        """Raises ValueError, naming the setting, on an entry that is not an origin/host."""
        return cls(
            token=settings.auth_token,
            hosts=HostList.parse(settings.allowed_hosts, settings.host),
            ws_origins=OriginList.parse(settings.ws_allowed_origins, "ws_allowed_origins"),
            cors=OriginList.parse(settings.cors_origins, "cors_origins"),
        )


def request_authority(request: web.BaseRequest) -> str | None:
    """Who the request is for: the authority of an absolute-form target
    (``GET http://name/path``), which RFC 9112 §3.2.2 says wins over ``Host``; else ``Host``
    (None without one: HTTP/1.0, not a browser)."""
    target = request.raw_path  # the request target as sent
    if not target.startswith(("/", "*")):
        try:
            authority = URL(target).raw_authority
        except ValueError:
            authority = ""
        # An absolute-form target without an authority names no host this server has.
        return authority or target
    return request.headers.get(hdrs.HOST)


POLICY = web.AppKey("security_policy", Policy)
#: The ``Origin`` of an allowed cross-origin request: its answer gets the CORS headers.
CROSS_ORIGIN = web.RequestKey("cross_origin", str)


def check_request(request: web.Request) -> web.StreamResponse | None:
    """Host, Origin, CORS preflight and token checks, before any handler runs: raise the
    refusal (403, 401), return the answer to an allowed preflight (204), or ``None`` to let
    the request through. (The app's one middleware calls it: ``server.app``.)"""
    policy = request.app[POLICY]
    host = request_authority(request)
    if not policy.hosts.allows(host):
        raise Forbidden(
            f"this server does not answer to Host {host!r} (allowed_hosts)",
            code="host_not_allowed",
        )
    origin = request.headers.get(hdrs.ORIGIN)
    websocket = request.path == WEBSOCKET_PATH
    if origin is not None:  # (no Origin: allowed on both, and no own origin to work out)
        own = own_origin(request.scheme, host)
        if websocket:
            if not websocket_origin_allowed(origin, own, policy.ws_origins):
                raise Forbidden(
                    f"a page of {origin} may not open a WebSocket here (ws_allowed_origins)",
                    code="origin_not_allowed",
                )
        else:
            verdict = http_origin_verdict(origin, own, policy.cors)
            if verdict == "refused":
                raise Forbidden(
                    f"requests from pages of {origin} are not allowed (cors_origins)",
                    code="origin_not_allowed",
                )
            if verdict == "cross":
                # Echoed as browsers write it (lower case, no default port), never as sent;
                # an origin only ``*`` allows is never echoed (the answer says ``*``).
                origin = normalize_origin(origin) or "null"
                request[CROSS_ORIGIN] = origin
                preflight = _preflight(request, origin, policy.cors)
                if preflight is not None:
                    return preflight
    if policy.token is not None and needs_token(request.path):
        authorization = request.headers.get(hdrs.AUTHORIZATION)
        if authorization is None and (api_key := request.headers.get("x-api-key")):
            authorization = f"Bearer {api_key}"  # Anthropic's header for the same token
        # A browser's WebSocket cannot send the header: it authenticates in its first message.
        if not (websocket and authorization is None):
            check_token(authorization, policy.token)
    return None


def _preflight(request: web.Request, origin: str, cors: OriginList) -> web.Response | None:
    method = request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_METHOD)
    if request.method != hdrs.METH_OPTIONS or method is None:
        return None
    error = request.match_info.http_exception
    if not isinstance(error, web.HTTPMethodNotAllowed):
        return None  # no such route (404), or it has its own OPTIONS
    headers = preflight_headers(
        origin,
        cors,
        method,
        request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_HEADERS),
        error.allowed_methods,
    )
    if headers is None:
        return None  # the router answers (405): no CORS approval, the browser stops
    return web.Response(status=204, headers=headers)


async def add_response_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: CORS headers on the answer to an allowed cross-origin
    request (streaming answers and errors included), ``Vary: Origin`` whenever the answer
    depends on it, and ``X-Content-Type-Options: nosniff`` on everything."""
    cors = request.app[POLICY].cors
    origin = request.get(CROSS_ORIGIN)
    if origin is not None:
        for name, value in cors_headers(origin, cors).items():
            response.headers.setdefault(name, value)
    if cors and not cors.any:
        vary = response.headers.get(hdrs.VARY)
        if vary is None:
            response.headers[hdrs.VARY] = "Origin"
        elif "origin" not in vary.lower():
            response.headers[hdrs.VARY] = f"{vary}, Origin"
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
