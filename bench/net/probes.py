"""The lab's clients: each reads one stream through one path and reports a :class:`Reading`.

- ``python``: the tokenwire Python client (``clients/``) on each transport (aiohttp:
  HTTP/1.1, TLS trusting the lab CA);
- ``js``: the tokenwire JS client in Node 20 (``bench/net/probe.mjs``; the lab CA through
  ``NODE_EXTRA_CA_CERTS``; Node's fetch and WebSocket speak HTTP/1.1);
- ``curl``: ``curl -N`` on ``POST /api/sse``, HTTP/1.1 or ``--http2`` (Debian's curl has no
  HTTP/3), its output read as it arrives with the clients' SSE decoder;
- ``openai``: the official SDK on ``/v1/chat/completions`` (httpx, HTTP/1.1); its text is
  checked against the same stream read again straight from the server (digest-checked);
- ``chromium``: the browser's own ``EventSource``, ``fetch`` and ``WebSocket``
  (``bench/net/browser_probe.js``), HTTP/1.1, HTTP/2 or HTTP/3 as the browser negotiates;
  the lab's certificate is trusted by its key (``--ignore-certificate-errors-spki-list``),
  not by ignoring every certificate error.

Every reading keeps the arrival time of each token (first and last) and its latency
(arrival wall clock minus the event's ``t``), which the lab turns into a verdict.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
import openai
import orjson

from clients import Client
from clients.check import TextDigest
from clients.decoders import SSEDecoder

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


@dataclass(frozen=True, slots=True)
class Load:
    """The stream each cell reads: paced, so that buffering shows in the arrival times."""

    prompt: str = "the network lab"
    max_tokens: int = 40
    tokens_per_s: float = 20.0
    ttft_ms: float = 0.0

    def body(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "max_tokens": self.max_tokens,
            "params": {"tokens_per_s": self.tokens_per_s, "ttft_ms": self.ttft_ms, "jitter": 0},
        }

    @property
    def span_s(self) -> float:
        """How long the tokens take to come out of the source, first to last."""
        return (self.max_tokens - 1) / self.tokens_per_s if self.tokens_per_s else 0.0


@dataclass(slots=True)
class Reading:
    """What one client saw of one stream. Times in ns on the client's own clock."""

    text: str = ""
    #: The ``done`` digest matched the text (None: no digest to check).
    exact: bool | None = None
    tokens: int = 0
    started_ns: int | None = None
    first_ns: int | None = None
    last_ns: int | None = None
    latencies_ns: list[int] = field(default_factory=list)
    reconnects: int = 0
    error: str | None = None
    #: The protocol the client spoke to the front (``http/1.1``, ``h2``, ``h3``).
    protocol: str = "http/1.1"


def ssl_context(ca: Path | None) -> ssl.SSLContext | None:
    return None if ca is None else ssl.create_default_context(cafile=str(ca))


def _int(v: float | None) -> int | None:
    return None if v is None else int(v)


def _ms(v: float | None) -> int | None:
    """Milliseconds (a browser's clock) to ns."""
    return None if v is None else int(v * 1e6)


def error_text(e: BaseException) -> str:
    """An exception in one line: its type and message."""
    return f"{type(e).__name__}: {e}".strip().rstrip(":")


async def read_python(
    base: str, transport: str, load: Load, ca: Path | None, *, poll_timeout_s: float = 25.0
) -> Reading:
    """The tokenwire Python client on one transport."""
    out = Reading()
    connector = aiohttp.TCPConnector(ssl=ssl_context(ca) or True)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        Client(base, session=session, poll_timeout_s=poll_timeout_s, backoff_s=0.1) as c,
    ):
        stream = c.stream(
            load.prompt,
            transport=transport,  # type: ignore[arg-type]
            max_tokens=load.max_tokens,
            params=load.body()["params"],
        )
        try:
            async for ev in stream:
                if ev.get("type") == "token":
                    out.text += ev["text"]
        except Exception as e:
            out.error = error_text(e)
        s = stream.stats
        out.exact = stream.digest_ok
        out.tokens, out.reconnects = s.tokens, s.reconnects
        out.started_ns, out.first_ns, out.last_ns = s.started_ns, s.first_token_ns, s.last_token_ns
        out.latencies_ns = list(s.latencies_ns)
    return out


