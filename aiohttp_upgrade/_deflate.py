"""permessage-deflate (RFC 7692): options, negotiation, compression. No I/O.

The server answers the first offer in ``Sec-WebSocket-Extensions`` that it can
accept. By default it adds ``server_no_context_takeover`` (RFC 7692 7.1.1.1 lets
a server do that unasked): every outgoing message is then compressed on its own,
so one published message is deflated once and the same bytes go to every
subscriber, which is what Bun's default "shared" compressor does too.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Final

from ._closecode import CloseCode
from ._errors import InvalidOptionError, ProtocolError

__all__ = ["DeflateParams", "PerMessageDeflate", "negotiate_deflate"]

EXTENSION: Final = "permessage-deflate"
_TAIL: Final = b"\x00\x00\xff\xff"  # RFC 7692 7.2.1


@dataclass(frozen=True, slots=True)
class PerMessageDeflate:
    """Options for permessage-deflate, passed as ``per_message_deflate=``.

    Args:
        compress: compress outgoing messages sent with ``compress=True``.
        decompress: accept compressed messages from clients. The extension covers
            both directions (RFC 7692), so once it is negotiated for ``compress``
            compressed messages are accepted anyway; with both False an offer is
            declined, as if ``per_message_deflate`` were off.
        server_no_context_takeover: compress each message on its own (default).
            Costs some ratio, saves 32 KiB+ of zlib state per socket and lets a
            publish be compressed once for all subscribers.
        client_no_context_takeover: ask clients to do the same.
        server_max_window_bits: largest LZ77 window the server compresses with, 9-15.
        level: zlib compression level, 0-9.
    """

    compress: bool = True
    decompress: bool = True
    server_no_context_takeover: bool = True
    client_no_context_takeover: bool = False
    server_max_window_bits: int = 15
    level: int = 6

    def __post_init__(self) -> None:
        if not 9 <= self.server_max_window_bits <= 15:
            raise InvalidOptionError(
                "per_message_deflate.server_max_window_bits", "must be 9..15"
            )
        if not 0 <= self.level <= 9:
            raise InvalidOptionError("per_message_deflate.level", "must be 0..9")


@dataclass(frozen=True, slots=True)
class DeflateParams:
    """What was agreed with one client."""

    response: str
    server_no_context_takeover: bool
    client_no_context_takeover: bool
    # None: do not compress outgoing messages (zlib cannot honour an 8-bit window).
    server_window_bits: int | None
    compress: bool
    level: int

    def new_compressor(self) -> Compressor | None:
        """Return this socket's compressor, or None if it never compresses."""
        if not self.compress or self.server_window_bits is None:
            return None
        return Compressor(
            self.server_window_bits, self.level, self.server_no_context_takeover
        )

    def new_inflater(self, max_size: int) -> Inflater:
        return Inflater(max_size, self.client_no_context_takeover)


def _parse_offer(offer: str) -> dict[str, str | None] | None:
    """Parse one offer's parameters; None if it is not permessage-deflate or malformed."""
    name, *raw_params = (part.strip() for part in offer.split(";"))
    if name.lower() != EXTENSION:
        return None
    params: dict[str, str | None] = {}
    for raw in raw_params:
        key, sep, value = raw.partition("=")
        key = key.strip().lower()
        if key in params:  # RFC 7692 7: duplicate parameter -> decline this offer
            return None
        params[key] = value.strip().strip('"') if sep else None
    return params


def _window_bits(value: str | None, *, optional: bool) -> int | None:
    if value is None:
        return 15 if optional else None
    if not value.isdigit() or not 8 <= int(value) <= 15:
        raise ValueError(value)
    return int(value)


def negotiate_deflate(
    header: str | None, options: PerMessageDeflate
) -> DeflateParams | None:
    """Pick the first acceptable offer of a ``Sec-WebSocket-Extensions`` header."""
    if not header or not (options.compress or options.decompress):
        return None
    for offer in header.split(","):
        params = _parse_offer(offer)
        if params is None:
            continue
        try:
            accepted = _accept(params, options)
        except ValueError:
            continue  # malformed offer: RFC 7692 5 says decline it, try the next
        if accepted is not None:
            return accepted
    return None


