"""Parsing client frames (RFC 6455 section 5): a sans-I/O parser.

``FrameParser.feed(data)`` takes bytes as they arrive and calls the sink once per
complete message, ping, pong or Close, or once with a :class:`ProtocolError`;
after a Close or an error it ignores further input. No asyncio in here.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from typing import Final

from ._closecode import CloseCode, parse_close_payload
from ._deflate import Inflater
from ._errors import ProtocolError
from ._frames import (
    OP_BINARY,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Mask,
    xor_mask,
)
from ._sinks import CloseSink, DataSink, FrameSink

try:
    import cython
except ImportError:  # run as Python, without Cython installed
    from . import _nocython as cython
if not cython.compiled:  # else the C twins, cimported by _parser.pxd
    from ._buffers import bytearray_at, bytes_at, decode_utf8, readable, start_of

__all__ = ["Chunk", "CloseSink", "DataSink", "FrameParser", "FrameSink"]

PROTOCOL_ERROR: Final = CloseCode.PROTOCOL_ERROR
INVALID_PAYLOAD: Final = CloseCode.INVALID_PAYLOAD
MESSAGE_TOO_BIG: Final = CloseCode.MESSAGE_TOO_BIG

_utf8_decoder = codecs.getincrementaldecoder("utf-8")
Chunk = bytes | bytearray | memoryview  # a view: of a buffer the next read overwrites


def _skip(data: str | bytes, /) -> None: ...


class FrameParser:
    """Turns the bytes a client sends into calls on a :class:`FrameSink`, or on a
    :class:`DataSink` and a ``closer`` (:class:`CloseSink`) that gets the Close and
    errors; ``max_size`` bounds a message (1009). TypeError for a sink that is no
    :class:`CloseSink` without a ``closer``."""

    __slots__ = (
        "_buffer",
        "_decoder",
        "_frag_buffer",
        "_frag_compressed",
        "_frag_opcode",
        "_frag_size",
        "_inflater",
        "_mask",
        "_max_size",
        "_need",
        "_on_close",
        "_on_error",
        "_on_message",
        "_on_ping",
        "_on_pong",
        "_partial",
        "_partial_first",
        "_partial_key",
        "_probe",
        "_skipping",
        "frames",
        "stopped",
    )

    def __init__(
        self,
        sink: DataSink,
        max_size: int,
        inflater: Inflater | None = None,
        mask: Mask = xor_mask,
        closer: CloseSink | None = None,
    ) -> None:
        if closer is None:
            if not isinstance(sink, CloseSink):
                raise TypeError("a sink without on_close needs a closer")
            closer = sink
        self._on_message: Callable[[str | bytes], None] = sink.on_message
        self._on_ping: Callable[[bytes], None] = sink.on_ping
        self._on_pong: Callable[[bytes], None] = sink.on_pong
        self._on_close: Callable[[int, str], None] = closer.on_close
        self._on_error: Callable[[ProtocolError], None] = closer.on_protocol_error
        self._max_size = max_size
        self._mask = mask
        self._inflater = inflater
        # The start of a frame whose header is not complete yet (at most 13 bytes).
        self._buffer = b""
        # A frame whose header is in and whose payload is not: the payload so far,
        # still masked, in one buffer whatever the size of the reads (a list of
        # reads would cost ~40 bytes of memory per byte sent one byte a segment),
        # and how many payload bytes are still to come.
        self._partial = bytearray()
        self._partial_first = 0  # the frame's first header byte: FIN, RSV, opcode
        self._partial_key = b""  # its masking key
        self._need = self._frag_opcode = 0
        self._frag_compressed = False
        # One buffer, not a list of fragments: a message sent as 1-byte fragments
        # would otherwise cost ~40 bytes of server memory per byte.
        self._frag_buffer = bytearray()
        self._frag_size = 0
        self._decoder: codecs.IncrementalDecoder | None = None
        # Checks the UTF-8 of a text frame while its reads arrive, so that invalid
        # text fails fast (RFC 6455 8.1) before the frame is complete.
        self._probe: codecs.IncrementalDecoder | None = None
        self._skipping = self.stopped = False
        self.frames = 0  # every frame received, counted once: what rate limits count

    @property
    def needed(self) -> int:
        """Payload bytes still to come of the frame being read (0 between frames)."""
        return self._need

    def stop(self) -> None:
        """Ignore all further input."""
        self.stopped = True
        self._buffer = b""
        self._partial = bytearray()
        self._probe = None
        self._frag_buffer = bytearray()

    def skip_data(self) -> None:
        """From now on drop messages, pings and pongs; the peer's Close and protocol
        errors are still reported (a closing handshake waiting for the peer).

        Skipped messages are not inflated, decoded nor kept: their frames are
        only checked, so that the peer's Close is found after them."""
        self._on_message = self._on_ping = self._on_pong = _skip
        self._skipping = True
        self._probe = self._decoder = None
        self._frag_buffer = bytearray()
        self._frag_size = 0

    def feed(self, data: Chunk) -> None:
        """Parse ``data``; report complete frames to the sink. Keeps no view of it."""
        if self.stopped:
            return
        try:
            need = self._need
            if need:
                if len(data) < need:
                    self._extend_partial(data)
                    return
                self._complete_partial(data, need)
                if need < len(data) and not self.stopped:
                    self._parse(data, need)
                return
            if self._buffer:
                data = self._buffer + data
                self._buffer = b""
            self._parse(data, 0)
        except ProtocolError as error:
            self.stop()
            self._on_error(error)

    def _parse(self, data: Chunk, pos: int) -> None:
        data = readable(data)
        raw = start_of(data)  # compiled: a pointer to data's bytes
        size = len(data)
        while pos < size and not self.stopped:
            available = size - pos
            if available < 2:
                break
            first = raw[pos]
            second = raw[pos + 1]
            length = second & 0x7F
            if length < 126:
                start = pos + 2
            elif length == 126:
                if available < 4:
                    break
                length = (raw[pos + 2] << 8) | raw[pos + 3]
                start = pos + 4
            else:
                if available < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                start = pos + 10
            opcode = first & 0x0F
            self._check_header(first, second, opcode, length)
            if start + 4 > size:
                break  # the masking key is not in yet
            self.frames += 1
            end = start + 4 + length
            if end > size:
                self._start_partial(data, first, start, length)
                return
            payload: bytes | bytearray
            if length:  # copied once and unmasked in place
                payload = bytearray_at(raw, start + 4, end)
                self._mask(bytes_at(raw, start, start + 4), payload)
            else:
                payload = b""
            pos = end
            # As in _handle, inline: this loop is the hottest code of a socket.
            if opcode in (OP_TEXT, OP_BINARY):
                if first & 0x80:
                    self._deliver(opcode, payload, bool(first & 0x40))
                else:
                    self._begin_fragments(opcode, payload, bool(first & 0x40))
            elif opcode == OP_CONTINUATION:
                self._continue_fragments(payload, bool(first & 0x80))
            elif opcode == OP_PING:
                self._on_ping(bytes(payload))
            elif opcode == OP_PONG:
                self._on_pong(bytes(payload))
            else:
                self._close(payload)
        if pos < size and not self.stopped:
            self._buffer = bytes(data[pos:])

    # -- a frame arriving over several reads ------------------------------------------

    def _start_partial(self, data: Chunk, first: int, start: int, length: int) -> None:
        """Keep the payload so far of a frame that ``data`` (from ``start``) does not hold whole."""
        self._partial = partial = bytearray(memoryview(data)[start + 4 :])
        self._partial_first = first
        self._partial_key = bytes(data[start : start + 4])
        self._need = length - len(partial)
        opcode = first & 0x0F
        if not self._skipping and (
            (opcode == OP_TEXT and not first & 0x40)
            or (opcode == OP_CONTINUATION and self._decoder is not None)
        ):
            self._probe = probe = _utf8_decoder()
            if self._decoder is not None:
                probe.setstate(self._decoder.getstate())
            self._check_arriving_text(partial, 0)

    def _extend_partial(self, data: Chunk) -> None:
        """Add a read that does not complete the frame."""
        partial = self._partial
        if self._probe is not None:
            self._check_arriving_text(data, len(partial))
        partial += data
        self._need -= len(data)

    def _complete_partial(self, data: Chunk, need: int) -> None:
        """Handle the frame that the first ``need`` bytes of ``data`` complete."""
        first = self._partial_first
        self._handle(first, first & 0x0F, self._take_partial(data, need))

    def _take_partial(self, data: Chunk, need: int) -> bytes | bytearray:
        """Return the completed frame's payload, unmasked, and reset the state."""
        payload = self._partial
        payload += memoryview(data)[:need] if need < len(data) else data
        self._partial = bytearray()
        self._need = 0
        self._probe = None
        self._mask(self._partial_key, payload)
        if self._partial_first & 0xCF == 0x82:  # FIN, no RSV1, binary: a message
            # As bytes now, so the buffer is freed before the hook runs.
            return bytes(payload)
        return payload

    def _check_arriving_text(self, data: Chunk, offset: int) -> None:
        """Check the payload bytes from ``offset`` of an incomplete text frame."""
        assert self._probe is not None
        shift = offset & 3
        key = self._partial_key
        chunk = bytearray(data)
        self._mask(key[shift:] + key[:shift], chunk)
        try:
            self._probe.decode(chunk, False)
        except UnicodeDecodeError:
            raise ProtocolError(INVALID_PAYLOAD, "invalid UTF-8 in text") from None

    def _check_header(self, first: int, second: int, opcode: int, length: int) -> None:
        """Reject a bad frame as soon as its header is in (RFC 6455 5.2, 5.5)."""
        if not second & 0x80:
            raise ProtocolError(PROTOCOL_ERROR, "client frame is not masked")
        if first & 0x30:
            raise ProtocolError(PROTOCOL_ERROR, "reserved bits RSV2/RSV3 set")
        if first & 0x40 and (
            self._inflater is None or opcode not in (OP_TEXT, OP_BINARY)
        ):
            # RFC 7692 6.1: RSV1 only on the first frame of a compressed message.
            raise ProtocolError(PROTOCOL_ERROR, "reserved bit RSV1 set")
        if opcode >= 0x8:
            if opcode > OP_PONG:
                raise ProtocolError(PROTOCOL_ERROR, f"reserved opcode {opcode:#x}")
            if not first & 0x80:
                raise ProtocolError(PROTOCOL_ERROR, "fragmented control frame")
            if length > 125:
                raise ProtocolError(PROTOCOL_ERROR, "control frame too long")
            return
        if opcode > OP_BINARY:
            raise ProtocolError(PROTOCOL_ERROR, f"reserved opcode {opcode:#x}")
        if opcode == OP_CONTINUATION:
            if not self._frag_opcode:
                raise ProtocolError(PROTOCOL_ERROR, "continuation without a message")
        elif self._frag_opcode:
            raise ProtocolError(PROTOCOL_ERROR, "new message inside a fragmented one")
        if length >> 63:
            raise ProtocolError(PROTOCOL_ERROR, "payload length has its top bit set")
        if self._frag_size + length > self._max_size:
            raise ProtocolError(MESSAGE_TOO_BIG, "message too big")

    def _handle(self, first: int, opcode: int, payload: bytes | bytearray) -> None:
        """Act on one complete frame whose ``payload`` is unmasked (as _parse does)."""
        if opcode in (OP_TEXT, OP_BINARY):
            if first & 0x80:
                self._deliver(opcode, payload, bool(first & 0x40))
            else:
                self._begin_fragments(opcode, payload, bool(first & 0x40))
        elif opcode == OP_CONTINUATION:
            self._continue_fragments(payload, bool(first & 0x80))
        elif opcode == OP_PING:
            self._on_ping(bytes(payload))
        elif opcode == OP_PONG:
            self._on_pong(bytes(payload))
        else:
            self._close(payload)

    def _deliver(
        self, opcode: int, payload: bytes | bytearray, compressed: bool
    ) -> None:
        if self._skipping:
            return
        if compressed:
            assert self._inflater is not None
            payload = self._inflater.inflate(payload)
        if opcode == OP_TEXT:
            try:
                text = decode_utf8(payload)
            except UnicodeDecodeError:
                raise ProtocolError(INVALID_PAYLOAD, "invalid UTF-8 in text") from None
            self._on_message(text)
        else:
            self._on_message(bytes(payload))

    def _begin_fragments(
        self, opcode: int, payload: bytes | bytearray, compressed: bool
    ) -> None:
        self._frag_opcode = opcode
        if self._skipping:
            return  # only the opcode is kept: continuations are still checked
        self._frag_compressed = compressed
        self._frag_size = len(payload)
        if opcode == OP_TEXT and not compressed:
            # Decode as fragments arrive so invalid UTF-8 fails fast (RFC 6455 8.1).
            self._decoder = _utf8_decoder()
            self._check_text(payload, final=False)
        self._frag_buffer += payload

    def _continue_fragments(self, payload: bytes | bytearray, fin: bool) -> None:
        if self._skipping:
            if fin:
                self._frag_opcode = 0
            return
        self._frag_size += len(payload)
        if self._decoder is not None:
            self._check_text(payload, final=fin)
        self._frag_buffer += payload
        if not fin:
            return
        message: bytes | bytearray = self._frag_buffer
        opcode = self._frag_opcode
        compressed = self._frag_compressed
        self._frag_buffer = bytearray()
        if opcode == OP_BINARY and not compressed:
            message = bytes(message)  # and the buffer goes before the hook runs
        self._frag_opcode = 0
        self._frag_size = 0
        self._decoder = None
        self._deliver(opcode, message, compressed)

    def _check_text(self, payload: bytes | bytearray, final: bool) -> None:
        assert self._decoder is not None
        try:
            self._decoder.decode(payload, final)
        except UnicodeDecodeError:
            raise ProtocolError(INVALID_PAYLOAD, "invalid UTF-8 in text") from None

    def _close(self, payload: bytes | bytearray) -> None:
        code, reason = parse_close_payload(payload)
        self.stop()
        self._on_close(code, reason)
