"""Every error the server reports, in one place.

Exception tree::

    TokenwireError
    ├── ApiError                  an HTTP answer: status + {"error": {"code", "message"}}
    │   ├── BadRequest            400 bad_json / invalid_field / unknown_source / ...
    │   │   └── InvalidField      400 invalid_field (names the field)
    │   ├── UnknownStream         404 unknown_stream
    │   ├── NotFound              404 not_found (no such route)
    │   ├── MethodNotAllowed      405 method_not_allowed
    │   ├── StreamGone            410 gone (stream expired, or position evicted)
    │   ├── TooLarge              413 body_too_large / prompt_too_long
    │   ├── TooManyStreams        429 too_many_streams (per client address), Retry-After
    │   └── ServerBusy            503 server_busy (total cap) / shutting_down, Retry-After
    └── SourceError               a generation failed; becomes an in-band ``error`` event

The same ``code`` strings appear in WebSocket error messages and in ``error`` events, so a
client can branch on one vocabulary whatever the transport.
"""

from __future__ import annotations

from typing import Any


class TokenwireError(Exception):
    """Base of all tokenwire server errors."""


class ApiError(TokenwireError):
    """An error answered over HTTP as ``{"error": {"code", "message"}}``."""

    status: int = 500
    code: str = "internal"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        """The JSON body of the HTTP answer (also the payload of a WebSocket error)."""
        return {"error": {"code": self.code, "message": self.message}}

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


class UnknownStream(ApiError):
    status = 404
    code = "unknown_stream"

    def __init__(self, stream_id: str) -> None:
        super().__init__(f"no stream {stream_id!r}")
        self.stream_id = stream_id


class NotFound(ApiError):
    status = 404
    code = "not_found"


class MethodNotAllowed(ApiError):
    status = 405
    code = "method_not_allowed"


class StreamGone(ApiError):
    """The stream expired, or the asked position is older than what the log retains."""

    status = 410
    code = "gone"


class TooLarge(ApiError):
    status = 413
    code = "too_large"


class TooManyStreams(ApiError):
    status = 429
    code = "too_many_streams"


class ServerBusy(ApiError):
    status = 503
    code = "server_busy"


class SourceError(TokenwireError):
    """A generation failed. ``code`` is stable (e.g. ``upstream_error``), ``message`` human."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
