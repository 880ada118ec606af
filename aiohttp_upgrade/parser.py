"""Parsing client frames (RFC 6455 section 5): a sans-I/O parser.

``FrameParser.feed(data)`` takes bytes as they arrive and calls the sink once per
complete message, ping, pong or Close, or once with a :class:`ProtocolError`;
after a Close or an error it ignores further input. No asyncio in here.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from typing import Final, Protocol

from .closecode import CloseCode, check_close_code, is_valid_close_code
from .deflate import Inflater
from .errors import ProtocolError
from .frames import OP_BINARY, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT

__all__ = [
    "FrameParser",
    "FrameSink",
    "Mask",
    "check_close_code",
    "is_valid_close_code",
    "unmask",
    "xor_mask",
]

PROTOCOL_ERROR: Final = CloseCode.PROTOCOL_ERROR
INVALID_PAYLOAD: Final = CloseCode.INVALID_PAYLOAD
MESSAGE_TOO_BIG: Final = CloseCode.MESSAGE_TOO_BIG
NO_STATUS: Final = CloseCode.NO_STATUS_RECEIVED

Mask = Callable[[bytes, bytearray], None]
"""``mask(key, data)`` XORs ``data`` in place with the 4-byte ``key`` repeated."""

_utf8_decoder = codecs.getincrementaldecoder("utf-8")


class FrameSink(Protocol):
    """What the parser reports to."""

    def on_message(self, message: str | bytes) -> None: ...
    def on_ping(self, data: bytes) -> None: ...
    def on_pong(self, data: bytes) -> None: ...
    def on_close(self, code: int, reason: str) -> None: ...
    def on_protocol_error(self, error: ProtocolError) -> None: ...


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


class FrameParser:
    """Turns the bytes a client sends into calls on a :class:`FrameSink`."""

    __slots__ = (
        "_buffer",
        "_chunks",
        "_chunks_size",
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
        "_probe",
        "_probe_left",
        "_probe_mask",
        "_probe_offset",
        "stopped",
    )

    def __init__(
        self,
        sink: FrameSink,
        max_size: int,
        inflater: Inflater | None = None,
        mask: Mask = xor_mask,
    ) -> None:
        self._on_message = sink.on_message
        self._on_ping = sink.on_ping
        self._on_pong = sink.on_pong
        self._on_close = sink.on_close
        self._on_error = sink.on_protocol_error
        self._max_size = max_size
        self._mask = mask
        self._inflater = inflater
        self._buffer = b""
        self._chunks: list[bytes] = []
        self._chunks_size = 0
        self._need = 0
        self._frag_opcode = 0
        self._frag_compressed = False
        # One buffer, not a list of fragments: a message sent as 1-byte fragments
        # would otherwise cost ~40 bytes of server memory per byte.
        self._frag_buffer = bytearray()
        self._frag_size = 0
        self._decoder: codecs.IncrementalDecoder | None = None
        # Checks the UTF-8 of a text frame while its reads arrive, so that invalid
        # text fails fast (RFC 6455 8.1) before the frame is complete.
        self._probe: codecs.IncrementalDecoder | None = None
        self._probe_mask = b""
        self._probe_offset = 0  # payload bytes checked so far
        self._probe_left = 0  # payload bytes not yet arrived
        self.stopped = False

    def stop(self) -> None:
        """Ignore all further input."""
        self.stopped = True
        self._buffer = b""
        self._chunks.clear()
        self._probe = None
        self._frag_buffer = bytearray()

    def feed(self, data: bytes) -> None:
        """Parse ``data``; report complete frames to the sink."""
        if self.stopped:
            return
        try:
            if self._need:
                # The rest of a frame whose header is in: collect reads, join once.
                self._chunks.append(data)
                self._chunks_size += len(data)
                if self._probe is not None:
                    self._check_arriving_text(data)
                if self._chunks_size < self._need:
                    return
                data = b"".join(self._chunks)
                self._chunks.clear()
                self._need = 0
                self._probe = None
            elif self._buffer:
                data = self._buffer + data
                self._buffer = b""
            self._parse(data)
        except ProtocolError as error:
            self.stop()
            self._on_error(error)

    def _parse(self, data: bytes) -> None:
        pos = 0
        size = len(data)
        while pos < size and not self.stopped:
            available = size - pos
            if available < 2:
                break
            first = data[pos]
            second = data[pos + 1]
            length = second & 0x7F
            if length < 126:
                start = pos + 2
            elif length == 126:
                if available < 4:
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
                start = pos + 4
            else:
                if available < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                start = pos + 10
            opcode = first & 0x0F
            self._check_header(first, second, opcode, length)
            end = start + 4 + length
            if end > size:
                self._need = end - pos
                self._chunks.append(data[pos:])
                self._chunks_size = size - pos
                if size >= start + 4 and (
                    (opcode == OP_TEXT and not first & 0x40)
                    or (opcode == OP_CONTINUATION and self._decoder is not None)
                ):
                    self._probe = _utf8_decoder()
                    if self._decoder is not None:
                        self._probe.setstate(self._decoder.getstate())
                    self._probe_mask = data[start : start + 4]
                    self._probe_offset = 0
                    self._probe_left = length
                    self._check_arriving_text(data[start + 4 :])
                return
            payload = data[start + 4 : end]
            if length:
                unmasked = bytearray(payload)
                self._mask(data[start : start + 4], unmasked)
                payload = bytes(unmasked)
            pos = end
            if opcode in (OP_TEXT, OP_BINARY):
                if first & 0x80:
                    self._deliver(opcode, payload, bool(first & 0x40))
                else:
                    self._begin_fragments(opcode, payload, bool(first & 0x40))
            elif opcode == OP_CONTINUATION:
                self._continue_fragments(payload, bool(first & 0x80))
            elif opcode == OP_PING:
                self._on_ping(payload)
            elif opcode == OP_PONG:
                self._on_pong(payload)
            else:
                self._close(payload)
        if pos < size and not self.stopped:
            self._buffer = data[pos:]

    def _check_arriving_text(self, data: bytes) -> None:
        """Check the next payload bytes of an incomplete text frame as they arrive."""
        assert self._probe is not None
        take = min(len(data), self._probe_left)
        if not take:
            return
        shift = self._probe_offset & 3
        mask = self._probe_mask[shift:] + self._probe_mask[:shift]
        chunk = bytearray(data[:take])
        self._mask(mask, chunk)
        self._probe_offset += take
        self._probe_left -= take
        try:
            self._probe.decode(bytes(chunk), False)
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

    def _deliver(self, opcode: int, payload: bytes, compressed: bool) -> None:
        if compressed:
            assert self._inflater is not None
            payload = self._inflater.inflate(payload)
        if opcode == OP_TEXT:
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError(INVALID_PAYLOAD, "invalid UTF-8 in text") from None
            self._on_message(text)
        else:
            self._on_message(payload)

    def _begin_fragments(self, opcode: int, payload: bytes, compressed: bool) -> None:
        self._frag_opcode = opcode
        self._frag_compressed = compressed
        self._frag_size = len(payload)
        if opcode == OP_TEXT and not compressed:
            # Decode as fragments arrive so invalid UTF-8 fails fast (RFC 6455 8.1).
            self._decoder = _utf8_decoder()
            self._check_text(payload, final=False)
        self._frag_buffer += payload

    def _continue_fragments(self, payload: bytes, fin: bool) -> None:
        self._frag_size += len(payload)
        if self._decoder is not None:
            self._check_text(payload, final=fin)
        self._frag_buffer += payload
        if not fin:
            return
        message = bytes(self._frag_buffer)
        opcode = self._frag_opcode
        compressed = self._frag_compressed
        self._frag_buffer = bytearray()
        self._frag_opcode = 0
        self._frag_size = 0
        self._decoder = None
        self._deliver(opcode, message, compressed)

    def _check_text(self, payload: bytes, final: bool) -> None:
        assert self._decoder is not None
        try:
            self._decoder.decode(payload, final)
        except UnicodeDecodeError:
            raise ProtocolError(INVALID_PAYLOAD, "invalid UTF-8 in text") from None

    def _close(self, payload: bytes) -> None:
        if len(payload) == 1:
            raise ProtocolError(PROTOCOL_ERROR, "Close frame with a 1-byte body")
        code: int
        if not payload:
            code, reason = NO_STATUS, ""
        else:
            code = int.from_bytes(payload[:2], "big")
            if not is_valid_close_code(code):
                raise ProtocolError(PROTOCOL_ERROR, f"invalid close code {code}")
            try:
                reason = payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError(
                    INVALID_PAYLOAD, "invalid UTF-8 in reason"
                ) from None
        self.stop()
        self._on_close(code, reason)
