"""Every error the server reports, in one place.

Exception tree::

    TokenwireError
    ├── ApiError                  an HTTP answer: status + {"error": {"code", "message"}}
    │   ├── BadRequest            400 bad_json / invalid_field / unknown_source / ...
    │   │   ├── InvalidField      400 invalid_field (names the field)
    │   │   └── InvalidRequest    400 (/v1) OpenAI's codes: invalid_type, unknown_parameter, ...
    │   ├── Unauthorized          401 unauthorized (no or a wrong bearer token),
    │   │                         WWW-Authenticate: Bearer
    │   ├── Forbidden             403 origin_not_allowed / host_not_allowed
    │   ├── UnknownStream         404 unknown_stream
    │   ├── NotFound              404 not_found (no such route)
    │   ├── ModelNotFound         404 (/v1) model_not_found
    │   ├── MethodNotAllowed      405 method_not_allowed
    │   ├── RequestTimeout        408 request_timeout (the body did not arrive in time)
    │   ├── StreamGone            410 gone (stream expired, or position evicted)
    │   ├── TooLarge              413 body_too_large / prompt_too_long
    │   ├── UnsupportedEncoding   415 unsupported_encoding (a Content-Encoding not taken),
    │   │                         Accept-Encoding
    │   ├── PositionOutOfRange    416 position_out_of_range (``after`` past the last event)
    │   ├── UpgradeRequired       426 upgrade_required (a plain request to the WebSocket)
    │   ├── TooManyStreams        429 too_many_streams (per client address), Retry-After
    │   ├── ServerBusy            503 too_many_streams (total cap) / too_many_unpaced_streams /
    │   │                         pace_budget_exceeded / shutting_down, Retry-After
    │   ├── VersionNotSupported   505 http_version_not_supported (HTTP/0.9, HTTP/2.0 lines)
    │   ├── StoreUnavailable      503 store_unavailable (the shared store, Redis, does not
    │   │                         answer), Retry-After
    │   └── GenerationError       (/v1) a generation that ended without an answer: an error
    │                             event's code, or cancelled; 409, 500, 502, 503 or 504
    └── SourceError               a generation failed; becomes an in-band ``error`` event

The same ``code`` strings appear in WebSocket error messages and in ``error`` events, so a
client can branch on one vocabulary whatever the transport.

On the OpenAI-compatible routes (``/v1/...``) every error takes OpenAI's shape instead,
``{"error": {"message", "type", "param", "code"}}`` (:meth:`ApiError.openai_body`), with the
``type`` derived from the status (:func:`openai_type`), so the official SDK raises its own
exception classes (``BadRequestError``, ``NotFoundError``, ``RateLimitError``, ...). On
Anthropic's ``/v1/messages``, Anthropic's shape: ``{"type": "error", "error": {"type",
"message"}}`` (:meth:`ApiError.anthropic_body`, :func:`anthropic_type`).
"""

from __future__ import annotations

from typing import Any, Final


def printable(text: str) -> str:
    """``text`` with what cannot be UTF-8 (the surrogates that stand for a header's
    non-UTF-8 bytes) escaped as ``\\udcff``, so any message can be sent as JSON."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def openai_type(status: int) -> str:
    """The OpenAI error ``type`` for an HTTP status.

    ``requests`` for 429 (OpenAI's type for a requests-per-time limit), ``server_error``
    for 5xx, ``invalid_request_error`` for every other status.
    """
    if status == 429:
        return "requests"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


#: Anthropic's error ``type`` for an HTTP status (others: ``api_error``).
ANTHROPIC_TYPES: Final[dict[int, str]] = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def anthropic_type(status: int) -> str:
    """The Anthropic error ``type`` for an HTTP status: ``invalid_request_error`` for
    any other 4xx, ``api_error`` for any other 5xx."""
    return ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


class TokenwireError(Exception):
    """Base of all tokenwire server errors."""


class ApiError(TokenwireError):
    """An error answered over HTTP as ``{"error": {"code", "message"}}``."""

    status: int = 500
    code: str = "internal"
    #: The request field at fault, if one is (the ``param`` of an OpenAI-shaped error).
    param: str | None = None
    #: Close the connection after the answer (the rest of the request cannot be trusted).
    close_connection: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        message = printable(message)
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        """The JSON body of the HTTP answer (also the payload of a WebSocket error)."""
        return {"error": {"code": self.code, "message": self.message}}

    def openai_body(self) -> dict[str, Any]:
        """The same error in OpenAI's shape, for the ``/v1`` routes."""
        return {
            "error": {
                "message": self.message,
                "type": openai_type(self.status),
                "param": self.param,
                "code": self.code,
            }
        }

    def anthropic_body(self) -> dict[str, Any]:
        """The same error in Anthropic's shape, for ``/v1/messages``."""
        return {
            "type": "error",
            "error": {"type": anthropic_type(self.status), "message": self.message},
        }

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, round(self.retry_after)))}


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class InvalidField(BadRequest):
    """A field of a request is missing, of the wrong type, or out of range."""

    code = "invalid_field"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.param = field
        self.reason = message


