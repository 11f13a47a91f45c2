"""The JS client (``clients/js/tokenwire.js``) in real Chromium against the real server.

Debian's ``/usr/bin/chromium``, driven by Playwright (``make test`` installs both; Playwright
never downloads a browser here). The test page is a few lines that the test adds to the
real app as one more route, so it imports the client exactly as anyone's page would: from
``/js/tokenwire.js`` served by the server. (A page that Playwright fulfils itself has no
address, and Chromium's Local Network Access checks then block its WebSockets to
loopback.) Every transport is read as a browser reads it,
SSE both through the browser's ``EventSource`` and over ``fetch``. Cuts go through
:class:`bench.cutproxy.CutProxy`, armed from the page at a chosen token.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Page

from bench.cutproxy import CutProxy
from clients import Client
from server.sources.synthetic import synthetic_text
from tests.conftest import MakeServer, base_url, console_problems

PAGE = "/client-test.html"
PAGE_HTML = """<!doctype html>
<meta charset="utf-8">
<title>tokenwire JS client test</title>
<link rel="icon" href="data:,">
<script type="module">
import * as tw from "/js/tokenwire.js";

// Read one stream; return what a test checks. `cutAt`: seqs at which the page asks the
// proxy to cut the connection; `cancelAt`: a seq at which the page cancels the stream.
window.read = async (o) => {
  const client = new tw.Client(location.origin, {
    ...(o.eventSource ? {} : { EventSource: null }),
    backoffS: 0.05,
  });
  const signal = AbortSignal.timeout(30000); // a test fails rather than hangs
  const stream = o.id
    ? client.subscribe(o.id, { after: o.after ?? -1, transport: o.transport, signal })
    : client.stream(o.prompt, {
        transport: o.transport, max_tokens: o.max_tokens, params: o.params, signal,
      });
  const events = [];
  let error = null;
  try {
    for await (const ev of stream) {
      events.push(ev);
      if ((o.cutAt ?? []).includes(ev.seq)) await window.cutNext();
      if (ev.seq === o.cancelAt) await client.cancel(stream.id);
    }
  } catch (e) {
    error = {
      name: e.name,
      code: e.code ?? null,
      status: e.status ?? null,
      message: e.serverMessage ?? e.message,
      isTokenwireError: e instanceof tw.TokenwireError,
    };
  }
  return {
    id: stream.id, events, error, text: stream.text, digestOk: stream.digestOk,
    summary: stream.stats.summary(), duplicates: stream.stats.duplicates, timedOut: signal.aborted,
  };
};
window.ready = true;
</script>
"""

# name -> (transport, read SSE through EventSource)
VARIANTS = {
    "sse-eventsource": ("sse", True),
    "sse-fetch": ("sse", False),
    "ws": ("ws", False),
    "chunked": ("chunked", False),
    "poll": ("poll", False),
}
variants = pytest.mark.parametrize("variant", VARIANTS)
FAST = {"tokens_per_s": 0, "ttft_ms": 0}
#: Slow enough that the events after the second cut are still to come when the page asks
#: for it, even on a loaded machine (at 100 tokens/s a busy run finished first).
PACED = {"tokens_per_s": 40, "ttft_ms": 0}


async def _page(request: web.Request) -> web.Response:
    return web.Response(text=PAGE_HTML, content_type="text/html")


def add_test_page(app: web.Application) -> None:
    app.router.add_get(PAGE, _page)


# One browser for the module's tests, which share its event loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture
def browser(module_browser: Browser) -> Browser:
    return module_browser


@pytest.fixture
def make_server(module_make_server: MakeServer) -> MakeServer:
    return module_make_server


@pytest_asyncio.fixture(loop_scope="module")
async def server(make_server: MakeServer) -> TestServer:
    return await make_server(setup=add_test_page)


class ClientPage:
    """A page at ``origin`` with the JS client loaded; records console errors."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.problems = console_problems(page)

    async def read(self, variant: str, **options: Any) -> dict[str, Any]:
        transport, event_source = VARIANTS[variant]
        result: dict[str, Any] = await self.page.evaluate(
            "(o) => window.read(o)",
            {"transport": transport, "eventSource": event_source, **options},
        )
        assert result["timedOut"] is False
        return result


async def open_page(browser: Browser, origin: str) -> ClientPage:
    page = await browser.new_page()
    client_page = ClientPage(page)
    await page.goto(f"{origin}{PAGE}")
    await page.wait_for_function("window.ready === true")
    return client_page


