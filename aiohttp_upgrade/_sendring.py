"""The calls of a send batch (``_sendbatch``): the reference, in Python.

Compiled on Linux, the batch takes the C twins of ``_csendring.pxd`` instead: the
queued sends go to the kernel through io_uring, in one ``io_uring_enter()`` per
batch, instead of one ``send()`` system call each. Here every call does what
that does, one ``send()`` at a time; but :func:`ring_open` is false, so that
pure Python never batches (queueing would only add work to each write).

The contract, the same for both: :func:`ring_add` queues a send of ``data`` on
socket ``fd`` (false when the ring is full or gone); :func:`ring_submit` makes
the queued sends and returns how many completed; :func:`ring_result` is then what
each returned, by its place in the queue: the bytes sent (a short send is
possible), or ``-errno`` (``-EAGAIN`` when the kernel took nothing;
``-ECANCELED`` when it was never made, and the caller must send it itself).
"""

from __future__ import annotations

import errno
import os
import threading

__all__ = [
    "ring_add",
    "ring_close",
    "ring_open",
    "ring_result",
    "ring_submit",
    "send_now",
]


class _Ring(threading.local):
    def __init__(self) -> None:
        self.queued: list[tuple[int, bytes]] = []
        self.results: list[int] = []


_ring = _Ring()  # one per thread, as the compiled one

RING_ENTRIES = 1024


def ring_open() -> bool:
    """Whether this thread can batch its sends: never, as Python."""
    return False


def ring_close() -> None:
    """Let this thread's ring go (the next :func:`ring_open` makes a new one)."""
    _ring.queued.clear()


def ring_add(fd: int, data: bytes) -> bool:
    """Queue a send of ``data`` on socket ``fd``; false if the ring is full."""
    if len(_ring.queued) == RING_ENTRIES:
        return False
    _ring.queued.append((fd, data))
    return True


def ring_submit() -> int:
    """Make the queued sends, in order; the number that completed."""
    queued = _ring.queued
    _ring.results = [send_now(fd, data) for fd, data in queued]
    queued.clear()
    return len(_ring.results)


def ring_result(index: int) -> int:
    """What the ``index``-th send of the last submit returned (see the module)."""
    return _ring.results[index]


def send_now(fd: int, data: bytes) -> int:
    """``send(fd, data)`` on a non-blocking socket: bytes sent, or ``-errno``."""
    try:
        return os.write(fd, data)
    except BlockingIOError:
        return -errno.EAGAIN
    except OSError as exc:
        return -(exc.errno or errno.EIO)
