"""One stream's typed parts as logged events, the vector the three dialects' framing tests
share: reasoning (with a quote and a multi-byte character), a call opened with ``args ""``
and two pieces, a second call opened with its arguments, then answer text."""

from __future__ import annotations

from server.events import PartEncoder

ENC = PartEncoder("s1")
#: The content events, ``seq`` 0-6 (each test ends them as it needs).
CONTENT = [
    ENC.reasoning(0, "think ✓"),
    ENC.reasoning(1, ' "more"'),
    ENC.tool_call(2, 0, "", "call_0", "f"),
    ENC.tool_call(3, 0, '{"a":'),
    ENC.tool_call(4, 0, "1}"),
    ENC.tool_call(5, 1, "{}", "call_1", "g"),
    ENC(6, "ok"),
]