class InvalidRequest(BadRequest):
    """(``/v1``) A Chat Completions body the server refuses, in OpenAI's vocabulary.

    ``param`` names the field (``max_tokens``, ``messages[0].role``); ``code`` is OpenAI's
    (``missing_required_parameter``, ``invalid_type``, ``invalid_value``,
    ``unknown_parameter``, ``unsupported_parameter``, ``unsupported_value``, ...).
    """

    def __init__(self, message: str, *, param: str | None, code: str) -> None:
        super().__init__(message, code=code)
        self.param = param


class Unauthorized(ApiError):
    """The route needs ``Authorization: Bearer <token>`` and the request has none, or a
    wrong one (RFC 6750: ``WWW-Authenticate: Bearer``, with ``error="invalid_token"`` for a
    wrong one)."""

    status = 401
    code = "unauthorized"

    def __init__(self, message: str, *, invalid_token: bool = False) -> None:
        super().__init__(message)
        self.invalid_token = invalid_token

    def headers(self) -> dict[str, str]:
        challenge = 'Bearer realm="tokenwire"'
        if self.invalid_token:
            challenge += ', error="invalid_token"'
        return {"WWW-Authenticate": challenge}


class Forbidden(ApiError):
    """The request comes from somewhere the server does not answer: a page of another
    origin (``origin_not_allowed``) or a ``Host`` it does not serve (``host_not_allowed``)."""

    status = 403
    code = "forbidden"


class UnknownStream(ApiError):
    status = 404
    code = "unknown_stream"

    def __init__(self, stream_id: str) -> None:
        super().__init__(f"no stream {stream_id!r}")
        self.stream_id = stream_id


class NotFound(ApiError):
    status = 404
    code = "not_found"


class ModelNotFound(ApiError):
    """(``/v1``) The ``model`` names no source or model this server serves."""

    status = 404
    code = "model_not_found"
    param = "model"

    def __init__(self, model: str) -> None:
        super().__init__(f"The model '{model}' does not exist on this server (see GET /v1/models).")
        self.model = model


class MethodNotAllowed(ApiError):
    status = 405
    code = "method_not_allowed"


class RequestTimeout(ApiError):
    """The request's body did not arrive within ``body_timeout_s``."""

    status = 408
    code = "request_timeout"
    close_connection = True


class StreamGone(ApiError):
    """The stream expired, or the asked position is older than what the log retains."""

    status = 410
    code = "gone"


class TooLarge(ApiError):
    status = 413
    code = "too_large"


class UnsupportedEncoding(ApiError):
    """A ``Content-Encoding`` the server does not decode (RFC 9110 §15.5.16: 415, with the
    codings it takes in ``Accept-Encoding``)."""

    status = 415
    code = "unsupported_encoding"

    def __init__(self, message: str, *, accepted: str) -> None:
        super().__init__(message)
        self.accepted = accepted

    def headers(self) -> dict[str, str]:
        return {"Accept-Encoding": self.accepted}


class PositionOutOfRange(ApiError):
    """``after`` (or ``Last-Event-ID``) names a seq the stream has not appended: no reader
    can have seen it."""

    status = 416
    code = "position_out_of_range"


class UpgradeRequired(ApiError):
    """A request to the WebSocket route that is not a valid WebSocket handshake."""

    status = 426
    code = "upgrade_required"

    def headers(self) -> dict[str, str]:
        return {"Upgrade": "websocket", "Sec-WebSocket-Version": "13"}


class TooManyStreams(ApiError):
    status = 429
    code = "too_many_streams"


class ServerBusy(ApiError):
    status = 503
    code = "server_busy"


class VersionNotSupported(ApiError):
    """A request line of an HTTP version the server does not speak (HTTP/0.9, HTTP/2.0)."""

    status = 505
    code = "http_version_not_supported"
    close_connection = True


class StoreUnavailable(ApiError):
    """The shared log store (Redis) did not answer; the request may be retried."""

    status = 503
    code = "store_unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after=2)


#: HTTP status of a ``/v1`` generation that ended without an answer, by its code.
GENERATION_STATUS: Final[dict[str, int]] = {
    "cancelled": 409,
    "shutdown": 503,
    "upstream_error": 502,
    "upstream_unavailable": 502,
    "upstream_timeout": 504,
}


class GenerationError(ApiError):
    """(``/v1``) A generation that ended without an answer, told to an OpenAI client.

    ``code`` is the ``error`` event's code (``upstream_error``, ``shutdown``, ...) or
    ``cancelled`` for a ``done`` event with ``finish_reason: "cancelled"``. The status is the
    HTTP answer when nothing was streamed yet (:data:`GENERATION_STATUS`, else 500); in a
    stream the same error goes in-band. The HTTP answer names the stream
    (``Tokenwire-Stream``), whose log ends with the same error; a cancelled stream asks the
    SDK not to retry.
    """

    def __init__(self, code: str, message: str, *, stream_id: str | None = None) -> None:
        super().__init__(message, code=code)
        self.status = GENERATION_STATUS.get(code, 500)
        self.stream_id = stream_id

    def headers(self) -> dict[str, str]:
        headers = {} if self.stream_id is None else {"Tokenwire-Stream": self.stream_id}
        if self.code == "cancelled":
            headers["x-should-retry"] = "false"
        return headers


class SourceError(TokenwireError):
    """A generation failed. ``code`` is stable (e.g. ``upstream_error``), ``message`` human."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
