"""Hostile bytes after a real handshake: each closes only its own connection.

Every case writes its bytes, followed by a valid masked text frame, in one write on a
raw socket. The server must answer with exactly one Close frame carrying the code RFC
6455 asks for (7.4.1: 1002 protocol error, 1007 invalid payload, 1009 too big), close
the TCP connection, log the event once, ignore the trailing frame, and keep serving a
well-behaved client connected alongside.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import tracemalloc
import zlib
from typing import Any

import aiohttp
import pytest

from aiohttp_upgrade import ServerWebSocket

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

PROTOCOL_ERROR = 1002
INVALID_PAYLOAD = 1007
MESSAGE_TOO_BIG = 1009

MAX_PAYLOAD = 64 * 1024
"""The handler's ``max_payload_length`` in these tests."""

MASK = b"\x01\x02\x03\x04"
TRAILER_TEXT = b"after the error"
TRAILER = client_frame(OP_TEXT, TRAILER_TEXT)
"""A valid frame sent right behind the hostile bytes; it must never be echoed."""
DEFLATE = {"Sec-WebSocket-Extensions": "permessage-deflate"}


def long_header(opcode: int, length: int) -> bytes:
    """A masked frame header with a 64-bit length field holding ``length``."""
    return struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length) + MASK


def deflate(data: bytes) -> bytes:
    """Compress ``data`` as one permessage-deflate message (RFC 7692 7.2.1)."""
    compressor = zlib.compressobj(wbits=-15)
    body = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert body.endswith(b"\x00\x00\xff\xff")
    return body[:-4]


def text_fragments(*parts: bytes) -> bytes:
    """A text message split into ``parts``: a first frame, then continuations."""
    frames = [client_frame(OP_TEXT, parts[0], fin=len(parts) == 1)]
    for i, part in enumerate(parts[1:], start=2):
        frames.append(client_frame(OP_CONTINUATION, part, fin=i == len(parts)))
    return b"".join(frames)


def close_frame(payload: bytes) -> bytes:
    return client_frame(OP_CLOSE, payload)


