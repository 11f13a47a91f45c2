"""Every Python and shell snippet of README.md, run against a live server: a README that
drifts from the code fails here.

How a snippet meets the test's server (declared once, here): the server is
``tokenwire serve`` on a free loopback port with a fast pace (``--tokens-per-s 2000
--ttft-ms 0``, so that a 256-token stream takes a fraction of a second); in every snippet
``:8080`` becomes ``:<that port>``, and ``TOKENWIRE_URL`` (the CLI's default ``--url``)
points at it. A Python snippet is saved as a script and run with this interpreter; a shell
snippet runs in ``bash -e -o pipefail`` with this environment's ``tokenwire`` first on
``PATH``. Both run in a temporary directory and must exit 0, print no traceback and print
what :data:`EXPECT` says. The few snippets that cannot run here are in :data:`NOT_RUN`,
each with its reason; an entry that matches no snippet fails too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.lab import REPO, Server, spawn_server, stop_server, wait_ready

README = REPO / "README.md"

#: The first line of each snippet that is not run, and why.
NOT_RUN = {
    "make run": (
        "builds .venv and serves until stopped; `make test` runs the suite this test is in"
    ),
    "pipx install .": ("installs the package: it would change the environment the tests run in"),
    "export TOKENWIRE_AUTH_TOKEN": (
        "serves on 0.0.0.0 until stopped; the tests listen on loopback only"
    ),
    "tokenwire serve": (
        "servers that run until stopped (the first is this test's own server; hf needs a "
        "model, openai a key or an upstream)"
    ),
    'redis-server --port 6379 --save "" --daemonize yes': (
        "a redis-server on the fixed port 6379 and servers that run until stopped; "
        "tests/test_cluster.py runs the same on free ports"
    ),
    "make bench": ("minutes of load; tests/test_bench_*.py run the harness on a tiny plan"),
}

#: Text that each run snippet (by its first line) must print on stdout.
EXPECT = {
    "# create a stream; the answer holds its id and one link per transport": [
        '"links":{"sse":"/api/streams/',
        '"type":"done"',
        "event: done",
    ],
    "curl -N localhost:8080/v1/chat/completions": ["data: [DONE]"],
    "from openai import OpenAI": ["The time to first token is what a user feels most."],
    "# the Responses API, then Anthropic's Messages API": [
        "6 response.output_text.delta",
        "response.incomplete",
    ],
    "import asyncio": ["'transport': 'ws', 'tokens': 50"],
    "from clients import SyncClient": ["'transport': 'sse', 'tokens': 20"],
    'tokenwire stream "hello" --transport ws --stats': [
        "over ws, digest ok: True",
        "identical text on every transport",
        "True\n",
        '{"type":"stats",',
    ],
}


@dataclass(frozen=True)
class Snippet:
    lang: str
    line: int
    code: str

    @property
    def first_line(self) -> str:
        return self.code.splitlines()[0]


def snippets() -> list[Snippet]:
    """Every fenced ``python`` and ``sh`` block of the README, with its line number."""
    text = README.read_text(encoding="utf-8")
    out = []
    for m in re.finditer(r"^```(python|sh)\n(.*?)^```$", text, re.M | re.S):
        out.append(Snippet(m.group(1), text[: m.start()].count("\n") + 1, m.group(2)))
    return out


def key(snippet: Snippet) -> str:
    """The table key of a snippet: its first line without its comment (a comment line stays
    whole), up to its body for curl, up to its first ``=`` for an ``export``."""
    first = snippet.first_line
    if not first.startswith("#"):
        first = first.split("  #")[0].rstrip()
    if first.startswith("curl -N"):
        first = first.split(" -d ")[0]
    if first.startswith("export "):
        first = first.split("=")[0]
    return first


SNIPPETS = snippets()


def test_every_snippet_is_run_or_listed_with_a_reason() -> None:
    keys = [key(s) for s in SNIPPETS]
    assert len(set(keys)) == len(keys)
    assert set(NOT_RUN) <= set(keys), set(NOT_RUN) - set(keys)
    assert set(EXPECT) == set(keys) - set(NOT_RUN)
    assert len(NOT_RUN) <= len(keys) // 2


@pytest.fixture(scope="module")
def live() -> Iterator[Server]:
    """``tokenwire serve`` on a free loopback port until the module's tests are done."""
    server = spawn_server(64, 4096, 0, ["--tokens-per-s", "2000", "--ttft-ms", "0"])
    assert server.log_path is not None
    try:
        wait_ready(server, 15.0)
        yield server
    finally:
        assert stop_server(server) == 0, server.log_path.read_text()
        server.log_path.unlink()


@pytest.mark.parametrize(
    "snippet",
    [s for s in SNIPPETS if key(s) not in NOT_RUN],
    ids=lambda s: f"{s.lang}-line{s.line}",
)
def test_snippet_runs(snippet: Snippet, live: Server, tmp_path: Path) -> None:
    port = live.base.rsplit(":", 1)[1]
    code = snippet.code.replace(":8080", f":{port}")
    bin_dir = str(Path(sys.executable).parent)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "PYTHONPATH": str(REPO),
        "HOME": str(tmp_path),
        "COLUMNS": "100",
        "TOKENWIRE_URL": live.base,
    }
    if snippet.lang == "python":
        script = tmp_path / "snippet.py"
        script.write_text(code)
        argv = [sys.executable, str(script)]
    else:
        argv = ["bash", "-e", "-o", "pipefail", "-c", code]
    proc = subprocess.run(
        argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    for expected in EXPECT[key(snippet)]:
        assert expected in proc.stdout, (expected, proc.stdout)
    if snippet.lang == "sh" and "compare.csv" in code:
        rows = (tmp_path / "compare.csv").read_text().splitlines()
        assert rows[0].startswith("transport,runs,tokens,")
        assert [r.split(",")[:3] for r in rows[1:]] == [
            [t, "3", "256"] for t in ("sse", "ws", "poll", "chunked")
        ]


def test_readme_names_the_license() -> None:
    assert (REPO / "LICENSE").read_text().startswith("MIT License\n")
    assert 'license = "MIT"' in (REPO / "pyproject.toml").read_text()
    assert os.path.getsize(REPO / "LICENSE") > 1000
