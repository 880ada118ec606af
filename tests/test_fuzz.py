"""Property tests: random frame sequences against one live server.

One server per test serves every example; a well-behaved client stays connected
alongside the whole time. Random input, valid or not, must never take the server
down, leak a socket, or disturb the bystander; valid input, however it is fragmented
and split across TCP writes, must come back echoed in order.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import zlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiohttp_upgrade import PerMessageDeflate
from aiohttp_upgrade._closecode import is_valid_close_code

from .conftest import Echo, Served, ServeFactory
from .wire import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Raw,
    client_frame,
    close_payload,
    connect,
    parse_close,
)

MAX_PAYLOAD = 4096
"""The handler's ``max_payload_length``: small, so random lengths often exceed it."""

FUZZ_SETTINGS = settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
"""All examples share the test's server; that is the point, hence the health check."""

DEFLATE = {"Sec-WebSocket-Extensions": "permessage-deflate"}
ServerFrame = tuple[bool, int, bytes]

# -- strategies ---------------------------------------------------------------

opcodes = st.one_of(
    st.sampled_from([OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG]),
    st.integers(0, 15),
)
payloads = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=60).map(str.encode),
    st.integers(0, 5000).map(lambda code: code.to_bytes(2, "big")),
    st.builds(close_payload, st.integers(0, 5000), st.binary(max_size=10)),
)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """One frame with random header bits, mostly masked and mostly without RSV."""
    return client_frame(
        draw(opcodes),
        draw(payloads),
        fin=draw(st.booleans()),
        rsv=draw(st.one_of(st.just(0), st.integers(0, 7))),
        mask=draw(st.sampled_from([True, True, True, False])),
    )


@st.composite
def long_headers(draw: st.DrawFn) -> bytes:
    """A masked header declaring a length that is never sent in full."""
    length = draw(st.one_of(st.integers(126, 1 << 20), st.integers(0, (1 << 64) - 1)))
    first = (0x80 if draw(st.booleans()) else 0) | draw(opcodes)
    return bytes((first, 0x80 | 127)) + length.to_bytes(8, "big") + b"\x00" * 4


