"""The test-only echo route the Autobahn cases run against, and how to run them.

The route is built exactly like ``GET /api/ws`` at the protocol level (``ws_response()``:
the same message size limit, heartbeat and compression settings, and aiohttp's own frame
handling); it echoes every text and binary message, which is what the Autobahn
fuzzing client expects of a server. tokenwire's JSON protocol on top (ops, the message
rate limit) is not WebSocket protocol and is not on this route. ``bench/autobahn.py``
runs every case; ``test_autobahn.py`` a bounded subset.
"""

from __future__ import annotations

from collections.abc import Sequence

import kosoku
from aiohttp import WSMsgType, web
from kosoku._kosoku import CaseResult

from server.appkeys import SETTINGS
from server.transports.ws import ws_response

ECHO_PATH = "/test/ws-echo"


async def echo(request: web.Request) -> web.WebSocketResponse:
    ws = ws_response(request.app[SETTINGS])
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


def add_echo_route(app: web.Application) -> None:
    app.router.add_get(ECHO_PATH, echo)


async def run_cases(
    url: str, cases: Sequence[str] | None, exclude: Sequence[str] = (), concurrency: int = 2
) -> list[CaseResult]:
    """Every selected case's result, passed or not (kosoku raises on a failure)."""
    try:
        return list(await kosoku.run_fuzzingclient(url, cases, list(exclude), concurrency))
    except kosoku.FailureError as e:
        return list(e.results)


#: Every case that does not pass against the echo route, and why (docs/autobahn.md).
#: Messages of ``ws_max_msg_bytes`` (64 KiB) or more are refused with 1009 by design.
TOO_BIG = {
    "1.1.7",
    "1.1.8",
    "1.2.7",
    "1.2.8",
    "10.1.1",
    *(
        f"9.{g}.{i}"
        for g, n in ((1, 6), (2, 6), (3, 9), (4, 9), (5, 6), (6, 6))
        for i in range(1, n + 1)
    ),
}
#: aiohttp accepts the reserved close code 1006 in a received close frame (RFC 6455 7.4.1
#: says it must never be sent) and answers 1000 instead of failing with 1002.
AIOHTTP_ACCEPTS_1006 = {"7.9.5"}


def expected_failure(case_id: str) -> str | None:
    """Why a case is expected not to pass, or None if it must pass."""
    if case_id in TOO_BIG:
        return "too big"
    if case_id in AIOHTTP_ACCEPTS_1006:
        return "aiohttp accepts 1006"
    if case_id.split(".")[0] in ("12", "13"):
        return "no compression"  # permessage-deflate is off (UNIMPLEMENTED)
    return None