def seqs(result: dict[str, Any]) -> list[int]:
    return [e["seq"] for e in result["events"]]


# The requests a full stream takes: EventSource reads after POST /api/streams; sse over
# fetch, ws and chunked create and stream in one; polling creates, then polls at least once.
REQUESTS = {"sse-eventsource": 2, "sse-fetch": 1, "ws": 1, "chunked": 1}


@variants
async def test_full_stream(server: TestServer, browser: Browser, variant: str) -> None:
    prompt = 'browser <script>alert("x")</script> \u00e9\U0001f600'
    page = await open_page(browser, base_url(server))
    result = await page.read(variant, prompt=prompt, max_tokens=60, params=FAST)

    expected = "".join(synthetic_text(prompt, 0, 60))
    assert result["error"] is None
    assert seqs(result) == list(range(61))
    assert result["text"] == expected
    done = result["events"][-1]
    assert (done["type"], done["finish_reason"], done["tokens"]) == ("done", "length", 60)
    assert done["sha256"] == hashlib.sha256(expected.encode()).hexdigest()
    assert result["digestOk"] is True
    s = result["summary"]
    assert (s["transport"], s["tokens"], s["reconnects"]) == (VARIANTS[variant][0], 60, 0)
    assert s["ttft_ms"] > 0
    assert s["gap_p50_ms"] is not None
    assert s["latency_p50_ms"] is not None
    assert s["bytes_received"] > len(expected.encode())
    if variant in REQUESTS:
        assert s["requests"] == REQUESTS[variant]
    else:
        assert s["requests"] >= 2
    assert page.problems == []

    # The browser saw exactly the events the Python client reads from the same log (`t`
    # is a nanosecond count past 2**53: JavaScript holds it as the nearest double).
    async with Client(base_url(server)) as c:
        py_events = [ev async for ev in c.subscribe(result["id"], transport="chunked")]
    assert len(py_events) == len(result["events"])
    for js, py in zip(result["events"], py_events, strict=True):
        assert float(js.pop("t")) == float(py.pop("t"))
        assert js == py


@variants
async def test_resume_through_cuts(make_server: MakeServer, browser: Browser, variant: str) -> None:
    """The proxy cuts the stream's connection twice, halfway through what the server sent."""
    srv = await make_server(setup=add_test_page, sse_retry_ms=50)
    async with CutProxy(srv.port or 0, []) as proxy:
        page = await open_page(browser, proxy.url)
        await page.page.expose_function("cutNext", proxy.cut_next)
        result = await page.read(
            variant, prompt="cut in the browser", max_tokens=80, params=PACED, cutAt=[10, 40]
        )
    assert result["error"] is None
    assert proxy.cut_count == 2
    assert seqs(result) == list(range(81))
    assert result["text"] == "".join(synthetic_text("cut in the browser", 0, 80))
    assert result["digestOk"] is True
    assert result["summary"]["reconnects"] >= 2


@variants
async def test_cancel_from_the_browser(server: TestServer, browser: Browser, variant: str) -> None:
    page = await open_page(browser, base_url(server))
    result = await page.read(
        variant, prompt="cancel me", max_tokens=500, params={"tokens_per_s": 50}, cancelAt=5
    )
    assert result["error"] is None
    done = result["events"][-1]
    assert (done["type"], done["finish_reason"]) == ("done", "cancelled")
    assert seqs(result) == list(range(done["seq"] + 1))
    assert done["tokens"] == done["seq"] >= 5
    assert result["text"] == "".join(synthetic_text("cancel me", 0, done["tokens"]))
    assert result["digestOk"] is True
    assert page.problems == []


@variants
async def test_errors_are_typed(server: TestServer, browser: Browser, variant: str) -> None:
    page = await open_page(browser, base_url(server))
    bad = await page.read(variant, prompt="x", max_tokens=0)
    # An HTTP answer carries its status; a WebSocket error message has none.
    status = None if variant == "ws" else 400
    assert bad["error"] == {
        "name": "ServerError",
        "code": "invalid_field",
        "status": status,
        "message": "max_tokens: must be an integer from 1 to 4096",
        "isTokenwireError": True,
    }
    assert bad["events"] == []

    unknown = await page.read(variant, id="nope")
    assert unknown["error"] == {
        "name": "ServerError",
        "code": "unknown_stream",
        "status": None if variant == "ws" else 404,
        "message": "no stream 'nope'",
        "isTokenwireError": True,
    }