elements = st.one_of(
    frames(), frames(), frames(), long_headers(), st.binary(max_size=40)
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """Cut ``data`` at the given offsets (taken modulo its length, sorted)."""
    if not data:
        return []
    points = sorted({0, len(data), *(cut % len(data) for cut in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


messages = st.lists(
    st.one_of(st.text(max_size=300), st.binary(max_size=300)), min_size=1, max_size=6
)


def fragment(payload: bytes, cuts: list[int], opcode: int, rsv: int = 0) -> bytes:
    """One message as a first frame and continuations cut at ``cuts``."""
    parts = split(payload, cuts) or [b""]
    out = []
    for i, part in enumerate(parts):
        out.append(
            client_frame(
                opcode if i == 0 else OP_CONTINUATION,
                part,
                fin=i == len(parts) - 1,
                rsv=rsv if i == 0 else 0,
            )
        )
    return b"".join(out)


# -- helpers ------------------------------------------------------------------


async def send_in_pieces(raw: Raw, data: bytes, cuts: list[int]) -> None:
    for piece in split(data, cuts):
        raw.writer.write(piece)
        await raw.writer.drain()


async def read_to_eof(raw: Raw) -> list[ServerFrame]:
    """Read server frames until the server closes the connection."""
    frames: list[ServerFrame] = []
    async with asyncio.timeout(10):
        while True:
            try:
                frames.append(await raw.recv())
            except asyncio.IncompleteReadError as exc:
                assert exc.partial == b"", "connection ended inside a frame"
                return frames


def assert_well_formed(frames: list[ServerFrame]) -> None:
    """Server frames are final, use known opcodes, and a Close, if any, comes last."""
    for fin, opcode, _ in frames:
        assert fin
        assert opcode in (OP_TEXT, OP_BINARY, OP_PONG, OP_PING, OP_CLOSE)
    closes = [payload for _, opcode, payload in frames if opcode == OP_CLOSE]
    assert len(closes) <= 1
    if closes:
        assert frames[-1][1] == OP_CLOSE
        code, reason = parse_close(closes[0])
        assert code is None or is_valid_close_code(code)
        reason.decode("utf-8")


@pytest.fixture
async def served(serve: ServeFactory) -> Served:
    # The client keeps its context across messages: a dedicated decompressor.
    deflate = PerMessageDeflate(decompress="dedicated")
    return await serve(
        Echo(max_payload_length=MAX_PAYLOAD, per_message_deflate=deflate)
    )


@pytest.fixture
async def bystander(
    served: Served, client_session: aiohttp.ClientSession
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with client_session.ws_connect(served.url) as ws:
        yield ws


async def assert_bystander_echoes(
    bystander: aiohttp.ClientWebSocketResponse, served: Served, token: str
) -> None:
    await bystander.send_str(token)
    assert await bystander.receive_str(timeout=10) == token
    assert served.server.pending_websockets == 1


# -- properties -----------------------------------------------------------------

example_ids = itertools.count()


@FUZZ_SETTINGS
@given(
    sequence=st.lists(elements, max_size=8),
    cuts=st.lists(st.integers(0, 10_000), max_size=6),
    deflate=st.booleans(),
)
async def test_random_frames_never_hurt_the_server(
    served: Served,
    bystander: aiohttp.ClientWebSocketResponse,
    caplog: pytest.LogCaptureFixture,
    sequence: list[bytes],
    cuts: list[int],
    deflate: bool,
) -> None:
    """Any byte sequence ends in well-formed frames and a clean close; the bystander echoes."""
    caplog.set_level(logging.INFO)
    raw = await connect(served.port, headers=DEFLATE if deflate else None)
    await send_in_pieces(raw, b"".join(sequence), cuts)
    raw.writer.write_eof()
    frames = await read_to_eof(raw)
    await raw.close()
    assert_well_formed(frames)
    await assert_bystander_echoes(bystander, served, f"still here {next(example_ids)}")
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@FUZZ_SETTINGS
@given(
    sent=messages,
    fragment_cuts=st.lists(st.lists(st.integers(0, 400), max_size=4), max_size=6),
    write_cuts=st.lists(st.integers(0, 10_000), max_size=8),
    pings=st.lists(st.binary(max_size=125), max_size=3),
)
async def test_valid_fragmented_messages_echo_in_order(
    served: Served,
    bystander: aiohttp.ClientWebSocketResponse,
    sent: list[str | bytes],
    fragment_cuts: list[list[int]],
    write_cuts: list[int],
    pings: list[bytes],
) -> None:
    """Messages cut into fragments and TCP writes at random come back whole, in order."""
    raw = await connect(served.port)
    stream = []
    for i, message in enumerate(sent):
        cuts = fragment_cuts[i] if i < len(fragment_cuts) else []
        if isinstance(message, str):
            stream.append(fragment(message.encode(), cuts, OP_TEXT))
        else:
            stream.append(fragment(message, cuts, OP_BINARY))
        if i < len(pings):
            stream.append(client_frame(OP_PING, pings[i]))
    stream.append(client_frame(OP_CLOSE, close_payload(1000, "bye")))
    await send_in_pieces(raw, b"".join(stream), write_cuts)
    frames = await read_to_eof(raw)
    await raw.close()

    assert_well_formed(frames)
    echoed = [
        payload.decode() if opcode == OP_TEXT else payload
        for _, opcode, payload in frames
        if opcode in (OP_TEXT, OP_BINARY)
    ]
    assert echoed == sent
    assert [p for _, op, p in frames if op == OP_PONG] == pings[: len(sent)]
    assert frames[-1] == (True, OP_CLOSE, close_payload(1000, "bye"))
    await assert_bystander_echoes(bystander, served, f"still here {next(example_ids)}")


@FUZZ_SETTINGS
@given(
    sent=messages,
    fragment_cuts=st.lists(st.lists(st.integers(0, 400), max_size=4), max_size=6),
    write_cuts=st.lists(st.integers(0, 10_000), max_size=8),
)
async def test_valid_compressed_messages_echo_in_order(
    served: Served,
    bystander: aiohttp.ClientWebSocketResponse,
    sent: list[str | bytes],
    fragment_cuts: list[list[int]],
    write_cuts: list[int],
) -> None:
    """permessage-deflate messages with context takeover, fragmented at random, echo whole."""
    raw = await connect(served.port, headers=DEFLATE)
    assert "permessage-deflate" in raw.response.headers["Sec-WebSocket-Extensions"]
    compressor = zlib.compressobj(wbits=-15)
    stream = []
    for i, message in enumerate(sent):
        data = message.encode() if isinstance(message, str) else message
        body = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        cuts = fragment_cuts[i] if i < len(fragment_cuts) else []
        opcode = OP_TEXT if isinstance(message, str) else OP_BINARY
        stream.append(fragment(body[:-4], cuts, opcode, rsv=4))
    stream.append(client_frame(OP_CLOSE, close_payload(1000)))
    await send_in_pieces(raw, b"".join(stream), write_cuts)
    frames = await read_to_eof(raw)
    await raw.close()

    assert_well_formed(frames)
    echoed = [
        payload.decode() if opcode == OP_TEXT else payload
        for _, opcode, payload in frames
        if opcode in (OP_TEXT, OP_BINARY)
    ]
    assert echoed == sent
    await assert_bystander_echoes(bystander, served, f"still here {next(example_ids)}")
