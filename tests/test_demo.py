"""The demo page at ``/`` in real Chromium against the real server.

The page (``server/static/``) is driven as a person would drive it: type a prompt, pick a
source and a pace, press Start, press a panel's "Drop connection". What it shows is checked
against the server: the exact text of the stream, the digest, the counts. Screenshots of the
finished page, wide and narrow, light and dark, land in ``test-output/demo/``.

The page sends ``Content-Security-Policy: default-src 'self'``, which forbids ``eval``; so
the tests wait with selectors (``body[data-run=finished]``), never ``wait_for_function``.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Page

from clients import Client
from server.errors import SourceError
from server.sources.base import (
    Finish,
    GenerationRequest,
    Reasoning,
    SourceItem,
    TokenSource,
    ToolCallDelta,
)
from server.sources.synthetic import CorpusName, SyntheticSource, synthetic_text
from tests.conftest import MakeServer, base_url, console_problems
from wire import TRANSPORTS

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
    return await make_server()


@pytest_asyncio.fixture(loop_scope="module")
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


OUTPUT = Path(__file__).resolve().parent.parent / "test-output" / "demo"
# What a filled-in number looks like, per metric.
MS = r"\d[\d,]*(\.\d+)? ms"
SHAPES = {
    "ttft": MS,
    "rate": r"\d+\.\d",
    "gap50": MS,
    "gap95": MS,
    "latency": MS,
    "bytes": r"≈?\d[\d,]* B",
    "bpt": r"\d+\.\d",
    "requests": r"\d+",
}
WIDE = {"width": 1600, "height": 1000}
NARROW = {"width": 420, "height": 900}


class Demo:
    """The demo page, with the console errors it logged."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.problems = console_problems(page)
        self.runs = 0

    def panel(self, transport: str, role: str | None = None) -> str:
        css = f"[data-transport={transport}]"
        return f"{css} [data-role={role}]" if role else f".panel{css}"

    async def start(
        self,
        prompt: str,
        *,
        max_tokens: int,
        tokens_per_s: int = 300,
        ttft_ms: int = 0,
        independent: bool = False,
        source: str | None = None,
    ) -> None:
        p = self.page
        await p.fill("#prompt", prompt)
        await p.fill("#max-tokens", str(max_tokens))
        if source is not None:
            await p.select_option("#source", source)
        if source in (None, "synthetic"):
            await p.fill("#tps", str(tokens_per_s))
            await p.fill("#ttft", str(ttft_ms))
        if independent:
            await p.check("#independent", force=True)  # the box is hidden behind the switch
        await p.click("#start")
        self.runs += 1

    async def finished(self) -> None:
        """Wait until the run started last has finished (it may be over already)."""
        await self.page.wait_for_selector(
            f"body[data-run=finished][data-started='{self.runs}']", state="attached"
        )

    async def text(self, transport: str) -> str:
        return await self.page.text_content(self.panel(transport, "text")) or ""

    async def attr(self, transport: str, name: str) -> str | None:
        return await self.page.get_attribute(self.panel(transport), f"data-{name}")

    async def metrics(self, transport: str) -> dict[str, str]:
        cells = self.page.locator(f"{self.panel(transport)} [data-metric]")
        names = [await c.get_attribute("data-metric") for c in await cells.all()]
        values = await cells.all_text_contents()
        return {str(n): v for n, v in zip(names, values, strict=True)}

    async def tokens(self, transport: str) -> int:
        return int((await self.metrics(transport))["tokens"].replace(",", ""))

    async def wait_tokens(self, transport: str, at_least: int) -> None:
        """Poll the panel's token count (bounded: 20 s)."""
        for _ in range(400):
            if await self.tokens(transport) >= at_least:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{transport} never showed {at_least} tokens")

    async def status(self) -> str:
        return await self.page.text_content("#status") or ""

    async def wire(self, transport: str) -> list[tuple[str, str, str]]:
        """The panel's Wire tab (opened): its rows as (direction, kind, text); each row's
        size and time are checked for their shape."""
        await self.page.click(f"{self.panel(transport)} [data-tab=wire]")
        rows = self.page.locator(f"{self.panel(transport, 'frames')} > li")
        found: list[dict[str, str]] = await rows.evaluate_all(
            """(items) => items.map((li) => ({
                direction: li.dataset.direction, kind: li.dataset.kind,
                text: li.querySelector("code").textContent,
                meta: li.querySelector(".meta").textContent }))"""
        )
        size = r"\d[\d,]* B"
        meta = {"response": rf"{size} headers · ", "body": f"{size} · ", "message": f"{size} · "}
        for row in found:
            assert re.fullmatch(meta.get(row["kind"], "") + r"\d+ ms", row["meta"]), row
        return [(r["direction"], r["kind"], r["text"]) for r in found]

    async def screenshot(self, name: str) -> Path:
        OUTPUT.mkdir(parents=True, exist_ok=True)
        path = OUTPUT / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path


