"""The take-over of an upgraded socket's transport by our own (``_tcp``).

The plain socket transport (TCP, or Unix for ``UnixSite``) of asyncio's selector
loop, or of uvloop when ours is compiled, is replaced, on Linux (epoll); TLS
keeps its own. The socket is duplicated, the duplicate is ours, and the loop's
transport is aborted without a byte lost: nothing is buffered in it (checked),
and what it has not read yet stays in the kernel's receive buffer, which both
descriptors share. The loop's transport then leaves its server, so
``Server.close_clients()`` and ``wait_closed()`` no longer see upgraded sockets:
closing them is ``server.shutdown()``'s job, as for every upgraded socket. On
uvloop our poller is one of the loop's readers like any other
(``loop.add_reader``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import socket
import weakref
from asyncio import selector_events
from asyncio.trsock import TransportSocket
from typing import Final, cast

from ._poller import Poller
from ._reads import Reader
from ._speedups import COMPILED
from ._tcp import SocketTransport

__all__ = ["adopt"]

logger = logging.getLogger("aiohttp_upgrade")

_SELECTOR_TRANSPORT: Final[type] = getattr(
    selector_events, "_SelectorSocketTransport", type(None)
)
_EPOLL: Final = hasattr(select, "epoll")
# uvloop's, in C, give way only to our compiled transport (ours as Python costs more).
_UVLOOP: Final = ("TCPTransport", "UnixTransport")  # of uvloop.loop
# Weakly both ways: a loop that ends without closing its sockets is collected,
# and its sockets with it (each transport holds its poller).
_pollers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, weakref.ref[Poller]] = (
    weakref.WeakKeyDictionary()
)


class _Released(asyncio.Protocol):
    """The protocol of the loop's transport once it is ours: it hears nothing."""

    def connection_lost(self, exc: Exception | None) -> None:
        pass


def adopt(transport: asyncio.BaseTransport, protocol: Reader) -> SocketTransport | None:
    """Replace ``transport`` (already given to ``protocol``) with our own, or None.

    Only a plain socket transport with nothing buffered, of asyncio's selector
    loop or (when compiled) of uvloop, is adopted; anything else (TLS, a
    transport holding unsent bytes) stays as it is and None is returned.
    ``protocol`` then hears from the new transport only.
    """
    kind = type(transport)
    if not _EPOLL or not (
        kind is _SELECTOR_TRANSPORT
        or (COMPILED and kind.__module__ == "uvloop.loop" and kind.__name__ in _UVLOOP)
    ):
        return None
    transport = cast(asyncio.Transport, transport)  # uvloop's are not registered
    if transport.get_write_buffer_size() or transport.is_closing():
        return None
    raw = transport.get_extra_info("socket")
    if raw is None:
        return None
    extra = {name: transport.get_extra_info(name) for name in ("peername", "sockname")}
    loop = asyncio.get_running_loop()
    sock = poller = None
    try:  # all that can fail, before the loop's transport is let go
        fd = os.dup(raw.fileno())  # uvloop's socket has no dup()
        try:
            sock = socket.socket(fileno=fd)
        except BaseException:
            os.close(fd)
            raise
        sock.setblocking(False)
        extra["socket"] = TransportSocket(sock)
        known = _pollers.get(loop)
        poller = known() if known is not None else None
        if poller is None or poller.closed:  # one per loop, while it has sockets
            poller = Poller(loop)
            _pollers[loop] = weakref.ref(poller)
        ours = SocketTransport(poller, sock, protocol, extra)
    except OSError as exc:  # out of descriptors: the loop's transport stays
        logger.debug("keeping the event loop's transport: %s", exc)
        if sock is not None:
            sock.close()
        if poller is not None:
            poller.close_if_idle()
        return None
    transport.pause_reading()
    transport.set_protocol(_Released())
    transport.abort()  # closes its descriptor in a later callback; ours stays open
    return ours
