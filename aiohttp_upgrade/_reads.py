"""The read buffer that the sockets of one server share, and the protocol half
that reads into it.

Each socket's :class:`~aiohttp_upgrade._connection.Connection` is an
``asyncio.BufferedProtocol``: the event loop reads with ``recv_into`` into the
buffer that ``get_buffer`` returns, instead of allocating a new 256 KiB bytes
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
from typing import Final

__all__ = ["READ_BUFFER_SIZE", "BufferedReads", "new_read_buffer"]

READ_BUFFER_SIZE: Final = 256 * 1024
"""Bytes per read at most: asyncio's own read size for a plain protocol."""


def new_read_buffer() -> memoryview:
    """A buffer for one server's reads, as a memoryview.

    A view and not the bytearray itself: asyncio's SSL transport decrypts
    several records per read into ``buffer[offset:]``, which must write into the
    buffer, not into a copy of its tail.
    """
    return memoryview(bytearray(READ_BUFFER_SIZE))


class BufferedReads(asyncio.BufferedProtocol):
    """The reading half of a socket's protocol: the event loop reads into
    ``_read_buffer`` (the server's, set by the subclass), and each read goes to
    ``data_received`` as a view of the bytes read, valid until it returns."""

    __slots__ = ("_read_buffer",)

    _read_buffer: memoryview

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._read_buffer

    def read_into(self, buffer: memoryview) -> None:
        """Read into ``buffer`` from now on: a view of the server's buffer, shorter
        to keep each read within a rate limit (``_ratelimit``)."""
        self._read_buffer = buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._read_buffer[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        """Handle ``data``, which the next read may overwrite once this returns."""
        raise NotImplementedError
