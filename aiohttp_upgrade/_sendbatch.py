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
batch starts and each write is sent at once. ``AIOHTTP_UPGRADE_NO_IO_URING`` set
to anything in the environment turns batching off.

A queued write counts as handed to the kernel: ``get_write_buffer_size()`` does
not count it, and ``abort()`` before the batch is sent does not take it back.
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
_NOTHING_TAKEN: Final = (-errno.EAGAIN, -errno.EINTR)  # as a send() that raised


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

    ``batches`` counts the submissions, ``sends`` the sends the ring made.
    """

    __slots__ = (
        "_data",
        "_fds",
        "_next",
        "_results",
        "_short",
        "_told",
        "_told_data",
        "_writers",
        "active",
        "batches",
        "sends",
    )

    def __init__(self) -> None:
        self._writers: list[BatchWriter] = []
        self._fds: list[int] = []
        self._data: list[bytes] = []
        # A submitted batch whose writers are being told their results.
        self._told: list[BatchWriter] = []
        self._told_data: list[bytes] = []
        self._results: list[int] = []
        self._next = 0
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
        send it itself (the ring is gone, or results are being told: a write
        made from a writer's callback goes at once)."""
        if self._told:
            return False
        writers = self._writers
        writers.append(writer)  # first: the ring must never hold data nobody holds
        self._fds.append(fd)
        self._data.append(data)
        if ring_add(fd, data):
            return True
        writers.pop()
        self._fds.pop()
        self._data.pop()
        if not writers:
            return False
        self.submit()  # full: make room
        return self.add(writer, fd, data)

    def finish(self) -> bool:
        """Send what is queued and stop taking writes; True if since :meth:`start`
        some write was not taken whole (its transport buffers the rest)."""
        self.active = False
        self.submit()
        short = self._short
        self._short = False
        return short

    def submit(self) -> None:
        """Send what is queued now and tell each writer how it went. Called from a
        writer's callback (it writes again), first tells the rest of the batch
        being told: so each writer hears of its write before it writes more."""
        self._tell()
        writers = self._writers
        if not writers:
            return
        fds, data = self._fds, self._data
        self._writers, self._fds, self._data = [], [], []
        self.batches += 1
        self.sends += ring_submit()
        # All results first, and any write the ring did not make made now, in
        # order: no callback has run yet, so nothing else can write meanwhile.
        results = [ring_result(index) for index in range(len(writers))]
        for index in range(len(writers)):
            if results[index] == _NOT_MADE:
                results[index] = send_now(fds[index], data[index])
        self._told, self._told_data, self._results = writers, data, results
        self._next = 0
        self._tell()

    def _tell(self) -> None:
        writers = self._told
        if not writers:
            return
        data, results = self._told_data, self._results
        # Until all are told, or a writer's callback told the rest (submit()).
        while self._told is writers and self._next < len(writers):
            index = self._next
            self._next = index + 1
            result = results[index]
            chunk = data[index]
            writer = writers[index]
            try:
                if result >= 0 or result in _NOTHING_TAKEN:
                    sent = max(result, 0)
                    if sent < len(chunk):
                        self._short = True
                    writer.batch_sent(chunk, sent)
                else:
                    writer.batch_failed(OSError(-result, os.strerror(-result)))
            except Exception as exc:  # one writer's failure costs no other its result
                logger.error(
                    "a transport failed taking its write's result", exc_info=exc
                )
        if self._told is writers:
            self._told, self._told_data, self._results = [], [], []

    def close(self) -> None:
        """Let the thread's ring go (the poller closes); a later start makes one."""
        ring_close()
