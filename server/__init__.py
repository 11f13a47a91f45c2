"""tokenwire: one streamed LLM answer over SSE, WebSocket, long polling and chunked HTTP."""

__version__ = "0.1.0"
