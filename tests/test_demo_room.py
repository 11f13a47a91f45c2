"""The demo in front of a room: its layout at every common width, each panel's Wire tab,
and what the status line says after Stop. Real Chromium against the real server; one
browser for the whole module (its tests share the module's event loop).

The Wire tab shows what the JS client's ``tap`` saw. Each test checks it against what the
Python client's ``tap`` reads from the same stream (resumed from the start), so the
expected frames come from the wire, not from a copy of the server's framing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser

from clients import Client, Frame
from tests.conftest import MakeServer, base_url
from tests.test_demo import Demo, open_demo
from wire import TRANSPORTS

pytestmark = pytest.mark.asyncio(loop_scope="module")

OUTPUT = Path(__file__).resolve().parent.parent / "test-output" / "demo"
WIDTHS = (390, 1024, 1280, 1440, 1600, 1920, 2560)
SCHEMES = ("light", "dark")
SCREENSHOTS = {(390, "dark"), (1440, "light"), (1920, "dark")}
NAMES = {
    "sse": "Server-Sent Events",
    "ws": "WebSocket",
    "poll": "Long polling",
    "chunked": "Chunked HTTP",
}
MAX_FRAMES = 400  # server/static/demo.js
REBUILT_NOTE = (
    "EventSource hides the wire: these lines are rebuilt from its events "
    "(comments and retry: lines are not seen)."
)

# Everything that does not fit: the page scrolling sideways, a card whose content is
# wider than the card, an element whose content is wider than itself (cut off or
# sticking out), an element outside its card.
LAYOUT_PROBLEMS = """() => {
  const problems = [];
  const doc = document.documentElement;
  if (doc.scrollWidth > doc.clientWidth) {
    problems.push(`the page scrolls sideways: ${doc.scrollWidth} > ${doc.clientWidth}`);
  }
  for (const card of document.querySelectorAll(".card")) {
    const name = card.dataset.transport ?? card.getAttribute("aria-label") ?? card.id;
    if (card.scrollWidth > card.clientWidth) {
      problems.push(`${name}: scrollWidth ${card.scrollWidth} > clientWidth ${card.clientWidth}`);
    }
    const box = card.getBoundingClientRect();
    for (const el of card.querySelectorAll("*")) {
      const r = el.getBoundingClientRect();
      if (r.width === 0 || el.closest("[hidden]")) continue;
      const what = `${name}: <${el.tagName.toLowerCase()} class="${el.className}">`;
      if (r.left < box.left - 0.5 || r.right > box.right + 0.5) {
        problems.push(`${what} spans ${r.left}..${r.right}, the card ${box.left}..${box.right}`);
      }
      if (el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1) {
        problems.push(`${what} content ${el.scrollWidth} > ${el.clientWidth}`);
      }
    }
  }
  return problems;
}"""


@pytest.fixture
def browser(module_browser: Browser) -> Browser:
    return module_browser


@pytest_asyncio.fixture(loop_scope="module")
async def server(module_make_server: MakeServer) -> TestServer:
    return await module_make_server()


async def check_layout(demo: Demo, when: str, *, screenshots: bool = False) -> None:
    """Every width in both colour schemes (and a few screenshots)."""
    page = demo.page
    for scheme in SCHEMES:
        await page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
        for width in WIDTHS:
            await page.set_viewport_size({"width": width, "height": 900})
            problems = await page.evaluate(LAYOUT_PROBLEMS)
            assert problems == [], f"{when}, {width} px, {scheme}"
            if screenshots and (width, scheme) in SCREENSHOTS:
                await demo.screenshot(f"room-{width}-{scheme}")


async def test_layout_at_every_width_and_the_stopped_status(
    browser: Browser, server: TestServer
) -> None:
    demo = await open_demo(browser, server)
    await demo.page.set_viewport_size({"width": 1440, "height": 900})
    # A run that would go on for a minute: it is stopped once the layout is checked.
    await demo.start("fit the room", max_tokens=3000, tokens_per_s=20)
    for t in TRANSPORTS:
        await demo.wait_tokens(t, 15)
    # Half the panels on their Wire tab, with long data lines to wrap.
    for t in ("sse", "poll"):
        await demo.page.click(f"{demo.panel(t)} [data-tab=wire]")
    await check_layout(demo, "streaming")

    await demo.page.click("#stop")
    await demo.finished()
    counts = {t: await demo.tokens(t) for t in TRANSPORTS}
    stream_id = str(await demo.attr("sse", "stream"))
    status = await demo.status()
    got = ", ".join(f"{NAMES[t]} {counts[t]:,}" for t in TRANSPORTS)
    assert re.fullmatch(
        rf"Stopped after \d[\d,.]* ms · tokens: {got} · 4/4 panels match the server's "
        rf"sha256 · stream {stream_id}",
        status,
    ), status
    assert "Finished" not in status
    for t in TRANSPORTS:
        assert await demo.attr(t, "state") == "cancelled"
        assert 15 <= counts[t] < 3000

    for t in ("sse", "poll"):
        await demo.page.click(f"{demo.panel(t)} [data-tab=text]")
    for t in ("ws", "chunked"):
        await demo.page.click(f"{demo.panel(t)} [data-tab=wire]")
    await check_layout(demo, "stopped", screenshots=True)
    assert demo.problems == []
    await demo.page.close()


async def tapped(srv: TestServer, stream_id: str, transport: str) -> list[Frame]:
    """The frames the Python client's tap sees reading the stream from its start."""
    frames: list[Frame] = []
    async with Client(base_url(srv), tap=frames.append) as c:
        await c.subscribe(stream_id, transport=transport).collect()  # type: ignore[arg-type]
    return frames


