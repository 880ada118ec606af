"""One upgraded connection: the protocol that owns everything of a socket.

After the 101 the transport is handed to a :class:`Connection` (``_compat``, then
``_adopt``), which builds the socket's outbox, its sans-I/O protocol (frame
parser, close state machine), the ``ServerWebSocket`` hooks see and its
dispatcher. Reads go straight into the parser, whose events become hook
dispatches; what the protocol decides on closing is carried out here and nowhere
else. Nothing else runs per socket: no task, no aiohttp object.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sized
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ._compat import ready_callbacks
from ._deflate import DeflateParams
from ._dispatcher import Dispatcher, Kind
from ._frames import OP_PING, OP_PONG, build_frame
from ._outbox import Outbox
from ._pausing import ALL
from ._protocol import (
    Abort,
    Action,
    ArmCloseTimeout,
    Closed,
    CloseTransport,
    Closing,
    HalfClose,
    ReadOn,
    ReadyState,
    SendFrame,
    ServerProtocol,
)
from ._ratelimit import limit_reads
from ._websocket import ServerWebSocket

if TYPE_CHECKING:
    from ._websocket import SocketContext

__all__ = ["Connection"]

logger = logging.getLogger("aiohttp_upgrade")

_PING: Final = Kind.PING
_PONG: Final = Kind.PONG
_DRAIN: Final = Kind.DRAIN
_DROPPED: Final = Kind.DROPPED
_OPEN: Final = ReadyState.OPEN
_IDLE_PING: Final = build_frame(OP_PING, b"")

T = TypeVar("T")


class Connection:
    """The protocol of one upgraded connection (see the module docstring): on
    ``transport``, with the server's ``context``; ``data``, ``subprotocol`` and
    ``remote_address`` are the socket's, ``deflate`` the negotiated compression,
    if any. ``ws`` is the socket's facade, ``id`` its number in log lines,
    ``idle_ticks`` the idle timer's ticks since the client last sent a frame."""

    __slots__ = (
        "_close_timer",
        "_counters",
        "_ctx",
        "_paused",
        "_read_buffer",
        "_turn",
        "dispatcher",
        "idle_ticks",
        "outbox",
        "parser",
        "protocol",
        "transport",
        "ws",
    )

    def __init__(
        self,
        transport: asyncio.Transport,
        context: SocketContext,
        data: Any,
        subprotocol: str | None,
        remote_address: str,
        deflate: DeflateParams | None,
    ) -> None:
        options = context.options
        self.transport = transport
        self._ctx = context
        self._counters = context.counters
        self.idle_ticks = 0
        self._paused = 0  # why reading is paused: bits of _pausing
        self._read_buffer = context.read_buffer
        self._close_timer: asyncio.TimerHandle | None = None
        self._turn: Sized | None = ready_callbacks(asyncio.get_running_loop())
        self.outbox = outbox = Outbox(
            transport,
            context.flusher,
            options.backpressure_limit,
            deflate.new_compressor() if deflate else None,
            self,
        )
        inflater = deflate.new_inflater(options.max_payload_length) if deflate else None
        self.protocol = protocol = ServerProtocol(
            self, options.max_payload_length, inflater, context.mask, remote_address
        )
        self.parser = limit_reads(self, protocol.parser, context)  # through any limit
        self.ws: ServerWebSocket[Any] = ServerWebSocket(
            self, outbox, context, data, subprotocol, remote_address
        )
        self.dispatcher = Dispatcher(self.ws, context, self)

    def use_transport(
        self, transport: asyncio.Transport, turn: Sized | None = None
    ) -> None:
        """Use ``transport`` (``_adopt``) and ``turn``, if given, from now on."""
        self.transport = transport
        self.outbox.use_transport(transport)
        if turn is not None:
            self._turn = turn

    @property
    def id(self) -> int:
        """This connection's number, in ``repr(ws)`` and log lines (``conn <id>``)."""
        return self.protocol.id

    # -- asyncio.BufferedProtocol's interface (reads: see _reads) ---------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._read_buffer

    def read_into(self, buffer: memoryview) -> None:
        """Read into ``buffer``, a view of the server's buffer (``_ratelimit``)."""
        self._read_buffer = buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._read_buffer[:nbytes])

    def eof_received(self) -> None:
        """The transport closes: ``connection_lost`` follows."""

    def pause_writing(self) -> None:
        """Nothing: the outbox looks at the transport's buffer itself."""

    def data_received(self, data: bytes | memoryview) -> None:
        # A read, or the handshake's leftover. Replies go out in one write: now if it
        # is the turn's last read, else with the per-turn flush (8 % less CPU).
        outbox = self.outbox
        self._counters.bytes_in += len(data)
        try:
            if outbox.held:  # a hook fed data itself (a test, a proxy): nested read
                self.parser.feed(data)
                return
            outbox.held = True
            try:
                self.parser.feed(data)
            finally:
                outbox.held = False
                if self._turn and outbox.pending:
                    outbox.flush_later()
                else:
                    outbox.flush()
        finally:
            if self.protocol.actions:  # the peer's Close, or a protocol error
                self._act()

    def connection_lost(self, exc: Exception | None) -> None:
        timer = self._close_timer
        if timer is not None:  # it holds this connection until it fires
            self._close_timer = None
            timer.cancel()
        try:
            self.protocol.connection_lost()
            self._act()
        finally:
            self._ctx.gone(self)

    def resume_writing(self) -> None:
        # With the write-buffer limits at zero, resumed means the buffer is empty.
        self._counters.backpressure += 1  # an episode ended
        self.outbox.writable()

    # -- events from the parser (ProtocolOwner) -----------------------------------

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

    def can_half_close(self) -> bool:
        try:
            return self.transport.can_write_eof()
        except Exception:  # a transport already torn down: nothing to wait for
            return True

    # -- what the facade and the server ask for ---------------------------------------

    def close(self, code: int, reason: str) -> None:
        """``ws.close()``: the closing handshake (see ``ServerProtocol.close``)."""
        self.protocol.close(code, reason)
        self._act()

    def terminate(self, reason: str = "") -> None:
        """Abort without a Close frame; the ``close`` hook sees 1006 and ``reason``."""
        self.protocol.abort(reason)
        self._act()

    def shutdown(self, code: int, reason: str, frame: bytes) -> None:
        """Close for a server shutdown, not waiting for the client's Close."""
        self.protocol.shutdown(code, reason, frame)
        self._act()

    def cork(self, callback: Callable[[ServerWebSocket[Any]], T]) -> T:
        """Run ``callback(ws)``, writing what it sends in one write when it ends."""
        return self.outbox.cork(lambda: callback(self.ws))

    def buffered_amount(self) -> int:
        """Bytes queued and not yet handed to the kernel (0 once gone)."""
        if self.ws.ready_state is not _OPEN and self.transport.is_closing():
            return 0
        return self.outbox.buffered

    def subscription(self, topic: str, new_count: int, old_count: int) -> None:
        """The ``subscription`` hook, in order with this socket's other hooks."""
        self.dispatcher.subscription(topic, new_count, old_count)

    def idle_tick(self, ticks_to_ping: int, ticks_to_close: int) -> None:
        """Advance the idle timer by one tick (called by the server's sweep)."""
        if self.ws.ready_state is not _OPEN:
            return
        outbox = self.outbox
        if outbox.sent:  # a send since the last tick
            outbox.sent = False
            if self._ctx.options.reset_idle_timeout_on_send:
                self.idle_ticks = 0
        ticks = self.idle_ticks = self.idle_ticks + 1
        if ticks >= ticks_to_close:
            logger.info(
                "conn %d: closing idle WebSocket from %s",
                self.id,
                self.ws.remote_address,
            )
            self.terminate("idle timeout")
        elif ticks == ticks_to_ping:
            outbox.enqueue_control(_IDLE_PING)  # not a send: no activity

    # -- from the outbox (OutboxOwner) ----------------------------------------------

    def drained(self) -> None:
        if self.ws.ready_state is _OPEN:
            self.dispatcher.dispatch(_DRAIN)

    def dropped(self, message: object) -> None:
        """The outbox dropped a message at the backpressure limit."""
        self._counters.dropped += 1
        if self._ctx.options.close_on_backpressure_limit:
            self.terminate("backpressure limit exceeded")
        elif message is not None and self._ctx.hooks[_DROPPED] is not None:
            self.dispatcher.dropped(message)

    def write_failed(self, exc: Exception) -> None:
        logger.error(
            "conn %d: writing to %r failed; aborting it", self.id, self.ws, exc_info=exc
        )
        self.protocol.write_failed()
        self._act()

    # -- from the dispatcher (DispatchOwner) -----------------------------------------

    # Paused for reasons (bits of _pausing), read again once none is left; also on
    # the close path, where a transport going away may refuse: that must not stop it.

    def pause_reading(self, reason: int) -> None:
        paused, self._paused = self._paused, self._paused | reason
        if not paused:
            self._read(False)

    def resume_reading(self, reason: int) -> None:
        paused, self._paused = self._paused, self._paused & ~reason
        if paused and not self._paused:
            self._read(True)

    def _read(self, on: bool) -> None:
        name = "resume_reading" if on else "pause_reading"
        try:
            getattr(self.transport, name)()
        except Exception as exc:
            logger.debug("conn %d: %s failed: %r", self.id, name, exc)

    def hooks_running(self, running: bool) -> None:
        # A task's sends are written at once: its turn ends at an await nobody sees.
        self.outbox.write_now = running

    def hook_failed(self) -> None:
        self.protocol.hook_failed()
        self._act()

    def task_cancelled(self) -> None:
        self.terminate()

    # -- carrying out the protocol's actions ----------------------------------------

    def _act(self) -> None:
        """Carry out every action the protocol recorded, in order.

        Total: each runs whatever the ones before raised (a transport that fails
        is aborted instead), so the ``close`` hook is always reported; the first
        exception that is not the transport's is raised at the end.
        """
        error: Exception | None = None
        for action in self.protocol.take_actions():
            try:
                self._carry_out(action)
            except Exception as exc:
                if error is None:
                    error = exc
        self.ws.ready_state = self.protocol.state  # CLOSING ends as CLOSED here
        if error is not None:
            raise error

    def _carry_out(self, action: Action) -> None:
        if type(action) is Closed:
            self.dispatcher.closed(action.code, action.reason)
        elif type(action) is Closing:
            self._leave_open(action.drop_events)
        elif type(action) is SendFrame:
            self.outbox.enqueue_control(action.frame)
            self.outbox.flush()  # never raises
        elif type(action) is Abort:
            self.outbox.discard()
            self._abort()
        else:
            self._end(action)

    def _leave_open(self, drop_events: bool) -> None:
        if drop_events:
            self.dispatcher.drop_queued()
        self.ws.ready_state = self.protocol.state  # CLOSING during a handshake
        self.outbox.close()
        self._ctx.forget(self)

    def _end(self, action: Action) -> None:
        """Half-close, read on, close or arm the close timeout: nothing once the
        transport is closing; a failure aborts it."""
        transport = self.transport
        try:
            if transport.is_closing():
                return
            if type(action) is HalfClose:
                transport.write_eof()
            elif type(action) is ReadOn:
                self.resume_reading(ALL)  # read until the client's Close
            elif type(action) is ArmCloseTimeout:
                self._arm_close_timeout()
            elif type(action) is CloseTransport:
                transport.close()
                if transport.get_write_buffer_size():
                    self._arm_close_timeout()
        except Exception as exc:
            # A peer that already left makes write_eof() fail with ENOTCONN (its
            # reset to our Close frame came first): nothing is left to deliver.
            if isinstance(exc, OSError):
                logger.debug("conn %d: ending %r: %s; aborting it", self.id, self, exc)
            else:
                logger.warning(
                    "conn %d: ending %r failed; aborting", self.id, self, exc_info=exc
                )
            self._abort()

    def _abort(self) -> None:
        try:  # what it raises is logged: it must not stop a close
            self.transport.abort()
        except Exception as exc:
            logger.warning("aborting a connection failed", exc_info=exc)

    def _arm_close_timeout(self) -> None:
        # A client that stops reading, or never closes, must not pin the connection.
        if self._close_timer is None:
            self._close_timer = asyncio.get_running_loop().call_later(
                self._ctx.options.close_timeout, self._close_timed_out
            )

    def _close_timed_out(self) -> None:
        self._close_timer = None
        self.protocol.close_timed_out()
        self._act()

    def __repr__(self) -> str:
        return f"<Connection conn {self.id} {self.ws.remote_address}>"