async def read_js(
    base: str, transport: str, load: Load, ca: Path | None, *, poll_timeout_s: float = 25.0
) -> Reading:
    """The tokenwire JS client in Node (one process per stream)."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not on PATH")
    spec = {
        "url": base,
        "transport": transport,
        **load.body(),
        "pollTimeoutS": poll_timeout_s,
        "timeoutMs": int((load.span_s + load.ttft_ms / 1000 + 60) * 1000),
    }
    env = dict(os.environ)
    if ca is not None:
        env["NODE_EXTRA_CA_CERTS"] = str(ca)
    proc = await asyncio.create_subprocess_exec(
        node,
        "--experimental-websocket",
        "--experimental-eventsource",
        "--no-warnings",
        str(HERE / "probe.mjs"),
        json.dumps(spec),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=REPO,
    )
    stdout, stderr = await proc.communicate()
    if proc.returncode != 0 or not stdout.strip():
        return Reading(error=f"node exited {proc.returncode}: {stderr.decode()[-300:]}")
    r = json.loads(stdout.decode().strip().splitlines()[-1])
    return Reading(
        text=r["text"],
        exact=r["digestOk"],
        tokens=r["tokens"],
        started_ns=_int(r["startedNs"]),
        first_ns=_int(r["firstNs"]),
        last_ns=_int(r["lastNs"]),
        latencies_ns=[int(x) for x in r["latenciesNs"]],
        reconnects=r["reconnects"],
        error=r["error"],
    )


async def read_curl(base: str, load: Load, ca: Path | None, *, http2: bool) -> Reading:
    """``curl -N`` on ``POST /api/sse``; arrivals timed as curl's output comes in."""
    curl = shutil.which("curl")
    if curl is None:
        raise RuntimeError("curl is not on PATH")
    args = [curl, "-sS", "-N", "--http2" if http2 else "--http1.1"]
    args += ["--cacert", str(ca)] if ca is not None else []
    args += ["-w", "%{stderr}\nHTTP %{http_code} %{http_version}\n"]
    args += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(load.body())]
    args += ["--max-time", str(int(load.span_s + load.ttft_ms / 1000 + 60)), f"{base}/api/sse"]
    out = Reading(started_ns=time.perf_counter_ns())
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    decoder, digest = SSEDecoder(), TextDigest()
    done: dict[str, Any] | None = None
    while chunk := await proc.stdout.read(65536):
        perf, wall = time.perf_counter_ns(), time.time_ns()
        for m in decoder.feed(chunk):
            try:
                ev = orjson.loads(m.data)
            except orjson.JSONDecodeError:
                out.error = f"not JSON: {m.data[:80]!r}"
                continue
            if ev.get("type") == "token":
                out.first_ns = out.first_ns or perf
                out.last_ns = perf
                out.latencies_ns.append(wall - int(ev["t"]))
                out.tokens += 1
                out.text += ev["text"]
                digest.update(ev["text"])
            elif ev.get("type") in ("done", "error"):
                done = ev
    err = (await proc.stderr.read()).decode()
    await proc.wait()
    tail = [line for line in err.splitlines() if line.startswith("HTTP ")]
    if tail:
        _, code, version = tail[-1].split()
        out.protocol = {"2": "h2", "3": "h3"}.get(version, "http/1.1")
        if code != "200":
            out.error = f"HTTP {code}"
    if done is not None and done.get("type") == "done":
        out.exact = digest.matches(done)
    elif out.error is None:
        problem = err.strip().splitlines()[0] if err.strip() else ""
        out.error = f"no done event (curl exit {proc.returncode}) {problem}".strip()
    return out


