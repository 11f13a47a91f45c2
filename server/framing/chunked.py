"""HTTP/1.1 chunked transfer coding (RFC 9112, 7.1): one body piece as one chunk, the bytes
aiohttp's ``StreamWriter`` puts on the wire for a ``write()`` on a chunked response."""

from __future__ import annotations


def http_chunk(data: bytes) -> bytes:
    """``data`` as one chunk: its size in hex, CRLF, the data, CRLF. Empty data is no chunk
    (a zero-size chunk would end the body): ``b""``, as aiohttp writes nothing for it."""
    if not data:
        return b""
    return b"%x\r\n" % len(data) + data + b"\r\n"
