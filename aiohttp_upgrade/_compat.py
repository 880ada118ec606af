"""The aiohttp internals aiohttp-upgrade relies on, all in this one module.

aiohttp has no public API to hand an upgraded connection's transport to another
protocol; ``WebSocketResponse`` instead keeps aiohttp's request handler, its task
and its HTTP machinery alive for the socket's whole life. :func:`take_over` does
the hand-over instead, touching these ``RequestHandler`` attributes:

- ``_message_tail``: bytes that arrived after the handshake, in the same read or
  before the take-over (aiohttp buffers them for a ``set_parser`` call);
- ``_force_close``: makes ``RequestHandler.start()`` end once our request
  handler has returned, without closing the transport (and makes its
  ``data_received`` ignore anything);
- ``_manager`` and ``_parser``: the connection's ``web.Server`` and HTTP parser,
  released so that nothing of aiohttp's survives per socket;
- ``transport`` (``BaseProtocol``): cleared so that nothing aiohttp does later
  (``force_close``, ``shutdown``) can close the transport it no longer owns;
- ``_upgraded`` (``BaseProtocol``): whether aiohttp's HTTP parser stopped parsing
  HTTP after the request head (:func:`reads_as_upgrade`).

Plus ``Application._handler_args`` and the keep-alive timer that
``RequestHandler.connection_made`` arms since aiohttp 3.14.4
(:func:`set_keepalive_timeout`), and the
compiled XOR of ``aiohttp._websocket.helpers`` (:data:`compiled_mask`). All are
checked when this module is imported, so an aiohttp that changed them fails with
a clear ImportError instead of misbehaving; tests/test_compat.py pins each.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sized
from typing import Any, Final

import aiohttp
from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.web_protocol import RequestHandler

__all__ = [
    "compiled_mask",
    "reads_as_upgrade",
    "ready_callbacks",
    "set_keepalive_timeout",
    "take_over",
]

_HANDLER_SLOTS: Final = ("_message_tail", "_force_close", "_manager", "_parser")


def _missing() -> list[str]:
    slots = set(getattr(RequestHandler, "__slots__", ())) | set(
        getattr(BaseProtocol, "__slots__", ())
    )
    missing = [
        name
        for name in (*_HANDLER_SLOTS, "transport", "_upgraded")
        if name not in slots
    ]
    if not hasattr(RequestHandler, "keep_alive"):
        missing.append("RequestHandler.keep_alive")
    if "_keepalive_handle" not in RequestHandler.connection_made.__code__.co_names:
        # Before aiohttp 3.14.4 the keep-alive timer, which handshake_timeout
        # uses, started only after the first response.
        missing.append("the keep-alive timer armed in RequestHandler.connection_made")
    if "_handler_args" not in web.Application.__init__.__code__.co_names:
        missing.append("Application._handler_args")
    return missing


_MISSING: Final = _missing()
if _MISSING:  # pragma: no cover - checked against each supported aiohttp release
    raise ImportError(
        f"aiohttp-upgrade does not support aiohttp {aiohttp.__version__}: "
        f"it lacks {', '.join(_MISSING)} (supported: aiohttp>=3.14.4,<4)"
    )

compiled_mask: Callable[[bytes, bytearray], None] | None
"""aiohttp's compiled ``websocket_mask(key, data)``, ~10x faster than pure Python
for large payloads; None if this aiohttp build has no such helper."""
try:
    from aiohttp._websocket.helpers import websocket_mask as compiled_mask
except ImportError:  # pragma: no cover - layout of a future aiohttp
    compiled_mask = None


def reads_as_upgrade(request: web.BaseRequest) -> bool:
    """Whether aiohttp's HTTP parser stopped parsing HTTP after ``request``'s head.

    True only when it read the head as a switch of protocol (and any body to its
    end): the bytes behind it are then kept for :func:`take_over`. Otherwise they
    are parsed as more HTTP, and frames a client sent right behind its handshake
    would be lost, so such a request must not be upgraded.
    """
    return getattr(request.protocol, "_upgraded", False) is True


def take_over(request: web.BaseRequest, protocol: asyncio.BaseProtocol) -> bytes:
    """Give the connection of ``request`` (101 written) to ``protocol``.

    aiohttp then forgets the connection without closing it: its request handler
    finishes normally once the aiohttp handler returns (the access log and
    middlewares see a request that ended at the 101), keeps no reference to the
    transport and leaves the server's connection list. Reading is resumed if
    aiohttp had paused it. Returns the bytes the client sent after the handshake
    that aiohttp already read; the caller feeds them to ``protocol``. A
    ``BufferedProtocol`` (the selector, SSL and uvloop transports all switch to
    ``get_buffer``/``buffer_updated`` on ``set_protocol``) gets them as bytes,
    not through its buffer.

    Raises:
        RuntimeError: the request's connection is already gone.
    """
    handler: Any = request.protocol
    transport = handler.transport
    if transport is None or transport.is_closing():
        raise RuntimeError("the connection was lost before the take-over")
    tail: bytes = handler._message_tail
    handler._message_tail = b""
    handler.keep_alive(False)  # also cancels the keep-alive (handshake) timer
    handler._force_close = True
    handler._parser = None
    manager = handler._manager
    if manager is not None:
        # Drops the handler from the server's connections once its task ends;
        # with _manager None its own connection_lost() does nothing.
        manager.connection_lost(handler, None)
        handler._manager = None
    handler.transport = None
    transport.set_protocol(protocol)
    if not transport.is_reading():
        transport.resume_reading()
    return tail


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


_EVERY_READ: Final = (None,)


def ready_callbacks(loop: asyncio.AbstractEventLoop) -> Sized:
    """The callbacks ``loop`` runs in its current turn after the running one.

    asyncio's private ``_ready`` deque: non-empty in ``data_received`` when other
    sockets' reads (or other callbacks) follow in the same turn; tests/test_compat.py
    pins it. It serves the sockets on a transport of the loop's (TLS); ours use
    their poller's turn (``_poller.Poller``). uvloop calls ``buffer_updated`` from
    libuv's poll phase and keeps its queue in a C attribute, so whether another
    read follows cannot be known there: on a loop without ``_ready`` this is a
    constant non-empty sized, and every read is answered with the per-turn flush
    (measured cheaper on uvloop than a write per read with 50 echo clients:
    docs/performance.rst, "uvloop").
    """
    ready = getattr(loop, "_ready", None)
    return ready if isinstance(ready, deque) else _EVERY_READ
