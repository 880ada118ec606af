"""Bun's WebSocket server API for aiohttp.

Upgrade from any request handler with ``server.upgrade(request, data=...)``, handle
sockets with a :class:`WebSocketHandler` subclass, fan out with topic pub/sub, and
get Bun's non-blocking ``send()`` return codes.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from .closecode import CloseCode
from .deflate import PerMessageDeflate
from .errors import InvalidOptionError, InvalidStateError, ProtocolError, WebSocketError
from .handler import WebSocketHandler
from .origin import origin_allowed
from .server import Fetch, Server
from .websocket import ReadyState, ServerWebSocket

__version__ = "0.1.0"

SERVER_KEY: Final[web.AppKey[Server[Any]]] = web.AppKey(
    "aiohttp_upgrade.server", Server
)
"""Where :meth:`Server.setup` stores the server on the application."""

__all__ = [
    "SERVER_KEY",
    "CloseCode",
    "Fetch",
    "InvalidOptionError",
    "InvalidStateError",
    "PerMessageDeflate",
    "ProtocolError",
    "ReadyState",
    "Server",
    "ServerWebSocket",
    "WebSocketError",
    "WebSocketHandler",
    "origin_allowed",
]
