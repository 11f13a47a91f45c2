"""``tokenwire serve`` / ``python -m tokenwire serve`` as a real process: flags, env, SIGTERM."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import socket
import subprocess
import sys

import aiohttp
import pytest

from server.app import exposure_notice
from server.settings import FLAG_GROUPS, FLAG_HELP, Settings
from server.settings import from_args as settings_from_args
from tests.readers import read
from tokenwire.cli import build_parser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENWIRE_GRACE_S", "3.5")
    monkeypatch.setenv("TOKENWIRE_PORT", "9000")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    ns = build_parser().parse_args(
        ["serve", "--port", "9001", "--source", "openai", "--max-tokens-cap", "100"]
    )
    s = settings_from_args(ns)
    assert (s.port, s.grace_s, s.source, s.max_tokens_cap) == (9001, 3.5, "openai", 100)
    assert s.base_url == "http://127.0.0.1:1/v1"
    assert s.enabled_sources == ("synthetic", "openai")
    assert s.openai_model == "gpt-4o-mini"


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="grace_s must be >= 0, got -1"):
        Settings(grace_s=-1)
    with pytest.raises(ValueError, match="TOKENWIRE_PORT: not a number: 'x'"):
        Settings.from_env({"TOKENWIRE_PORT": "x"})
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--source", "nope"])


async def test_process_serves_and_stops_gracefully_on_sigterm() -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tokenwire",
        "serve",
        "--port",
        str(port),
        "--grace-s",
        "30",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            async with asyncio.timeout(20):
                while True:
                    try:
                        async with session.get(f"{base}/healthz") as resp:
                            assert await resp.json() == {"status": "ok", "live_streams": 0}
                            break
                    except aiohttp.ClientConnectorError:
                        await asyncio.sleep(0.05)
            async with session.post(
                f"{base}/api/streams",
                json={"prompt": "x", "max_tokens": 4000, "params": {"tokens_per_s": 20}},
            ) as resp:
                sid = (await resp.json())["id"]
            reader = asyncio.create_task(read(session, base, "sse", sid))
            await asyncio.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            events = await reader
            async with asyncio.timeout(20):
                code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0
    assert events[-1]["type"] == "error"
    assert events[-1]["code"] == "shutdown"
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert proc.stdout is not None
    out = (await proc.stdout.read()).decode()
    assert f"tokenwire serving on http://127.0.0.1:{port}" in out
    assert "Traceback" not in out


# -- failing fast and kindly: one line on stderr, an exit status, never a traceback --------


def run_serve(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """``tokenwire serve ARGS`` as a process that must fail; its status and stderr."""
    base = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ".", "HOME": "/nonexistent"}
    proc = subprocess.run(
        [sys.executable, "-m", "tokenwire", "serve", *args],
        env=base | (env or {}),
        capture_output=True,
        text=True,
        timeout=10,  # "did not hang" (the hub's retries took 54 s), not a speed figure
        check=False,
    )
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    return proc.returncode, proc.stderr


def test_serve_on_a_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = run_serve("--port", str(port))
    assert code == 1
    assert err.splitlines()[0] == (
        f"tokenwire: 127.0.0.1:{port} is already in use (another server?): stop it, or pick "
        "another --port"
    )


def test_serve_openai_without_a_key() -> None:
    code, err = run_serve("--source", "openai", "--port", str(free_port()))
    assert code == 1
    assert err == (
        "tokenwire: source openai needs an API key: --api-key or OPENAI_API_KEY (a local "
        "OpenAI-compatible server needs none: --base-url or OPENAI_BASE_URL)\n"
    )


def test_serve_hf_without_a_model() -> None:
    code, err = run_serve("--source", "hf", "--port", str(free_port()))
    assert code == 1
    assert err == (
        "tokenwire: source hf needs a model: --model (TOKENWIRE_MODEL), a local model "
        "directory or a hub id such as openai-community/gpt2\n"
    )


def test_exposure_notice_says_what_remote_clients_get() -> None:
    """Listening beyond loopback without ``--allowed-hosts`` is said at start-up (tested on
    the notice itself: the tests listen on loopback only)."""
    assert exposure_notice(Settings()) is None
    assert exposure_notice(Settings(host="localhost")) is None
    assert exposure_notice(Settings(host="0.0.0.0", allowed_hosts="example.org")) is None
    assert exposure_notice(Settings(host="0.0.0.0")) == (
        "listening on 0.0.0.0 without --allowed-hosts: requests for any Host name are answered "
        "(no DNS-rebinding check) and there is no --auth-token, so anyone who reaches the port "
        "can create, read and cancel streams; set --allowed-hosts to the names clients use, "
        "and --auth-token"
    )
    assert exposure_notice(Settings(host="::", auth_token="t")) == (
        "listening on :: without --allowed-hosts: requests for any Host name are answered "
        "(no DNS-rebinding check) and every API route needs the --auth-token; set "
        "--allowed-hosts to the names clients use, and --auth-token"
    )


def test_serve_help_has_a_section_and_a_sentence_for_every_flag() -> None:
    fields = [f.name for f in dataclasses.fields(Settings)]
    grouped = [name for _, _, names in FLAG_GROUPS for name in names if name in fields]
    assert sorted(grouped) == sorted(fields)  # each once, none under "other"
    for name in fields:
        sentence = FLAG_HELP[name]
        assert sentence[0].isupper() or sentence.split(":")[0] in ("hf", "openai"), name
        assert sentence.endswith("."), name
        assert len(sentence.split()) >= 5, name  # a sentence, not the flag's name again
    text = (
        build_parser().parse_args(["serve"])
        and subprocess.run(
            [sys.executable, "-m", "tokenwire", "serve", "--help"],
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ".", "COLUMNS": "100"},
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    )
    titles = [
        line[:-1] for line in text.splitlines() if line and line[0] != " " and line[-1] == ":"
    ]
    assert titles == [
        "options",
        "listening",
        "sources",
        "synthetic pacing",
        "caps",
        "lifetimes",
        "WebSocket",
        "connections",
        "security",
        "store and processes",
    ]
    assert "--grace-s GRACE_S     Seconds a stream may go without a reader before it is" in text
    assert "AUTH_TOKEN" in text
    assert "(default: None)" not in text.split("--auth-token AUTH_TOKEN")[1].split("--")[0]
