"""tokenwire clients: one API over SSE, WebSocket, long polling and chunked HTTP."""

from pathlib import Path

from clients.client import Client, Stream, StreamStats, SyncClient, SyncStream
from clients.errors import (
    ClosedByServer,
    ConnectionLost,
    DigestMismatch,
    InvalidToolCall,
    ProtocolError,
    ServerError,
    StreamFailed,
    StreamGone,
    TokenwireError,
    server_error,
)
from clients.parts import Part, PartReader, Reasoning, Text, ToolCall, ToolCallDone
from clients.readers import Frame
from wire import TRANSPORTS

#: The JS client (plain ES modules), which the server offers at ``/js/`` when told where.
JS_DIR = Path(__file__).parent / "js"

__all__ = [
    "JS_DIR",
    "TRANSPORTS",
    "Client",
    "ClosedByServer",
    "ConnectionLost",
    "DigestMismatch",
    "Frame",
    "InvalidToolCall",
    "Part",
    "PartReader",
    "ProtocolError",
    "Reasoning",
    "ServerError",
    "Stream",
    "StreamFailed",
    "StreamGone",
    "StreamStats",
    "SyncClient",
    "SyncStream",
    "Text",
    "TokenwireError",
    "ToolCall",
    "ToolCallDone",
    "server_error",
]
