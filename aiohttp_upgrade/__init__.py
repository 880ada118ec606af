"""Bun's WebSocket server API for aiohttp.

Upgrade from any request handler with ``server.upgrade(request, data=...)``, handle
sockets with a :class:`WebSocketHandler` subclass, fan out with topic pub/sub, and
get Bun's non-blocking ``send()`` return codes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

# First: the compiled twins replace the hot path's names before anything imports them.
from . import _speedups  # noqa: F401
from ._broker import Broker, LocalBroker
from ._closecode import CloseCode
from ._deflate import PerMessageDeflate
from ._errors import (
    BrokerUnavailableError,
    InvalidOptionError,
    InvalidStateError,
    ProtocolError,
    WebSocketError,
)
from ._handler import WebSocketHandler
from ._history import History
from ._history_local import HistoryUnavailable
from ._metrics import Metrics
from ._origin import origin_allowed
from ._positions import Position, Resumed
from ._presence_api import Presence
from ._ratelimit import RateLimit, TokenBucket
from ._server import Fetch, Server
from ._websocket import ReadyState, ServerWebSocket

if TYPE_CHECKING:
    from ._opentelemetry import observe_metrics as observe_metrics
    from ._prometheus import PrometheusCollector as PrometheusCollector
    from ._redis_broker import RedisBroker as RedisBroker

__version__ = "0.1.0"

SERVER_KEY: Final[web.AppKey[Server[Any]]] = web.AppKey(
    "aiohttp_upgrade._server", Server
)
"""Where :meth:`Server.setup` stores the server on the application."""

__all__ = [
    "SERVER_KEY",
    "Broker",
    "BrokerUnavailableError",
    "CloseCode",
    "Fetch",
    "History",
    "HistoryUnavailable",
    "InvalidOptionError",
    "InvalidStateError",
    "LocalBroker",
    "Metrics",
    "PerMessageDeflate",
    "Position",
    "Presence",
    "ProtocolError",
    "RateLimit",
    "ReadyState",
    "Resumed",
    "Server",
    "ServerWebSocket",
    "TokenBucket",
    "WebSocketError",
    "WebSocketHandler",
    "origin_allowed",
]


def __getattr__(name: str) -> Any:
    # RedisBroker is imported on first use: the base install has no redis.
    # (It is not in __all__, so that a star import never needs redis.)
    if name == "RedisBroker":
        from ._redis_broker import RedisBroker

        return RedisBroker
    # The metrics extra's names, for the same reason (prometheus_client and
    # opentelemetry-api are imported only when these are).
    if name == "PrometheusCollector":
        from ._prometheus import PrometheusCollector

        return PrometheusCollector
    if name == "observe_metrics":
        from ._opentelemetry import observe_metrics

        return observe_metrics
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
