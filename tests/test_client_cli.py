"""``tokenwire stream`` and ``tokenwire compare`` as real processes against a live server."""

from __future__ import annotations

import asyncio
import csv
import io
import signal
import socket
import sys
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from clients.cli import STAT_KEYS, median
from server.sources.synthetic import synthetic_text
from tests.conftest import MakeServer, base_url
from tests.parts_server import Scripts, standin
from tests.test_typed_parts import ARGS, expected


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
    # stdout stays JSON lines: the measurements are the last one.
    assert len(lines) == 7
    stats = orjson.loads(lines[6])
    assert list(stats) == ["type", "stream", "digest_ok", "transport", *STAT_KEYS]
    assert stats["type"] == "stats"
    assert stats["stream"] == events[0]["stream"]
    assert (stats["digest_ok"], stats["transport"], stats["tokens"]) == (True, "poll", 5)
    assert (stats["reconnects"], stats["requests"] >= 1) == (0, True)


async def test_stream_stats_as_text(server: TestServer) -> None:
    code, out, err = await run_cli(
        "stream", "cli", "--url", base_url(server), "--max-tokens", "5", "--stats",
        "--transport", "poll", *FAST,
    )  # fmt: skip
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "".join(synthetic_text("cli", 0, 5))
    assert lines[1].startswith("stream ")
    assert lines[1].endswith(" over poll, digest ok: True")
    assert lines[2].split() == ["tokens", "5"]
    assert [line.split()[0] for line in lines[3:]] == [
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

    # Piped (not a terminal): no progress table glued above the measurements.
    assert out.splitlines()[0].strip() == "measurements (client side)"
    assert sum(line.startswith("┏") for line in out.splitlines()) == 1


async def test_compare_json_csv_and_repeat(server: TestServer) -> None:
    args = ["compare", "rep", "--url", base_url(server), "--max-tokens", "12", *FAST]
    code, out, err = await run_cli(*args, "--json", "--repeat", "3", "--transports", "ws,sse")
    assert (code, err) == (0, "")
    doc = orjson.loads(out)
    assert list(doc) == ["prompt", "runs", "streams", "identical_text", "transports"]
    assert (doc["prompt"], doc["runs"], len(set(doc["streams"]))) == ("rep", 3, 3)
    assert doc["identical_text"] is True
    assert list(doc["transports"]) == ["sse", "ws"]  # the wire's order
    for figures in doc["transports"].values():
        assert list(figures) == [*STAT_KEYS, "digest_ok"]
        assert (figures["tokens"], figures["reconnects"], figures["digest_ok"]) == (12, 0, True)
        assert figures["ttft_ms"] > 0

    code, out, err = await run_cli(*args, "--csv", "--transports", "poll,chunked")
    assert (code, err) == (0, "")
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["transport", "runs", *STAT_KEYS, "digest_ok", "identical_text"]
    assert [(r[0], r[1], r[2], r[-2], r[-1]) for r in rows[1:]] == [
        ("poll", "1", "12", "True", "True"),
        ("chunked", "1", "12", "True", "True"),
    ]


def test_median_keeps_counts_whole() -> None:
    assert median([3, 1, 2]) == 2
    assert median([1, 2]) == 1.5
    assert median([1.0, 3.0]) == 2.0
    assert median([None, None]) is None
    assert median([None, 4]) == 4


# -- failing fast and kindly: one line on stderr, an exit status, never a traceback --------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "status", "first_line"),
    [
        pytest.param(
            ["stream", "hello", "--url", "http://127.0.0.1:{port}"],
            1,
            "tokenwire: no tokenwire server answers at http://127.0.0.1:{port}: start one with"
            " `tokenwire serve` (or pass --url)",
            id="stream-no-server",
        ),
        pytest.param(
            ["compare", "hi", "--url", "http://127.0.0.1:{port}"],
            1,
            "tokenwire: no tokenwire server answers at http://127.0.0.1:{port}: start one with"
            " `tokenwire serve` (or pass --url)",
            id="compare-no-server",
        ),
        pytest.param(
            ["compare", "hi", "--transports", "sse,websocket"],
            2,
            "tokenwire: unknown transport 'websocket' in --transports (valid: sse, ws, poll,"
            " chunked)",
            id="unknown-transport",
        ),
        pytest.param(
            ["stream", "hello", "--url", "127.0.0.1:{port}"],
            2,
            "tokenwire: --url must be http:// or https:// and a host, got '127.0.0.1:{port}';"
            " did you mean http://127.0.0.1:{port}?",
            id="url-without-scheme",
        ),
        pytest.param(
            ["compare", "hi", "--url", "ftp://127.0.0.1:{port}"],
            2,
            "tokenwire: --url must be http:// or https:// and a host, got 'ftp://127.0.0.1:{port}'",
            id="url-other-scheme",
        ),
        pytest.param(
            ["stream", "hello", "--param", "tokens_per_s"],
            2,
            "tokenwire: --param needs KEY=VALUE, got 'tokens_per_s'",
            id="param-without-value",
        ),
        pytest.param(
            ["compare", "hi", "--repeat", "0"],
            2,
            "tokenwire: --repeat must be at least 1, got 0",
            id="repeat-zero",
        ),
    ],
)
async def test_a_bad_start_is_one_line(args: list[str], status: int, first_line: str) -> None:
    """Nothing listens on the port: the answer comes well before any network timeout (the
    client's reconnects took 27 s): 10 s is a "did not hang" bound, not a speed figure."""
    port = str(free_port())
    async with asyncio.timeout(10):
        code, out, err = await run_cli(*(a.replace("{port}", port) for a in args))
    assert (code, out) == (status, "")
    assert err.splitlines() == [first_line.replace("{port}", port)]


