"""``ServerWebSocket``: one upgraded connection, Bun's ``ServerWebSocket``.

The socket is Bun's API plus the close state machine (OPEN -> CLOSED), built from
narrow collaborators: its :class:`~aiohttp_upgrade.outbox.Outbox` (pending frames,
flow control, send codes), its :class:`~aiohttp_upgrade.dispatcher.Dispatcher`
(hooks), its :class:`~aiohttp_upgrade.connection.Connection` (the transport and
the frame parser) and the :class:`SocketContext` its server shares with every
socket (the pub/sub hub, the registry of open sockets).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Generic, TypeVar

from .closecode import CloseCode, check_close_code
from .connection import Connection
from .deflate import DeflateParams
from .dispatcher import Dispatcher, HookTable
from .errors import ProtocolError
from .frames import (
    MAX_CONTROL_PAYLOAD,
    OP_BINARY,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    build_close_frame,
    build_frame,
)
from .outbox import Flusher, Outbox
from .parser import FrameParser, Mask, xor_mask
from .topics import check_topic

if TYPE_CHECKING:
    from .hub import Hub
    from .options import Options

__all__ = ["ReadyState", "ServerWebSocket", "SocketContext"]

logger = logging.getLogger("aiohttp_upgrade")

DataT = TypeVar("DataT")
T = TypeVar("T")

_NORMAL: Final = CloseCode.NORMAL_CLOSURE
_ABNORMAL: Final = CloseCode.ABNORMAL_CLOSURE
_INTERNAL_ERROR: Final = CloseCode.INTERNAL_ERROR
_NO_STATUS: Final = CloseCode.NO_STATUS_RECEIVED


class ReadyState(enum.IntEnum):
    """Connection state, with the numbers Bun's ``readyState`` reports.

    A socket your hooks see is ``OPEN`` and then ``CLOSED``: the server never
    reports ``CONNECTING`` (the socket exists only after the 101) nor ``CLOSING``.
    """

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


_OPEN: Final = ReadyState.OPEN
_CLOSED: Final = ReadyState.CLOSED


@dataclass(slots=True, eq=False)
class SocketContext:
    """What a server shares with each of its sockets: the narrow collaborators.

    ``forget(connection)`` drops a closing socket from the registry of open
    sockets and from every topic; ``hub`` is the pub/sub hub (topics, publish).
    """

    options: Options
    hooks: HookTable
    flusher: Flusher
    hub: Hub
    forget: Callable[[Connection], None]
    tasks: set[asyncio.Task[None]]
    mask: Mask = xor_mask


def _payload(message: object) -> tuple[int, bytes]:
    if type(message) is str:
        return OP_TEXT, message.encode()
    if type(message) is bytes:
        return OP_BINARY, message
    if isinstance(message, bytearray | memoryview):
        return OP_BINARY, bytes(message)
    if isinstance(message, str):
        return OP_TEXT, message.encode()
    raise TypeError(
        f"message must be str or a bytes-like object, got {type(message).__name__}"
    )


def _nothing() -> None:
    pass


def _abort_transport(transport: asyncio.Transport) -> None:
    """``transport.abort()``, which must not stop a close path: what it raises is
    logged."""
    try:
        transport.abort()
    except Exception as exc:
        logger.warning("aborting a connection failed", exc_info=exc)


def _can_half_close(transport: asyncio.Transport) -> bool:
    try:
        return transport.can_write_eof()
    except Exception:  # a transport already torn down: nothing to wait for
        return True


def _control_payload(data: bytes | bytearray | memoryview | str) -> bytes:
    payload = data.encode() if isinstance(data, str) else bytes(data)
    if len(payload) > MAX_CONTROL_PAYLOAD:
        raise ValueError(
            f"ping/pong payload must be at most {MAX_CONTROL_PAYLOAD} bytes"
        )
    return payload


class ServerWebSocket(Generic[DataT]):
    """An upgraded connection, Bun's ``ServerWebSocket``; created by the server, never
    by you. Hooks receive it as ``ws``.

    Attributes:
        data: whatever ``server.upgrade(request, data=...)`` attached (a
            ``DataT``); yours to read and replace.
        remote_address: the client's IP address (``request.remote``), or ``""``.
        ready_state: :attr:`ReadyState.OPEN` until the socket closes, then
            :attr:`ReadyState.CLOSED` (never ``CLOSING``).
        subprotocol: the negotiated ``Sec-WebSocket-Protocol``, or None.

    Send methods never await and never block. They return Bun's codes: the
    payload length when the frame was queued onto an idle connection, ``-1`` when
    bytes were already waiting in the socket's write buffer (the frame is queued
    and will be delivered; ``drain`` follows once the buffer is empty), ``0`` when
    it was dropped (socket closed, or the client behind by more than
    ``backpressure_limit`` bytes: the handler's ``dropped`` hook then gets the
    message) and for an empty payload (which is still sent). Frames sent to one
    socket keep their order and go out in one write per event-loop turn (or per
    read, for what hooks send in answer to it).
    """

    __slots__ = (
        "__weakref__",
        "_close_code",
        "_close_reason",
        "_conn",
        "_ctx",
        "_outbox",
        "data",
        "ready_state",
        "remote_address",
        "subprotocol",
    )

    def __init__(
        self,
        context: SocketContext,
        connection: Connection,
        data: DataT,
        subprotocol: str | None,
        remote_address: str,
        deflate: DeflateParams | None,
    ) -> None:
        options = context.options
        self.data = data
        self.subprotocol = subprotocol
        self.remote_address = remote_address
        self.ready_state = ReadyState.OPEN
        self._ctx = context
        self._conn = connection
        self._close_code: int = _ABNORMAL
        self._close_reason = ""
        outbox = self._outbox = Outbox(
            connection.transport,
            context.flusher,
            options.backpressure_limit,
            deflate.new_compressor() if deflate else None,
            connection,
        )
        connection.ws = self
        connection.outbox = outbox
        connection.dispatcher = Dispatcher(
            self, context.hooks, context.tasks, connection, outbox
        )
        connection.parser = FrameParser(
            connection,
            options.max_payload_length,
            deflate.new_inflater(options.max_payload_length) if deflate else None,
            context.mask,
        )

    def __repr__(self) -> str:
        # Not ``data``: it often holds session secrets, and hook failures log this.
        return f"<ServerWebSocket {self.ready_state.name} {self.remote_address}>"

    # -- sending ---------------------------------------------------------------

    def send(
        self, message: str | bytes | bytearray | memoryview, compress: bool = False
    ) -> int:
        """Send a text frame for ``str``, a binary frame for bytes-like; return Bun's code.

        Args:
            message: the payload.
            compress: deflate it, if permessage-deflate was negotiated with this
                client (otherwise it is sent uncompressed).

        Returns:
            The payload length, -1 (queued behind buffered bytes; ``drain``
            follows) or 0 (dropped: closed or over ``backpressure_limit``; also
            for an empty payload, which is sent).

        Raises:
            TypeError: ``message`` is neither str nor bytes-like.
        """
        if self.ready_state is not _OPEN:
            return 0
        opcode, payload = _payload(message)
        if compress:
            return self._outbox.send(opcode, payload, compress, message)
        length = len(payload)
        if length < 126:  # build_frame() inlined for the commonest case
            frame = bytes((0x80 | opcode, length)) + payload
        else:
            frame = build_frame(opcode, payload)
        return self._outbox.enqueue(frame, length, message)

    def send_text(self, message: str, compress: bool = False) -> int:
        """Send a text frame; returns like :meth:`send`. TypeError if ``message`` is
        not a str."""
        if not isinstance(message, str):
            raise TypeError(f"send_text needs a str, got {type(message).__name__}")
        if self.ready_state is not _OPEN:
            return 0
        return self._outbox.send(OP_TEXT, message.encode(), compress, message)

    def send_binary(
        self, message: bytes | bytearray | memoryview, compress: bool = False
    ) -> int:
        """Send a binary frame; returns like :meth:`send`. TypeError if ``message``
        is not bytes-like."""
        if not isinstance(message, bytes | bytearray | memoryview):
            raise TypeError(
                f"send_binary needs a bytes-like object, got {type(message).__name__}"
            )
        if self.ready_state is not _OPEN:
            return 0
        return self._outbox.send(OP_BINARY, bytes(message), compress, message)

    def ping(self, data: bytes | bytearray | memoryview | str = b"") -> int:
        """Send a ping; returns like :meth:`send` (0 once closed).

        The client answers with a pong, which the ``pong`` hook receives.

        Raises:
            ValueError: the payload is longer than 125 bytes (RFC 6455 5.5).
        """
        payload = _control_payload(data)
        if self.ready_state is not _OPEN:
            return 0
        return self._outbox.enqueue(build_frame(OP_PING, payload), len(payload))

    def pong(self, data: bytes | bytearray | memoryview | str = b"") -> int:
        """Send an unsolicited pong; returns like :meth:`send` (0 once closed).

        Pings from the client are answered automatically; this is a heartbeat.

        Raises:
            ValueError: the payload is longer than 125 bytes (RFC 6455 5.5).
        """
        payload = _control_payload(data)
        if self.ready_state is not _OPEN:
            return 0
        return self._outbox.enqueue(build_frame(OP_PONG, payload), len(payload))

    def get_buffered_amount(self) -> int:
        """Bytes sent but not yet handed to the kernel (0 once closed).

        When it is above ``backpressure_limit`` at the start of an event-loop turn,
        sends return 0 (dropped); what this turn sent counts only from the next.
        """
        if self.ready_state is _CLOSED and self._conn.transport.is_closing():
            return 0
        return self._outbox.buffered

    def cork(self, callback: Callable[[ServerWebSocket[DataT]], T]) -> T:
        """Run ``callback(ws)``; whatever it sends goes out in one write. Returns its result.

        Use it to send several frames from an async hook (whose sends are otherwise
        written one by one) or from outside any hook, such as a timer. The write
        happens when ``callback`` returns or raises; its exception propagates.
        """
        outbox = self._outbox
        write_now = outbox.write_now
        outbox.write_now = False
        try:
            return callback(self)
        finally:
            outbox.write_now = write_now
            outbox.flush()

    # -- pub/sub ---------------------------------------------------------------

    def subscribe(self, topic: str) -> bool:
        """Subscribe to ``topic``; True if newly subscribed, False if already
        subscribed or closed. A closed socket has left all its topics.

        Raises:
            TypeError: ``topic`` is not a str.
            ValueError: ``topic`` is empty or not valid UTF-8 (a lone surrogate).
        """
        topic = check_topic(topic)
        if self.ready_state is not _OPEN:
            return False
        return self._ctx.hub.subscribe(self._conn, topic)

    def unsubscribe(self, topic: str) -> bool:
        """Unsubscribe from ``topic``; True if it was subscribed. Raises like
        :meth:`subscribe`."""
        topic = check_topic(topic)
        if self.ready_state is not _OPEN:
            return False
        return self._ctx.hub.unsubscribe(self._conn, topic)

    def is_subscribed(self, topic: str) -> bool:
        """True if this open socket is subscribed to ``topic``. Raises like
        :meth:`subscribe`."""
        topic = check_topic(topic)
        if self.ready_state is not _OPEN:
            return False
        return self._ctx.hub.is_subscribed(self._conn, topic)

    @property
    def subscriptions(self) -> list[str]:
        """A snapshot of this socket's topics (``[]`` once closed)."""
        if self.ready_state is not _OPEN:
            return []
        return self._ctx.hub.topics_of(self._conn)

    def publish(
        self,
        topic: str,
        message: str | bytes | bytearray | memoryview,
        compress: bool = False,
    ) -> int:
        """Send to every subscriber of ``topic`` except this socket (unless
        ``publish_to_self``); return the worst code among this process's
        subscribers. With a broker, other processes deliver it to all their
        subscribers too.

        Returns:
            The payload length if every local subscriber took it at once, -1 if
            any queued it behind buffered bytes, 0 if any dropped it, if nobody
            else here is subscribed, or if this socket is closed.

        Raises:
            TypeError: ``topic`` is not a str, or ``message`` not str or bytes-like.
            ValueError: ``topic`` is empty or not valid UTF-8 (a lone surrogate).
        """
        topic = check_topic(topic)
        if self.ready_state is not _OPEN:
            return 0
        opcode, payload = _payload(message)
        return self._ctx.hub.publish(
            topic, opcode, payload, compress, message, self._conn
        )

    def publish_text(self, topic: str, message: str, compress: bool = False) -> int:
        """:meth:`publish` a text frame; TypeError if ``message`` is not a str."""
        if not isinstance(message, str):
            raise TypeError(f"publish_text needs a str, got {type(message).__name__}")
        return self.publish(topic, message, compress)

    def publish_binary(
        self,
        topic: str,
        message: bytes | bytearray | memoryview,
        compress: bool = False,
    ) -> int:
        """:meth:`publish` a binary frame; TypeError if ``message`` is not
        bytes-like."""
        if not isinstance(message, bytes | bytearray | memoryview):
            raise TypeError(
                f"publish_binary needs a bytes-like object, got {type(message).__name__}"
            )
        return self.publish(topic, message, compress)

    # -- closing ---------------------------------------------------------------

    def close(self, code: int = _NORMAL, reason: str = "") -> None:
        """Close with ``code`` and ``reason``; idempotent (does nothing once closed).

        The Close frame goes out after everything already sent; the ``close`` hook
        runs at once with ``code`` and ``reason``, without waiting for the client's
        Close, and events not yet dispatched to async hooks are dropped. A client
        that is already gone is not an error: the connection is aborted and the
        ``close`` hook still runs (once, whatever the transport raised).

        Args:
            code: 1000 (default) or another code an endpoint may send: 1001-1003,
                1007-1014, 3000-4999 (RFC 6455 7.4).
            reason: cut to 123 bytes of UTF-8 on a character boundary.

        Raises:
            ValueError: ``code`` is not one of those (never ``OSError``).
        """
        check_close_code(code)
        if self.ready_state is not _OPEN:
            return
        self._conn.dispatcher.drop_queued()
        self._begin_close(code, reason, build_close_frame(code, reason), linger=True)

    def terminate(self) -> None:
        """Abort the connection at once, without a Close frame and dropping what is
        still buffered; the ``close`` hook sees 1006. Idempotent."""
        if self.ready_state is not _OPEN:
            return
        self._abort(_ABNORMAL, "")

    # -- the close state machine (called by the connection and the server) --------

    def _is_open(self) -> bool:
        return self.ready_state is _OPEN

    def _close(
        self,
        code: int,
        reason: str,
        end: Callable[[], None],
        *,
        await_peer_close: bool = False,
    ) -> None:
        """OPEN -> CLOSED: no more input, no more data sent, out of the registry;
        ``end()`` then deals with the transport, and the ``close`` hook is
        dispatched whatever either raised (the close path is total). With
        ``await_peer_close`` input is still parsed, for the client's Close only."""
        self.ready_state = _CLOSED
        self._close_code = code
        self._close_reason = reason
        try:
            parser = self._conn.parser
            if await_peer_close:
                parser.await_close(self._peer_answered_close)
            else:
                parser.stop()
            self._outbox.close()
            try:
                self._ctx.forget(self._conn)
            finally:
                end()
        finally:
            self._conn.dispatcher.closed(code, reason)

    def _abort(self, code: int, reason: str) -> None:
        self._conn.dispatcher.drop_queued()
        self._close(code, reason, self._end_abort)

    def _end_abort(self) -> None:
        self._outbox.discard()
        _abort_transport(self._conn.transport)

    def _abort_if_open(self) -> None:
        if self.ready_state is _OPEN:
            self._abort(_ABNORMAL, "")

    def _begin_close(
        self, code: int, reason: str, frame: bytes | None, *, linger: bool
    ) -> None:
        """Send ``frame`` (a Close) after everything pending, then end the connection.

        Answering the client's Close, close TCP at once: the server closes first
        (RFC 6455 7.1.1). Closing on our own (``linger``), half-close instead and
        discard what still comes in until the client closes its side, as
        websockets does: a socket closed with input still arriving answers with a
        TCP reset, which can destroy the Close frame unread in the client's buffer,
        so a client that was still sending would see a reset instead of the close
        code. Transports that cannot half-close (TLS) stay open, skipping what
        comes in, until the client's Close arrives: closing them at once would
        make the client's own Close fail, and it would report 1006.
        """
        await_peer_close = linger and not _can_half_close(self._conn.transport)
        self._close(
            code,
            reason,
            lambda: self._end_with(frame, linger),
            await_peer_close=await_peer_close,
        )

    def _peer_answered_close(self) -> None:
        """The client's Close (or garbage) after ours, on a transport that cannot
        half-close: the closing handshake is over, the server closes TCP."""
        conn = self._conn
        conn.parser.stop()
        try:
            conn.transport.close()
        except Exception as exc:
            logger.debug("closing %r: %s; aborting it", self, exc)
            _abort_transport(conn.transport)

    def _end_with(self, frame: bytes | None, linger: bool) -> None:
        conn = self._conn
        transport = conn.transport
        outbox = self._outbox
        if frame is not None:
            outbox.enqueue_control(frame)
        outbox.flush()  # never raises
        try:
            if transport.is_closing():
                return
            if linger:
                if transport.can_write_eof():
                    transport.write_eof()
                conn.resume_reading()
                self._abort_later()
            else:
                transport.close()
                if transport.get_write_buffer_size():
                    self._abort_later()
        except Exception as exc:
            # A peer that already left makes write_eof() fail with ENOTCONN (its
            # reset to our Close frame came first): nothing is left to deliver.
            if isinstance(exc, OSError):
                logger.debug("ending %r: %s; aborting it", self, exc)
            else:
                logger.warning("ending %r failed; aborting it", self, exc_info=exc)
            _abort_transport(transport)

    def _abort_later(self) -> None:
        # A client that stops reading, or never closes, must not pin the connection.
        asyncio.get_running_loop().call_later(
            self._ctx.options.close_timeout, _abort_transport, self._conn.transport
        )

    def _shutdown(self, code: int, reason: str, frame: bytes) -> None:
        """Close for a server shutdown: no lingering for the client's Close, so
        that a client that never answers cannot hold the shutdown."""
        if self.ready_state is not _OPEN:
            return
        self._conn.dispatcher.drop_queued()
        self._begin_close(code, reason, frame, linger=False)

    def _peer_closed(self, code: int, reason: str) -> None:
        if self.ready_state is not _OPEN:
            return
        # Echo the client's code (RFC 6455 5.5.1); an empty Close gets an empty one.
        reply = build_close_frame(None if code == _NO_STATUS else code, reason)
        self._begin_close(code, reason, reply, linger=False)

    def _protocol_failed(self, error: ProtocolError) -> None:
        if self.ready_state is not _OPEN:
            return
        logger.info(
            "closing WebSocket from %s: %s (%d)",
            self.remote_address,
            error.reason,
            error.code,
        )
        self._begin_close(
            error.code,
            error.reason,
            build_close_frame(error.code, error.reason),
            linger=True,
        )

    def _hook_failed(self) -> None:
        if self.ready_state is not _OPEN:
            return
        self._begin_close(
            _INTERNAL_ERROR, "", build_close_frame(_INTERNAL_ERROR, ""), linger=True
        )

    def _connection_lost(self) -> None:
        if self.ready_state is _OPEN:
            self._close(_ABNORMAL, "", _nothing)

    def _write_failed(self, exc: Exception) -> None:
        logger.error("writing to %r failed; aborting it", self, exc_info=exc)
        if self.ready_state is _OPEN:
            self._abort(_ABNORMAL, "")
        else:
            _abort_transport(self._conn.transport)

    def _dropped(self, message: object) -> None:
        """The outbox dropped a message at the backpressure limit."""
        if self._ctx.options.close_on_backpressure_limit:
            if self.ready_state is _OPEN:
                self._abort(_ABNORMAL, "backpressure limit exceeded")
        elif message is not None:
            if isinstance(message, bytearray | memoryview):  # as ``message`` gets it
                message = bytes(message)
            self._conn.dispatcher.dropped(message)

    def _idle_tick(self, ticks_to_ping: int, ticks_to_close: int) -> None:
        """Advance the idle timer by one tick (called by the server's sweep)."""
        conn = self._conn
        outbox = self._outbox
        if outbox.sent:  # a send since the last tick
            outbox.sent = False
            if self._ctx.options.reset_idle_timeout_on_send:
                conn.idle_ticks = 0
        ticks = conn.idle_ticks = conn.idle_ticks + 1
        if ticks >= ticks_to_close:
            logger.info("closing idle WebSocket from %s", self.remote_address)
            self._abort(_ABNORMAL, "idle timeout")
        elif ticks == ticks_to_ping:
            outbox.enqueue(build_frame(OP_PING, b""), 0)
            outbox.sent = False  # our own ping is not activity