async def test_page_and_its_files(server: TestServer, session: aiohttp.ClientSession) -> None:
    url = base_url(server)
    async with session.get(f"{url}/") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
        assert resp.headers["Content-Security-Policy"] == (
            "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'"
        )
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert '<script type="module" src="/static/demo.js"></script>' in await resp.text()
    types = {
        "demo.js": "text/javascript",
        "faults.js": "text/javascript",
        "demo.css": "text/css",
        "favicon.svg": "image/svg+xml",
        "index.html": "text/html",
    }
    for name, content_type in types.items():
        async with session.get(f"{url}/static/{name}") as resp:
            assert (resp.status, resp.content_type) == (200, content_type), name
    for path in ("/static/nope.js", "/static/..%2fapp.py"):
        async with session.get(f"{url}{path}") as resp:
            assert resp.status == 404
            assert orjson.loads(await resp.read()) == {
                "error": {"code": "not_found", "message": f"no file {resp.url.path}"}
            }


async def test_info(server: TestServer, session: aiohttp.ClientSession) -> None:
    async with session.get(f"{base_url(server)}/api/info") as resp:
        assert resp.status == 200
        assert orjson.loads(await resp.read()) == {
            "sources": [
                {
                    "name": "synthetic",
                    "model": None,
                    "default": True,
                    "params": {
                        "ttft_ms": 200.0,
                        "tokens_per_s": 30.0,
                        "jitter": 0.2,
                        "seed": 0,
                        "corpus": "prose",
                    },
                }
            ],
            "limits": {
                "default_max_tokens": 256,
                "max_tokens": 4096,
                "max_prompt_chars": 8000,
                "max_ttft_ms": 10000.0,
                "max_tokens_per_s": 5000.0,
            },
            "auth": False,
        }


async def open_demo(
    browser: Browser, srv: TestServer, *, viewport: dict[str, int] = WIDE, dark: bool = False
) -> Demo:
    page = await browser.new_page(viewport=viewport, color_scheme="dark" if dark else "light")
    demo = Demo(page)
    await page.goto(f"{base_url(srv)}/")
    await page.wait_for_selector("body[data-run=idle]", state="attached")
    return demo


async def server_text(srv: TestServer, stream_id: str) -> str:
    """The stream's text as the server logged it, read by the Python client."""
    async with Client(base_url(srv)) as client:
        stream = client.subscribe(stream_id, transport="chunked")
        async for _ in stream:
            pass
        assert stream.digest_ok is True
        return stream.text


def expected_text(prompt: str, max_tokens: int, corpus: CorpusName = "prose") -> str:
    return "".join(synthetic_text(prompt, 0, max_tokens, corpus))


