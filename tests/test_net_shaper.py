"""The network lab's pure parts (the shaper's schedule, the verdicts, the config templates,
the plan) in tables, and the shaper on real loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import time
from pathlib import Path

import pytest

from bench.net import paths
from bench.net.matrix import (
    CLIENTS,
    ConnRow,
    IdleRow,
    Lab,
    Row,
    _bounded,
    aggregate,
    browser_command,
    plan,
    split_page,
)
from bench.net.report import short_error, verdict, write_report
from bench.net.shaper import CHUNK, PROFILES, Counts, Link, Profile, Shaper, stall_after
from bench.net.verdict import delivery, latency_ms, per_token

MB = 1_000_000
CAP = Profile(name="cap", latency_ms=0, rate_kbps=8_000)  # 1 MB/s


def drain(link: Link, total: int, now: float = 0.0) -> float:
    """When the last of ``total`` bytes, all sent at ``now`` in CHUNK pieces, leaves."""
    out = now
    for i in range(0, total, CHUNK):
        out = link.send(now, min(CHUNK, total - i))
    return out


@pytest.mark.parametrize(
    ("rate_kbps", "latency_ms", "expected_s"),
    [
        (8_000, 0, 1.0),  # 1 MB at 1 MB/s
        (800, 0, 10.0),
        (8_000, 100, 1.1),  # the latency comes once, after the last byte
        (None, 35, 0.035),  # uncapped: the latency only
    ],
)
def test_a_cap_is_honoured_within_10_percent_over_1_mb(
    rate_kbps: float | None, latency_ms: float, expected_s: float
) -> None:
    link = Link(Profile(name="x", latency_ms=latency_ms, rate_kbps=rate_kbps), random.Random(0))
    assert drain(link, MB) == pytest.approx(expected_s, rel=0.10)


def test_latency_is_added_to_every_chunk_and_each_direction() -> None:
    p = PROFILES["3g"]
    up, down = Link(p, random.Random(1)), Link(p, random.Random(2))
    for link in (up, down):
        for t in (0.0, 5.0, 10.0):
            out = link.send(t, 100)
            serial = 100 / (p.rate_bytes_per_s or 1)
            assert t + serial + (p.latency_ms - p.jitter_ms) / 1000 <= out
            assert out <= t + serial + (p.latency_ms + p.jitter_ms) / 1000


def test_jitter_never_reorders_chunks() -> None:
    link = Link(Profile(name="j", latency_ms=10, jitter_ms=10), random.Random(3))
    outs = [link.send(i * 0.001, 10) for i in range(500)]
    assert outs == sorted(outs)
    assert len(set(outs)) > 100  # the jitter varies the delay


def test_a_busy_link_queues_later_chunks_behind_earlier_ones() -> None:
    link = Link(CAP, random.Random(0))
    assert link.send(0.0, 500_000) == pytest.approx(0.5)
    assert link.send(0.1, 500_000) == pytest.approx(1.0)  # waits for the first to finish
    assert link.send(5.0, 1_000) == pytest.approx(5.001)  # an idle link starts at once


def test_stalls_only_on_profiles_that_have_them() -> None:
    rng = random.Random(0)
    assert {stall_after(p, rng) is None for p in PROFILES.values() if p.name != "flaky"} == {True}
    lives = [stall_after(PROFILES["flaky"], rng) for _ in range(2000)]
    mean = sum(x for x in lives if x is not None) / len(lives)
    assert mean == pytest.approx(PROFILES["flaky"].stall_every_s, rel=0.1)


@pytest.mark.parametrize(
    ("tokens", "first", "last", "span_s", "expected"),
    [
        (0, None, None, 1.0, "none"),
        (10, 0, 900_000_000, 1.0, "stream"),
        (10, 0, 200_000_000, 1.0, "stream"),  # a loaded machine's hiccup is not buffering
        (10, 0, 150_000_000, 1.0, "lump"),
        (10, 5, 5, 1.0, "lump"),  # all in one read
        (1, 5, 5, 1.0, "stream"),  # one token cannot tell
        (10, 0, 0, 0.0, "stream"),  # an unpaced source cannot tell
    ],
)
def test_delivery_from_arrival_times(
    tokens: int, first: int | None, last: int | None, span_s: float, expected: str
) -> None:
    assert delivery(tokens, first, last, span_s) == expected


def test_latency_percentiles_and_bytes_per_token() -> None:
    assert latency_ms([]) == (None, None, None)
    ns = [i * 1_000_000 for i in range(1, 101)]  # 1..100 ms
    assert latency_ms(list(reversed(ns))) == (50.0, 95.0, 99.0)
    assert per_token(1000, 0) is None
    assert per_token(1000, 8) == 125.0


def test_fill_names_every_missing_field() -> None:
    assert paths.fill("listen {{port}}; x {{port}}", {"port": "9"}) == "listen 9; x 9"
    with pytest.raises(ValueError, match="no value for dir, upstream"):
        paths.fill("{{upstream}} {{dir}} {{port}}", {"port": "1"})


@pytest.mark.parametrize("name", [n for n in paths.PATHS if n != "direct"])
def test_every_config_template_is_filled_by_the_lab(name: str, tmp_path: object) -> None:
    conf = paths.PATHS[name].conf
    assert conf is not None
    text = (paths.CONF_DIR / conf).read_text()
    values = {"dir": "/d", "port": "1", "upstream": "2", "http_port": "3", "idle_timeout": "4s"}
    filled = paths.fill(text, values)
    assert "{{" not in filled
    assert "127.0.0.1:2" in filled  # the upstream


def test_the_plan_offers_h2_and_h3_only_where_the_path_speaks_them() -> None:
    cells = plan(["direct", "nginx-stream", "caddy"], ["lan", "3g"], CLIENTS)
    protocols = {(c.path, c.profile, c.client, c.protocol) for c in cells}
    assert ("caddy", "lan", "chromium", "h3") in protocols
    assert ("caddy", "3g", "chromium", "h3") in protocols  # through the UDP relay
    assert {p for p, _, _, proto in protocols if proto == "h3"} == {"caddy"}
    assert ("nginx-stream", "3g", "curl", "h2") in protocols
    assert not any(p == "direct" and proto != "http/1.1" for p, _, _, proto in protocols)
    assert {c.protocol for c in cells if c.client in ("python", "js", "openai")} == {"http/1.1"}
    assert len(cells) == len(set(cells))


# ---------------------------------------------------------------------------------------
# On real sockets


async def _echo_server() -> asyncio.Server:
    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
        w.close()

    return await asyncio.start_server(echo, "127.0.0.1", 0)


async def test_bytes_pass_exactly_both_ways() -> None:
    payload = random.Random(7).randbytes(MB)
    async with await _echo_server() as echo:
        port = echo.sockets[0].getsockname()[1]
        async with Shaper(port, PROFILES["wifi"], seed=1) as shaper:
            r, w = await asyncio.open_connection("127.0.0.1", shaper.port)

            async def send() -> None:
                for i in range(0, MB, 50_000):
                    w.write(payload[i : i + 50_000])
                    await w.drain()
                w.write_eof()

            sender = asyncio.create_task(send())
            got = await asyncio.wait_for(r.read(-1), 60)
            await sender
            w.close()
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(payload).hexdigest()
    assert (shaper.counts.up, shaper.counts.down) == (MB, MB)
    assert (shaper.counts.connections, shaper.counts.cuts) == (1, 0)


async def test_a_cap_and_latency_slow_a_real_transfer() -> None:
    """Lower bounds only: the shaper may never deliver faster than its link allows."""
    profile = Profile(name="t", latency_ms=100, rate_kbps=4_000)  # 500 kB/s
    async with await _echo_server() as echo:
        port = echo.sockets[0].getsockname()[1]
        async with Shaper(port, profile) as shaper:
            r, w = await asyncio.open_connection("127.0.0.1", shaper.port)
            t0 = time.monotonic()
            w.write(b"ping")
            assert await asyncio.wait_for(r.readexactly(4), 10) == b"ping"
            rtt = time.monotonic() - t0
            t0 = time.monotonic()
            w.write(bytes(250_000))
            await asyncio.wait_for(r.readexactly(250_000), 30)
            transfer = time.monotonic() - t0
            w.close()
    assert rtt >= 0.2  # 100 ms each way
    # Capped (echoed back as it arrives, so the two directions overlap), plus the latency
    # of each direction once.
    assert transfer >= 0.9 * (250_000 / 500_000) + 0.2


async def test_a_stall_ends_in_a_cut() -> None:
    profile = Profile(name="s", latency_ms=0, stall_every_s=0.2, stall_s=0.3)
    async with await _echo_server() as echo:
        port = echo.sockets[0].getsockname()[1]
        async with Shaper(port, profile) as shaper:
            r, w = await asyncio.open_connection("127.0.0.1", shaper.port)
            got = b""
            async with asyncio.timeout(30):
                while True:
                    w.write(b"x")
                    try:
                        await w.drain()
                        data = await asyncio.wait_for(r.read(10), 0.1)
                    except TimeoutError:
                        continue  # the stall: nothing comes back
                    except ConnectionError:
                        break
                    if not data:
                        break
                    got += data
            w.close()
    assert shaper.counts.cuts == 1
    assert set(got) <= {ord("x")}


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--net-paths", "bogus,caddy", "tokenwire bench --net: unknown path bogus"),
        ("--net-profiles", "5g", "tokenwire bench --net: unknown profile 5g"),
        ("--net-clients", ",", "tokenwire bench --net: unknown client (none)"),
    ],
)
def test_bench_net_names_an_unknown_choice_in_one_line(flag: str, value: str, message: str) -> None:
    from tokenwire.cli import main

    with pytest.raises(SystemExit) as e:
        main(["bench", "--net", flag, value])
    assert str(e.value.code) == message


def _row(path: str, transport: str, p50: float, **kw: object) -> Row:
    base: dict[str, object] = dict(
        client="python", transport=transport, path=path, profile="lan", protocol="http/1.1",
        exact=True, delivery="stream", tokens=10, error=None, ttft_ms=5.0,
        latency_p50_ms=p50, latency_p95_ms=p50 + 1, latency_p99_ms=p50 + 2, reconnects=0,
        cuts=0, connections=1, bytes_up=300, bytes_down=1700, bytes_per_token=200.0,
        protocol_seen="http/1.1",
    )  # fmt: skip
    return Row(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "short"),
    [
        ("ServerError: 500 internal: internal server error", "HTTP 500"),
        ("WSServerHandshakeError: 426, message='Invalid response status', url='x'", "HTTP 426"),
        ("ClosedByServer: WebSocket closed by the server with code 1006", "close 1006"),
        ("WebSocket closed: 1006", "close 1006"),
        ("ConnectionLost: the connection dropped", "ConnectionLost"),
    ],
)
def test_short_errors(error: str, short: str) -> None:
    assert short_error(error) == short


def test_the_report_says_stream_lump_or_why_and_what_the_path_adds(tmp_path: Path) -> None:
    rows = [
        _row("direct", "sse", 1.0),
        _row("nginx-buffering", "sse", 400.0, delivery="lump"),
        _row("nginx-default", "sse", 0.0, exact=None, delivery="none", tokens=0,
             error="ServerError: 500 internal: internal server error", note="why"),
    ]  # fmt: skip
    idle = [IdleRow("haproxy", "sse", False, 2.5, 4.8, False, True, 2, None)]
    conns = [ConnRow("caddy", "http/1.1", 10, 6, 4, 10, "http/1.1", None)]
    report = write_report(tmp_path, Lab(), rows, idle, conns).read_text()
    assert "| nginx-buffering | LUMP |" in report
    assert "| nginx-default | FAIL HTTP 500 |" in report
    assert "| direct | stream |" in report
    assert "| caddy | http/1.1 | http/1.1 | 6 of 10 | 4 | 10 of 10 |  |" in report
    assert "| haproxy | sse | off | 2.5 | 4.8 | NO | 2 | exact |  |" in report
    assert "| 400.0 | +399.0 |" in report  # latency p50 and what the path adds to direct's
    assert "- why" in report
    assert (tmp_path / "bytes-per-token.png").stat().st_size > 1000
    assert (tmp_path / "latency-by-profile.png").stat().st_size > 1000


@pytest.mark.parametrize("profile", ["lan", "3g"])
async def test_a_client_reset_ends_its_relay(profile: str) -> None:
    """A client that resets mid-transfer (a browser closing) frees its relay at once, with
    bytes still scheduled on a slow link."""
    async with await _echo_server() as echo:
        port = echo.sockets[0].getsockname()[1]
        async with Shaper(port, PROFILES[profile]) as shaper:
            r, w = await asyncio.open_connection("127.0.0.1", shaper.port)
            w.write(bytes(100_000))
            await w.drain()
            await asyncio.wait_for(r.read(1), 10)
            w.transport.abort()
            for _ in range(100):
                if shaper.open_connections == 0:
                    break
                await asyncio.sleep(0.05)
            assert shaper.open_connections == 0


@pytest.mark.parametrize(
    ("path", "protocol", "command"),
    [
        ("direct", "http/1.1", "--disable-quic http://127.0.0.1:8000/static/connections.html"),
        ("caddy", "http/1.1",
         "--disable-quic --disable-http2 https://127.0.0.1:8443/static/connections.html"),
        ("caddy", "h2", "--disable-quic https://127.0.0.1:8443/static/connections.html"),
        ("caddy", "h3",
         "--origin-to-force-quic-on=localhost:8443 https://localhost:8443/static/connections.html"),
    ],
)  # fmt: skip
def test_the_connections_view_command_per_protocol(path: str, protocol: str, command: str) -> None:
    """``--net-serve`` prints how to open the connections view: a fresh profile, the flags
    that pick the protocol (HTTP/3 by host name, see docs/network.md), the page's URL."""
    port = 8000 if path == "direct" else 8443
    front = paths.Front(paths.PATHS[path], "127.0.0.1", port)
    assert browser_command(front, protocol) == f"chromium --user-data-dir=$(mktemp -d) {command}"


