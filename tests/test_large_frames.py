"""Large frames over a real socket, arriving at the server in many small reads."""

from __future__ import annotations

import asyncio

import pytest

from .conftest import Echo, ServeFactory
from .wire import OP_BINARY, OP_TEXT, client_frame, connect

MEGABYTE = 1024 * 1024


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
    """A 1 MiB frame written in small TCP segments is delivered whole and unchanged."""
    served = await serve(Echo(max_payload_length=MEGABYTE))
    raw = await connect(served.port)
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
    await raw.close()
