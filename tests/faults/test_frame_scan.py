"""``framing.ws.ClientFrameScan`` (sans-I/O): which client frames are masked, whatever the
chunks the bytes arrive in. The connection guard closes with 1002 on the first that is not
(``test_slowloris.py::test_an_unmasked_client_frame_closes_with_1002``)."""

from __future__ import annotations

import pytest

from server.framing.ws import ClientFrameScan, ws_close_frame


def frame(size: int, *, masked: bool = True, opcode: int = 1) -> bytes:
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head = bytes([0x80 | opcode, mask_bit | size])
    elif size < 65536:
        head = bytes([0x80 | opcode, mask_bit | 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, mask_bit | 127]) + size.to_bytes(8, "big")
    return head + (b"\x01\x02\x03\x04" if masked else b"") + b"\x80" * size


SIZES = (0, 1, 125, 126, 127, 65535, 65536)


def scan(data: bytes, step: int) -> int | None:
    """The offset of the chunk in which the scan said "unmasked", or None."""
    s = ClientFrameScan()
    for i in range(0, len(data), step):
        if not s.feed(data[i : i + step]):
            return i
    return None


@pytest.mark.parametrize("step", [1, 2, 3, 13, 4096, 10**6])
def test_masked_frames_of_every_length_class_pass(step: int) -> None:
    data = b"".join(frame(n) for n in SIZES) + frame(5, opcode=9) + frame(2, opcode=10)
    if step == 1:
        data = b"".join(frame(n) for n in SIZES if n < 300)  # (byte by byte: keep it small)
    assert scan(data, step) is None


@pytest.mark.parametrize("step", [1, 2, 7, 4096, 10**6])
@pytest.mark.parametrize("size", [0, 5, 126, 70000])
def test_the_first_unmasked_frame_is_found_where_it_starts(step: int, size: int) -> None:
    before = frame(3) + frame(300)
    data = before + frame(size, masked=False) + frame(4)
    found = scan(data, step)
    assert found is not None
    # Found in the chunk holding the unmasked frame's second byte (the mask bit).
    assert found <= len(before) + 1 < found + step


def test_close_frame() -> None:
    assert ws_close_frame(1002, b"bad") == b"\x88\x05\x03\xeabad"
    assert len(ws_close_frame(1002, b"x" * 200)) == 2 + 2 + 123
