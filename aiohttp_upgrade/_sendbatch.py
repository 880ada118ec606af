"""The writes of one flush to many sockets, made with one system call.

At the end of a loop turn the flusher (``_outbox``) writes every socket that got
frames, one ``send()`` each: on a fan-out, most of the server's CPU goes to
those system calls. While a :class:`SendBatch` is started, our transport
(``_tcp``) queues such a write in it instead (when nothing is buffered before
it), and :meth:`SendBatch.finish` makes them all and tells each transport what
its send returned, as its own ``send()`` would have: the bytes the kernel took
(it keeps the rest, and watches the socket) or the error (it closes).

Compiled on Linux, the batch goes through io_uring (``_csendring.pxd``): one
``io_uring_enter()`` for up to 1,024 sends, which costs the kernel less than as
many ``send()`` calls (a paced 1,000-subscriber fan-out: about 20 % less server
CPU, docs/performance.rst). As Python, or where the kernel has no io_uring, no
batch starts and each write is sent at once. ``AIOHTTP_UPGRADE_NO_IO_URING=1``
in the environment turns batching off.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Final

try:
    import cython
except ImportError:  # run as Python, without Cython installed
    from . import _nocython as cython
if not cython.compiled:  # else the C twins, cimported by _sendbatch.pxd
    from ._sendring import (
        ring_add,
        ring_close,
        ring_open,
        ring_result,
        ring_submit,
        send_now,
    )

__all__ = ["BATCH_MIN", "IO_URING", "BatchWriter", "SendBatch"]

logger = logging.getLogger("aiohttp_upgrade")

IO_URING: Final = not os.environ.get("AIOHTTP_UPGRADE_NO_IO_URING")
"""False when the environment turns batching off."""

BATCH_MIN: Final = 64
"""A flush of fewer sockets sends each write at once (a batch would not pay)."""

_NOT_MADE: Final = -errno.ECANCELED
_NOTHING_TAKEN: Final = -errno.EAGAIN


class BatchWriter:
    """What a batch reports to: a transport (C calls when compiled)."""

    __slots__ = ()

    def batch_sent(self, data: bytes, sent: int) -> None:
        """The kernel took ``sent`` bytes of ``data`` (maybe 0)."""
        raise NotImplementedError

    def batch_failed(self, exc: OSError) -> None:
        """Sending ``data`` failed: the peer is gone."""
        raise NotImplementedError


class SendBatch:
    """The writes queued by the sockets of one event loop (its poller's) during a
    flush: :meth:`start`, :meth:`add` each write, :meth:`finish`.

    ``batches`` and ``sends`` count what went through the ring.
    """

    __slots__ = ("_data", "_fds", "_short", "_writers", "active", "batches", "sends")

    def __init__(self) -> None:
        self._writers: list[BatchWriter] = []
        self._fds: list[int] = []
        self._data: list[bytes] = []
        self._short = False
        self.active = False
        """Between :meth:`start` and :meth:`finish`: writes go to :meth:`add`."""
        self.batches = 0
        self.sends = 0

    def start(self) -> bool:
        """Take writes until :meth:`finish`; False where there is no ring."""
        self.active = IO_URING and ring_open()
        return self.active

    def add(self, writer: BatchWriter, fd: int, data: bytes) -> bool:
        """Queue ``writer``'s send of ``data`` on socket ``fd``; False if it must
        send it itself (the ring is gone)."""
        if not ring_add(fd, data):
            if not self._writers:
                return False
            self.submit()  # full: make room
            if not ring_add(fd, data):
                return False
        self._writers.append(writer)
        self._fds.append(fd)
        self._data.append(data)
        return True

    def finish(self) -> bool:
        """Send what is queued and stop taking writes; True if since :meth:`start`
        some write was not taken whole (its transport buffers the rest)."""
        self.active = False
        self.submit()
        short = self._short
        self._short = False
        return short

    def submit(self) -> None:
        """Send what is queued now and tell each writer how it went."""
        writers = self._writers
        if not writers:
            return
        fds, data = self._fds, self._data
        self._writers, self._fds, self._data = [], [], []
        self.batches += 1
        self.sends += len(writers)
        ring_submit()
        for index in range(len(writers)):
            chunk = data[index]
            result = ring_result(index)
            if result == _NOT_MADE:  # the kernel refused the batch: send it now
                result = send_now(fds[index], chunk)
            try:
                if result >= 0 or result == _NOTHING_TAKEN:
                    sent = max(result, 0)
                    if sent < len(chunk):
                        self._short = True
                    writer = writers[index]
                    writer.batch_sent(chunk, sent)
                else:
                    writer = writers[index]
                    writer.batch_failed(OSError(-result, os.strerror(-result)))
            except Exception as exc:  # one writer's failure costs no other its result
                logger.error(
                    "a transport failed taking its write's result", exc_info=exc
                )

    def close(self) -> None:
        """Let the thread's ring go (the poller closes); a later start makes one."""
        ring_close()
