"""Large frames over a real socket, arriving at the server in many small reads.

The reads are counted by a protocol put between the server's transport and the
library's protocol after the take-over (``transport.set_protocol``, asyncio's
public API), so the test proves the frame did reach the server in pieces.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .conftest import OpenedEcho, ServeFactory, connection_of
from .wire import OP_BINARY, OP_TEXT, client_frame, connect

MEGABYTE = 1024 * 1024


class ReadCounter(asyncio.BufferedProtocol):
    """Passes everything on to the server's protocol, counting the reads."""

    def __init__(self, inner: Any) -> None:
        assert hasattr(inner, "get_buffer")  # reads into a buffer
        self.inner = inner
        self.reads = 0

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.inner.get_buffer(sizehint))

    def buffer_updated(self, nbytes: int) -> None:
        self.reads += 1
        self.inner.buffer_updated(nbytes)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()  # type: ignore[no-any-return]

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


@pytest.mark.parametrize(
    ("opcode", "segment"),
    [(OP_BINARY, 100), (OP_TEXT, 100), (OP_BINARY, 4093)],
    ids=[
        "binary-100-byte-segments",
        "text-100-byte-segments",
        "binary-4093-byte-segments",
    ],
)
async def test_megabyte_frame_in_small_segments_arrives_intact(
    serve: ServeFactory, opcode: int, segment: int
) -> None:
    """A 1 MiB frame written in small TCP segments reaches the server in many reads and is delivered whole and unchanged."""
    handler = OpenedEcho(max_payload_length=MEGABYTE)
    served = await serve(handler)
    raw = await connect(served.port)
    await raw.send(OP_BINARY, b"taken over")
    assert await raw.recv() == (True, OP_BINARY, b"taken over")
    transport = connection_of(handler.opened[0]).transport
    counter = ReadCounter(transport.get_protocol())
    transport.set_protocol(counter)
    if opcode == OP_TEXT:
        unit = "κόσμε €𝄞 ascii "  # 1- to 4-byte characters, cut across segments
        payload = (unit * (MEGABYTE // len(unit.encode()))).encode()
    else:
        payload = bytes(i * 7 % 251 for i in range(MEGABYTE))
    data = client_frame(opcode, payload)
    for start in range(0, len(data), segment):
        raw.writer.write(data[start : start + segment])
        await raw.writer.drain()
        # Not synchronisation: one loop turn lets the server read this segment
        # on its own, so the frame reaches the parser in many reads.
        await asyncio.sleep(0)
    fin, echoed_opcode, echoed = await raw.recv()
    assert (fin, echoed_opcode, len(echoed)) == (True, opcode, len(payload))
    assert len(payload) > MEGABYTE - 32
    assert echoed == payload
    # asyncio's loop reads about two segments at a time, uvloop's one.
    segments = len(data) // segment
    assert counter.reads > segments // 4, (counter.reads, segments)
    await raw.close()
