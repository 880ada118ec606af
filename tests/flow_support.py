"""Helpers for the flow-control, idle-timeout and compression tests.

Clients that can stop reading (a raw socket, aiohttp's client, the ``websockets``
client) behind one small interface, a flood that fills a socket's write buffer,
and a frame reader that keeps the RSV bits, which :func:`tests.wire.read_frame`
drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import AsyncIterator
from typing import Any, Final, NamedTuple, Protocol

import aiohttp
import websockets.asyncio.client

from aiohttp_upgrade import ServerWebSocket

from .wire import (
    OP_BINARY,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Raw,
    connect,
    read_header_and_payload,
)

__all__ = [
    "CHUNK",
    "CLIENT_KINDS",
    "Client",
    "Frame",
    "deflate_message",
    "fill",
    "inflate_message",
    "numbered",
    "open_client",
    "read_raw_frame",
    "sequence_number",
]

CHUNK: Final = 64 * 1024
"""Size of one flood message: large enough to fill kernel buffers quickly."""

CLIENT_KINDS: Final = ("raw", "aiohttp", "websockets")

# A flood gives up after this many bytes without seeing the code it waits for.
_FLOOD_CAP: Final = 256 * 1024 * 1024


class Frame(NamedTuple):
    """One server frame as read off the wire."""

    first: int
    """The first header byte: FIN, RSV1-3 and the opcode."""
    payload: bytes

    @property
    def opcode(self) -> int:
        return self.first & 0x0F

    @property
    def rsv1(self) -> bool:
        return bool(self.first & 0x40)


async def read_raw_frame(reader: asyncio.StreamReader) -> Frame:
    """Read one frame and keep its first header byte (FIN, RSV bits, opcode)."""
    return Frame(*await read_header_and_payload(reader))


def deflate_message(data: bytes, *, level: int = 6) -> bytes:
    """Compress one message as a permessage-deflate client would (RFC 7692 7.2.1)."""
    z = zlib.compressobj(level, zlib.DEFLATED, -15)
    out = z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def inflate_message(data: bytes) -> bytes:
    """Decompress one message compressed without context takeover (RFC 7692 7.2.2)."""
    return zlib.decompressobj(-15).decompress(data + b"\x00\x00\xff\xff")


def numbered(seq: int, size: int = CHUNK) -> bytes:
    """A binary message of ``size`` bytes that starts with its sequence number."""
    return seq.to_bytes(8, "big") + bytes(size - 8)


def sequence_number(message: bytes) -> int:
    return int.from_bytes(message[:8], "big")


async def fill(
    ws: ServerWebSocket[Any], until: int, start: int = 0
) -> list[tuple[int, int]]:
    """Send numbered messages until ``send`` returns ``until`` (-1 or 0).

    Between sends the loop turns once, so the per-turn flush writes to the
    transport and in-process clients read until their own flow control stops
    them. Returns ``(sequence number, send code)`` for every send.
    """
    sent: list[tuple[int, int]] = []
    seq = start
    while seq - start < _FLOOD_CAP // CHUNK:
        code = ws.send(numbered(seq))
        sent.append((seq, code))
        seq += 1
        if code == until:
            return sent
        # Not synchronisation: one loop turn lets the per-turn flush write.
        await asyncio.sleep(0)
    raise AssertionError(f"send never returned {until} in {_FLOOD_CAP} bytes")


class Client(Protocol):
    """A client that reads only when asked to, and answers pings while it reads."""

    async def receive(self) -> bytes: ...
    async def receive_text(self) -> str: ...
    async def send_text(self, text: str) -> None: ...


class _RawClient:
    def __init__(self, raw: Raw) -> None:
        self.raw = raw

    async def _data_frame(self) -> Frame:
        while True:
            frame = await read_raw_frame(self.raw.reader)
            if frame.opcode == OP_PING:  # answer as every client must
                await self.raw.send(OP_PONG, frame.payload)
            elif frame.opcode != OP_PONG:
                return frame

    async def receive(self) -> bytes:
        frame = await self._data_frame()
        assert frame.opcode == OP_BINARY, frame
        return frame.payload

    async def receive_text(self) -> str:
        frame = await self._data_frame()
        assert frame.opcode == OP_TEXT, frame
        return frame.payload.decode()

    async def send_text(self, text: str) -> None:
        await self.raw.send(OP_TEXT, text.encode())


class _AiohttpClient:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def receive(self) -> bytes:
        return await self.ws.receive_bytes()

    async def receive_text(self) -> str:
        return await self.ws.receive_str()

    async def send_text(self, text: str) -> None:
        await self.ws.send_str(text)


class _WebsocketsClient:
    def __init__(self, ws: websockets.asyncio.client.ClientConnection) -> None:
        self.ws = ws

    async def receive(self) -> bytes:
        message = await self.ws.recv()
        assert isinstance(message, bytes)
        return message

    async def receive_text(self) -> str:
        message = await self.ws.recv()
        assert isinstance(message, str)
        return message

    async def send_text(self, text: str) -> None:
        await self.ws.send(text)


@contextlib.asynccontextmanager
async def open_client(kind: str, url: str, port: int) -> AsyncIterator[Client]:
    """Connect a client of ``kind`` (one of :data:`CLIENT_KINDS`) that only reads on demand."""
    if kind == "raw":
        raw = await connect(port)
        try:
            yield _RawClient(raw)
        finally:
            await raw.close()
    elif kind == "aiohttp":
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url, max_msg_size=0) as ws,
        ):
            yield _AiohttpClient(ws)
    elif kind == "websockets":
        async with websockets.asyncio.client.connect(
            url, compression=None, max_size=None, ping_interval=None
        ) as ws:
            yield _WebsocketsClient(ws)
    else:
        raise ValueError(f"unknown client kind {kind!r}")
