"""Turning what a user passes to ``send``, ``publish``, ``ping`` and ``pong``
into frame payloads: pure functions, no I/O."""

from __future__ import annotations

from ._frames import MAX_CONTROL_PAYLOAD, OP_BINARY, OP_TEXT

__all__ = ["control_payload", "message_payload"]


def message_payload(message: object) -> tuple[int, bytes]:
    """The opcode and payload of a message to send: a str as text (UTF-8), a
    bytes-like as binary (copied once when not bytes); TypeError otherwise."""
    if type(message) is str:
        return OP_TEXT, message.encode()
    if type(message) is bytes:
        return OP_BINARY, message
    if isinstance(message, bytearray | memoryview):
        return OP_BINARY, bytes(message)
    if isinstance(message, str):
        return OP_TEXT, message.encode()
    raise TypeError(
        f"message must be str or a bytes-like object, got {type(message).__name__}"
    )


def control_payload(data: bytes | bytearray | memoryview | str) -> bytes:
    """A ping or pong payload as bytes; ValueError past 125 bytes (RFC 6455 5.5)."""
    payload = data.encode() if isinstance(data, str) else bytes(data)
    if len(payload) > MAX_CONTROL_PAYLOAD:
        raise ValueError(
            f"ping/pong payload must be at most {MAX_CONTROL_PAYLOAD} bytes"
        )
    return payload