async def test_race_on_one_stream(browser: Browser, server: TestServer) -> None:
    prompt = "How does a token travel? é 😀 中文"
    demo = await open_demo(browser, server)
    await demo.start(prompt, max_tokens=60)
    await demo.finished()

    expected = expected_text(prompt, 60)
    ids = {await demo.attr(t, "stream") for t in TRANSPORTS}
    assert len(ids) == 1
    (stream_id,) = ids
    assert stream_id is not None
    assert await server_text(server, stream_id) == expected
    digest = hashlib.sha256(expected.encode()).hexdigest()
    for t in TRANSPORTS:
        assert await demo.text(t) == expected, t
        assert (await demo.attr(t, "state"), await demo.attr(t, "digest")) == ("done", "ok")
        assert await demo.page.text_content(demo.panel(t, "digest")) == (
            f"sha256 ✓ matches {digest[:12]}…"
        )
        m = await demo.metrics(t)
        assert (m["tokens"], m["reconnects"]) == ("60", "0"), t
        shapes = {k: bool(re.fullmatch(SHAPES[k], m[k])) for k in SHAPES}
        assert shapes == dict.fromkeys(SHAPES, True), (t, m)
    # One generation, read once per transport: ws, sse and chunked need one request each.
    for t in ("sse", "ws", "chunked"):
        assert (await demo.metrics(t))["requests"] == "1", t
    status = await demo.status()
    assert status.startswith("Finished in ")
    assert status.endswith(f" · 4/4 panels match the server's sha256 · stream {stream_id}")
    assert demo.problems == []

    await demo.screenshot("wide-light")
    await demo.page.set_viewport_size(NARROW)
    await demo.screenshot("narrow-light")


async def test_four_independent_generations(browser: Browser, server: TestServer) -> None:
    prompt = "four of them"
    demo = await open_demo(browser, server, dark=True)
    await demo.start(prompt, max_tokens=40, tokens_per_s=100, independent=True)
    await demo.finished()

    expected = expected_text(prompt, 40)
    ids = [str(await demo.attr(t, "stream")) for t in TRANSPORTS]
    assert len(set(ids)) == 4
    for t, stream_id in zip(TRANSPORTS, ids, strict=True):
        assert await server_text(server, stream_id) == expected
        assert await demo.text(t) == expected
        assert (await demo.attr(t, "state"), await demo.attr(t, "digest")) == ("done", "ok")
    # Each creates its own stream: sse over EventSource and poll need a POST first.
    requests = {t: (await demo.metrics(t))["requests"] for t in ("sse", "ws", "chunked")}
    assert requests == {"sse": "2", "ws": "1", "chunked": "1"}
    assert (await demo.status()).endswith(
        " · 4/4 panels match the server's sha256 · streams " + ", ".join(ids)
    )
    assert demo.problems == []
    await demo.screenshot("wide-dark")
    await demo.page.set_viewport_size(NARROW)
    await demo.screenshot("narrow-dark")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_drop_connection(browser: Browser, server: TestServer, transport: str) -> None:
    prompt = f"drop {transport}"
    demo = await open_demo(browser, server)
    # 4 s in all: the drop at token 20 lands mid-stream even when a loaded machine
    # slows the page (at 80 tokens the stream sometimes ended first: 0 reconnects).
    await demo.start(prompt, max_tokens=160, tokens_per_s=40)
    await demo.wait_tokens(transport, 20)
    await demo.page.click(demo.panel(transport, "drop"))
    await demo.finished()

    expected = expected_text(prompt, 160)
    for t in TRANSPORTS:
        assert await demo.text(t) == expected, t
        assert (await demo.attr(t, "state"), await demo.attr(t, "digest")) == ("done", "ok")
        m = await demo.metrics(t)
        assert (m["tokens"], m["reconnects"]) == ("160", "1" if t == transport else "0"), t
    if transport == "ws":
        # The Wire tab shows the cut and the resume. The demo closes the socket (4000); the
        # close frame that comes back is the server's answer, 1000.
        rows = await demo.wire("ws")
        cut = rows.index(("in", "close", "1000"))
        last = orjson.loads(rows[cut - 1][2])["seq"]
        subscribe = {"op": "subscribe", "stream": await demo.attr("ws", "stream"), "after": last}
        assert rows[cut + 1 : cut + 3] == [
            ("out", "request", "GET /api/ws"),
            ("out", "message", orjson.dumps(subscribe).decode()),
        ]
    assert demo.problems == []