# ---------------------------------------------------------------------------------------
# The UDP relay (HTTP/3): the datagram schedule in tables, then real datagrams

DATAGRAM = 1_200  # a QUIC packet's usual size


def offer_paced(link: Link, total: int, rate_bytes_per_s: float) -> tuple[int, float]:
    """Offer ``total`` bytes in DATAGRAM-sized datagrams at ``rate_bytes_per_s``: the bytes
    the link took and when the last of them leaves."""
    taken, last = 0, 0.0
    for i in range(total // DATAGRAM):
        out = link.offer(i * DATAGRAM / rate_bytes_per_s, DATAGRAM)
        if out is not None:
            taken, last = taken + DATAGRAM, out
    return taken, last


@pytest.mark.parametrize(
    ("offered_x", "latency_ms", "expected_taken", "expected_last_s"),
    [
        (1.0, 0, MB, 1.0),  # offered at the cap: nothing dropped, 1 MB in 1 s
        (1.0, 100, MB, 1.1),  # the latency comes once, after the last byte
        (2.0, 0, MB // 2 + 250_000, 0.75),  # twice the cap: the rest is tail-dropped
        (0.5, 0, MB, 2.0),  # under the cap: the sender's pace
    ],
)
def test_a_datagram_cap_is_honoured_within_10_percent_over_1_mb(
    offered_x: float, latency_ms: float, expected_taken: int, expected_last_s: float
) -> None:
    """Offered at twice the cap for 0.5 s, the link delivers the cap's worth plus what its
    queue (QUEUE_S = 0.25 s) holds: the delivered rate is the cap."""
    link = Link(Profile(name="u", latency_ms=latency_ms, rate_kbps=8_000), random.Random(0))
    taken, last = offer_paced(link, MB, 1_000_000 * offered_x)
    assert taken == pytest.approx(expected_taken, rel=0.10)
    assert last == pytest.approx(expected_last_s, rel=0.10)
    assert taken / last == pytest.approx(min(1_000_000 * offered_x, 1_000_000), rel=0.10)


def test_a_full_datagram_queue_drops_and_keeps_its_schedule() -> None:
    link = Link(CAP, random.Random(0))  # 1 MB/s
    assert link.offer(0.0, 250_000) == pytest.approx(0.25)
    assert link.offer(0.0, 1_000) == pytest.approx(0.251)  # 0.25 s queued: still taken
    assert link.offer(0.0, 1_000) is None  # more than QUEUE_S behind the cap: dropped
    assert link.offer(0.1, 1_000) == pytest.approx(0.252)  # the queue drained a little
    uncapped = Link(PROFILES["3g"].__class__(name="l", latency_ms=50), random.Random(0))
    assert [uncapped.offer(0.0, 65_000) for _ in range(3)] == [0.05] * 3  # no cap: no queue


async def _udp_echo() -> tuple[asyncio.DatagramTransport, int]:
    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.transport.sendto(data, addr)  # type: ignore[attr-defined]

    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    return transport, transport.get_extra_info("sockname")[1]


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.put_nowait((time.monotonic(), data))


async def _udp_client(
    port: int, host: str = "127.0.0.1"
) -> tuple[asyncio.DatagramTransport, _Client]:
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(_Client, remote_addr=(host, port))
    return transport, client


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_datagrams_pass_in_order_both_ways_and_are_counted(host: str) -> None:
    """Both loopbacks: a browser resolves ``localhost`` to ::1 first."""
    payloads = [random.Random(i).randbytes(DATAGRAM) for i in range(200)]
    echo, port = await _udp_echo()
    try:
        async with Shaper(port, PROFILES["wifi"], seed=1, udp=True) as shaper:
            tx, client = await _udp_client(shaper.port, host)
            got = []
            for i in range(0, len(payloads), 20):  # under the cap and the socket buffers
                for p in payloads[i : i + 20]:
                    tx.sendto(p)
                for _ in range(20):
                    got.append((await asyncio.wait_for(client.got.get(), 10))[1])
            tx.close()
            assert shaper.open_flows == 1
    finally:
        echo.close()
    assert got == payloads
    total = DATAGRAM * len(payloads)
    c = shaper.counts
    assert (c.up, c.down, c.udp_up, c.udp_down) == (total, total, total, total)
    assert (c.connections, c.cuts, c.dropped) == (1, 0, 0)


async def test_datagram_latency_is_added_in_each_direction() -> None:
    """The echo's reply crosses the relay twice: the round trip is at least twice the
    one-way latency (a lower bound: the relay may never be faster than its link)."""
    echo, port = await _udp_echo()
    try:
        async with Shaper(port, Profile(name="t", latency_ms=100), udp=True) as shaper:
            tx, client = await _udp_client(shaper.port)
            rtts = []
            for i in range(3):
                t0 = time.monotonic()
                tx.sendto(b"ping %d" % i)
                at, data = await asyncio.wait_for(client.got.get(), 10)
                assert data == b"ping %d" % i
                rtts.append(at - t0)
            tx.close()
    finally:
        echo.close()
    assert min(rtts) >= 0.2


async def test_a_datagram_cap_slows_a_real_transfer() -> None:
    """1 MB offered as fast as the sender goes through a 4 Mbit/s (500 kB/s) relay: what
    arrives never arrives faster than the cap, and the excess is dropped, not queued."""
    echo, port = await _udp_echo()
    try:
        profile = Profile(name="c", latency_ms=0, rate_kbps=4_000)
        async with Shaper(port, profile, udp=True) as shaper:
            tx, client = await _udp_client(shaper.port)
            for i in range(MB // DATAGRAM):
                tx.sendto(bytes(DATAGRAM))
                if i % 20 == 0:
                    await asyncio.sleep(0.01)  # ~2.4 MB/s offered, kernel buffers spared
            arrivals = []
            with contextlib.suppress(TimeoutError):
                while len(arrivals) < MB // DATAGRAM:
                    arrivals.append((await asyncio.wait_for(client.got.get(), 1.0))[0])
            tx.close()
    finally:
        echo.close()
    c = shaper.counts
    assert c.dropped > 0
    assert c.udp_up + c.dropped * DATAGRAM >= MB // DATAGRAM * DATAGRAM * 0.99
    assert len(arrivals) >= 10
    rate = (len(arrivals) - 1) * DATAGRAM / (arrivals[-1] - arrivals[0])
    assert rate <= 500_000 * 1.10  # the echo's way back is capped too


async def test_a_datagram_stall_ends_in_a_cut_that_black_holes_the_flow() -> None:
    """A flow stalls (its datagrams dropped), then is cut: its address gets nothing ever
    after (no reset exists for UDP), while a new flow (a new source port) passes."""
    profile = Profile(name="s", latency_ms=0, stall_every_s=0.2, stall_s=0.3)
    echo, port = await _udp_echo()
    try:
        async with Shaper(port, profile, seed=3, udp=True) as shaper:
            tx, client = await _udp_client(shaper.port)
            answered = 0
            async with asyncio.timeout(30):
                while shaper.counts.cuts == 0:
                    tx.sendto(b"x")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(client.got.get(), 0.05)
                        answered += 1
            for _ in range(5):  # the cut flow: nothing comes back
                tx.sendto(b"y")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(client.got.get(), 0.3)
            tx.close()
            tx2, client2 = await _udp_client(shaper.port)
            tx2.sendto(b"new")
            assert (await asyncio.wait_for(client2.got.get(), 5))[1] == b"new"
            tx2.close()
    finally:
        echo.close()
    assert shaper.counts.cuts >= 1
    assert shaper.counts.dropped >= 5
    assert shaper.counts.connections == 2


# ---------------------------------------------------------------------------------------
# The matrix's accounting: a page's bytes per transport, samples per cell, bounded cells


def _c(up: int, down: int, conns: int = 0, cuts: int = 0) -> Counts:
    return Counts(up, down, conns, cuts)


@pytest.mark.parametrize(
    ("marks", "end", "expected"),
    [
        # the page load (100/1000, 1 connection) and its close (10/10) shared, each
        # transport's own window its own; the page's connection and cut go to the first
        (
            [_c(100, 1000, 1), _c(400, 3000, 1, 1), _c(500, 5000, 1, 1), _c(900, 9000, 2, 1)],
            _c(910, 9010, 2, 1),
            [_c(336, 2336, 1, 1), _c(136, 2336), _c(436, 4336, 1)],
        ),
        # the page broke before its marks: the bytes shared evenly, the rest to the first
        ([], _c(300, 3000, 3, 2), [_c(100, 1000, 3, 2), _c(100, 1000), _c(100, 1000)]),
    ],
)
def test_a_browser_page_splits_its_bytes_per_transport(
    marks: list[Counts], end: Counts, expected: list[Counts]
) -> None:
    assert split_page(Counts(), marks, end, 3) == expected


def test_samples_aggregate_into_medians_spreads_and_totals() -> None:
    rows = [
        _row("direct", "sse", 10.0, ttft_ms=5.0, reconnects=1, cuts=1, bytes_per_token=150.0,
             dropped=4),
        _row("direct", "sse", 30.0, ttft_ms=9.0, bytes_per_token=160.0),
        _row("direct", "sse", 20.0, exact=None, delivery="none", tokens=0,
             error="ClosedByServer: close 1006", latency_p50_ms=None, latency_p95_ms=None,
             latency_p99_ms=None, ttft_ms=None, bytes_per_token=None, ok_samples=0),
    ]  # fmt: skip
    a = aggregate(rows)
    assert (a.samples, a.ok_samples, a.exact, a.delivery) == (3, 2, None, "stream")
    assert a.error == "ClosedByServer: close 1006 (1 of 3)"
    assert (a.latency_p50_ms, a.latency_p50_min_ms, a.latency_p50_max_ms) == (20.0, 10.0, 30.0)
    assert (a.ttft_ms, a.ttft_min_ms, a.ttft_max_ms) == (7.0, 5.0, 9.0)
    assert (a.bytes_per_token, a.tokens, a.reconnects, a.cuts) == (155.0, 10, 1, 1)
    assert (a.bytes_up, a.bytes_down, a.connections) == (900, 5100, 3)
    assert a.dropped == 4
    assert verdict(a, short=True) == "FAIL close 1006 2/3 exact"
    assert aggregate(rows[:1]) is rows[0]
    assert aggregate(rows[:2]).exact is True
    assert verdict(aggregate(rows[:2])) == "stream"
    tie = aggregate([rows[0], _row("direct", "sse", 5.0, delivery="lump")])
    assert (tie.delivery, verdict(tie)) == ("lump", "LUMP")


async def test_a_cell_that_hangs_or_raises_becomes_its_rows_error() -> None:
    def failed(why: str) -> str:
        return f"failed: {why}"

    async def hang() -> str:
        await asyncio.sleep(60)
        return "never"

    async def boom() -> str:
        raise ConnectionResetError("reset by peer")

    assert await _bounded(hang(), 0.05, failed) == "failed: the lab's cell timeout (0.05 s)"
    assert await _bounded(boom(), 5, failed) == "failed: ConnectionResetError: reset by peer"


@pytest.mark.parametrize("samples", ["0", "x"])
def test_bench_net_refuses_a_bad_sample_count(samples: str) -> None:
    from tokenwire.cli import main

    with pytest.raises(SystemExit) as e:
        main(["bench", "--net", "--samples", samples])
    if samples == "0":
        assert str(e.value.code) == "tokenwire bench --net: --samples must be at least 1"
    else:
        assert e.value.code == 2  # argparse: invalid int value
