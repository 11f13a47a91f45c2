"""``tokenwire stream`` and ``tokenwire compare`` as real processes against a live server."""

from __future__ import annotations

import asyncio
import sys

import orjson
from aiohttp.test_utils import TestServer

from server.sources.synthetic import synthetic_text
from tests.conftest import base_url


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tokenwire",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"COLUMNS": "120", "PATH": "/usr/bin:/bin", "PYTHONPATH": "."},
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


FAST = ["--param", "tokens_per_s=0", "--param", "ttft_ms=0"]


async def test_stream_prints_the_tokens(server: TestServer) -> None:
    code, out, err = await run_cli(
        "stream", "cli", "--url", base_url(server), "--max-tokens", "25", "--transport", "ws", *FAST
    )
    assert (code, err) == (0, "")
    assert out == "".join(synthetic_text("cli", 0, 25)) + "\n"


async def test_stream_json_and_stats(server: TestServer) -> None:
    code, out, err = await run_cli(
        "stream", "cli", "--url", base_url(server), "--max-tokens", "5", "--json", "--stats",
        "--transport", "poll", *FAST,
    )  # fmt: skip
    assert (code, err) == (0, "")
    lines = out.splitlines()
    events = [orjson.loads(line) for line in lines[:6]]
    assert [e["seq"] for e in events] == [0, 1, 2, 3, 4, 5]
    assert [e["text"] for e in events[:5]] == synthetic_text("cli", 0, 5)
    assert lines[6] == f"stream {events[0]['stream']} over poll, digest ok: True"
    assert lines[7].split() == ["tokens", "5"]
    assert [line.split()[0] for line in lines[8:]] == [
        "time", "gap", "gap", "transport", "transport", "bytes", "HTTP", "reconnects",
    ]  # fmt: skip
    assert lines[-1].split() == ["reconnects", "0"]


async def test_stream_reports_a_server_error(server: TestServer) -> None:
    code, out, err = await run_cli("stream", "x", "--url", base_url(server), "--max-tokens", "0")
    assert (code, out) == (1, "")
    assert err == "tokenwire: 400 invalid_field: max_tokens: must be an integer from 1 to 4096\n"


async def test_compare_reads_one_generation_over_all_four(server: TestServer) -> None:
    code, out, err = await run_cli(
        "compare", "cmp", "--url", base_url(server), "--max-tokens", "40", *FAST
    )
    assert (code, err) == (0, "")
    assert out.rstrip().endswith("identical text on every transport")
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") == 6}

    def cells(label: str) -> list[str]:
        return [c.strip() for c in rows[label].split("│")[2:6]]

    assert out.splitlines()[-14].split() == [
        "┃",
        "┃",
        "sse",
        "┃",
        "ws",
        "┃",
        "poll",
        "┃",
        "chunked",
        "┃",
    ]
    assert cells("tokens") == ["40"] * 4
    assert cells("digest ok") == ["True"] * 4
    assert cells("reconnects") == ["0"] * 4
    assert cells("HTTP requests")[:2] == ["1", "1"]
    assert cells("HTTP requests")[3] == "1"
    assert int(cells("HTTP requests")[2]) >= 1