async def test_stop_cancels_the_generation(browser: Browser, server: TestServer) -> None:
    prompt = "stop me"
    demo = await open_demo(browser, server)
    await demo.start(prompt, max_tokens=400, tokens_per_s=40)
    for t in TRANSPORTS:
        await demo.wait_tokens(t, 10)
    await demo.page.click("#stop")
    await demo.finished()

    stream_id = str(await demo.attr("sse", "stream"))
    text = await server_text(server, stream_id)
    n = await demo.tokens("sse")
    assert 10 <= n < 400
    assert text == expected_text(prompt, n)
    for t in TRANSPORTS:
        assert await demo.text(t) == text
        assert await demo.tokens(t) == n
        assert (await demo.attr(t, "state"), await demo.attr(t, "digest")) == ("cancelled", "ok")
    # It says it stopped, and how far each panel got; never "Finished".
    status = await demo.status()
    got = f"Server-Sent Events {n:,}, WebSocket {n:,}, Long polling {n:,}, Chunked HTTP {n:,}"
    assert re.fullmatch(
        rf"Stopped after \d[\d,.]* ms · tokens: {got} · 4/4 panels match the server's sha256"
        rf" · stream {stream_id}",
        status,
    ), status
    assert demo.problems == []


async def test_markup_is_shown_as_text(browser: Browser, make_server: MakeServer) -> None:
    # A prompt with markup, and one whose synthetic answer holds the hard cases'
    # `<script>` and `<img onerror>` line (the first such prompt, found the same way here);
    # the server's synthetic source streams the hard cases by default.
    server = await make_server(sources={"synthetic": SyntheticSource(corpus="hard-cases")})
    markup = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'
    prompt = next(
        p
        for p in (f"{markup} {i}" for i in range(10_000))
        if "<script>" in (text := expected_text(p, 60, "hard-cases")) and "onerror" in text
    )
    demo = await open_demo(browser, server)
    dialogs: list[str] = []
    demo.page.on("dialog", lambda d: dialogs.append(d.message))
    await demo.start(prompt, max_tokens=60, tokens_per_s=30)
    assert f"“{prompt[:60]}…”" in await demo.status()  # the prompt, as text
    await demo.finished()

    expected = expected_text(prompt, 60, "hard-cases")
    assert '<img src=x onerror="alert(2)">' in expected
    for t in TRANSPORTS:
        assert await demo.text(t) == expected
    # Nothing from the stream or the prompt became an element or ran.
    assert await demo.page.locator(".panel img, .panel script, #status *").count() == 0
    assert await demo.page.locator("script").count() == 1  # the page's own module
    assert await demo.page.evaluate("() => window.pwned ?? null") is None
    assert dialogs == []
    assert demo.problems == []


class FailingSource(TokenSource):
    """Emits five tokens, then fails as an upstream that closed mid-stream would."""

    name = "flaky"

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str | Finish]:
        for piece in ("one ", "two ", "three ", "four ", "five "):
            yield piece
        raise SourceError("upstream_error", "the upstream closed the stream")


