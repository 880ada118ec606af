"""The bytes a publish crosses a broker as: pure functions, no I/O, both ways.

One envelope carries one or more messages of one topic (the topic is the
channel's name, not part of the envelope), all from one process::

    envelope := magic "AU" (2 bytes) | version 1 (1 byte) | origin (8 bytes) | record+
    record   := flags (1 byte) | length (4 bytes, big-endian) | payload (length bytes)
    flags    := opcode (low 4 bits: 1 text, 2 binary) | 0x80 if the publish asked
                to compress; every other bit zero

:func:`encode_envelope` builds one envelope, :func:`pack_envelopes` packs a
batch of publishes into as few envelopes as their topics and a size limit allow,
and :func:`decode_envelope` reads one back.

The origin is a random id per broker, so that a process can recognise its own
messages coming back. Nothing is ever unpickled or evaluated: a decoder checks
every byte it relies on, and an envelope that is malformed anywhere (bad magic,
unknown version or flags, a length past the end, a text payload that is not
UTF-8) is rejected as a whole.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Sequence
from typing import Final

from ._frames import OP_BINARY, OP_TEXT

__all__ = [
    "COMPRESS_FLAG",
    "HEADER_SIZE",
    "MAGIC",
    "ORIGIN_SIZE",
    "RECORD_HEADER_SIZE",
    "MalformedEnvelope",
    "Message",
    "Record",
    "decode_envelope",
    "encode_envelope",
    "envelope_header",
    "new_origin",
    "pack_envelopes",
    "record_header",
]

MAGIC: Final = b"AU\x01"  # the magic and version 1
ORIGIN_SIZE: Final = 8
HEADER_SIZE: Final = len(MAGIC) + ORIGIN_SIZE
RECORD_HEADER_SIZE: Final = 5
COMPRESS_FLAG: Final = 0x80
_OPCODE_MASK: Final = 0x0F

_record = struct.Struct("!BI")
_unpack_record = _record.unpack_from

# The record headers of the two opcodes without and with the compress flag.
_VALID_FLAGS: Final = frozenset(
    (OP_TEXT, OP_BINARY, OP_TEXT | COMPRESS_FLAG, OP_BINARY | COMPRESS_FLAG)
)

Record = tuple[int, bytes, bool]
"""(opcode, payload, compress)"""

Message = tuple[str, int, bytes, bool]
"""(topic, opcode, payload, compress): one publish, before packing"""


class MalformedEnvelope(ValueError):
    """Bytes that are not a valid envelope (a forged or corrupted message)."""


def new_origin() -> bytes:
    """A random origin id for one broker."""
    return os.urandom(ORIGIN_SIZE)


def envelope_header(origin: bytes) -> bytes:
    """The header that starts every envelope from ``origin``."""
    if len(origin) != ORIGIN_SIZE:
        raise ValueError(f"origin must be {ORIGIN_SIZE} bytes")
    return MAGIC + origin


def record_header(opcode: int, length: int, compress: bool) -> bytes:
    """The 5 bytes before a payload of ``length`` bytes."""
    return _record.pack(opcode | COMPRESS_FLAG if compress else opcode, length)


def encode_envelope(origin: bytes, records: Iterable[Record]) -> bytes:
    """One envelope from ``origin`` carrying ``records`` in order.

    Raises:
        ValueError: ``origin`` is not ``ORIGIN_SIZE`` bytes.
    """
    parts = [envelope_header(origin)]
    for opcode, payload, compress in records:
        parts += (record_header(opcode, len(payload), compress), payload)
    return b"".join(parts)


def pack_envelopes(
    header: bytes, messages: Sequence[Message], max_bytes: int
) -> tuple[list[tuple[str, bytes]], int]:
    """Pack ``messages`` in order into ``(topic, envelope)`` pairs: one envelope
    per run of consecutive messages to one topic, cut where it would pass
    ``max_bytes`` (a single larger message still goes, alone).

    Args:
        header: :func:`envelope_header` of the sender's origin.
        messages: the publishes, oldest first.
        max_bytes: the size an envelope of several messages stays within.

    Returns:
        The envelopes, and the payload bytes of ``messages`` in all.
    """
    envelopes: list[tuple[str, bytes]] = []
    topic = ""
    parts: list[bytes] = []
    size = 0
    total = 0
    for next_topic, opcode, payload, compress in messages:
        length = len(payload)
        total += length
        if next_topic != topic or (size + length > max_bytes and len(parts) > 1):
            if parts:
                envelopes.append((topic, b"".join(parts)))
            topic = next_topic
            parts = [header]
            size = HEADER_SIZE
        parts.append(record_header(opcode, length, compress))
        parts.append(payload)
        size += RECORD_HEADER_SIZE + length
    if parts:
        envelopes.append((topic, b"".join(parts)))
    return envelopes, total


def decode_envelope(data: bytes) -> tuple[bytes, list[Record]]:
    """Return ``(origin, records)``; raise MalformedEnvelope if anything is off."""
    end = len(data)
    if end < HEADER_SIZE + RECORD_HEADER_SIZE or not data.startswith(MAGIC):
        raise MalformedEnvelope("not an aiohttp-upgrade envelope (version 1)")
    origin = data[len(MAGIC) : HEADER_SIZE]
    records: list[Record] = []
    pos = HEADER_SIZE
    while pos < end:
        if end - pos < RECORD_HEADER_SIZE:
            raise MalformedEnvelope("truncated record header")
        flags, length = _unpack_record(data, pos)
        if flags not in _VALID_FLAGS:
            raise MalformedEnvelope(f"invalid record flags 0x{flags:02x}")
        pos += RECORD_HEADER_SIZE
        stop = pos + length
        if stop > end:
            raise MalformedEnvelope("record length past the end")
        payload = data[pos:stop]
        opcode = flags & _OPCODE_MASK
        if opcode == OP_TEXT:
            try:
                payload.decode()
            except UnicodeDecodeError:
                raise MalformedEnvelope("text record is not UTF-8") from None
        records.append((opcode, payload, flags > 0x7F))
        pos = stop
    return origin, records
