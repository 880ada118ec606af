"""Reads into one reused buffer per server (``asyncio.BufferedProtocol``).

Every read of a server's sockets lands in the same buffer, which the next read
(of any of its sockets) overwrites: whatever the parser keeps across reads (an
incomplete header, a partial frame, its masking key, fragments) must be a copy.
A tap put between a socket's transport and its connection after the take-over
(``transport.set_protocol``, asyncio's public API) passes every read on, records
the buffers handed out and lets a test wait until the server has read some
bytes, so that a frame provably reaches the parser cut where the test cut it.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from aiohttp_upgrade._compat import compiled_mask, ready_callbacks
from aiohttp_upgrade._frames import xor_mask
from aiohttp_upgrade._parser import FrameParser

from .conftest import ConnectRaw, Echo, OpenedEcho, Served, ServeFactory, connection_of
from .test_parser import Sink
from .wire import (
    OP_BINARY,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Raw,
    client_frame,
    read_frame,
    read_response,
    request_bytes,
)


class ReadTap(asyncio.BufferedProtocol):
    """Passes every read on to the server's protocol, recording the buffers it
    hands out and the bytes read; a plain ``asyncio.Protocol`` gets a copy."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.buffers: list[Any] = []
        self.received = 0
        self._own = memoryview(bytearray(1 << 18))
        self._current: Any = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def get_buffer(self, sizehint: int) -> Any:
        inner = self.inner
        buffer = (
            inner.get_buffer(sizehint) if hasattr(inner, "get_buffer") else self._own
        )
        self.buffers.append(buffer)
        self._current = buffer
        return buffer

    def buffer_updated(self, nbytes: int) -> None:
        inner = self.inner
        if hasattr(inner, "get_buffer"):
            inner.buffer_updated(nbytes)
        else:
            assert isinstance(inner, asyncio.Protocol)
            inner.data_received(bytes(self._current[:nbytes]))
        self.received += nbytes
        for count, waiter in self._waiters:
            if self.received >= count and not waiter.done():
                waiter.set_result(None)

    async def read(self, count: int) -> None:
        """Wait until the server has read ``count`` bytes in all through the tap."""
        if self.received < count:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append((count, waiter))
            async with asyncio.timeout(10):
                await waiter
            self._waiters.remove((count, waiter))

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()  # type: ignore[no-any-return]

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class Tapped:
    """A raw client whose server side reads through a :class:`ReadTap`."""

    def __init__(self, raw: Raw, tap: ReadTap) -> None:
        self.raw = raw
        self.tap = tap
        self.sent = 0

    async def write(self, data: bytes) -> None:
        """Write ``data`` and wait until the server has read all of it."""
        self.raw.writer.write(data)
        self.sent += len(data)
        await self.tap.read(self.sent)


async def open_tapped(
    serve: ServeFactory, connect_raw: ConnectRaw, count: int
) -> tuple[Served, list[Tapped]]:
    """Serve an echo and open ``count`` raw clients (closed when the test ends),
    each read through a tap."""
    handler = OpenedEcho(max_payload_length=1 << 20)
    served = await serve(handler)
    clients = []
    for index in range(count):
        raw = await connect_raw(served.port)
        # One echo first: the socket has been taken over once it answers.
        await raw.send(OP_BINARY, b"taken over")
        assert await raw.recv() == (True, OP_BINARY, b"taken over")
        transport = connection_of(handler.opened[index]).transport
        tap = ReadTap(transport.get_protocol())
        transport.set_protocol(tap)
        clients.append(Tapped(raw, tap))
    return served, clients


def underlying(buffer: Any) -> Any:
    """The object a buffer (a memoryview or the buffer itself) reads into."""
    return buffer.obj if isinstance(buffer, memoryview) else buffer


async def test_every_read_of_every_socket_goes_into_the_same_buffer(
    serve: ServeFactory, connect_raw: ConnectRaw
) -> None:
    """The server hands out one buffer for two reads of a socket and for reads of two sockets."""
    _, clients = await open_tapped(serve, connect_raw, 2)
    for client in clients:
        for word in (b"one", b"two"):
            await client.write(client_frame(OP_BINARY, word))
            assert await client.raw.recv() == (True, OP_BINARY, word)
    buffers = [buffer for client in clients for buffer in client.tap.buffers]
    assert len(buffers) >= 4
    assert len({id(underlying(buffer)) for buffer in buffers}) == 1


def conversation(index: int) -> tuple[bytes, list[tuple[bool, int, bytes]]]:
    """One socket's frames (126-length text, binary, a fragmented text message,
    a ping) and the replies they get; the payloads differ per socket."""
    text = (f"socket {index} é€𝄞 " * 8).encode()
    frames = (
        client_frame(OP_TEXT, text)
        + client_frame(OP_BINARY, bytes([index]) * 5)
        + client_frame(OP_TEXT, "fräg".encode(), fin=False)
        + client_frame(OP_CONTINUATION, f"ment{index}".encode())
        + client_frame(OP_PING, b"p%d" % index)
    )
    replies = [
        (True, OP_TEXT, text),
        (True, OP_BINARY, bytes([index]) * 5),
        (True, OP_TEXT, f"frägment{index}".encode()),
        (True, OP_PONG, b"p%d" % index),
    ]
    return frames, replies


