"""The names both ends of the wire agree on, declared once.

The server, the Python client and the bench import these; this package imports nothing
of the project. The JS client (``clients/js/names.js``) declares the same names and
``tests/test_wire_names.py`` checks that they agree.
"""

from __future__ import annotations

import typing
from typing import Final, Literal

Transport = Literal["sse", "ws", "poll", "chunked"]
#: The four ways a stream of tokenwire events travels, in the order tables list them.
TRANSPORTS: Final[tuple[Transport, ...]] = typing.get_args(Transport)

Dialect = Literal["openai", "responses", "anthropic"]
#: Other APIs' wire formats served over the same log (``openai``: Chat Completions on
#: ``/v1/chat/completions``; ``responses``: OpenAI's Responses API on ``/v1/responses``;
#: ``anthropic``: Anthropic's Messages API on ``/v1/messages``). A dialect reads the log like
#: a transport and is counted like one.
DIALECTS: Final[tuple[Dialect, ...]] = typing.get_args(Dialect)

Reader = Literal[Transport, Dialect]
#: Every kind of reader a stream counts (status ``subscribers``, metrics labels).
READERS: Final[tuple[Reader, ...]] = (*TRANSPORTS, *DIALECTS)

#: Log event types: the content (``token``, and the typed parts ``reasoning`` and
#: ``tool_call``), then ``done`` or ``error``, which end a stream.
EVENT_TYPES: Final = ("token", "reasoning", "tool_call", "done", "error")
TERMINAL: Final = ("done", "error")
#: Control messages outside the log (no ``seq``): ``created`` names a new stream,
#: ``end`` (WebSocket) says a subscription has nothing more.
CONTROL_TYPES: Final = ("created", "end")

__all__ = [
    "CONTROL_TYPES",
    "DIALECTS",
    "EVENT_TYPES",
    "READERS",
    "TERMINAL",
    "TRANSPORTS",
    "Dialect",
    "Reader",
    "Transport",
]
