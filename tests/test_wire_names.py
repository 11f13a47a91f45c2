"""The JS client declares the wire's names (``clients/js/names.js``) as ``wire`` does."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

import wire
from clients import JS_DIR

NAMES = ("TRANSPORTS", "EVENT_TYPES", "TERMINAL", "CONTROL_TYPES")


@pytest.fixture(scope="module")
def js_names() -> dict[str, list[str]]:
    node = shutil.which("node")
    assert node is not None, "the JS client's tests need node on PATH"
    script = (
        f"const names = await import({json.dumps((JS_DIR / 'names.js').as_uri())});"
        "console.log(JSON.stringify(names));"
    )
    out = subprocess.run(
        [node, "--input-type=module", "-e", script],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    result: dict[str, list[str]] = json.loads(out.stdout)
    return result


@pytest.mark.parametrize("name", NAMES)
def test_js_declares_what_wire_declares(js_names: dict[str, list[str]], name: str) -> None:
    assert js_names[name] == list(getattr(wire, name))


def test_js_declares_nothing_else(js_names: dict[str, list[str]]) -> None:
    assert sorted(js_names) == sorted(NAMES)
