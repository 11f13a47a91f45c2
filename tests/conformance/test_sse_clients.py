"""Server-Sent Events through clients nobody here wrote: Chromium's ``EventSource``, Node's
built-in ``EventSource`` (``--experimental-eventsource``) and the npm ``eventsource``
package (v4). Each reads a whole stream through a proxy that cuts its first connection
mid-stream, reconnects by itself with ``Last-Event-ID``, gets the rest exactly once, and
after the last event reconnects once more, is answered ``204`` and stops.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Browser

from bench.cutproxy import CutProxy
from server.sources.synthetic import synthetic_text
from tests.conformance.clients import PAGE, Seen, add_request_log, add_test_page, run_node
from tests.conftest import MakeServer, console_problems, create

TOKENS = 40
PROMPT = "sse conformance"
Reader = Callable[[str, str], Awaitable[Any]]


async def read_in_chromium(browser: Browser, origin: str, url: str) -> Any:
    page = await browser.new_page()
    problems = console_problems(page)
    await page.goto(f"{origin}{PAGE}")
    await page.wait_for_function("window.ready === true")
    result = await page.evaluate(
        "(o) => window.scenarios.readEventSource(EventSource, o.url)", {"url": url}
    )
    await page.close()
    # Chromium logs the cut (and nothing else) as a console error.
    assert problems == ["Failed to load resource: net::ERR_INCOMPLETE_CHUNKED_ENCODING"]
    return result


async def read_through_a_cut(
    make_server: MakeServer, session: aiohttp.ClientSession, read: Reader
) -> None:
    """``read(origin, url)`` reads the stream at ``url`` through a proxy at ``origin``."""
    logs: list[list[Seen]] = []

    def setup(app: web.Application) -> None:
        logs.append(add_request_log(app))
        add_test_page(app)

    srv = await make_server(setup=setup, sse_retry_ms=50)
    log = logs[0]
    sid = await create(
        session,
        srv,
        prompt=PROMPT,
        max_tokens=TOKENS,
        params={"tokens_per_s": 200, "ttft_ms": 0, "corpus": "hard-cases"},
    )
    # The first SSE connection is cut after 1500 bytes: a few events in, mid-event. The
    # bytes before the cut are given time to arrive first: Chromium drops what it reads
    # together with the reset (seen on a loaded machine: a resume without Last-Event-ID).
    async with CutProxy(srv.port or 0, [1500], match=b"/sse", linger_s=0.3) as proxy:
        result = await read(proxy.url, f"{proxy.url}/api/streams/{sid}/sse")
    assert proxy.cut_count == 1
    assert (result["why"], result["readyState"]) == ("closed", 2)
    events = result["events"]
    assert [e["data"]["seq"] for e in events] == list(range(TOKENS + 1))
    assert all(e["lastEventId"] == str(e["data"]["seq"]) for e in events)
    assert [e["type"] for e in events] == ["token"] * TOKENS + ["done"]
    text = "".join(e["data"]["text"] for e in events[:-1])
    assert text == "".join(synthetic_text(PROMPT, 0, TOKENS, "hard-cases"))
    assert events[-1]["data"]["sha256"] == hashlib.sha256(text.encode()).hexdigest()
    # What the server saw: the first read (cut), the resume from the last whole event
    # before the cut, and the reconnect after the end, answered 204 (and then nothing).
    reads = [(s.last_event_id, s.status) for s in log if s.path.endswith(f"/{sid}/sse")]
    assert len(reads) == 3, reads
    assert reads[0][0] is None
    resumed_from, status = reads[1]
    assert resumed_from is not None
    assert status == 200
    assert 0 <= int(resumed_from) < TOKENS
    assert reads[2] == (str(TOKENS), 204)


@pytest.mark.parametrize("scenario", ["sse-builtin", "sse-npm"], ids=["node", "npm-eventsource"])
async def test_node_eventsource(
    make_server: MakeServer, session: aiohttp.ClientSession, scenario: str
) -> None:
    async def read(origin: str, url: str) -> Any:
        return await run_node(scenario, {"url": url})

    await read_through_a_cut(make_server, session, read)


async def test_chromium_eventsource(
    make_server: MakeServer, session: aiohttp.ClientSession, browser: Browser
) -> None:
    async def read(origin: str, url: str) -> Any:
        return await read_in_chromium(browser, origin, url)

    await read_through_a_cut(make_server, session, read)
