"""The chunk framing (server/framing/chunked.py), table-tested against RFC 9112's grammar
and against aiohttp's own writer."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.http_writer import StreamWriter

from server.framing.chunked import http_chunk

TABLE = [
    (1, b"1"),
    (15, b"f"),
    (16, b"10"),
    (255, b"ff"),
    (256, b"100"),
    (4095, b"fff"),
    (4096, b"1000"),
    (65536, b"10000"),
]


@pytest.mark.parametrize(("size", "hex_size"), TABLE)
def test_http_chunk_frames_size_in_hex(size: int, hex_size: bytes) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    assert len(data) == size
    assert http_chunk(data) == hex_size + b"\r\n" + data + b"\r\n"


def test_empty_data_is_no_chunk() -> None:
    assert http_chunk(b"") == b""


class _Transport:
    def __init__(self) -> None:
        self.written = b""

    def write(self, data: bytes) -> None:
        self.written += data

    def writelines(self, chunks: list[bytes]) -> None:
        self.written += b"".join(chunks)

    def is_closing(self) -> bool:
        return False


class _Protocol:
    def __init__(self) -> None:
        self.transport = _Transport()


@pytest.mark.parametrize(("size", "hex_size"), TABLE)
def test_http_chunk_equals_aiohttp_writer(size: int, hex_size: bytes) -> None:
    """The same bytes aiohttp's StreamWriter writes for a chunked ``write()``."""
    protocol = _Protocol()
    loop = asyncio.new_event_loop()
    try:
        writer = StreamWriter(protocol, loop)  # type: ignore[arg-type]
        writer.enable_chunking()
        data = b"x" * size
        loop.run_until_complete(writer.write(data, drain=False))
    finally:
        loop.close()
    assert protocol.transport.written == http_chunk(data)