async def test_not_a_tokenwire_server(server: TestServer) -> None:
    url = f"{base_url(server)}/api/info"
    code, out, err = await run_cli("stream", "x", "--url", url)
    assert (code, out) == (1, "")
    assert err == f"tokenwire: {url} answers, but not as a tokenwire server (GET /healthz: 404)\n"


async def wait_live_streams(server: TestServer, n: int) -> None:
    """Until the server has ``n`` live streams (bounded by the caller's timeout)."""
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(f"{base_url(server)}/healthz") as resp:
                if (await resp.json())["live_streams"] >= n:
                    return
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("command", ["stream", "compare"])
async def test_ctrl_c_is_a_clean_exit(server: TestServer, command: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tokenwire", command, "slow", "--url", base_url(server),
        "--max-tokens", "2000", "--param", "tokens_per_s=20", "--param", "ttft_ms=0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"COLUMNS": "120", "PATH": "/usr/bin:/bin", "PYTHONPATH": "."},
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(10):
            if command == "stream":
                await proc.stdout.read(1)  # the first token is out: mid-stream
            else:  # (piped, compare prints only at the end): until its stream is live
                await wait_live_streams(server, 1)
                await asyncio.sleep(0.3)  # its readers connect
            proc.send_signal(signal.SIGINT)
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 130
    assert err.decode() == "tokenwire: interrupted\n"


async def test_a_reader_that_leaves_stdout_is_no_traceback(server: TestServer) -> None:
    """``tokenwire stream ... --json | head -n 1``: the pipe closes under the writer."""
    command = (
        f"{sys.executable} -m tokenwire stream pipe --url {base_url(server)} --json"
        " --max-tokens 4000 --param tokens_per_s=0 --param ttft_ms=0 | head -n 1;"
        " echo status=${PIPESTATUS[0]}"
    )
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", command,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": "."},
    )  # fmt: skip
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    lines = out.decode().splitlines()
    assert orjson.loads(lines[0])["seq"] == 0
    assert lines[1:] == ["status=1"]
    assert err.decode() == ""


# -- typed parts: reasoning dimmed, tool calls as → name(arguments), the options -----------