async def test_sources_and_a_failing_generation(browser: Browser, make_server: MakeServer) -> None:
    srv = await make_server(sources={"synthetic": SyntheticSource(), "flaky": FailingSource()})
    async with aiohttp.ClientSession() as s, s.get(f"{base_url(srv)}/api/info") as resp:
        info = orjson.loads(await resp.read())
    assert [(x["name"], x["default"], x["params"]) for x in info["sources"]] == [
        (
            "synthetic",
            True,
            {"ttft_ms": 200.0, "tokens_per_s": 30.0, "jitter": 0.2, "seed": 0, "corpus": "prose"},
        ),
        ("flaky", False, {}),
    ]

    demo = await open_demo(browser, srv)
    options = await demo.page.locator("#source option").all_text_contents()
    assert options == ["synthetic", "flaky"]
    # The pace controls are the synthetic source's: disabled for another source.
    assert await demo.page.is_disabled("#tps") is False
    await demo.page.select_option("#source", "flaky")
    assert await demo.page.is_disabled("#tps") is True
    await demo.start("anything", max_tokens=10, source="flaky")
    await demo.finished()

    for t in TRANSPORTS:
        assert await demo.attr(t, "state") == "error"
        assert await demo.text(t) == (
            "one two three four five upstream_error: the upstream closed the stream"
        )
        assert await demo.page.text_content(demo.panel(t, "digest")) == "sha256: –"
    status = await demo.status()
    assert " · 0/4 panels match the server's sha256 · 4 ended with an error · stream " in status
    assert demo.problems == []


async def test_a_server_with_a_token(
    browser: Browser, make_server: MakeServer, server: TestServer
) -> None:
    """/api/info says auth is on: the Token field shows; without it nothing starts, with it
    every panel (SSE then over fetch, which can send the header) reads the stream."""
    demo = await open_demo(browser, server)
    assert await demo.page.get_attribute("#token-field", "hidden") == ""
    await demo.page.close()

    srv = await make_server(auth_token="demo-token")
    demo = await open_demo(browser, srv)
    await demo.page.wait_for_selector("#token-field:not([hidden])")
    await demo.start("no token yet", max_tokens=5)
    await demo.finished()
    assert await demo.status() == (
        "Could not start: unauthorized: this server needs a token: send Authorization: "
        "Bearer <token>"
    )
    assert len(demo.problems) == 1
    assert "status of 401" in demo.problems.pop()  # Chromium logs the refused request

    await demo.page.fill("#token", "demo-token")
    prompt = "a page with a token"
    await demo.start(prompt, max_tokens=30)
    await demo.finished()
    stream_id = str(await demo.attr("sse", "stream"))
    expected = expected_text(prompt, 30)
    for t in TRANSPORTS:
        assert await demo.text(t) == expected, t
        assert (await demo.attr(t, "state"), await demo.attr(t, "digest")) == ("done", "ok")
    assert await demo.page.text_content(f"{demo.panel('sse')} .how") == "fetch · text/event-stream"
    assert (await demo.metrics("sse"))["requests"] == "1"
    # The Wire tab: SSE over fetch shows the raw lines (retry: first), and the WebSocket's
    # auth message goes out with the token hidden from the room.
    await demo.page.click(f"{demo.panel('sse')} [data-tab=wire]")
    sse = await demo.page.locator(f"{demo.panel('sse', 'frames')} code").all_text_contents()
    assert sse[:4] == [f"GET /api/streams/{stream_id}/sse", "HTTP/1.1 200 OK", "retry: 1000", ""]
    await demo.page.click(f"{demo.panel('ws')} [data-tab=wire]")
    ws = await demo.page.locator(f"{demo.panel('ws', 'frames')} code").all_text_contents()
    subscribe = {"op": "subscribe", "stream": stream_id, "after": -1}
    assert ws[:3] == [
        "GET /api/ws",
        '{"op":"auth","token":"•••"}',
        orjson.dumps(subscribe).decode(),
    ]
    assert "demo-token" not in (await demo.page.text_content("#panels") or "")
    assert (await demo.status()).startswith("Finished in ")
    assert demo.problems == []
    await demo.screenshot("token")


