"""How much a rate-limited socket may read at once. Pure.

A read is parsed and dispatched whole before its socket's budget is checked:
a 256 KiB read is ~43,000 empty frames, each answered and dispatched. So the
:class:`~aiohttp_upgrade._ratelimit.ReadLimiter` hands its socket a shorter view
of the server's buffer (``Connection.read_into``) after each read: at most the
bytes left in the byte budget, and 6 bytes (the smallest client frame) per frame
left plus a header and the rest of a frame being read; at least
:data:`READ_FLOOR`. Such a read holds at most two or three frames past the
budget. Without a ``rate_limit`` none of this runs.
"""

from __future__ import annotations

from typing import Final

__all__ = ["READ_FLOOR", "fit_read", "read_size"]

_MIN_FRAME: Final = 6  # a client frame: 2 header bytes and a 4-byte masking key
_HEADER: Final = 14  # the longest client frame header

READ_FLOOR: Final = _MIN_FRAME + _HEADER
"""The smallest read of a limited socket (bytes): it always progresses."""


def read_size(bytes_left: float, frames_left: float, needed: int, full: int) -> int:
    """The next read's size: ``bytes_left`` and ``frames_left`` in the budget
    (either may be infinite or negative), ``needed`` payload bytes still to come
    of the frame being read, ``full`` the buffer's size."""
    left = min(bytes_left, _MIN_FRAME * frames_left + _HEADER + needed)
    if left >= full:
        return full
    return READ_FLOOR if left < READ_FLOOR else int(left)


def fit_read(
    frames: int,
    frame_mark: float,
    received: int,
    byte_mark: float,
    needed: int,
    full: int,
) -> tuple[int, float, float]:
    """The next read's size for a reader at ``frames`` and ``received`` bytes
    (its budget runs dry at the marks), and the frame and byte counts up to which
    its reads stay ``full``: below both, it need not size them again."""
    size = read_size(byte_mark - received, frame_mark - frames, needed, full)
    if size < full:  # sized down: size every read until full again
        return size, -1.0, -1.0
    return size, frame_mark - (full - _HEADER) / _MIN_FRAME, byte_mark - full
