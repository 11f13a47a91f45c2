"""Every error the tokenwire clients raise, in one place.

Exception tree::

    TokenwireError
    ├── ServerError              the server answered an HTTP error: .status, .code, .message
    │   └── StreamGone           410: the stream expired, or the position is evicted
    ├── StreamFailed             the stream ended with an ``error`` event: .code, .message
    ├── DigestMismatch           the text received does not hash to the ``done`` sha256
    ├── ProtocolError            the server broke the wire contract (gap in seq, bad frame)
    └── ConnectionLost           (also aiohttp.ClientConnectionError) a connection dropped
        └── ClosedByServer       a WebSocket close without the terminal event: .close_code

``ConnectionLost`` is what resume handles; it reaches the caller only when resume is off
or the reconnect budget is spent.
"""

from __future__ import annotations

import aiohttp


class TokenwireError(Exception):
    """Base of all tokenwire client errors."""


class ServerError(TokenwireError):
    """An HTTP error answer ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class StreamGone(ServerError):
    """410: the stream expired, or the asked position is no longer retained."""


class StreamFailed(TokenwireError):
    """The stream's last event was an ``error`` event."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class DigestMismatch(TokenwireError):
    """The received text does not match the ``done`` event's sha256."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"sha256 mismatch: server {expected}, received text {actual}")
        self.expected = expected
        self.actual = actual


class ProtocolError(TokenwireError):
    """The server broke the wire contract."""


class ConnectionLost(TokenwireError, aiohttp.ClientConnectionError):
    """A connection dropped before the stream's terminal event."""


class ClosedByServer(ConnectionLost):
    """The server closed a WebSocket before the stream's terminal event."""

    def __init__(self, close_code: int | None) -> None:
        super().__init__(f"WebSocket closed by the server with code {close_code}")
        self.close_code = close_code
