"""The few aiohttp internals aiohttp-upgrade relies on, in one place.

aiohttp has no public API to take over an upgraded connection's byte stream or to
wait for its write buffer to empty; ``WebSocketResponse`` itself uses these.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

import aiohttp
from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.web_protocol import RequestHandler

if not (
    hasattr(RequestHandler, "set_parser") and "_drain_waiter" in BaseProtocol.__slots__
):  # pragma: no cover - checked against each supported aiohttp release
    raise ImportError(
        f"aiohttp-upgrade does not support aiohttp {aiohttp.__version__}: "
        "RequestHandler.set_parser or BaseProtocol._drain_waiter is missing"
    )

__all__ = [
    "PayloadParser",
    "drain_waiter",
    "install_parser",
    "mask_in_place",
    "set_keepalive_timeout",
]

_aiohttp_mask: Callable[[bytes, bytearray], None] | None
try:  # aiohttp's compiled XOR is ~10x faster than pure Python for large payloads
    from aiohttp._websocket.helpers import websocket_mask as _aiohttp_mask
except ImportError:  # pragma: no cover - layout of a future aiohttp
    _aiohttp_mask = None


def _mask_with_ints(mask: bytes, data: bytearray) -> None:
    n = len(data)
    key = (mask * ((n >> 2) + 1))[:n]
    data[:] = (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(
        n, "little"
    )


mask_in_place = _aiohttp_mask if _aiohttp_mask is not None else _mask_with_ints
"""``mask_in_place(mask, data)`` XORs ``data`` with ``mask`` repeated (RFC 6455 5.3)."""


class PayloadParser(Protocol):
    def feed_data(self, data: bytes) -> tuple[bool, bytes]: ...
    def feed_eof(self) -> None: ...


def install_parser(request: web.BaseRequest, parser: PayloadParser) -> None:
    """Route every byte the client sends after the handshake to ``parser``."""
    protocol: Any = request.protocol
    protocol.set_parser(parser)
    protocol.keep_alive(False)


def drain_waiter(protocol: Any) -> asyncio.Future[None] | None:
    """Return the future aiohttp resolves when ``protocol`` resumes writing.

    None when writing is not paused (or the connection is gone). With the
    transport's write-buffer limits at zero, resumed means the buffer is empty.
    The future gets a ConnectionError when the connection is lost first. This is
    the future ``BaseProtocol._drain_helper()`` awaits, shared with any other
    waiter; unlike that coroutine it needs no task.
    """
    if protocol.transport is None or not protocol._paused:
        return None
    waiter: asyncio.Future[None] | None = protocol._drain_waiter
    if waiter is None or waiter.done():
        waiter = protocol._drain_waiter = protocol._loop.create_future()
    return waiter


def set_keepalive_timeout(app: web.Application, timeout: float) -> None:
    """Give every connection ``app`` serves ``timeout`` seconds to send a request head.

    aiohttp's keep-alive timer is that deadline: ``RequestHandler`` arms it when a
    connection is made and again after each response, does not re-arm it as bytes
    arrive, and closes the connection when it fires before a complete request head
    (a slowloris client dribbling its handshake). An upgraded connection cancels it.
    The value goes into the app's ``handler_args``, which reach the request handlers
    whichever runner starts the app (``web.run_app``, ``python -m aiohttp.web``,
    ``web.AppRunner``) and override that runner's ``keepalive_timeout``. Call it
    before the app starts.
    """
    args = dict(app._handler_args or {})
    args["keepalive_timeout"] = timeout
    app._handler_args = args
