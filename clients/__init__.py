"""tokenwire clients: one API over SSE, WebSocket, long polling and chunked HTTP."""

from clients.client import TRANSPORTS, Client, Stream, StreamStats, SyncClient
from clients.errors import (
    ClosedByServer,
    ConnectionLost,
    DigestMismatch,
    ProtocolError,
    ServerError,
    StreamFailed,
    StreamGone,
    TokenwireError,
    server_error,
)

__all__ = [
    "TRANSPORTS",
    "Client",
    "ClosedByServer",
    "ConnectionLost",
    "DigestMismatch",
    "ProtocolError",
    "ServerError",
    "Stream",
    "StreamFailed",
    "StreamGone",
    "StreamStats",
    "SyncClient",
    "TokenwireError",
    "server_error",
]
