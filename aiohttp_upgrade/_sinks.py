"""What the frame parser reports to: the sink protocols of :mod:`._parser`."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ._errors import ProtocolError

__all__ = ["CloseSink", "DataSink", "FrameSink"]


class DataSink(Protocol):
    """What the parser reports data and ping/pong frames to."""

    def on_message(self, message: str | bytes) -> None: ...
    def on_ping(self, data: bytes) -> None: ...
    def on_pong(self, data: bytes) -> None: ...


@runtime_checkable
class CloseSink(Protocol):
    """What the parser reports the peer's Close and protocol errors to."""

    def on_close(self, code: int, reason: str) -> None: ...
    def on_protocol_error(self, error: ProtocolError) -> None: ...


class FrameSink(DataSink, CloseSink, Protocol):
    """Both: a sink for everything the parser reports."""