class MarkupParts(TokenSource):
    """Reasoning, one tool call and an answer, each holding markup that must stay text."""

    name = "parts"
    typed_parts = True

    REASONING = ("Think <b>bold</b> ", '<img src=x onerror="window.pwned = 3"> é😀')
    ARGS = ("", '{"city":"<script>window.pwned = 4</script>', ' é😀","days":', "3}")
    ANSWER = ("Sunny ", "<i>today</i>.")

    async def stream(self, request: GenerationRequest) -> AsyncIterator[SourceItem]:
        for r in self.REASONING:
            await asyncio.sleep(0.01)
            yield Reasoning(r)
        yield ToolCallDelta(0, self.ARGS[0], id="call_m", name="get_weather")
        for a in self.ARGS[1:]:
            await asyncio.sleep(0.01)
            yield ToolCallDelta(0, a)
        for piece in self.ANSWER:
            yield piece


async def test_reasoning_and_tool_calls_are_shown_as_text(
    browser: Browser, make_server: MakeServer
) -> None:
    srv = await make_server(sources={"synthetic": SyntheticSource(), "parts": MarkupParts()})
    demo = await open_demo(browser, srv)
    dialogs: list[str] = []
    demo.page.on("dialog", lambda d: dialogs.append(d.message))
    await demo.start("parts", max_tokens=50, source="parts")
    await demo.finished()
    for t in TRANSPORTS:
        view = demo.page.locator(demo.panel(t, "text"))
        shown = await view.evaluate(
            """(el) => ({
                reasoning: [...el.querySelectorAll(".reasoning")].map((s) => s.textContent),
                calls: [...el.querySelectorAll(".call")].map((c) => [c.dataset.index,
                    c.querySelector(".call-name").textContent,
                    c.querySelector(".call-args").textContent]),
                answer: [...el.childNodes].filter((n) => n.nodeType === 3)
                    .map((n) => n.data).join(""),
                order: [...el.childNodes].filter((n) => n.nodeType !== 3 || n.data)
                    .map((n) => n.nodeType === 3 ? "text" : n.className) })"""
        )
        assert shown == {
            "reasoning": ["".join(MarkupParts.REASONING)],
            "calls": [["0", "get_weather", "".join(MarkupParts.ARGS)]],
            "answer": "".join(MarkupParts.ANSWER),
            "order": ["reasoning", "call", "text"],
        }, t
        assert (await demo.attr(t, "state"), await demo.attr(t, "digest")) == ("done", "ok"), t
        assert (await demo.metrics(t))["tokens"] == "8", t  # every content event
    assert await demo.page.locator(".panel img, .panel script, .panel b, .panel i").count() == 0
    assert await demo.page.evaluate("() => window.pwned ?? null") is None
    assert dialogs == []
    assert " · 4/4 panels match the server's sha256 · stream " in await demo.status()
    assert demo.problems == []
    await demo.screenshot("typed-parts")


@pytest.mark.parametrize("independent", [False, True], ids=["shared", "independent"])
async def test_the_reasoning_and_tool_controls_ask_for_parts(
    browser: Browser, server: TestServer, independent: bool
) -> None:
    """The controls' fields go top-level in the create body (the server's answer to them
    is the server's business: only the request is checked here)."""
    demo = await open_demo(browser, server)
    await demo.page.select_option("#reasoning", "medium")
    await demo.page.check("#tool")
    bodies: list[dict[str, Any]] = []

    def record(request: Any) -> None:
        creates = ("/api/streams", "/api/sse", "/api/chunked")
        if request.method == "POST" and request.url.split("?")[0].endswith(creates):
            bodies.append(orjson.loads(request.post_data or "null"))

    demo.page.on("request", record)
    await demo.start("ask", max_tokens=5, independent=independent)
    await demo.finished()
    tool = {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "required": ["city", "days"],
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        },
    }
    asked = {"reasoning_effort": "medium", "tools": [tool], "tool_choice": "get_weather"}
    # Shared: one create; independent: one per panel (the WebSocket's generate is a
    # message, not a request: three bodies).
    assert len(bodies) == (3 if independent else 1)
    for body in bodies:
        assert {k: body[k] for k in asked} == asked
