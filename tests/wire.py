"""Wire-level helpers for tests: raw handshakes, masked client frames, server frames.

Use these with ``asyncio.open_connection`` where a real client library would hide
what is on the wire (bad handshakes, empty Close frames, abrupt disconnects).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from multidict import CIMultiDict

__all__ = [
    "KEY",
    "OMIT",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONTINUATION",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "HTTPResponse",
    "Raw",
    "client_frame",
    "close_payload",
    "connect",
    "handshake",
    "mask_payload",
    "parse_close",
    "random_key",
    "read_frame",
    "read_response",
    "request_bytes",
]

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
"""The sample ``Sec-WebSocket-Key`` of RFC 6455 1.3 (accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=)."""

Headers = Mapping[str, str] | Iterable[tuple[str, str]]

OMIT = "\x00omit"
"""A header value for :func:`request_bytes`: leave that standard header out."""


@dataclass
class HTTPResponse:
    """A parsed HTTP response head, plus the body when it had a Content-Length."""

    status: int
    headers: CIMultiDict[str]
    body: bytes


@dataclass
class Raw:
    """An open raw connection after a successful (101) handshake."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    response: HTTPResponse

    async def send(
        self, opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0
    ) -> None:
        """Write one masked client frame and drain."""
        self.writer.write(client_frame(opcode, payload, fin=fin, rsv=rsv))
        await self.writer.drain()

    async def recv(self) -> tuple[bool, int, bytes]:
        """Read one server frame."""
        return await read_frame(self.reader)

    async def close(self) -> None:
        """Close the TCP connection (no Close frame) and wait until it is closed."""
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def mask_payload(payload: bytes, mask: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``mask`` (RFC 6455 5.3)."""
    return bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def client_frame(
    opcode: int,
    payload: bytes = b"",
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
    mask_key: bytes | None = None,
) -> bytes:
    """Build one frame as a client sends it: masked unless ``mask=False``.

    ``rsv`` is the three RSV bits as a number 0-7 (4 = RSV1, 2 = RSV2, 1 = RSV3).
    """
    first = (0x80 if fin else 0) | (rsv & 0x7) << 4 | opcode & 0x0F
    length = len(payload)
    mask_bit = 0x80 if mask else 0
    if length < 126:
        header = bytes((first, mask_bit | length))
    elif length < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, length)
    if not mask:
        return header + payload
    key = mask_key if mask_key is not None else os.urandom(4)
    return header + key + mask_payload(payload, key)


def close_payload(code: int | None = None, reason: str | bytes = b"") -> bytes:
    """Return a Close frame body: empty for ``code=None``, else code + reason."""
    if code is None:
        return b""
    data = reason.encode() if isinstance(reason, str) else reason
    return struct.pack("!H", code) + data


def parse_close(payload: bytes) -> tuple[int | None, bytes]:
    """Split a Close body into (code or None when empty, raw reason bytes)."""
    if not payload:
        return None, b""
    return struct.unpack("!H", payload[:2])[0], payload[2:]


async def read_header_and_payload(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Read one frame; return its first header byte (FIN, RSV, opcode) and payload.

    Raises asyncio.IncompleteReadError when the connection ends first.
    """
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    mask = await reader.readexactly(4) if second & 0x80 else None
    payload = await reader.readexactly(length)
    if mask is not None:
        payload = mask_payload(payload, mask)
    return first, payload


async def read_frame(reader: asyncio.StreamReader) -> tuple[bool, int, bytes]:
    """Read one frame from ``reader``; return (fin, opcode, unmasked payload).

    Raises asyncio.IncompleteReadError when the connection ends first.
    """
    first, payload = await read_header_and_payload(reader)
    return bool(first & 0x80), first & 0x0F, payload


def request_bytes(
    path: str = "/ws",
    headers: Headers | None = None,
    *,
    method: str = "GET",
    host: str = "127.0.0.1",
    websocket: bool = True,
) -> bytes:
    """Return an HTTP/1.1 request head.

    With ``websocket=True`` the standard handshake headers come first (Upgrade,
    Connection, Sec-WebSocket-Key, Sec-WebSocket-Version); entries in ``headers``
    with the same name replace them, and other entries are added. Use
    :data:`OMIT` as a value to leave a standard header out.
    """
    items: CIMultiDict[str] = CIMultiDict()
    items["Host"] = host
    if websocket:
        items["Upgrade"] = "websocket"
        items["Connection"] = "Upgrade"
        items["Sec-WebSocket-Key"] = KEY
        items["Sec-WebSocket-Version"] = "13"
    extra = headers.items() if isinstance(headers, Mapping) else (headers or ())
    replaced: set[str] = set()
    for name, value in extra:
        if name.lower() in items and name.lower() not in replaced:
            del items[name]
            replaced.add(name.lower())
        if value is not OMIT:
            items.add(name, value)
    lines = [f"{method} {path} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in items.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def read_response(reader: asyncio.StreamReader) -> HTTPResponse:
    """Read an HTTP response head, and its body when it has a Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers: CIMultiDict[str] = CIMultiDict()
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers.add(name.strip(), value.strip())
    body = b""
    if status != 101 and "Content-Length" in headers:
        body = await reader.readexactly(int(headers["Content-Length"]))
    return HTTPResponse(status, headers, body)


async def handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    path: str = "/ws",
    headers: Headers | None = None,
    *,
    method: str = "GET",
    host: str = "127.0.0.1",
    websocket: bool = True,
) -> HTTPResponse:
    """Send a request head (see :func:`request_bytes`) and read the response."""
    writer.write(
        request_bytes(path, headers, method=method, host=host, websocket=websocket)
    )
    await writer.drain()
    return await read_response(reader)


async def connect(
    port: int,
    path: str = "/ws",
    headers: Headers | None = None,
    host: str = "127.0.0.1",
) -> Raw:
    """Open a TCP connection and complete a WebSocket handshake (asserts 101)."""
    reader, writer = await asyncio.open_connection(host, port)
    response = await handshake(reader, writer, path, headers, host=host)
    if response.status != 101:
        writer.close()
        await writer.wait_closed()
        raise AssertionError(f"handshake answered {response.status}: {response.body!r}")
    return Raw(reader, writer, response)


def random_key() -> str:
    """A fresh valid ``Sec-WebSocket-Key``."""
    return base64.b64encode(os.urandom(16)).decode()
