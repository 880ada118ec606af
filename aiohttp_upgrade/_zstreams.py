"""permessage-deflate's zlib streams (RFC 7692 7.2): compressing, inflating. No I/O.

:class:`Compressor` and :class:`Inflater` work shared (no context takeover: one
object per thread, so per event loop, serves every socket, see
:func:`shared_streams`) or dedicated (one socket's, with context takeover). Either
way a zlib stream is made only when a message needs it.
"""

from __future__ import annotations

import threading
import zlib
from typing import Final

from ._closecode import CloseCode
from ._deflate_modes import DEDICATED_STREAMS
from ._errors import ProtocolError

__all__ = ["Compressor", "Inflater", "SharedStreams", "shared_streams"]

_TAIL: Final = b"\x00\x00\xff\xff"  # RFC 7692 7.2.1


class Compressor:
    """Compresses outgoing messages (RFC 7692 7.2.1).

    Shared (``no_context_takeover``): one per thread serves every socket, each
    message full-flushed so that it depends on no earlier one, and equal messages
    give equal bytes (``key``). Dedicated: one socket's, with context takeover.
    Either way the zlib stream is made at the first message.
    """

    __slots__ = ("_level", "_mem_level", "_wbits", "_zlib", "shareable")

    def __init__(
        self,
        window_bits: int,
        level: int,
        no_context_takeover: bool,
        mem_level: int = 8,
    ) -> None:
        self._wbits = -window_bits
        self._level = level
        self._mem_level = mem_level
        self._zlib: zlib._Compress | None = None
        self.shareable = no_context_takeover
        """True when output does not depend on earlier messages (one publish,
        many sockets)."""

    @property
    def key(self) -> tuple[int, int]:
        """Compressors with equal keys produce the same bytes for one message."""
        return (self._wbits, self._level)

    def compress(self, payload: bytes) -> bytes:
        """``payload`` deflated as one message, the ``00 00 ff ff`` tail removed."""
        z = self._zlib
        if z is None:
            z = self._zlib = zlib.compressobj(
                self._level, zlib.DEFLATED, self._wbits, self._mem_level
            )
            if not self.shareable:
                DEDICATED_STREAMS.compressors += 1
        # Z_FULL_FLUSH also resets the history: the next message starts afresh.
        data = z.compress(payload) + z.flush(
            zlib.Z_FULL_FLUSH if self.shareable else zlib.Z_SYNC_FLUSH
        )
        if data.endswith(_TAIL):
            data = data[:-4]
        return data or b"\x00"


# What may follow a final block (BFINAL set) once the tail is appended: the empty
# stored block that RFC 7692 7.2.1 step 2 adds, whose 3 header bits either fit in
# the final block's last octet (then only LEN/NLEN are left) or take one more
# octet (7.2.3.4's example); or nothing, when the final block is that stored block.
_AFTER_FINAL_BLOCK: Final = frozenset((b"", _TAIL, b"\x00" + _TAIL))


class Inflater:
    """Decompresses incoming messages without inflating past ``max_size`` bytes.

    Without context takeover (shared mode) every message is inflated by a new zlib
    stream, from an empty window: one inflater serves every socket of a thread, and
    a back-reference out of the message is 1007 (RFC 7692 7.2.2). With context
    takeover the socket's stream, of ``window_bits``, is made at its first message.

    A message may end its DEFLATE data with a final block (RFC 7692 7.2.3.4), which
    ends zlib's stream; anything after that block but the start of an empty stored
    block is 1007. With context takeover the LZ77 window holds every earlier message
    (RFC 7692 7.2.2), so the next message is then inflated by a new stream primed
    with the last window's worth inflated on this socket. A reference further back
    than any data the client sent is 1007, never wrong or empty data.
    """

    __slots__ = ("_max_size", "_no_context_takeover", "_wbits", "_window", "_zlib")

    def __init__(
        self, max_size: int, no_context_takeover: bool, window_bits: int = 15
    ) -> None:
        self._max_size = max_size
        self._no_context_takeover = no_context_takeover
        self._wbits = -window_bits
        self._zlib: zlib._Decompress | None = None
        # With context takeover: at least the last window inflated (at most twice
        # that, so appending a small message copies only that message).
        self._window: bytearray | None = None

    def inflate(self, payload: bytes | bytearray) -> bytes:
        """Return the message, or raise ProtocolError (1009 too big, 1007 corrupt)."""
        z = self._zlib
        if self._no_context_takeover:
            z = zlib.decompressobj(self._wbits)  # measured: cheaper than a copy
        elif z is None:
            z = self._zlib = zlib.decompressobj(self._wbits)
            self._window = bytearray()
            DEDICATED_STREAMS.decompressors += 1
        try:
            # A bounded output stops a zip bomb after max_size + 1 bytes.
            data = z.decompress(payload + _TAIL, self._max_size + 1)
        except zlib.error as exc:
            raise ProtocolError(
                CloseCode.INVALID_PAYLOAD, "invalid compressed data"
            ) from exc
        if len(data) > self._max_size or z.unconsumed_tail:
            raise ProtocolError(
                CloseCode.MESSAGE_TOO_BIG, "message too big after inflating"
            )
        window = self._window
        if window is not None:
            size = 1 << -self._wbits
            if len(data) >= size:
                window[:] = data[-size:]
            else:
                window += data
                if len(window) >= 2 * size:
                    del window[:-size]
        if z.eof:
            self._stream_ended(z.unused_data)
        return data

    def _stream_ended(self, rest: bytes) -> None:
        """Check what follows a final block; start the next message's stream."""
        if rest not in _AFTER_FINAL_BLOCK:
            raise ProtocolError(
                CloseCode.INVALID_PAYLOAD, "data after the final compressed block"
            )
        if self._window is None:
            return  # the next message starts a new stream anyway
        window = bytes(self._window[-(1 << -self._wbits) :])
        self._zlib = (
            zlib.decompressobj(self._wbits, zdict=window)
            if window
            else zlib.decompressobj(self._wbits)
        )


class SharedStreams(threading.local):
    """The shared compressors and inflaters of one thread (one event loop)."""

    def __init__(self) -> None:
        self.compressors: dict[tuple[int, int], Compressor] = {}
        self.inflaters: dict[int, Inflater] = {}

    def compressor(self, bits: int, level: int) -> Compressor:
        found = self.compressors.get((bits, level))
        if found is None:
            found = self.compressors[bits, level] = Compressor(bits, level, True)
        return found

    def inflater(self, max_size: int) -> Inflater:
        found = self.inflaters.get(max_size)
        if found is None:
            found = self.inflaters[max_size] = Inflater(max_size, True)
        return found


_SHARED: Final = SharedStreams()


def shared_streams() -> SharedStreams:
    """The calling thread's shared compressors and inflaters."""
    return _SHARED
