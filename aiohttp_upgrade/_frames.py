"""Building server frames (RFC 6455 section 5): pure functions, no I/O.

Server frames are never masked (RFC 6455 5.1), so a frame is a 2-10 byte header
followed by the payload; a frame built once can be written to any number of sockets.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONTINUATION",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "SHORT_HEADERS",
    "Mask",
    "build_close_frame",
    "build_frame",
    "truncate_reason",
    "unmask",
    "xor_mask",
]

OP_CONTINUATION: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA

FIN: Final = 0x80
RSV1: Final = 0x40

MAX_CONTROL_PAYLOAD: Final = 125  # RFC 6455 5.5
MAX_CLOSE_REASON: Final = MAX_CONTROL_PAYLOAD - 2

SHORT_HEADERS: Final = tuple(
    tuple(bytes((FIN | opcode, n)) for n in range(126)) for opcode in range(3)
)
"""``SHORT_HEADERS[opcode][length]``: the header of a final data frame (opcode 0 to
2) whose payload has at most 125 bytes."""

_pack_16 = struct.Struct("!BBH").pack
_pack_64 = struct.Struct("!BBQ").pack
_pack_code = struct.Struct("!H").pack


def frame_header(first_byte: int, length: int) -> bytes:
    """Return the header of an unmasked frame (RFC 6455 5.2)."""
    if length < 126:
        return bytes((first_byte, length))
    if length < 65536:
        return _pack_16(first_byte, 126, length)
    return _pack_64(first_byte, 127, length)


def build_frame(opcode: int, payload: bytes, rsv1: bool = False) -> bytes:
    """Return one complete final frame carrying ``payload``."""
    first = FIN | opcode | RSV1 if rsv1 else FIN | opcode
    return frame_header(first, len(payload)) + payload


def truncate_reason(reason: str) -> bytes:
    """Encode a close reason, cut to 123 bytes on a UTF-8 character boundary."""
    data = reason.encode("utf-8")
    if len(data) <= MAX_CLOSE_REASON:
        return data
    cut = MAX_CLOSE_REASON
    # Back up over continuation bytes (10xxxxxx) to the start of a character.
    while cut > 0 and data[cut] & 0xC0 == 0x80:
        cut -= 1
    return data[:cut]


def build_close_frame(code: int | None, reason: str = "") -> bytes:
    """Return a Close frame; ``code=None`` sends an empty body (RFC 6455 5.5.1)."""
    if code is None:
        return bytes((FIN | OP_CLOSE, 0))
    return build_frame(OP_CLOSE, _pack_code(code) + truncate_reason(reason))


# -- unmasking client frames --------------------------------------------------------

Mask = Callable[[bytes, bytearray], None]
"""``mask(key, data)`` XORs ``data`` in place with the 4-byte ``key`` repeated."""


def xor_mask(key: bytes, data: bytearray) -> None:
    """XOR ``data`` in place with ``key`` repeated (RFC 6455 5.3), in pure Python.

    The fallback :data:`Mask`; the socket layer passes aiohttp's compiled one.
    """
    n = len(data)
    repeated = (key * ((n >> 2) + 1))[:n]
    data[:] = (
        int.from_bytes(data, "little") ^ int.from_bytes(repeated, "little")
    ).to_bytes(n, "little")


def unmask(payload: bytes, key: bytes, mask: Mask = xor_mask) -> bytes:
    """Return ``payload`` XORed with the 4-byte ``key`` repeated (RFC 6455 5.3)."""
    data = bytearray(payload)
    mask(key, data)
    return bytes(data)