async def converse_split_at_every_offset(client: Tapped, index: int) -> None:
    frames, replies = conversation(index)
    assert len(frames) > 150
    for cut in range(1, len(frames)):
        await client.write(frames[:cut])
        await client.write(frames[cut:])
        for reply in replies:
            assert await client.raw.recv() == reply, cut


async def test_frames_cut_at_every_offset_survive_other_sockets_reads(
    serve: ServeFactory, connect_raw: ConnectRaw
) -> None:
    """Frames cut at every offset arrive intact while the other sockets' reads overwrite the shared buffer."""
    _, clients = await open_tapped(serve, connect_raw, 6)
    await asyncio.gather(
        *(
            converse_split_at_every_offset(client, index)
            for index, client in enumerate(clients)
        )
    )


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY], ids=["text", "binary"])
async def test_a_big_frame_over_many_reads_survives_other_sockets_reads(
    serve: ServeFactory, connect_raw: ConnectRaw, opcode: int
) -> None:
    """A 300 KiB frame read in 4 KiB pieces arrives intact while another socket's messages are read between its pieces."""
    _, (big, small) = await open_tapped(serve, connect_raw, 2)
    if opcode == OP_TEXT:
        payload = ("κόσμε €𝄞 ascii " * 12000).encode()[: 300 * 1024]
        payload = payload.decode(errors="ignore").encode()  # whole characters
    else:
        payload = os.urandom(300 * 1024)
    data = client_frame(opcode, payload)
    for start in range(0, len(data), 4096):
        await big.write(data[start : start + 4096])
        word = os.urandom(8)
        await small.write(client_frame(OP_BINARY, word))
        assert await small.raw.recv() == (True, OP_BINARY, word)
    assert await big.raw.recv() == (True, opcode, payload)


@pytest.mark.parametrize(
    "cut",
    [1, 2, 4, 6, 9, 31],
    ids=["in-header", "before-key", "in-key", "before-payload", "in-payload", "next"],
)
async def test_a_frame_cut_between_the_handshake_and_the_first_read_arrives(
    serve: ServeFactory, cut: int
) -> None:
    """A frame whose start comes in the handshake's read (aiohttp's leftover) and its rest in the socket's first read is delivered whole."""
    served = await serve(Echo())
    first = client_frame(OP_TEXT, b"handshake tail")  # 20 bytes
    frames = first + client_frame(OP_BINARY, b"the first read")
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(request_bytes() + frames[:cut])
    response = await read_response(reader)
    assert response.status == 101
    if cut > len(first):
        assert await read_frame(reader) == (True, OP_TEXT, b"handshake tail")
    writer.write(frames[cut:])
    if cut <= len(first):
        assert await read_frame(reader) == (True, OP_TEXT, b"handshake tail")
    assert await read_frame(reader) == (True, OP_BINARY, b"the first read")
    writer.close()
    await writer.wait_closed()


@pytest.mark.parametrize(
    "mask", [compiled_mask or xor_mask, xor_mask], ids=["aiohttp-mask", "pure-mask"]
)
def test_the_parser_keeps_no_view_of_a_read(mask: Any) -> None:
    """Fed views of one buffer that is overwritten after each feed, cut at every offset, the parser reports every frame intact."""
    frames, _ = conversation(3)
    frames += client_frame(OP_BINARY, os.urandom(70000))  # 127-length header
    expected = Sink()
    FrameParser(expected, 1 << 20, mask=mask).feed(frames)
    assert len(expected.events) == 5
    buffer = memoryview(bytearray(len(frames)))
    small = len(frames) - 70010  # every cut in the small frames, some in the big
    for cut in [*range(1, small + 20), *range(small + 20, len(frames), 997)]:
        sink = Sink()
        parser = FrameParser(sink, 1 << 20, mask=mask)
        for piece in (frames[:cut], frames[cut:]):
            buffer[: len(piece)] = piece
            parser.feed(buffer[: len(piece)])
            buffer[: len(piece)] = bytes(len(piece))  # the next read overwrites it
        assert sink.events == expected.events, cut


def test_on_uvloop_every_read_is_answered_with_the_turns_flush() -> None:
    """On uvloop, whose ready queue Python cannot see, ready_callbacks() is never empty: every read's answers wait for the per-turn flush."""
    uvloop = pytest.importorskip("uvloop")
    loop = uvloop.new_event_loop()
    try:
        ready = ready_callbacks(loop)
        assert ready is not None
        assert len(ready) > 0
    finally:
        loop.close()