async def read_openai(base: str, direct: str, load: Load, ca: Path | None) -> Reading:
    """The openai SDK on ``/v1``; exact if its text is the stream's, read again directly."""
    out = Reading()
    ctx = ssl_context(ca)
    async with openai.AsyncOpenAI(
        base_url=f"{base}/v1",
        api_key="lab",
        max_retries=0,
        timeout=load.span_s + load.ttft_ms / 1000 + 60,
        http_client=httpx2.AsyncClient(verify=ctx if ctx is not None else True),
    ) as oa:
        out.started_ns = time.perf_counter_ns()
        stream_id = None
        try:
            stream = await oa.chat.completions.create(
                model="synthetic",
                messages=[{"role": "user", "content": load.prompt}],
                max_tokens=load.max_tokens,
                stream=True,
                extra_body={"params": load.body()["params"]},  # tokenwire's extension: the pace
            )
            stream_id = stream.response.headers.get("Tokenwire-Stream")
            async for chunk in stream:
                content = chunk.choices[0].delta.content if chunk.choices else None
                if content:
                    perf = time.perf_counter_ns()
                    out.first_ns = out.first_ns or perf
                    out.last_ns = perf
                    out.tokens += 1
                    out.text += content
        except Exception as e:
            out.error = error_text(e)
    if stream_id is not None and out.error is None:
        async with Client(direct) as c:
            again = c.subscribe(stream_id)
            async for _ in again:
                pass
            out.exact = bool(again.digest_ok) and again.text == out.text
    return out


# ---------------------------------------------------------------------------------------
# Chromium

CHROMIUM = "/usr/bin/chromium"
#: No sandbox (root), no calls home (the machine's closed network refuses them).
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
BROWSER_KINDS = {"sse": "eventsource", "chunked": "fetch", "ws": "websocket"}


def chromium_args(*, spki: str | None, protocol: str, origin: str) -> list[str]:
    """The flags for one protocol: HTTP/1.1 on a TLS path turns HTTP/2 off; HTTP/3 forces
    QUIC to the origin (Chromium would otherwise wait for Alt-Svc)."""
    args = list(CHROMIUM_ARGS)
    if spki is not None:
        args.append(f"--ignore-certificate-errors-spki-list={spki}")
    if protocol == "h3":
        args.append(f"--origin-to-force-quic-on={origin.split('://', 1)[1]}")
    else:
        args.append("--disable-quic")
    if protocol == "http/1.1" and origin.startswith("https:"):
        args.append("--disable-http2")
    return args


async def read_chromium(
    base: str,
    transports: Sequence[str],
    load: Load,
    *,
    spki: str | None,
    protocol: str,
    mark: Callable[[], None] | None = None,
) -> dict[str, Reading]:
    """The browser's own API for each transport (sse: EventSource, chunked: fetch, ws:
    WebSocket), one after another in one page of ``base``; one browser per call (its flags
    pick the protocol). ``mark()`` is called once the page has loaded and after each
    transport (the lab counts each one's bytes at the shaper)."""
    from playwright.async_api import async_playwright

    timeout_ms = int((load.span_s + load.ttft_ms / 1000 + 30) * 1000)
    script = (HERE / "browser_probe.js").read_text()
    out: dict[str, Reading] = {}
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=CHROMIUM, args=chromium_args(spki=spki, protocol=protocol, origin=base)
        )
        try:
            page = await browser.new_page()
            try:
                resp = await page.goto(f"{base}/healthz", timeout=15_000)
                problem = None if resp is not None and resp.status == 200 else "page: no 200"
            except Exception as e:
                problem = error_text(e).splitlines()[0]
            if mark:
                mark()
            for transport in transports:
                if problem is not None:
                    out[transport] = Reading(error=problem, protocol="?")
                else:
                    arg = {"kind": BROWSER_KINDS[transport], "body": load.body()}
                    r = await page.evaluate(script, {**arg, "timeoutMs": timeout_ms})
                    out[transport] = _browser_reading(r)
                if mark:
                    mark()
        finally:
            await browser.close()
    return out


#: The demo's connections view (server/static/connections.html), served by every path.
CONNECTIONS_PAGE = "/static/connections.html"


@dataclass(frozen=True, slots=True)
class Connections:
    """What the connections view showed: of ``opened`` streams, how many flowed with an
    EventSource each (the rest waiting for a connection), and how many over one WebSocket."""

    opened: int
    flowing: int
    waiting: int
    ws_flowing: int
    #: The EventSources' ``nextHopProtocol`` (those that got a connection), comma-separated.
    protocol: str
    error: str | None


