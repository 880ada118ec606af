"""The sockets of one event loop on our transport (``_tcp``), in one epoll set.

The loop watches the set as a single reader: one loop callback per poll, not per
socket, and the poll's length tells a connection whether its read is the last
of the turn (the per-turn flush). It holds the loop's :class:`SendBatch`, where
its transports queue the writes of a flush of many sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
from typing import TYPE_CHECKING, Final

from ._sendbatch import SendBatch

if TYPE_CHECKING:
    from ._tcp import SocketTransport

__all__ = ["MAX_EVENTS", "Poller"]

MAX_EVENTS: Final = 1024  # ready sockets handled per poll at most; the rest next


class Poller:
    """The sockets of one event loop on our transport, in one epoll instance that
    the loop watches as one reader: one loop callback per poll, not per socket.
    Its length is the ready sockets of the current poll still to be handled (the
    sockets' turn: ``Connection._turn``). It closes when its last socket is gone."""

    __slots__ = (
        "__weakref__",
        "_epoll",
        "_left",
        "_transports",
        "batch",
        "closed",
        "loop",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._epoll = select.epoll()
        self._transports: dict[int, SocketTransport] = {}
        self._left = 0
        self.closed = False
        self.batch = SendBatch()
        """Where our transports queue their writes during a flush of many sockets."""
        loop.add_reader(self._epoll.fileno(), self._poll)

    def __len__(self) -> int:
        return self._left

    def watch(self, transport: SocketTransport, fd: int, events: int) -> None:
        """Poll ``fd`` for ``events`` (a mask of EPOLLIN and EPOLLOUT; 0: not at
        all, so that a hung-up socket nobody reads does not wake the loop)."""
        transports = self._transports
        if fd not in transports:
            if events:
                self._epoll.register(fd, events)
            transports[fd] = transport
        elif events:
            try:
                self._epoll.modify(fd, events)
            except FileNotFoundError:  # not registered: it watched nothing
                self._epoll.register(fd, events)
        else:
            self._epoll.unregister(fd)

    def forget(self, fd: int) -> None:
        """Stop polling ``fd`` (before it is closed); close once nothing is left."""
        if self._transports.pop(fd, None) is None:
            return
        with contextlib.suppress(OSError):  # it watched nothing
            self._epoll.unregister(fd)
        self.close_if_idle()

    def close_if_idle(self) -> None:
        """Close if no socket is left (a transport that could not be made)."""
        if not self._transports:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.remove_reader(self._epoll.fileno())
            self._epoll.close()
            self.batch.close()

    def _poll(self) -> None:
        try:
            ready = self._epoll.poll(0, MAX_EVENTS)
        except InterruptedError:
            return
        transports = self._transports
        left = len(ready)
        try:
            for fd, events in ready:
                left -= 1
                self._left = left
                transport = transports.get(fd)
                if transport is not None:  # else forgotten earlier in the batch
                    transport.on_events(events)
        finally:
            self._left = 0