async def run_cli_env(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tokenwire", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"COLUMNS": "120", "PATH": "/usr/bin:/bin", "PYTHONPATH": ".", **env},
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


WHOLE_ARGS = "".join(ARGS)


@pytest.mark.parametrize("transport", ["sse", "ws"])
async def test_stream_prints_reasoning_and_tool_calls(
    make_server: MakeServer, transport: str
) -> None:
    srv = await make_server(sources={"parts": Scripts()})
    args = ["stream", "parts", "--url", base_url(srv), "--source", "parts"]
    code, out, err = await run_cli(*args, "--transport", transport)
    assert (code, err) == (0, "")
    assert out == (
        "The user wants the weather ✓.\n"
        f"→ get_weather({WHOLE_ARGS})\n"
        '→ second({"x":1})\n'
        "It is sunny.\n"
    )
    code, out, err = await run_cli_env({"FORCE_COLOR": "1"}, *args, "--transport", transport)
    assert (code, err) == (0, "")
    assert out == (
        "\x1b[2mThe user wants\x1b[0m\x1b[2m the weather ✓.\x1b[0m\n"  # dim
        f"→ get_weather({WHOLE_ARGS})\n"
        '→ second({"x":1})\n'
        "It is sunny.\n"
    )


async def test_stream_json_has_the_typed_events_and_parts(make_server: MakeServer) -> None:
    srv = await make_server(sources={"parts": Scripts()})
    args = ["stream", "parts", "--url", base_url(srv), "--source", "parts", "--json"]
    code, out, err = await run_cli(*args)
    assert (code, err) == (0, "")
    events = [orjson.loads(line) for line in out.splitlines()]
    sid = events[0]["stream"]
    assert [{k: v for k, v in e.items() if k != "t"} for e in events] == expected(sid)
    code, out, err = await run_cli(*args, "--parts", "--transport", "chunked")
    assert (code, err) == (0, "")
    parts = [orjson.loads(line) for line in out.splitlines()]
    sid = parts[8]["id"].removeprefix("call_").removesuffix("_1")
    assert parts[:2] == [
        {"type": "reasoning", "text": "The user wants"},
        {"type": "reasoning", "text": " the weather ✓."},
    ]
    assert parts[2] == {"type": "tool_call", "index": 0, "id": "call_a", "name": "get_weather",
                        "arguments": ""}  # fmt: skip
    assert parts[7] == {"type": "tool_call_done", "index": 0, "id": "call_a",
                        "name": "get_weather", "arguments": WHOLE_ARGS,
                        "parsed": orjson.loads(WHOLE_ARGS)}  # fmt: skip
    assert parts[10] == {"type": "tool_call_done", "index": 1, "id": f"call_{sid}_1",
                         "name": "second", "arguments": '{"x":1}', "parsed": {"x": 1}}  # fmt: skip
    assert parts[11:] == [{"type": "text", "text": "It is "}, {"type": "text", "text": "sunny."}]


@pytest.fixture
async def standin_server() -> AsyncIterator[tuple[str, list[str]]]:
    seen: list[str] = []
    srv = TestServer(standin(seen), host="127.0.0.1", port=0)
    await srv.start_server()
    yield base_url(srv), seen
    await srv.close()


async def test_stream_sends_the_typed_part_flags(standin_server: tuple[str, list[str]]) -> None:
    url, seen = standin_server
    schema = '{"type":"object","required":["city"],"properties":{"city":{"type":"string"}}}'
    for transport in ("chunked", "ws"):
        code, out, err = await run_cli(
            "stream", "p", "--url", url, "--transport", transport, "--reasoning-effort", "low",
            "--tool", f"get_weather:{schema}", "--tool", "noop", "--tool-choice", "get_weather",
        )  # fmt: skip
        assert (code, out, err) == (0, "\n", "")
    body = (
        '"reasoning_effort":"low","tools":[{"name":"get_weather","parameters":' + schema + "},"
        '{"name":"noop"}],"tool_choice":"get_weather"}'
    )
    assert seen == ['{"prompt":"p",' + body, '{"op":"generate","prompt":"p",' + body]


async def test_arguments_that_are_not_json_are_one_line(
    standin_server: tuple[str, list[str]],
) -> None:
    code, out, err = await run_cli("stream", "bad", "--url", standin_server[0], "--transport", "ws")
    assert (code, out) == (1, "→ f({nope")
    assert err.startswith("tokenwire: tool call 0 (f): arguments are not JSON: ")
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        (["--tool", ":{}"], "tokenwire: --tool needs NAME[:SCHEMA_JSON], got ':{}'"),
        (["--tool", "f:[1]"], "tokenwire: --tool f: the schema must be a JSON object"),
        (["--tool", "f", "--tool-choice", "g"],
         "tokenwire: --tool-choice 'g' is not one of the --tool names"),
        (["--parts"], "tokenwire: --parts goes with --json (the terminal shows the parts anyway)"),
    ],
    ids=["no-name", "schema-not-object", "choice-not-offered", "parts-without-json"],
)  # fmt: skip
async def test_bad_typed_part_flags_are_one_line(flags: list[str], line: str) -> None:
    code, out, err = await run_cli(
        "stream", "p", "--url", f"http://127.0.0.1:{free_port()}", *flags
    )
    assert (code, out, err.splitlines()) == (2, "", [line])


async def test_bad_tool_schema_json_is_one_line() -> None:
    code, out, err = await run_cli("stream", "p", "--tool", "f:{nope")
    assert (code, out) == (2, "")
    assert err.startswith("tokenwire: --tool f: the schema is not JSON (")
    assert len(err.splitlines()) == 1


async def test_stream_help_tells_the_typed_part_flags() -> None:
    code, out, _ = await run_cli("stream", "--help")
    assert code == 0
    flat = " ".join(out.split())
    for text in ("--reasoning-effort {low,medium,high}", "--tool NAME[:SCHEMA_JSON]",
                 "--tool-choice NAME", "--parts", "→ name(arguments)"):  # fmt: skip
        assert text in flat, text
