"""Bun's compression modes for permessage-deflate, and counters for tests. Pure.

Bun's ``perMessageDeflate: {compress, decompress}`` takes ``"disable"``,
``"shared"``, ``"dedicated"`` or a size, ``"3KB"`` to ``"256KB"``; its runtime,
uWebSockets, maps them to ``CompressOptions``: ``SHARED_COMPRESSOR`` (one zlib
stream per event loop, every message compressed on its own) or
``DEDICATED_COMPRESSOR_<size>`` (one stream per socket, with context takeover), the
size naming what the stream costs: ``2^(windowBits + 2) + 2^(memLevel + 9)`` bytes.
:data:`SIZES` holds the same windowBits and memLevel.

For ``decompress``, uWebSockets sizes decompressors by their window only
(``DEDICATED_DECOMPRESSOR_512B`` to ``_32KB``); here a size means the window of the
compressor of that name (``"16KB"``: 2 KiB, 11 bits), so that ``compress`` and
``decompress`` read alike, and ``"dedicated"`` the full 32 KiB window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ._errors import InvalidOptionError

__all__ = [
    "DEDICATED",
    "DEDICATED_STREAMS",
    "DISABLED",
    "MODE_NAMES",
    "SHARED",
    "SIZES",
    "Mode",
    "StreamCount",
    "parse_mode",
]

SIZES: Final = {
    "3KB": (9, 1),
    "4KB": (9, 2),
    "8KB": (10, 3),
    "16KB": (11, 4),
    "32KB": (12, 5),
    "64KB": (13, 6),
    "128KB": (14, 7),
    "256KB": (15, 8),
}
"""Each dedicated size: (windowBits, memLevel), as uWebSockets' DEDICATED_COMPRESSOR_*."""

MODE_NAMES: Final = ("disable", "shared", "dedicated", *SIZES)


@dataclass(frozen=True, slots=True)
class Mode:
    """One direction's mode: ``window_bits`` -1 disabled, 0 shared, else dedicated
    with that LZ77 window (9-15) and zlib ``mem_level``."""

    window_bits: int
    mem_level: int = 8

    @property
    def dedicated(self) -> bool:
        return self.window_bits > 0


DISABLED: Final = Mode(-1)
SHARED: Final = Mode(0)
DEDICATED: Final = Mode(15, 8)
_MODES: Final = {
    "disable": DISABLED,
    "shared": SHARED,
    "dedicated": DEDICATED,
    **{name: Mode(*size) for name, size in SIZES.items()},
}


def parse_mode(direction: str, value: object) -> Mode:
    """The mode that ``value`` names for ``direction`` ("compress" or "decompress").

    Raises:
        InvalidOptionError: for ``per_message_deflate.<direction>`` when ``value``
            is neither a bool nor one of :data:`MODE_NAMES` (exact spelling).
    """
    if value is True:
        return SHARED
    if value is False:
        return DISABLED
    mode = _MODES.get(value) if isinstance(value, str) else None
    if mode is None:
        names = ", ".join(f'"{name}"' for name in MODE_NAMES)
        raise InvalidOptionError(
            f"per_message_deflate.{direction}",
            f"must be True, False or one of {names}; got {value!r}",
        )
    return mode


class StreamCount:
    """How many dedicated zlib streams were created (this process): they are made
    lazily, at a socket's first compressed message each way; tests check that."""

    __slots__ = ("compressors", "decompressors")

    def __init__(self) -> None:
        self.compressors = 0
        self.decompressors = 0

    def snapshot(self) -> tuple[int, int]:
        """``(compressors, decompressors)`` created so far."""
        return (self.compressors, self.decompressors)


DEDICATED_STREAMS: Final = StreamCount()
