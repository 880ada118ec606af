"""Redis Cluster hash slots: which of the 16384 slots a key or channel is in.

Redis Cluster hashes the key's *hash tag* (the text between the first ``{`` and
the next ``}``, when that is not empty) or else the whole key with CRC-16/XMODEM,
modulo 16384. Keys and sharded channels with one tag live on one slot, hence one
shard: that is how a topic's channel and its history keys stay together.
"""

from __future__ import annotations

import hashlib
from typing import Final

__all__ = ["SLOTS", "key_slot", "topic_tag"]

SLOTS: Final = 16384


def _table() -> tuple[int, ...]:
    """CRC-16/XMODEM (polynomial 0x1021, initial 0) of each byte value."""
    entries = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        entries.append(crc & 0xFFFF)
    return tuple(entries)


_TABLE: Final = _table()


def _crc16(data: bytes) -> int:
    crc = 0
    table = _TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[(crc >> 8) ^ byte]
    return crc


def key_slot(key: bytes) -> int:
    """The cluster slot of ``key`` (a key or a sharded channel)."""
    start = key.find(b"{")
    if start != -1:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return _crc16(key) % SLOTS


def topic_tag(name: bytes) -> bytes:
    """The part of a topic's keys and cluster channel that carries its hash tag:
    ``:{<topic>}:``, or, for a topic starting with ``}`` (where ``{}`` would be
    no tag), ``!{<16 hex digits of its SHA-1>}<topic>:``."""
    if name.startswith(b"}"):
        digest = hashlib.sha1(name, usedforsecurity=False).hexdigest()[:16]
        return b"!{" + digest.encode() + b"}" + name + b":"
    return b":{" + name + b"}:"