def ins(frames: list[Frame], kind: str) -> list[tuple[str, str, str]]:
    return [("in", kind, f.text) for f in frames if f.direction == "in" and f.kind == kind]


async def test_the_wire_tab_of_each_transport(browser: Browser, server: TestServer) -> None:
    demo = await open_demo(browser, server)
    await demo.start("show me the wire", max_tokens=12)
    await demo.finished()
    stream_id = str(await demo.attr("sse", "stream"))
    at = f"/api/streams/{stream_id}"

    # SSE through EventSource: its events' id:/event:/data: lines, exactly as the server
    # sent them (the Python client reads the bytes), each event closed by a blank line.
    py = await tapped(server, stream_id, "sse")
    lines = [text for _, _, text in ins(py, "line") if re.match("(id|event|data):", text)]
    rebuilt = []
    for i, line in enumerate(lines):
        rebuilt += [("in", "rebuilt", line)] + ([("in", "rebuilt", "")] if i % 3 == 2 else [])
    assert len(lines) == 3 * 13
    assert await demo.wire("sse") == [("out", "request", f"GET {at}/sse?after=-1"), *rebuilt]
    assert await demo.page.text_content(demo.panel("sse", "wire-note")) == REBUILT_NOTE

    # WebSocket: the subscribe message out, then every message in.
    py = await tapped(server, stream_id, "ws")
    subscribe = orjson.dumps({"op": "subscribe", "stream": stream_id, "after": -1}).decode()
    assert len(ins(py, "message")) == 13
    assert await demo.wire("ws") == [
        ("out", "request", "GET /api/ws"),
        ("out", "message", subscribe),
        *ins(py, "message"),
    ]

    # Chunked: the request, its response, every NDJSON line.
    py = await tapped(server, stream_id, "chunked")
    assert await demo.wire("chunked") == [
        ("out", "request", f"GET {at}/chunked?after=-1"),
        ("in", "response", "HTTP/1.1 200 OK"),
        *ins(py, "line"),
    ]

    # Long polling: request, response, answer, for each poll; each asks after the last
    # answer's `next`, and the answers' events are the stream's, in order.
    py = await tapped(server, stream_id, "poll")
    events = [e for f in py if f.kind == "body" for e in orjson.loads(f.text)["events"]]
    rows = await demo.wire("poll")
    assert len(rows) % 3 == 0
    after, seen = -1, []
    for request, response, body in zip(rows[::3], rows[1::3], rows[2::3], strict=True):
        assert request == ("out", "request", f"GET {at}/poll?after={after}&timeout=25")
        assert response == ("in", "response", "HTTP/1.1 200 OK")
        assert body[:2] == ("in", "body")
        answer = orjson.loads(body[2])
        seen += answer["events"]
        after = answer["next"]
    assert answer["done"] is True
    assert seen == events
    assert len(events) == 13
    assert demo.problems == []
    await demo.page.close()


async def test_the_wire_tab_keeps_the_last_frames_as_text(
    browser: Browser, server: TestServer
) -> None:
    """A long run keeps only the last MAX_FRAMES rows; a request's body (here a prompt with
    markup, in the independent mode) shows as text, never as elements."""
    markup = '<img src=x onerror="window.pwned = 1"><script>window.pwned = 2</script>'
    demo = await open_demo(browser, server)
    await demo.start(markup, max_tokens=150, independent=True)
    await demo.finished()

    body: dict[str, Any] = {"prompt": markup, "max_tokens": 150, "source": "synthetic"}
    body["params"] = {"tokens_per_s": 300, "ttft_ms": 0, "jitter": 0.2}
    rows = await demo.wire("chunked")
    assert rows[:3] == [
        ("out", "request", "POST /api/chunked"),
        ("out", "body", orjson.dumps(body).decode()),
        ("in", "response", "HTTP/1.1 200 OK"),
    ]
    # SSE (EventSource, after POST /api/streams): 4 frames for the create, 1 request, and
    # 4 rebuilt lines per event (151 events): the oldest went.
    total = 4 + 1 + 4 * 151
    rows = await demo.wire("sse")
    assert len(rows) == MAX_FRAMES
    dropped = await demo.page.get_attribute(demo.panel("sse", "frames"), "data-dropped")
    assert dropped == str(total - MAX_FRAMES)
    assert rows[-1] == ("in", "rebuilt", "")
    assert rows[-2][2].startswith('data: {"stream":')
    assert await demo.page.locator(".panel img, .panel script").count() == 0
    assert await demo.page.evaluate("() => window.pwned ?? null") is None
    assert demo.problems == []
    await demo.page.close()
