"""``ServerWebSocket``: one upgraded connection, Bun's ``ServerWebSocket``.

Sending never awaits. Every frame sent to a socket during one event-loop turn
(``send``, ``publish``, pongs, Close) is appended to that socket's pending output,
and one flush per turn writes it with a single ``transport.write``; while the
owner runs an async hook, whose turn ends at an await nobody sees, that socket's
sends are written at once instead (``cork`` still makes one write). Each socket
has one owner coroutine (the aiohttp request handler that upgraded it) which runs
``open``, dispatches queued events to async hooks in order, and runs ``close``.
Events for plain-function hooks are dispatched straight from ``data_received``
while the owner is idle.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

from ._compat import drain_waiter
from .deflate import DeflateParams
from .errors import ProtocolError
from .frames import (
    OP_BINARY,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    build_close_frame,
    build_frame,
)
from .parser import FrameParser, check_close_code
from .topics import check_topic

if TYPE_CHECKING:
    from .handler import Hook
    from .server import Server

__all__ = ["ReadyState", "ServerWebSocket"]

logger = logging.getLogger("aiohttp_upgrade")

DataT = TypeVar("DataT")
T = TypeVar("T")

NORMAL_CLOSURE: Final = 1000
ABNORMAL_CLOSURE: Final = 1006
INTERNAL_ERROR: Final = 1011

# How long a closing connection may take to flush its last bytes, and the client
# to close its side, before it is aborted.
CLOSE_TIMEOUT: Final = 5.0
# Pending output at which a send writes at once instead of at the end of the loop
# turn, so that a burst of sends sees what the kernel took (Bun writes at once)
# and gets -1, not 0, once the kernel's buffer is full.
FLUSH_THRESHOLD: Final = 64 * 1024
# Queued events at which reading from the client pauses (inbound backpressure).
INBOX_HIGH_WATER: Final = 64

# Event kinds for the owner's inbox.
_MESSAGE: Final = 0
_PING: Final = 1
_PONG: Final = 2
_DRAIN: Final = 3
_ERROR: Final = 4
_KIND_HOOKS: Final = ("message", "ping", "pong", "drain", "error")


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

_NOT_EOF: Final = (False, b"")


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


def _cancelling() -> bool:
    """True when the running task was asked to cancel: a CancelledError is its own.

    Otherwise a CancelledError comes from inside a hook (it awaited a future that
    someone else cancelled) and is a hook failure like any other exception.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _control_payload(data: bytes | bytearray | memoryview | str) -> bytes:
    payload = data.encode() if isinstance(data, str) else bytes(data)
    if len(payload) > 125:  # RFC 6455 5.5
        raise ValueError("ping/pong payload must be at most 125 bytes")
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
    it was dropped (socket closed, or more than ``backpressure_limit`` bytes
    buffered) and for an empty payload (which is still sent). Frames sent to one
    socket keep their order and go out in one write per event-loop turn.
    """

    __slots__ = (
        "__weakref__",
        "_backpressure_limit",
        "_close_code",
        "_close_on_limit",
        "_close_reason",
        "_compressor",
        "_direct",
        "_drain_wanted",
        "_hooks",
        "_idle_ticks",
        "_inbox",
        "_pending",
        "_pending_size",
        "_protocol",
        "_reading_paused",
        "_reset_idle_on_send",
        "_server",
        "_transport",
        "_waiter",
        "_write_now",
        "data",
        "parser",
        "ready_state",
        "remote_address",
        "subprotocol",
    )

    def __init__(
        self,
        server: Server[DataT],
        protocol: Any,
        transport: asyncio.Transport,
        data: DataT,
        subprotocol: str | None,
        remote_address: str,
        deflate: DeflateParams | None,
    ) -> None:
        options = server.websocket_handler.options
        self.data = data
        self.subprotocol = subprotocol
        self.remote_address = remote_address
        self.ready_state = ReadyState.OPEN
        self._server = server
        self._protocol = protocol
        self._transport = transport
        self._compressor = deflate.new_compressor() if deflate else None
        self._backpressure_limit = options.backpressure_limit
        self._close_on_limit = options.close_on_backpressure_limit
        self._reset_idle_on_send = options.reset_idle_timeout_on_send
        hooks = server.websocket_handler.hooks
        self._hooks: tuple[tuple[Hook, bool] | None, ...] = tuple(
            hooks[name] for name in _KIND_HOOKS
        )
        self._pending: list[bytes] = []
        self._pending_size = 0
        # Created on first use: sockets whose hooks are plain functions rarely queue.
        self._inbox: deque[tuple[int, Any]] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._direct = False
        self._reading_paused = False
        self._drain_wanted = False
        # True while the owner task runs hooks: a hook's loop turn ends at an await
        # we cannot see, so its sends are written at once instead of at turn end.
        self._write_now = False
        self._idle_ticks = 0
        self._close_code = ABNORMAL_CLOSURE
        self._close_reason = ""
        self.parser = FrameParser(
            self,
            options.max_payload_length,
            deflate.new_inflater(options.max_payload_length) if deflate else None,
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
        opcode, payload = _payload(message)
        return self._send_data(opcode, payload, compress)

    def send_text(self, message: str, compress: bool = False) -> int:
        """Send a text frame; returns like :meth:`send`. TypeError if ``message`` is
        not a str."""
        if not isinstance(message, str):
            raise TypeError(f"send_text needs a str, got {type(message).__name__}")
        return self._send_data(OP_TEXT, message.encode(), compress)

    def send_binary(
        self, message: bytes | bytearray | memoryview, compress: bool = False
    ) -> int:
        """Send a binary frame; returns like :meth:`send`. TypeError if ``message``
        is not bytes-like."""
        if not isinstance(message, bytes | bytearray | memoryview):
            raise TypeError(
                f"send_binary needs a bytes-like object, got {type(message).__name__}"
            )
        return self._send_data(OP_BINARY, bytes(message), compress)

    def ping(self, data: bytes | bytearray | memoryview | str = b"") -> int:
        """Send a ping; returns like :meth:`send` (0 once closed).

        The client answers with a pong, which the ``pong`` hook receives.

        Raises:
            ValueError: the payload is longer than 125 bytes (RFC 6455 5.5).
        """
        payload = _control_payload(data)
        if self.ready_state is not _OPEN:
            return 0
        return self._enqueue(build_frame(OP_PING, payload), len(payload))

    def pong(self, data: bytes | bytearray | memoryview | str = b"") -> int:
        """Send an unsolicited pong; returns like :meth:`send` (0 once closed).

        Pings from the client are answered automatically; this is a heartbeat.

        Raises:
            ValueError: the payload is longer than 125 bytes (RFC 6455 5.5).
        """
        payload = _control_payload(data)
        if self.ready_state is not _OPEN:
            return 0
        return self._enqueue(build_frame(OP_PONG, payload), len(payload))

    def _send_data(self, opcode: int, payload: bytes, compress: bool) -> int:
        if self.ready_state is not _OPEN:
            return 0
        compressor = self._compressor
        if compress and compressor is not None and payload:
            if self._over_limit():  # do not compress a message that is dropped
                return 0
            frame = build_frame(opcode, compressor.compress(payload), rsv1=True)
        else:
            frame = build_frame(opcode, payload)
        return self._enqueue(frame, len(payload))

    def _over_limit(self) -> bool:
        """True when a message must be dropped: more than backpressure_limit is
        buffered. With close_on_backpressure_limit it also aborts the connection."""
        buffered = self._transport.get_write_buffer_size() + self._pending_size
        if buffered <= self._backpressure_limit:
            return False
        if self._close_on_limit:
            self._abort(ABNORMAL_CLOSURE, "backpressure limit exceeded")
        return True

    def _enqueue(self, frame: bytes, length: int) -> int:
        """Queue a built frame; the caller checked that the socket is open."""
        # _over_limit() inlined: this runs once per delivery of every publish.
        transport = self._transport
        waiting = transport.get_write_buffer_size()
        size = self._pending_size
        if waiting + size > self._backpressure_limit:
            if self._close_on_limit:
                self._abort(ABNORMAL_CLOSURE, "backpressure limit exceeded")
            return 0
        pending = self._pending
        write_now = self._write_now
        if not pending and not write_now:
            self._server.flusher.add(self)
        pending.append(frame)
        size += len(frame)
        self._pending_size = size
        if self._reset_idle_on_send:
            self._idle_ticks = 0
        if write_now or size >= FLUSH_THRESHOLD:
            self.flush()
            waiting = transport.get_write_buffer_size()
        if waiting:
            if not self._drain_wanted:
                self._drain_wanted = True
                self._await_drain()
            return -1
        return length

    def flush(self) -> None:
        """Write the pending frames now, in one write (called once per loop turn).

        Never raises: a transport whose write fails is logged and aborted, so one
        broken socket cannot stop the flush of the others.
        """
        pending = self._pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        self._pending_size = 0
        transport = self._transport
        if transport.is_closing():
            return
        try:
            transport.write(data)
        except Exception as exc:
            self._write_failed(exc)

    def _write_failed(self, exc: Exception) -> None:
        logger.error("writing to %r failed; aborting it", self, exc_info=exc)
        if self.ready_state is _OPEN:
            self._abort(ABNORMAL_CLOSURE, "")
        else:
            self._transport.abort()

    def get_buffered_amount(self) -> int:
        """Bytes sent but not yet handed to the kernel (0 once closed).

        Above ``backpressure_limit`` sends return 0 (dropped).
        """
        if self._transport.is_closing() and self.ready_state is _CLOSED:
            return 0
        return self._transport.get_write_buffer_size() + self._pending_size

    def cork(self, callback: Callable[[ServerWebSocket[DataT]], T]) -> T:
        """Run ``callback(ws)``; whatever it sends goes out in one write. Returns its result.

        Use it to send several frames from an async hook (whose sends are otherwise
        written one by one) or from outside any hook, such as a timer. The write
        happens when ``callback`` returns or raises; its exception propagates.
        """
        write_now = self._write_now
        self._write_now = False
        try:
            return callback(self)
        finally:
            self._write_now = write_now
            self.flush()

    def _await_drain(self) -> None:
        """Dispatch ``drain`` once all output has left this socket's buffers.

        Called after a send returned -1. Never awaits: it chains callbacks on the
        protocol's drain future, and looks again after the per-turn flush while
        frames are still pending, so ``drain`` runs once per -1 episode and sees
        ``get_buffered_amount() == 0`` (if it is a plain function).
        """
        if self.ready_state is not _OPEN or self._transport.is_closing():
            return
        if self._pending:
            # The per-turn flush is already scheduled; this runs after it.
            asyncio.get_running_loop().call_soon(self._await_drain)
            return
        waiter = drain_waiter(self._protocol)
        if waiter is not None:
            waiter.add_done_callback(self._on_writable)
            return
        self._drain_wanted = False
        self._dispatch(_DRAIN, None)

    def _on_writable(self, waiter: asyncio.Future[None]) -> None:
        # An exception means the connection was lost: no drain then.
        if not waiter.cancelled() and waiter.exception() is None:
            self._await_drain()

    # -- pub/sub ---------------------------------------------------------------

    def subscribe(self, topic: str) -> bool:
        """Subscribe to ``topic``; True if newly subscribed, False if already
        subscribed or closed. A closed socket has left all its topics.

        Raises:
            TypeError: ``topic`` is not a str.
            ValueError: ``topic`` is empty.
        """
        topic = check_topic(topic)
        if self.ready_state is not _OPEN:
            return False
        return self._server._subscribe(self, topic)

    def unsubscribe(self, topic: str) -> bool:
        """Unsubscribe from ``topic``; True if it was subscribed. Raises like
        :meth:`subscribe`."""
        topic = check_topic(topic)
        if self.ready_state is not _OPEN:
            return False
        return self._server._unsubscribe(self, topic)

    def is_subscribed(self, topic: str) -> bool:
        """True if this open socket is subscribed to ``topic``. Raises like
        :meth:`subscribe`."""
        topic = check_topic(topic)
        if self.ready_state is not _OPEN:
            return False
        return self._server.topics.is_subscribed(self, topic)

    @property
    def subscriptions(self) -> list[str]:
        """A snapshot of this socket's topics (``[]`` once closed)."""
        if self.ready_state is not _OPEN:
            return []
        return self._server.topics.topics_of(self)

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
            ValueError: ``topic`` is empty.
        """
        topic = check_topic(topic)
        if self.ready_state is not _OPEN:
            return 0
        opcode, payload = _payload(message)
        return self._server.publish_frame(topic, opcode, payload, compress, self)

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

    def close(self, code: int = NORMAL_CLOSURE, reason: str = "") -> None:
        """Close with ``code`` and ``reason``; idempotent (does nothing once closed).

        The Close frame goes out after everything already sent; the ``close`` hook
        runs at once with ``code`` and ``reason``, without waiting for the client's
        Close, and events not yet dispatched to async hooks are dropped.

        Args:
            code: 1000 (default) or another code an endpoint may send: 1001-1003,
                1007-1014, 3000-4999 (RFC 6455 7.4).
            reason: cut to 123 bytes of UTF-8 on a character boundary.

        Raises:
            ValueError: ``code`` is not one of those.
        """
        check_close_code(code)
        if self.ready_state is not _OPEN:
            return
        self._drop_queued()
        self._begin_close(code, reason, build_close_frame(code, reason), linger=True)

    def terminate(self) -> None:
        """Abort the connection at once, without a Close frame and dropping what is
        still buffered; the ``close`` hook sees 1006. Idempotent."""
        if self.ready_state is not _OPEN:
            return
        self._abort(ABNORMAL_CLOSURE, "")

    def _abort(self, code: int, reason: str) -> None:
        self._drop_queued()
        self._set_closed(code, reason)
        self._pending.clear()
        self._pending_size = 0
        self._transport.abort()

    def _drop_queued(self) -> None:
        """Forget events not yet dispatched: once the server closes a socket, its
        hooks see no more messages (as in Bun, where none can be pending)."""
        if self._inbox is not None:
            self._inbox.clear()

    def _set_closed(self, code: int, reason: str) -> None:
        self.ready_state = _CLOSED
        self._close_code = code
        self._close_reason = reason
        self.parser.stop()
        self._server.forget(self)
        self._wake()

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
        code. Transports that cannot half-close (TLS) are closed at once.
        """
        self._set_closed(code, reason)
        transport = self._transport
        if frame is not None:
            self._pending.append(frame)
        self.flush()
        if transport.is_closing():
            return
        if linger and transport.can_write_eof():
            transport.write_eof()
            if self._reading_paused:
                self._reading_paused = False
                self._protocol.resume_reading()
        else:
            transport.close()
            if not transport.get_write_buffer_size():
                return
        # A client that stops reading, or never closes, must not pin the connection.
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, transport.abort)

    # -- events from the parser (FrameSink) ---------------------------------------

    def on_message(self, message: str | bytes) -> None:
        self._idle_ticks = 0
        self._dispatch(_MESSAGE, message)

    def on_ping(self, data: bytes) -> None:
        self._idle_ticks = 0
        # Answer first (RFC 6455 5.5.2), then tell the handler.
        self._enqueue(build_frame(OP_PONG, data), len(data))
        self._dispatch(_PING, data)

    def on_pong(self, data: bytes) -> None:
        self._idle_ticks = 0
        self._dispatch(_PONG, data)

    def on_close(self, code: int, reason: str) -> None:
        if self.ready_state is not _OPEN:
            return
        # Echo the client's code (RFC 6455 5.5.1); an empty Close gets an empty one.
        reply = build_close_frame(None if code == 1005 else code, reason)
        self._begin_close(code, reason, reply, linger=False)

    def on_protocol_error(self, error: ProtocolError) -> None:
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

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        """aiohttp calls this with each read after the handshake."""
        self.parser.feed(data)
        return _NOT_EOF

    def feed_eof(self) -> None:
        """aiohttp calls this when the connection is lost."""
        if self.ready_state is _OPEN:
            self._set_closed(ABNORMAL_CLOSURE, "")
        self._wake()

    # -- dispatch -----------------------------------------------------------------

    def _dispatch(self, kind: int, arg: Any) -> None:
        hook = self._hooks[kind]
        if hook is None:
            return
        function, is_async = hook
        if self._direct and not is_async:
            try:
                if kind == _DRAIN:
                    function(self)
                else:
                    function(self, arg)
            except (Exception, asyncio.CancelledError) as exc:  # no task to cancel here
                self._hook_failed(exc)
            return
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = deque()
        inbox.append((kind, arg))
        self._wake()
        if len(inbox) >= INBOX_HIGH_WATER and not self._reading_paused:
            self._reading_paused = True
            self._protocol.pause_reading()

    def _wake(self) -> None:
        self._direct = False
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _hook_failed(self, exc: BaseException) -> None:
        logger.error(
            "WebSocket handler raised; closing %r with 1011", self, exc_info=exc
        )
        if self.ready_state is _OPEN:
            self._drop_queued()
        if self._hooks[_ERROR] is not None:
            if self._inbox is None:
                self._inbox = deque()
            self._inbox.append((_ERROR, exc))
        if self.ready_state is _OPEN:
            self._begin_close(
                INTERNAL_ERROR, "", build_close_frame(INTERNAL_ERROR, ""), linger=True
            )
        else:
            self._wake()

    async def _call(self, function: Hook, *args: Any) -> None:
        try:
            result = function(self, *args)
            if result is not None:
                await result
        except asyncio.CancelledError as exc:
            if _cancelling():
                raise
            self._hook_failed(exc)
        except Exception as exc:
            self._hook_failed(exc)

    async def run(self, open_hook: tuple[Hook, bool] | None) -> None:
        """Own this socket until it closes: open, dispatch, close hook. Never raises."""
        loop = asyncio.get_running_loop()
        try:
            self._write_now = True
            if open_hook is not None:
                await self._call(open_hook[0])
            while True:
                inbox = self._inbox
                self._write_now = True
                while inbox:
                    kind, arg = inbox.popleft()
                    if self._reading_paused and len(inbox) < INBOX_HIGH_WATER // 2:
                        self._reading_paused = False
                        self._protocol.resume_reading()
                    hook = self._hooks[kind]
                    assert hook is not None
                    if kind == _ERROR:
                        await self._call_error_hook(hook[0], arg)
                    elif kind == _DRAIN:
                        await self._call(hook[0])
                    else:  # _call inlined: this runs once per message
                        try:
                            result = hook[0](self, arg)
                            if result is not None:
                                await result
                        except asyncio.CancelledError as exc:
                            if _cancelling():
                                raise
                            self._hook_failed(exc)
                        except Exception as exc:
                            self._hook_failed(exc)
                self._write_now = False
                if self.ready_state is _CLOSED:
                    break
                self._waiter = loop.create_future()
                self._direct = True
                await self._waiter
        finally:
            self._direct = False
            self._write_now = False
            if self.ready_state is _OPEN:  # cancelled from outside
                self._abort(ABNORMAL_CLOSURE, "")
            await self._run_close_hook()
            await self._wait_connection_lost()

    async def _wait_connection_lost(self) -> None:
        """Wait while a lingering close (see ``_begin_close``) keeps TCP half-open.

        aiohttp closes the transport once the request handler returns, which would
        cut the lingering short. Bounded by the CLOSE_TIMEOUT abort.
        """
        loop = asyncio.get_running_loop()
        while not self._transport.is_closing():
            # feed_eof() wakes this once the client has closed or been aborted.
            self._waiter = loop.create_future()
            await self._waiter

    async def _call_error_hook(self, function: Hook, exc: BaseException) -> None:
        try:
            result = function(self, exc)
        except (Exception, asyncio.CancelledError):  # a plain function: no task here
            logger.exception("WebSocket error hook raised for %r", self)
            return
        if result is not None:
            await self._finish_hook("error", result)

    async def _run_close_hook(self) -> None:
        hook = self._server.websocket_handler.hooks["close"]
        if hook is None:
            return
        try:
            result = hook[0](self, self._close_code, self._close_reason)
        except (Exception, asyncio.CancelledError):  # a plain function: no task here
            logger.exception("WebSocket close hook raised for %r", self)
            return
        if result is not None:
            await self._finish_hook("close", result)

    async def _finish_hook(self, name: str, awaitable: Awaitable[None]) -> None:
        """Await an error or close hook to its end, even if the owner is cancelled.

        aiohttp cancels the request handler, which owns this socket, once the
        connection is lost (with ``handler_cancellation=True``, as in its
        TestServer): just when these hooks run. So they run in a task of their
        own, created only then (idle sockets carry no extra task). The hook's
        failure, its own CancelledError included, is logged with its traceback; a
        cancellation of the owner that came meanwhile is raised once it ended.
        """
        task = asyncio.ensure_future(awaitable)
        interrupted = False
        while not task.done():
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                # Nothing cancels the hook's task: if it is still running, or the
                # owner is being cancelled anyway, the cancellation is the owner's.
                interrupted = interrupted or not task.done() or _cancelling()
            except Exception:
                pass  # the hook failed: handled below
        try:
            task.result()
        except (Exception, asyncio.CancelledError) as exc:
            logger.error("WebSocket %s hook raised for %r", name, self, exc_info=exc)
        if interrupted:
            raise asyncio.CancelledError

    def idle_tick(self, ticks_to_ping: int, ticks_to_close: int) -> None:
        """Advance the idle timer by one tick (called by the server's sweep)."""
        ticks = self._idle_ticks = self._idle_ticks + 1
        if ticks >= ticks_to_close:
            logger.info("closing idle WebSocket from %s", self.remote_address)
            self._abort(ABNORMAL_CLOSURE, "idle timeout")
        elif ticks == ticks_to_ping:
            idle = self._idle_ticks
            self._enqueue(build_frame(OP_PING, b""), 0)
            self._idle_ticks = idle  # our own ping is not activity