async def count_flowing(
    base: str, *, n: int, spki: str | None, protocol: str, settle_s: float = 2.0
) -> Connections:
    """Chromium opens the connections view at ``base`` and starts ``n`` long streams: an
    EventSource each, and all of them on one WebSocket. Over HTTP/1.1 only 6 EventSources
    flow (the browser's connections per origin), over HTTP/2 and HTTP/3 all of them; the
    WebSocket carries all of them on any path that passes it.

    Each stream lasts far longer than the look (400 tokens at 5/s: 80 s), so an
    EventSource waiting for a connection cannot get one while the page is read: once the
    WebSocket's streams are flowing (the streams are producing), the EventSources get
    ``settle_s`` more to show their first token, then the counts are read, the page is
    stopped, and the protocols are read from the entries of the closed requests (Chromium
    lists one with an empty protocol for a request that never had a connection)."""
    from playwright.async_api import Error as PlaywrightError
    from playwright.async_api import async_playwright

    def counts(group: str) -> str:
        return f"document.querySelector('#{group}-group').dataset"

    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=CHROMIUM, args=chromium_args(spki=spki, protocol=protocol, origin=base)
        )
        try:
            page = await browser.new_page()
            try:
                await page.goto(f"{base}{CONNECTIONS_PAGE}", timeout=15_000)
                await page.wait_for_selector('body[data-run="idle"]', timeout=15_000)
            except PlaywrightError as e:
                return Connections(0, 0, 0, 0, "?", error_text(e).splitlines()[0])
            await page.fill("#count", str(n))
            await page.fill("#tps", "5")
            await page.fill("#max-tokens", "400")
            await page.click("#start")
            error = None
            try:  # every stream on the WebSocket flows (or failed: a path without it)
                await page.wait_for_function(
                    "() => document.body.dataset.run === 'error' || document.body.dataset.run"
                    f" === 'running' && {counts('ws')}.waiting === '0'",
                    timeout=20_000,
                )
            except PlaywrightError:
                error = "the WebSocket's streams did not start within 20 s"
            if await page.evaluate("document.body.dataset.run") == "error":
                error = await page.inner_text("#status")
            try:
                await page.wait_for_function(
                    f"() => {counts('sse')}.waiting === '0'", timeout=settle_s * 1000
                )
            except PlaywrightError:
                pass  # some wait for a connection: that is what is measured
            sse = await page.evaluate(f"({{...{counts('sse')}}})")
            ws = await page.evaluate(f"({{...{counts('ws')}}})")
            await page.click("#stop")
            try:  # every closed request is listed ("" for one that never had a connection)
                await page.wait_for_function(
                    "n => document.querySelectorAll('#sse-group .conn[data-protocol]').length >= n",
                    arg=n,
                    timeout=10_000,
                )
            except PlaywrightError:
                pass
            protocols: list[str] = await page.eval_on_selector_all(
                "#sse-group .conn[data-protocol]", "els => els.map((e) => e.dataset.protocol)"
            )
        finally:
            await browser.close()
    seen = sorted({x for x in protocols if x})
    return Connections(
        opened=n,
        flowing=int(sse.get("flowing", 0)),
        waiting=int(sse.get("waiting", 0)),
        ws_flowing=int(ws.get("flowing", 0)),
        protocol=",".join(seen) or "?",
        error=error,
    )


def _browser_reading(r: dict[str, Any]) -> Reading:
    protocols = [x for x in r["protocols"] if x]
    return Reading(
        text=r["text"],
        exact=r["digestOk"],
        tokens=r["tokens"],
        started_ns=_ms(r["startedMs"]),
        first_ns=_ms(r["firstMs"]),
        last_ns=_ms(r["lastMs"]),
        latencies_ns=[int(x * 1e6) for x in r["latenciesMs"]],
        reconnects=r["reconnects"],
        error=r["error"],
        protocol=",".join(protocols) or "?",
    )
