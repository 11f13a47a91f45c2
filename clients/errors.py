"""Every error the tokenwire clients raise, in one place.

Exception tree::

    TokenwireError
    ├── ServerError              the server said no: an HTTP error body (.status) or a
    │   │                        WebSocket error message (.status None): .code, .message
    │   └── StreamGone           code ``gone``: the stream expired, or the position is evicted
    ├── StreamFailed             the stream ended with an ``error`` event: .code, .message
    ├── DigestMismatch           what arrived differs from the ``done`` event: the answer text's
    │                            sha256 or count, or ``parts`` (reasoning, tool calls): .field
    ├── InvalidToolCall          a complete tool call's arguments are not JSON: .index, .name
    ├── ProtocolError            the server broke the wire contract (gap in seq, bad frame)
    └── ConnectionLost           (also aiohttp.ClientConnectionError) a connection dropped
        └── ClosedByServer       a WebSocket close without the terminal event: .close_code

``ConnectionLost`` is what resume handles; it reaches the caller only when resume is off
or the reconnect budget is spent.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from clients.check import describe


class TokenwireError(Exception):
    """Base of all tokenwire client errors."""


class ServerError(TokenwireError):
    """The server said no: an HTTP error answer ``{"error": {"code", "message"}}``, or a
    WebSocket error message (``status`` None). ``retry_after``: its ``Retry-After``, seconds.
    """

    def __init__(
        self,
        code: str,
        message: str,
        status: int | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{'' if status is None else f'{status} '}{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after


class StreamGone(ServerError):
    """Code ``gone`` (410): the stream expired, or the asked position is no longer retained."""

    def __init__(
        self, message: str, status: int | None = 410, *, retry_after: float | None = None
    ) -> None:
        super().__init__("gone", message, status, retry_after=retry_after)


def server_error(
    code: str, message: str, status: int | None = None, *, retry_after: float | None = None
) -> ServerError:
    """A :class:`ServerError`, or a :class:`StreamGone` for code ``gone``."""
    if code == "gone":
        return StreamGone(message, status, retry_after=retry_after)
    return ServerError(code, message, status, retry_after=retry_after)


class StreamFailed(TokenwireError):
    """The stream's last event was an ``error`` event."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class DigestMismatch(TokenwireError):
    """What arrived differs from the ``done`` event. ``field`` is the path of the first
    difference in ``done`` (``sha256``: the answer text; ``tokens``; ``parts.reasoning.sha256``,
    ``parts.tool_calls[0].id``, ...), ``expected`` the server's value, ``actual`` the
    received one."""

    def __init__(self, expected: Any, actual: Any, field: str = "sha256") -> None:
        super().__init__(describe((field, expected, actual)))
        self.expected = expected
        self.actual = actual
        self.field = field


class InvalidToolCall(TokenwireError):
    """A tool call's arguments, complete, are not JSON (the model's fault, not the wire's:
    ``done.parts`` vouches for the bytes)."""

    def __init__(
        self, index: int, call_id: str | None, name: str | None, arguments: str, reason: str
    ) -> None:
        super().__init__(f"tool call {index} ({name}): arguments are not JSON: {reason}")
        self.index = index
        self.id = call_id
        self.name = name
        self.arguments = arguments
        self.reason = reason


class ProtocolError(TokenwireError):
    """The server broke the wire contract."""


class ConnectionLost(TokenwireError, aiohttp.ClientConnectionError):
    """A connection dropped before the stream's terminal event."""


class ClosedByServer(ConnectionLost):
    """The server closed a WebSocket before the stream's terminal event."""

    def __init__(self, close_code: int | None) -> None:
        super().__init__(f"WebSocket closed by the server with code {close_code}")
        self.close_code = close_code
