"""Our own transport for upgraded plain sockets, on asyncio's selector loop or uvloop.

After the take-over (:mod:`~aiohttp_upgrade._adopt`) a :class:`SocketTransport`
replaces the loop's: asyncio's spends more interpreted Python per read and write
than the rest of an echo (docs/performance.rst), and uvloop's cannot tell a read
that ends its loop turn, for the per-turn flush. The sockets of a loop are in
one :class:`~aiohttp_upgrade._poller.Poller`; a ready socket's transport reads
with ``recv_into`` into the buffer the protocol lends (``_reads.Reader``) and
hands it the byte count; ``write`` sends at once (or, during a flush of many
sockets, queues the send in the poller's ``_sendbatch``) and watches for
writability only while the kernel refuses bytes. Otherwise asyncio's semantics:
``close`` writes what is buffered first, ``abort`` does not, ``connection_lost``
comes once, in a later callback.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import select
import socket
from collections import deque
from typing import TYPE_CHECKING, Any, Final

try:
    import cython
except ImportError:  # run as Python, without Cython installed
    from . import _nocython as cython
if not cython.compiled:  # else the C twins, cimported by _tcp.pxd
    from ._sendbatch import BatchWriter
    from ._syscalls import recv_into, send

if TYPE_CHECKING:
    from ._poller import Poller
    from ._reads import Reader

__all__ = ["SocketTransport"]

logger = logging.getLogger("aiohttp_upgrade")

_RETRY: Final = (BlockingIOError, InterruptedError)
_READ: Final = getattr(select, "EPOLLIN", 1)
_WRITE: Final = getattr(select, "EPOLLOUT", 4)
_MAX_BUFFERS: Final = 512  # per sendmsg(), under Linux's IOV_MAX (1024)


class SocketTransport(BatchWriter):
    """A plain-socket transport with asyncio's semantics (see the module docstring):
    ``pause_writing`` once more than ``high`` bytes wait for the kernel,
    ``resume_writing`` once at most ``low`` do (``set_write_buffer_limits``)."""

    __slots__ = (
        "_batched",
        "_buffer",
        "_buffered",
        "_closing",
        "_eof",
        "_extra",
        "_fd",
        "_high",
        "_lost",
        "_low",
        "_protocol",
        "_protocol_paused",
        "_reading",
        "_sock",
        "_writing",
        "batch",
        "poller",
    )

    def __init__(
        self,
        poller: Poller,
        sock: socket.socket,
        protocol: Reader,
        extra: dict[str, Any],
    ) -> None:
        self.poller = poller  # also the sockets' turn (see Poller)
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol: Any = protocol
        self._extra = extra
        self._buffer: deque[memoryview] | None = None  # made when needed: 760 B
        self._buffered = 0
        self._high = 64 * 1024
        self._low = 16 * 1024
        self._protocol_paused = False
        self._closing = False
        self._eof = False
        self._lost = False  # connection_lost scheduled
        self._writing = False  # a writer is registered
        self._reading = True
        self.batch = poller.batch
        self._batched = False  # a write waits in the batch
        poller.watch(self, self._fd, _READ)

    def on_events(self, events: int) -> None:
        """Ready for ``events`` (epoll's mask); a hang-up or an error goes to what is
        watched, whose call fails and reports it."""
        if self._writing and events & ~_READ:
            self._write_ready()
        if self._reading and events & ~_WRITE:
            self._read_ready()

    def _watch(self) -> None:
        events = (_READ if self._reading else 0) | (_WRITE if self._writing else 0)
        self.poller.watch(self, self._fd, events)

    # -- reading ------------------------------------------------------------------

    def _read_ready(self) -> None:
        protocol = self._protocol
        try:
            buffer = protocol.get_buffer(-1)
            if not len(buffer):
                raise RuntimeError("get_buffer() returned an empty buffer")
            nbytes = recv_into(self._sock, self._fd, buffer)
        except _RETRY:
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal read error on socket transport")
            return
        if not nbytes:
            self._read_eof()
            return
        try:
            protocol.buffer_updated(nbytes)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.buffer_updated() failed.")

    def _read_eof(self) -> None:
        self.pause_reading()
        try:
            keep_open = self._protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.eof_received() failed.")
        else:
            if not keep_open:
                self.close()

    def pause_reading(self) -> None:
        if not self._closing:
            self._stop(reading=True, writing=False)

    def resume_reading(self) -> None:
        if self._closing or self._reading:
            return
        self._reading = True
        self._watch()

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    # -- writing ------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._eof:
            raise RuntimeError("Cannot call write() after write_eof()")
        if self._lost or not data:
            return
        if self._batched:  # the earlier write first
            self.batch.submit()
            if self._lost:  # it failed
                return
        sent = 0
        if not self._buffered:
            batch = self.batch
            if batch.active and type(data) is bytes and batch.add(self, self._fd, data):
                self._batched = True
                return
            try:
                sent = send(self._sock, self._fd, data)
            except _RETRY:
                pass
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal write error on socket transport")
                return
        self._keep(data, sent)

    def batch_sent(self, data: bytes, sent: int) -> None:
        self._batched = False
        if not self._lost:  # else aborted meanwhile: nothing is kept
            self._keep(data, sent)

    def batch_failed(self, exc: OSError) -> None:
        self._batched = False
        self._fatal_error(exc, "Fatal write error on socket transport")

    def _keep(self, data: bytes | bytearray | memoryview, sent: int) -> None:
        """Buffer what the kernel did not take of ``data`` (``sent`` bytes)."""
        if sent == len(data):
            return
        if not self._buffered:
            self._writing = True
            self._watch()
        # A view of what is left, of a copy if the caller's buffer may change.
        chunk = memoryview(data if type(data) is bytes else bytes(data))[sent:]
        if self._buffer is None:
            self._buffer = deque()
        self._buffer.append(chunk)
        self._buffered += len(chunk)
        if not self._protocol_paused and self._buffered > self._high:
            self._protocol_paused = True
            try:
                self._protocol.pause_writing()
            except Exception as exc:
                self._report(exc, "protocol.pause_writing() failed")

    def _write_ready(self) -> None:
        buffer = self._buffer
        if buffer is None:  # nothing buffered: a stale event
            return
        try:  # the views as they are (nothing joined, nothing copied)
            sent = self._sock.sendmsg(itertools.islice(buffer, _MAX_BUFFERS))
        except _RETRY:
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:  # _force_close() drops the buffer
            self._fatal_error(exc, "Fatal write error on socket transport")
            return
        self._buffered -= sent
        while sent:
            size = len(buffer[0])
            if size > sent:
                buffer[0] = buffer[0][sent:]
                break
            buffer.popleft()
            sent -= size
        if self._protocol_paused and self._buffered <= self._low:
            self._protocol_paused = False
            try:
                self._protocol.resume_writing()
            except Exception as exc:
                self._report(exc, "protocol.resume_writing() failed")
        if self._buffered:
            return
        self._buffer = None
        self._stop(reading=False, writing=True)
        if self._closing:
            self._schedule_connection_lost(None)
        elif self._eof:
            try:
                self._sock.shutdown(socket.SHUT_WR)
            except OSError as exc:
                self._fatal_error(
                    exc, "Fatal error shutting the socket down for writing"
                )

    def get_write_buffer_size(self) -> int:
        return self._buffered

    def set_write_buffer_limits(
        self, high: int | None = None, low: int | None = None
    ) -> None:
        high = (64 * 1024 if low is None else 4 * low) if high is None else high
        low = high // 4 if low is None else low
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self._closing or self._eof:
            return
        self._eof = True
        if self._batched:
            self.batch.submit()
            if self._lost:  # it failed
                return
        if not self._buffered:  # else once the buffer is written
            self._sock.shutdown(socket.SHUT_WR)  # what it raises is the caller's

    # -- closing ------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Close once what is buffered is written; ``connection_lost`` follows."""
        if self._closing:
            return
        self._closing = True
        self._stop(reading=True, writing=False)
        if self._batched:
            self.batch.submit()
        if not self._buffered:
            self._schedule_connection_lost(None)

    def abort(self) -> None:
        """Close at once, dropping what is buffered; ``connection_lost`` follows."""
        self._force_close(None)

    def _report(self, exc: BaseException, message: str) -> None:
        context = {"message": message, "exception": exc, "transport": self}
        self.poller.loop.call_exception_handler(context | {"protocol": self._protocol})

    def _fatal_error(self, exc: BaseException, message: str) -> None:
        if isinstance(exc, OSError):  # the peer is gone: routine
            logger.debug("%r: %s", self, exc)
        else:
            self._report(exc, message)
        self._force_close(exc if isinstance(exc, Exception) else None)

    def _force_close(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._closing = True
        self._stop(reading=True, writing=True)
        self._buffer = None
        self._buffered = 0
        self._schedule_connection_lost(exc)

    def _stop(self, reading: bool, writing: bool) -> None:
        """Stop watching for what is asked and watched."""
        if (reading and self._reading) or (writing and self._writing):
            self._reading = self._reading and not reading
            self._writing = self._writing and not writing
            self._watch()

    def _schedule_connection_lost(self, exc: Exception | None) -> None:
        if not self._lost:
            self._lost = True
            self.poller.loop.call_soon(self._connection_lost, exc)

    def _connection_lost(self, exc: Exception | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            self.poller.forget(self._fd)
            self._sock.close()
            self._fd = -1  # never a descriptor number that may be reused

    # -- the rest of asyncio.Transport ---------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        protocol: asyncio.BaseProtocol = self._protocol
        return protocol

    def __repr__(self) -> str:
        state = "closing" if self._closing else "open"
        return f"<SocketTransport fd={self._fd} {state}>"