def _accept(
    params: dict[str, str | None], options: PerMessageDeflate
) -> DeflateParams | None:
    known = {
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
    }
    if set(params) - known:
        return None
    for flag in ("server_no_context_takeover", "client_no_context_takeover"):
        if flag in params and params[flag] is not None:
            return None
    if "client_max_window_bits" in params:
        _window_bits(params["client_max_window_bits"], optional=True)
    requested = (
        _window_bits(params["server_max_window_bits"], optional=False)
        if "server_max_window_bits" in params
        else 15
    )
    assert requested is not None
    window = min(requested, options.server_max_window_bits)
    server_nct = options.server_no_context_takeover or (
        "server_no_context_takeover" in params
    )
    client_nct = options.client_no_context_takeover or (
        "client_no_context_takeover" in params
    )
    parts = [EXTENSION]
    if server_nct:
        parts.append("server_no_context_takeover")
    if client_nct:
        parts.append("client_no_context_takeover")
    if window < 15:
        parts.append(f"server_max_window_bits={window}")
    return DeflateParams(
        response="; ".join(parts),
        server_no_context_takeover=server_nct,
        client_no_context_takeover=client_nct,
        server_window_bits=window if window >= 9 else None,
        compress=options.compress,
        level=options.level,
    )


class Compressor:
    """Compresses outgoing messages of one socket (RFC 7692 7.2.1)."""

    __slots__ = ("_level", "_no_context_takeover", "_wbits", "_zlib")

    def __init__(self, window_bits: int, level: int, no_context_takeover: bool) -> None:
        self._wbits = -window_bits
        self._level = level
        self._no_context_takeover = no_context_takeover
        self._zlib = zlib.compressobj(level, zlib.DEFLATED, self._wbits)

    @property
    def shareable(self) -> bool:
        """True when output does not depend on earlier messages (one publish, many sockets)."""
        return self._no_context_takeover

    @property
    def key(self) -> tuple[int, int]:
        """Compressors with equal keys produce the same bytes for one message."""
        return (self._wbits, self._level)

    def compress(self, payload: bytes) -> bytes:
        if self._no_context_takeover:
            z = zlib.compressobj(self._level, zlib.DEFLATED, self._wbits)
        else:
            z = self._zlib
        data = z.compress(payload) + z.flush(zlib.Z_SYNC_FLUSH)
        if data.endswith(_TAIL):
            data = data[:-4]
        return data or b"\x00"


_WINDOW: Final = 1 << 15  # the LZ77 window of a client's 15-bit DEFLATE stream
# What may follow a final block (BFINAL set) once the tail is appended: the empty
# stored block that RFC 7692 7.2.1 step 2 adds, whose 3 header bits either fit in
# the final block's last octet (then only LEN/NLEN are left) or take one more
# octet (7.2.3.4's example); or nothing, when the final block is that stored block.
_AFTER_FINAL_BLOCK: Final = frozenset((b"", _TAIL, b"\x00" + _TAIL))


class Inflater:
    """Decompresses incoming messages without inflating past ``max_size`` bytes.

    A message may end its DEFLATE data with a final block (RFC 7692 7.2.3.4), which
    ends zlib's stream; anything after that block but the start of an empty stored
    block is 1007. With context takeover the LZ77 window holds every earlier message
    (RFC 7692 7.2.2), so the next message is then inflated by a new stream primed
    with the last 32 KiB inflated on this socket. A reference further back than any
    data the client sent is 1007, never wrong or empty data.
    """

    __slots__ = ("_max_size", "_no_context_takeover", "_window", "_zlib")

    def __init__(self, max_size: int, no_context_takeover: bool) -> None:
        self._max_size = max_size
        self._no_context_takeover = no_context_takeover
        self._zlib = zlib.decompressobj(-15)
        # With context takeover: at least the last 32 KiB inflated (at most twice
        # that, so appending a small message copies only that message).
        self._window = bytearray()

    def inflate(self, payload: bytes | bytearray) -> bytes:
        """Return the message, or raise ProtocolError (1009 too big, 1007 corrupt)."""
        if self._no_context_takeover:
            self._zlib = zlib.decompressobj(-15)
        z = self._zlib
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
        if not self._no_context_takeover:
            window = self._window
            if len(data) >= _WINDOW:
                window[:] = data[-_WINDOW:]
            else:
                window += data
                if len(window) >= 2 * _WINDOW:
                    del window[:-_WINDOW]
        if z.eof:
            self._stream_ended(z.unused_data)
        return data

    def _stream_ended(self, rest: bytes) -> None:
        """Check what follows a final block; start the next message's stream."""
        if rest not in _AFTER_FINAL_BLOCK:
            raise ProtocolError(
                CloseCode.INVALID_PAYLOAD, "data after the final compressed block"
            )
        if self._no_context_takeover:
            return  # the next message starts a new stream anyway
        window = bytes(self._window[-_WINDOW:])
        self._zlib = (
            zlib.decompressobj(-15, zdict=window) if window else zlib.decompressobj(-15)
        )
