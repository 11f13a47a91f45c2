"""bench/floor.py end to end, tiny: every variant serves every connection exactly its
frames (the client checks every byte, in order), and the JSON line has every field."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from bench.floor import FIELDS, VARIANTS, Reader, frames_of, min_frame_bytes, token_frame_bytes
from bench.lab import REPO
from server.events import TokenEncoder
from server.framing.sse import sse_frame


def test_quick_plan_runs_every_variant_exactly() -> None:
    argv = [sys.executable, "-m", "bench.floor", "--quick", "--pin"]
    out = subprocess.run(argv, cwd=REPO, capture_output=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr.decode()
    (line,) = out.stdout.decode().splitlines()
    doc = json.loads(line)["floor"]
    assert (doc["streams"], doc["frames"], doc["window"], doc["net"]) == (3, 20, 0.5, "loopback")
    assert doc["frame_bytes"] == token_frame_bytes()
    assert doc["frames_per_s_due"] == 150.0
    assert list(doc["variants"]) == list(VARIANTS)
    for name, v in doc["variants"].items():
        assert set(FIELDS) <= set(v), name
        assert v["exact"] is True, (name, v["errors"])
        assert v["errors"] == []
        assert v["connections"] == 3
        assert v["frames_in_window"] > 0


def test_frame_size_is_a_real_token_event() -> None:
    stream = "A" * 16  # the hub's ids: secrets.token_urlsafe(12)
    assert token_frame_bytes() == len(sse_frame(TokenEncoder(stream)(100, " token")))


def test_frames_are_exact_and_numbered() -> None:
    frames = frames_of(3, 40)
    assert [len(f) for f in frames] == [40, 40, 40]
    assert frames[2] == b"id: 000002\nevent: token\ndata: " + b"x" * 8 + b"\n\n"
    assert len(frames_of(1, min_frame_bytes())[0]) == min_frame_bytes()


def test_reader_flags_frames_out_of_order_and_short_bodies() -> None:
    async def feed(chunks: list[bytes], http: bool) -> Reader:
        frames = frames_of(2, 40)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        r = Reader(b"".join(frames), http, done)
        for c in chunks:
            r.data_received(c)
        r.connection_lost(None)
        return r

    f = frames_of(2, 40)
    ok = asyncio.run(feed([f[0][:7], f[0][7:] + f[1]], http=False))
    assert (ok.bad, ok.got) == (None, 80)
    swapped = asyncio.run(feed([f[1], f[0]], http=False))
    assert swapped.bad == "byte 0: frames out of order, wrong or extra"
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 80\r\n\r\n"
    http = asyncio.run(feed([head[:5], head[5:] + f[0], f[1]], http=True))
    assert (http.bad, http.got) == (None, 80)
    refused = asyncio.run(feed([b"HTTP/1.1 404 Not Found\r\n\r\n"], http=True))
    assert refused.bad == "status line b'HTTP/1.1 404 Not Found'"


def test_bad_arguments_get_one_line() -> None:
    argv = [sys.executable, "-m", "bench.floor", "--frame-bytes", "10"]
    out = subprocess.run(argv, cwd=REPO, capture_output=True, timeout=60, check=False)
    assert out.returncode == 2
    assert (
        out.stderr.decode() == f"bench.floor: --frame-bytes must be at least {min_frame_bytes()}\n"
    )
    argv = [sys.executable, "-m", "bench.floor", "--variants", "raw-shared,nope"]
    out = subprocess.run(argv, cwd=REPO, capture_output=True, timeout=60, check=False)
    assert out.returncode == 2
    assert out.stderr.decode() == (
        "bench.floor: unknown variants ['nope']; known: "
        "raw-shared, raw-tasks, aiohttp-tasks, syscall-only, c-send\n"
    )
    argv = [sys.executable, "-m", "bench.floor", "--rps"]
    out = subprocess.run(argv, cwd=REPO, capture_output=True, timeout=60, check=False)
    assert out.returncode == 2
    assert out.stderr.decode() == "bench.floor: --rps needs --veth and --pin\n"
