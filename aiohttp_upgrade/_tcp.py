"""Our own transport for upgraded plain-TCP sockets on asyncio's selector loop.

asyncio's socket transport spends, per read and per write, more interpreted
Python than the rest of an echo (``_read_ready__get_buffer``, ``write``,
``get_write_buffer_size``: about 1 µs of a 7 µs round trip, docs/performance.rst).
After the take-over this transport replaces it: the event loop calls
:meth:`SocketTransport._read_ready` for a readable socket, which reads with
``recv_into`` into the buffer the protocol lends (the server's shared buffer)
and hands the byte count to ``buffer_updated``; :meth:`SocketTransport.write`
sends at once and registers a writer only for what the kernel refused. Compiled,
both are C; pure Python, they are still shorter than asyncio's.

Only a plain TCP transport of asyncio's selector loop is adopted
(:func:`adopt`): TLS and uvloop keep their own transports. The socket is
duplicated, the duplicate is ours, and asyncio's transport is aborted without a
byte lost: nothing is buffered in it (checked) and nothing it has not read yet is
lost, the kernel's receive buffer being shared by both descriptors.

The protocol interface is ``asyncio.BufferedProtocol``'s (``get_buffer``,
``buffer_updated``, ``eof_received``, ``pause_writing``, ``resume_writing``,
``connection_lost``), and the transport's is the part of ``asyncio.Transport``
that :class:`~aiohttp_upgrade._connection.Connection` and the outbox use, with
asyncio's semantics: ``close`` writes what is buffered first, ``abort`` does not,
``connection_lost`` comes in a later callback, exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from asyncio import selector_events
from typing import Any, Final

__all__ = ["SocketTransport", "adopt"]

logger = logging.getLogger("aiohttp_upgrade")

_RETRY: Final = (BlockingIOError, InterruptedError)
_SELECTOR_TRANSPORT: Final[type] = getattr(
    selector_events, "_SelectorSocketTransport", type(None)
)


class _Released(asyncio.Protocol):
    """The protocol of asyncio's transport once it is ours: it hears nothing."""

    def connection_lost(self, exc: Exception | None) -> None:
        pass


def adopt(
    transport: asyncio.BaseTransport, protocol: asyncio.BufferedProtocol
) -> SocketTransport | None:
    """Replace ``transport`` (already given to ``protocol``) with our own, or None.

    Only asyncio's plain-TCP selector transport with nothing buffered is adopted;
    anything else (TLS, uvloop, a transport holding unsent bytes) stays as it is
    and None is returned. ``protocol`` then hears from the new transport only.
    """
    if type(transport) is not _SELECTOR_TRANSPORT or not isinstance(
        transport, asyncio.Transport
    ):
        return None
    if transport.get_write_buffer_size() or transport.is_closing():
        return None
    raw = transport.get_extra_info("socket")
    if raw is None:
        return None
    extra = {name: transport.get_extra_info(name) for name in ("peername", "sockname")}
    loop = asyncio.get_running_loop()
    try:
        sock = raw.dup()
    except OSError as exc:  # out of descriptors: asyncio's transport stays
        logger.debug("keeping asyncio's transport: dup() failed: %s", exc)
        return None
    transport.pause_reading()
    transport.set_protocol(_Released())
    transport.abort()  # closes its descriptor in a later callback; ours stays open
    sock.setblocking(False)
    extra["socket"] = sock
    return SocketTransport(loop, sock, protocol, extra)


