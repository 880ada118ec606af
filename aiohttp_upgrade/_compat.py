"""The few aiohttp internals aiohttp-upgrade relies on, in one place.

aiohttp has no public API to take over an upgraded connection's byte stream or to
wait for its write buffer to empty; ``WebSocketResponse`` itself uses these.
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

__all__ = ["PayloadParser", "install_parser", "wait_writable"]


class PayloadParser(Protocol):
    def feed_data(self, data: bytes) -> tuple[bool, bytes]: ...
    def feed_eof(self) -> None: ...


def install_parser(request: web.BaseRequest, parser: PayloadParser) -> None:
    """Route every byte the client sends after the handshake to ``parser``."""
    protocol: Any = request.protocol
    protocol.set_parser(parser)
    protocol.keep_alive(False)


async def wait_writable(protocol: Any) -> None:
    """Return once the protocol is no longer paused for writing.

    With the transport's write-buffer limits at zero this means the buffer is empty.
    Raises ConnectionError when the connection is lost first.
    """
    if protocol.transport is not None and protocol._paused:
        await protocol._drain_helper()
