"""The seam between one socket and asyncio: a small ``asyncio.Protocol``.

After the 101, :func:`aiohttp_upgrade._compat.take_over` hands the transport to a
:class:`Connection`. Reads go straight into the frame parser, whose events the
connection turns into hook dispatches (through the socket's
:class:`~aiohttp_upgrade.dispatcher.Dispatcher`) and into the close state machine
of the :class:`~aiohttp_upgrade.websocket.ServerWebSocket`; the transport's
write flow control goes to the socket's :class:`~aiohttp_upgrade.outbox.Outbox`.
Nothing else runs per socket: no task, no aiohttp object.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sized
from typing import TYPE_CHECKING, Any, Final

from ._compat import ready_callbacks
from .dispatcher import Dispatcher, Kind
from .errors import ProtocolError
from .frames import OP_PONG, build_frame
from .hub import Relayed
from .outbox import Outbox
from .parser import FrameParser

if TYPE_CHECKING:
    from .websocket import ServerWebSocket

__all__ = ["Connection"]

logger = logging.getLogger("aiohttp_upgrade")

_PING: Final = Kind.PING
_PONG: Final = Kind.PONG
_DRAIN: Final = Kind.DRAIN


class Connection(asyncio.Protocol):
    """The protocol of one upgraded connection (see the module docstring).

    It is the frame parser's sink, the outbox's owner and the dispatcher's owner.
    ``idle_ticks`` counts idle-timer ticks since the client last sent a frame.
    """

    __slots__ = (
        "_reading_paused",
        "_turn",
        "dispatcher",
        "idle_ticks",
        "outbox",
        "parser",
        "transport",
        "ws",
    )

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.idle_ticks = 0
        self._reading_paused = False
        self._turn: Sized | None = ready_callbacks(asyncio.get_running_loop())
        # Set by ServerWebSocket's constructor, which builds the collaborators.
        self.ws: ServerWebSocket[Any]
        self.outbox: Outbox
        self.dispatcher: Dispatcher
        self.parser: FrameParser

    # -- asyncio.Protocol ----------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        # What the hooks send in answer to this read goes out in one write: at the
        # end of the read when it is the last callback of this loop turn (no round
        # through the per-turn flusher), else with the per-turn flush after the
        # other sockets' reads. Writing in the middle of a turn of many reads wakes
        # each client once per message: ~10 % more server CPU per round trip with
        # 50 echo clients (benchmarks/echo.py).
        outbox = self.outbox
        if outbox.held:  # a hook fed data itself (a test, a proxy): nested read
            self.parser.feed(data)
            return
        outbox.held = True
        try:
            self.parser.feed(data)
        finally:
            outbox.held = False
            turn = self._turn
            if turn and outbox.pending:
                outbox.flush_later()
            else:
                outbox.flush()

    def eof_received(self) -> bool | None:
        return None  # the transport closes; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.ws._connection_lost()

    def pause_writing(self) -> None:
        pass  # the outbox asks the transport for its buffer size instead

    def resume_writing(self) -> None:
        # With the write-buffer limits at zero, resumed means the buffer is empty.
        self.outbox.writable()

    # -- events from the parser (FrameSink) ---------------------------------------

    def on_message(self, message: str | bytes) -> None:
        self.idle_ticks = 0
        self.dispatcher.message(message)

    def on_ping(self, data: bytes) -> None:
        self.idle_ticks = 0
        # Answer first (RFC 6455 5.5.2), then tell the handler.
        self.outbox.enqueue(build_frame(OP_PONG, data), len(data))
        self.dispatcher.dispatch(_PING, data)

    def on_pong(self, data: bytes) -> None:
        self.idle_ticks = 0
        self.dispatcher.dispatch(_PONG, data)

    def on_close(self, code: int, reason: str) -> None:
        self.ws._peer_closed(code, reason)

    def on_protocol_error(self, error: ProtocolError) -> None:
        self.ws._protocol_failed(error)

    # -- from the outbox (OutboxOwner) ----------------------------------------------

    def drained(self) -> None:
        if self.ws._is_open():
            self.dispatcher.dispatch(_DRAIN)

    def dropped(self, message: object) -> None:
        if type(message) is Relayed:  # a relayed text message, decoded only now
            message = message.decode()
        self.ws._dropped(message)

    def write_failed(self, exc: Exception) -> None:
        self.ws._write_failed(exc)

    # -- from the dispatcher (DispatchOwner) -----------------------------------------

    # Also called on the close path (a close hook queued behind a full inbox, the
    # half-close that reads until the client's FIN), where a transport that is
    # going away may refuse: that must not stop the close.

    def pause_reading(self) -> None:
        if not self._reading_paused:
            self._reading_paused = True
            try:
                self.transport.pause_reading()
            except Exception as exc:
                logger.debug("pause_reading failed: %r", exc)

    def resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            try:
                self.transport.resume_reading()
            except Exception as exc:
                logger.debug("resume_reading failed: %r", exc)

    def hook_failed(self) -> None:
        self.ws._hook_failed()

    def task_cancelled(self) -> None:
        self.ws._abort_if_open()

    # -- the server side's port (hub.SocketPort; ``outbox`` is the fan-out's sink) --

    def subscription(self, topic: str, new_count: int, old_count: int) -> None:
        self.dispatcher.subscription(topic, new_count, old_count)

    def shutdown(self, code: int, reason: str, frame: bytes) -> None:
        self.ws._shutdown(code, reason, frame)

    def idle_tick(self, ticks_to_ping: int, ticks_to_close: int) -> None:
        self.ws._idle_tick(ticks_to_ping, ticks_to_close)