PLAIN_CASES = [
    # Garbage straight after the 101.
    pytest.param(
        b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", PROTOCOL_ERROR, id="garbage-http"
    ),
    pytest.param(
        bytes.fromhex("160301020001000001fc0303") + bytes(32),
        PROTOCOL_ERROR,
        id="garbage-tls-hello",
    ),
    pytest.param(b"\xff" * 32, PROTOCOL_ERROR, id="garbage-all-ones"),
    pytest.param(bytes(range(256)), PROTOCOL_ERROR, id="garbage-byte-ramp"),
    # Reserved bits without an extension that defines them (RFC 6455 5.2).
    pytest.param(client_frame(OP_TEXT, b"hi", rsv=4), PROTOCOL_ERROR, id="rsv1"),
    pytest.param(client_frame(OP_TEXT, b"hi", rsv=2), PROTOCOL_ERROR, id="rsv2"),
    pytest.param(client_frame(OP_TEXT, b"hi", rsv=1), PROTOCOL_ERROR, id="rsv3"),
    pytest.param(client_frame(OP_PING, b"", rsv=7), PROTOCOL_ERROR, id="rsv-all-ping"),
    # Reserved opcodes (RFC 6455 5.2).
    pytest.param(client_frame(0x3, b"x"), PROTOCOL_ERROR, id="opcode-0x3"),
    pytest.param(client_frame(0x7, b"x"), PROTOCOL_ERROR, id="opcode-0x7"),
    pytest.param(client_frame(0xB, b"x"), PROTOCOL_ERROR, id="opcode-0xb"),
    pytest.param(client_frame(0xF, b""), PROTOCOL_ERROR, id="opcode-0xf"),
    pytest.param(
        client_frame(OP_TEXT, b"a", fin=False) + client_frame(0x5, b""),
        PROTOCOL_ERROR,
        id="opcode-0x5-mid-message",
    ),
    # Payload lengths (RFC 6455 5.2: the most significant bit must be 0; 7.4.1: 1009).
    pytest.param(long_header(OP_BINARY, 1 << 63), PROTOCOL_ERROR, id="length-2**63"),
    pytest.param(
        long_header(OP_BINARY, (1 << 64) - 1), PROTOCOL_ERROR, id="length-2**64-1"
    ),
    pytest.param(
        long_header(OP_BINARY, (1 << 63) - 1), MESSAGE_TOO_BIG, id="length-2**63-1"
    ),
    pytest.param(
        long_header(OP_TEXT, MAX_PAYLOAD + 1), MESSAGE_TOO_BIG, id="length-max+1"
    ),
    pytest.param(
        client_frame(OP_BINARY, bytes(MAX_PAYLOAD // 2 + 1), fin=False)
        + long_header(OP_CONTINUATION, MAX_PAYLOAD // 2),
        MESSAGE_TOO_BIG,
        id="fragments-sum-max+1",
    ),
    # Client frames must be masked (RFC 6455 5.1).
    pytest.param(
        client_frame(OP_TEXT, b"hi", mask=False), PROTOCOL_ERROR, id="unmasked-text"
    ),
    pytest.param(
        client_frame(OP_PING, b"", mask=False), PROTOCOL_ERROR, id="unmasked-ping"
    ),
    pytest.param(
        client_frame(OP_TEXT, b"ok") + client_frame(OP_TEXT, b"no", mask=False),
        PROTOCOL_ERROR,
        id="unmasked-second-frame",
    ),
    # Control frames (RFC 6455 5.5): never fragmented, at most 125 bytes.
    pytest.param(
        client_frame(OP_PING, b"p", fin=False), PROTOCOL_ERROR, id="fragmented-ping"
    ),
    pytest.param(
        client_frame(OP_PONG, b"p", fin=False), PROTOCOL_ERROR, id="fragmented-pong"
    ),
    pytest.param(
        client_frame(OP_CLOSE, close_payload(1000), fin=False),
        PROTOCOL_ERROR,
        id="fragmented-close",
    ),
    pytest.param(
        client_frame(OP_TEXT, b"a", fin=False) + client_frame(OP_PING, b"p", fin=False),
        PROTOCOL_ERROR,
        id="fragmented-ping-mid-message",
    ),
    pytest.param(client_frame(OP_PING, bytes(126)), PROTOCOL_ERROR, id="ping-126"),
    pytest.param(
        close_frame(close_payload(1000, b"x" * 124)), PROTOCOL_ERROR, id="close-126"
    ),
    # Fragmentation order (RFC 6455 5.4).
    pytest.param(
        client_frame(OP_CONTINUATION, b"x"), PROTOCOL_ERROR, id="continuation-first"
    ),
    pytest.param(
        client_frame(OP_CONTINUATION, b"x", fin=False),
        PROTOCOL_ERROR,
        id="continuation-first-not-final",
    ),
    pytest.param(
        client_frame(OP_TEXT, b"ok") + client_frame(OP_CONTINUATION, b"x"),
        PROTOCOL_ERROR,
        id="continuation-after-complete-message",
    ),
    pytest.param(
        client_frame(OP_TEXT, b"a", fin=False) + client_frame(OP_BINARY, b"b"),
        PROTOCOL_ERROR,
        id="new-message-mid-message",
    ),
    # Text must be UTF-8 (RFC 6455 8.1), also across fragments, failing fast.
    pytest.param(client_frame(OP_TEXT, b"\xff"), INVALID_PAYLOAD, id="utf8-0xff"),
    pytest.param(
        client_frame(OP_TEXT, b"\xed\xa0\x80"), INVALID_PAYLOAD, id="utf8-surrogate"
    ),
    pytest.param(
        text_fragments(b"caf\xc3", b"("), INVALID_PAYLOAD, id="utf8-split-bad-tail"
    ),
    pytest.param(
        text_fragments(b"\xf4", b"\x90\x80\x80"),
        INVALID_PAYLOAD,
        id="utf8-split-above-U+10FFFF",
    ),
    pytest.param(
        text_fragments(b"ok", b"\xe2", b"\x82"),
        INVALID_PAYLOAD,
        id="utf8-truncated-at-message-end",
    ),
    pytest.param(
        client_frame(OP_TEXT, b"\xc0\xaf", fin=False),
        INVALID_PAYLOAD,
        id="utf8-fail-fast-first-fragment",
    ),
    pytest.param(
        client_frame(OP_TEXT, "κ".encode(), fin=False)
        + client_frame(OP_CONTINUATION, "ό".encode(), fin=False)
        + client_frame(OP_CONTINUATION, b"\xf4\x90", fin=False),
        INVALID_PAYLOAD,
        id="utf8-fail-fast-third-fragment",
    ),
    # Close frames (RFC 6455 5.5.1, 7.4.1): a 2-byte code from the allowed ranges.
    pytest.param(close_frame(b"\x03"), PROTOCOL_ERROR, id="close-1-byte-body"),
    *(
        pytest.param(
            close_frame(close_payload(code)), PROTOCOL_ERROR, id=f"close-code-{code}"
        )
        for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000)
    ),
    pytest.param(
        close_frame(close_payload(1000, b"\xff")),
        INVALID_PAYLOAD,
        id="close-reason-bad-utf8",
    ),
]

DEFLATE_CASES = [
    pytest.param(
        client_frame(OP_TEXT, deflate(b"ab"), fin=False, rsv=4)
        + client_frame(OP_CONTINUATION, b"", rsv=4),
        PROTOCOL_ERROR,
        id="rsv1-on-continuation",
    ),
    pytest.param(
        client_frame(OP_PING, deflate(b"p"), rsv=4), PROTOCOL_ERROR, id="rsv1-on-ping"
    ),
    pytest.param(
        client_frame(OP_TEXT, deflate(b"a"), rsv=6), PROTOCOL_ERROR, id="rsv1-and-rsv2"
    ),
    pytest.param(
        client_frame(OP_BINARY, b"\xff\xff\xff\xff", rsv=4),
        INVALID_PAYLOAD,
        id="corrupt-deflate",
    ),
    pytest.param(
        client_frame(OP_BINARY, deflate(bytes(MAX_PAYLOAD + 1)), rsv=4),
        MESSAGE_TOO_BIG,
        id="inflates-past-max",
    ),
    pytest.param(
        client_frame(OP_BINARY, deflate(bytes(256 * MAX_PAYLOAD)), rsv=4),
        MESSAGE_TOO_BIG,
        id="deflate-bomb",
    ),
    pytest.param(
        client_frame(OP_TEXT, deflate(b"caf\xc3("), rsv=4),
        INVALID_PAYLOAD,
        id="inflates-to-bad-utf8",
    ),
]


@pytest.fixture
async def echo_server(serve: ServeFactory) -> Served:
    return await serve(Echo(max_payload_length=MAX_PAYLOAD, per_message_deflate=True))


async def read_until_eof(raw: Raw) -> list[tuple[bool, int, bytes]]:
    """Read server frames until the server closes the connection."""
    frames = []
    async with asyncio.timeout(10):
        while True:
            try:
                frames.append(await raw.recv())
            except asyncio.IncompleteReadError as exc:
                assert exc.partial == b""
                return frames


async def read_close_code(raw: Raw) -> int | None:
    """Read until EOF; assert the last frame was the only Close and nothing echoed the
    trailer; return the Close code."""
    frames = await read_until_eof(raw)
    opcodes = [opcode for _, opcode, _ in frames]
    assert opcodes[-1:] == [OP_CLOSE]
    assert opcodes.count(OP_CLOSE) == 1
    assert all(payload != TRAILER_TEXT for _, _, payload in frames)
    code, _ = parse_close(frames[-1][2])
    return code


async def assert_hostile_closed_alone(
    served: Served,
    client_session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    hostile: bytes,
    expected: int,
    headers: dict[str, str] | None = None,
) -> None:
    caplog.set_level(logging.INFO)
    async with client_session.ws_connect(served.url) as bystander:
        raw = await connect(served.port, headers=headers)
        extensions = raw.response.headers.get("Sec-WebSocket-Extensions", "")
        assert ("permessage-deflate" in extensions) == (headers is not None)
        raw.writer.write(hostile + TRAILER)
        assert await read_close_code(raw) == expected
        await raw.close()

        await bystander.send_str("still here")
        assert await bystander.receive_str(timeout=10) == "still here"
        assert served.server.pending_websockets == 1

    ours = [r for r in caplog.records if r.name.startswith("aiohttp_upgrade")]
    assert len(ours) == 1, [r.getMessage() for r in ours]
    assert ours[0].levelno == logging.INFO
    assert f"({expected})" in ours[0].getMessage()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize(("hostile", "expected"), PLAIN_CASES)
async def test_hostile_bytes_close_only_that_socket(
    echo_server: Served,
    client_session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    hostile: bytes,
    expected: int,
) -> None:
    """The hostile socket gets one Close with the RFC's code; the bystander echoes."""
    await assert_hostile_closed_alone(
        echo_server, client_session, caplog, hostile, expected
    )


@pytest.mark.parametrize(("hostile", "expected"), DEFLATE_CASES)
async def test_hostile_compressed_frames_close_only_that_socket(
    echo_server: Served,
    client_session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    hostile: bytes,
    expected: int,
) -> None:
    """With permessage-deflate negotiated, bad compressed frames close with the right code."""
    await assert_hostile_closed_alone(
        echo_server, client_session, caplog, hostile, expected, headers=DEFLATE
    )


async def test_hostile_socket_never_reaches_the_message_hook(
    echo_server: Served,
) -> None:
    """Valid frames ahead of the bad one are echoed; nothing behind it is."""
    raw = await connect(echo_server.port)
    raw.writer.write(
        client_frame(OP_TEXT, b"first")
        + client_frame(OP_TEXT, b"x", mask=False)
        + client_frame(OP_TEXT, b"second")
    )
    frames = await read_until_eof(raw)
    await raw.close()
    assert [(opcode, payload[:2]) for _, opcode, payload in frames] == [
        (OP_TEXT, b"fi"),
        (OP_CLOSE, struct.pack("!H", PROTOCOL_ERROR)),
    ]


async def test_many_hostile_sockets_at_once_leave_the_bystander_working(
    echo_server: Served, client_session: aiohttp.ClientSession
) -> None:
    """Fifty hostile sockets closed concurrently do not disturb an open echo socket."""
    cases = [case.values[0] for case in PLAIN_CASES]
    async with client_session.ws_connect(echo_server.url) as bystander:
        raws = await asyncio.gather(*(connect(echo_server.port) for _ in range(50)))
        for i, raw in enumerate(raws):
            hostile = cases[i % len(cases)]
            assert isinstance(hostile, bytes)
            raw.writer.write(hostile + TRAILER)
        codes = await asyncio.gather(*(read_close_code(raw) for raw in raws))
        await asyncio.gather(*(raw.close() for raw in raws))
        assert set(codes) <= {PROTOCOL_ERROR, INVALID_PAYLOAD, MESSAGE_TOO_BIG}
        await bystander.send_bytes(b"still here")
        assert await bystander.receive_bytes(timeout=10) == b"still here"


@pytest.mark.parametrize(
    ("trigger", "expected"),
    [
        pytest.param(
            client_frame(OP_TEXT, b"x", mask=False), PROTOCOL_ERROR, id="protocol-error"
        ),
        pytest.param(client_frame(OP_TEXT, b"close me"), 4000, id="ws-close"),
    ],
)
async def test_client_still_sending_gets_the_close_code(
    serve: ServeFactory, trigger: bytes, expected: int
) -> None:
    """A client still sending when the server closes reads the Close, not a reset."""

    class CloseOnRequest(Echo):
        def message(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
            if message == "close me":
                ws.close(4000)

    served = await serve(CloseOnRequest())
    raw = await connect(served.port)
    # More than the server reads at once: it decides to close with input unread.
    backlog = client_frame(OP_BINARY, bytes(60_000)) * 20
    raw.writer.write(trigger + backlog)
    await raw.writer.drain()
    frames = await read_until_eof(raw)
    await raw.close()
    assert [(op, parse_close(payload)[0]) for _, op, payload in frames] == [
        (OP_CLOSE, expected)
    ]


async def test_tiny_fragments_cost_about_their_payload_in_memory(
    serve: ServeFactory,
) -> None:
    """A message sent as 1-byte fragments takes the server memory near its payload
    size, not tens of bytes per fragment."""
    served = await serve(Echo())
    raw = await connect(served.port)
    fragments = 50_000
    frame = client_frame(OP_CONTINUATION, b"x", fin=False, mask_key=MASK)
    tracemalloc.start()
    try:
        raw.writer.write(client_frame(OP_BINARY, b"x", fin=False))
        for _ in range(fragments // 10_000):
            raw.writer.write(frame * 10_000)
            await raw.writer.drain()
        raw.writer.write(client_frame(OP_CONTINUATION, b"x"))
        _, opcode, payload = await raw.recv()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (opcode, len(payload)) == (OP_BINARY, fragments + 2)
    assert peak < 8 * fragments, f"{peak / fragments:.0f} bytes per 1-byte fragment"
    await raw.close()