class SocketTransport:
    """A plain-TCP transport with asyncio's semantics (see the module docstring).

    Writes go to the kernel at once; what it refuses is buffered and written when
    the socket is writable. ``pause_writing`` is called once more than ``high``
    bytes are buffered (``set_write_buffer_limits``), ``resume_writing`` once at
    most ``low`` are.
    """

    __slots__ = (
        "_buffer",
        "_buffered",
        "_closing",
        "_eof",
        "_extra",
        "_fd",
        "_high",
        "_loop",
        "_lost",
        "_low",
        "_protocol",
        "_protocol_paused",
        "_reading",
        "_sock",
        "_writing",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol: asyncio.BufferedProtocol,
        extra: dict[str, Any],
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol: Any = protocol
        self._extra = extra
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._high = 64 * 1024
        self._low = 16 * 1024
        self._protocol_paused = False
        self._closing = False
        self._eof = False
        self._lost = False  # connection_lost scheduled
        self._writing = False  # a writer is registered
        self._reading = True
        loop.add_reader(self._fd, self._read_ready)

    # -- reading ------------------------------------------------------------------

    def _read_ready(self) -> None:
        protocol = self._protocol
        try:
            buffer = protocol.get_buffer(-1)
            if not len(buffer):
                raise RuntimeError("get_buffer() returned an empty buffer")
            nbytes = self._sock.recv_into(buffer)
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
            self._fatal_error(
                exc, "Fatal error: protocol.buffer_updated() call failed."
            )

    def _read_eof(self) -> None:
        self.pause_reading()
        try:
            keep_open = self._protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.eof_received() call failed.")
            return
        if not keep_open:
            self.close()

    def pause_reading(self) -> None:
        if self._closing or not self._reading:
            return
        self._reading = False
        self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if self._closing or self._reading:
            return
        self._reading = True
        self._loop.add_reader(self._fd, self._read_ready)

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    # -- writing ------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._eof:
            raise RuntimeError("Cannot call write() after write_eof()")
        if self._lost or not data:
            return
        if not self._buffered:
            try:
                sent = self._sock.send(data)
            except _RETRY:
                sent = 0
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal write error on socket transport")
                return
            if sent == len(data):
                return
            data = data[sent:]
            self._loop.add_writer(self._fd, self._write_ready)
            self._writing = True
        self._buffer.append(bytes(data))
        self._buffered += len(data)
        if not self._protocol_paused and self._buffered > self._high:
            self._protocol_paused = True
            self._call_protocol("pause_writing")

    def _write_ready(self) -> None:
        buffer = self._buffer
        data = buffer[0] if len(buffer) == 1 else b"".join(buffer)
        try:
            sent = self._sock.send(data)
        except _RETRY:
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._stop_writing()
            buffer.clear()
            self._buffered = 0
            self._fatal_error(exc, "Fatal write error on socket transport")
            return
        buffer.clear()
        if sent < len(data):
            buffer.append(data[sent:])
        self._buffered = len(data) - sent
        if self._protocol_paused and self._buffered <= self._low:
            self._protocol_paused = False
            self._call_protocol("resume_writing")
        if self._buffered:
            return
        self._stop_writing()
        if self._closing:
            self._schedule_connection_lost(None)
        elif self._eof:
            try:
                self._sock.shutdown(socket.SHUT_WR)
            except OSError as exc:
                self._fatal_error(
                    exc, "Fatal error shutting the socket down for writing"
                )

    def _stop_writing(self) -> None:
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self._fd)

    def get_write_buffer_size(self) -> int:
        return self._buffered

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(
        self, high: int | None = None, low: int | None = None
    ) -> None:
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high = high
        self._low = low

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self._closing or self._eof:
            return
        self._eof = True
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
        self._stop_reading()
        if not self._buffered:
            self._schedule_connection_lost(None)

    def abort(self) -> None:
        """Close at once, dropping what is buffered; ``connection_lost`` follows."""
        self._force_close(None)

    def _fatal_error(self, exc: BaseException, message: str) -> None:
        if isinstance(exc, OSError):  # the peer is gone: routine
            logger.debug("%r: %s", self, exc)
        else:
            self._loop.call_exception_handler(
                {
                    "message": message,
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )
        self._force_close(exc if isinstance(exc, Exception) else None)

    def _force_close(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._closing = True
        self._stop_reading()
        self._stop_writing()
        self._buffer.clear()
        self._buffered = 0
        self._schedule_connection_lost(exc)

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def _schedule_connection_lost(self, exc: Exception | None) -> None:
        if not self._lost:
            self._lost = True
            self._loop.call_soon(self._connection_lost, exc)

    def _connection_lost(self, exc: Exception | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._sock.close()

    def _call_protocol(self, name: str) -> None:
        try:
            getattr(self._protocol, name)()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler(
                {
                    "message": f"protocol.{name}() failed.",
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )

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
