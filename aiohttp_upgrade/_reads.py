"""The read buffer that the sockets of one server share, and the protocol half
that reads into it.

Each socket's :class:`~aiohttp_upgrade._connection.Connection` reads as an
``asyncio.BufferedProtocol`` (our transport calls it, TLS transports call its
:class:`ProtocolAdapter`): the transport reads with
``recv_into`` into the buffer that ``get_buffer`` returns, instead of allocating a new 256 KiB bytes
object per read (``sock.recv(256 KiB)``) that glibc serves with ``mmap``,
``mremap`` and ``munmap`` on a process whose allocator has not adapted yet. All
sockets of a server read into the same buffer, one read at a time: the parser
copies whatever it keeps across reads. The buffer belongs to the server's
:class:`~aiohttp_upgrade._websocket.SocketContext`, not to the module: the
sockets of servers on event loops in other threads must not share it (the
kernel writes into it while their thread has released the GIL).

Nothing may read into it while a read is being parsed. Closing asyncio's SSL
transport reads what it has decrypted already, into this buffer, at once: so a
transport is closed only once its own parser has stopped (the peer's Close, a
protocol error) or from a task (``server.shutdown``), never from a hook, which
can only abort one (aborting reads nothing).
"""

from __future__ import annotations

import asyncio
from typing import Final, Protocol

__all__ = ["READ_BUFFER_SIZE", "ProtocolAdapter", "Reader", "new_read_buffer"]

READ_BUFFER_SIZE: Final = 256 * 1024
"""Bytes per read at most: asyncio's own read size for a plain protocol."""


def new_read_buffer() -> memoryview:
    """A buffer for one server's reads, as a memoryview.

    A view and not the bytearray itself: asyncio's SSL transport decrypts
    several records per read into ``buffer[offset:]``, which must write into the
    buffer, not into a copy of its tail.
    """
    return memoryview(bytearray(READ_BUFFER_SIZE))


class Reader(Protocol):
    """What our transport and :class:`ProtocolAdapter` call: the methods of an
    ``asyncio.BufferedProtocol`` (a connection)."""

    def get_buffer(self, sizehint: int) -> memoryview: ...
    def buffer_updated(self, nbytes: int) -> None: ...
    def data_received(self, data: bytes) -> None: ...
    def eof_received(self) -> bool | None: ...
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...
    def connection_lost(self, exc: Exception | None) -> None: ...


class ProtocolAdapter(asyncio.BufferedProtocol):
    """asyncio's protocol for a connection on a transport that is not ours (TLS;
    any other until ``_adopt`` replaces it): it passes every call on. A connection is a C class when compiled,
    which cannot derive from asyncio's protocol classes; our own transport
    (``_tcp``) calls it directly."""

    __slots__ = ("_connection",)

    def __init__(self, connection: Reader) -> None:
        self._connection = connection

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._connection.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self._connection.buffer_updated(nbytes)

    def data_received(self, data: bytes) -> None:
        # Not called for a buffered protocol; but without it uvloop's set_protocol()
        # keeps the previous protocol's (aiohttp's request handler alive through it).
        self._connection.data_received(data)

    def eof_received(self) -> bool | None:
        return self._connection.eof_received()

    def pause_writing(self) -> None:
        self._connection.pause_writing()

    def resume_writing(self) -> None:
        self._connection.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._connection.connection_lost(exc)
