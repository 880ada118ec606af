"""The two socket calls of a read and a write on our transport (``_tcp``).

As Python, these are the socket's own methods. The compiled transport takes the
C twins of ``_csyscalls.pxd`` instead: the same calls on the file descriptor,
straight to libc, without parsing arguments or releasing the GIL (the socket is
non-blocking: the call returns at once). Either raises what the socket method
raises: ``BlockingIOError`` when the kernel has nothing to give or take.
"""

from __future__ import annotations

import socket

__all__ = ["recv_into", "send"]


def recv_into(sock: socket.socket, fd: int, buffer: memoryview) -> int:
    """Read into ``buffer`` (``fd`` is ``sock``'s); the byte count, 0 at EOF."""
    return sock.recv_into(buffer)


def send(sock: socket.socket, fd: int, data: bytes | bytearray | memoryview) -> int:
    """Send what the kernel takes of ``data``; the byte count."""
    return sock.send(data)
