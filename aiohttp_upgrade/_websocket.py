"""``ServerWebSocket``: the socket hooks see, Bun's ``ServerWebSocket``.

A facade with Bun's public API only: every call goes to the socket's
:class:`~aiohttp_upgrade._connection.Connection` (closing, corking, buffered
amount), its :class:`~aiohttp_upgrade._outbox.Outbox` (sending, the hot path,
without a hop through the connection) or the :class:`SocketContext` its server
shares with every socket (topics, publish). The connection creates it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Generic, Protocol, TypeVar

from ._bun_names import BunNames
from ._closecode import CloseCode, check_close_code
from ._counters import Counters
from ._dispatcher import HookTable
from ._frames import (
    OP_BINARY,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Mask,
    build_frame,
    xor_mask,
)
from ._hub import Hub, SocketPort
from ._outbox import Flusher, Outbox
from ._payloads import control_payload as _control_payload
from ._payloads import message_payload as _payload
from ._presence_api import PresenceSocket
from ._protocol import ReadyState
from ._reads import new_read_buffer
from ._topics import check_topic

if TYPE_CHECKING:
    from ._options import Options

__all__ = ["ReadyState", "ServerWebSocket", "SocketContext", "SocketOwner"]

DataT = TypeVar("DataT")
T = TypeVar("T")

_NORMAL: Final = CloseCode.NORMAL_CLOSURE

_OPEN: Final = ReadyState.OPEN
_CLOSED: Final = ReadyState.CLOSED


@dataclass(slots=True, eq=False)
class SocketContext:
    """What a server shares with each of its sockets: the narrow collaborators.

    ``forget(connection)`` drops a closing socket from the registry of open
    sockets and from every topic; ``hub`` is the pub/sub hub (topics, publish);
    ``read_buffer`` is where all its sockets read (see ``_reads``).
    """

    options: Options
    hooks: HookTable
    flusher: Flusher
    hub: Hub
    forget: Callable[[SocketPort], None]
    gone: Callable[[SocketPort], None]
    tasks: set[asyncio.Task[None]]
    mask: Mask = xor_mask
    counters: Counters = field(default_factory=Counters)
    read_buffer: memoryview = field(default_factory=new_read_buffer)


class SocketOwner(SocketPort, Protocol):
    """What a socket delegates to (its connection), which is also the hub's port
    to this socket."""

    @property
    def id(self) -> int:
        """The connection's number in log lines."""

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake."""

    def terminate(self, reason: str = "") -> None:
        """Abort the connection."""

    def cork(self, callback: Callable[[Any], T]) -> T:
        """Run ``callback(ws)``, writing what it sends in one write."""

    def buffered_amount(self) -> int:
        """Bytes queued, not yet handed to the kernel."""


class ServerWebSocket(PresenceSocket, BunNames, Generic[DataT]):
    """An upgraded connection, Bun's ``ServerWebSocket``; created by the server, never
    by you. Hooks receive it as ``ws``.

    Attributes:
        data: whatever ``server.upgrade(request, data=...)`` attached (a
            ``DataT``); yours to read and replace.
        remote_address: the client's IP address (``request.remote``), or ``""``.
        ready_state: :attr:`ReadyState.OPEN` until the socket closes,
            :attr:`ReadyState.CLOSING` while a closing handshake the server
            started runs (sends return 0), then :attr:`ReadyState.CLOSED`.
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
        connection: SocketOwner,
        outbox: Outbox,
        context: SocketContext,
        data: DataT,
        subprotocol: str | None,
        remote_address: str,
    ) -> None:
        self.data = data
        self.subprotocol = subprotocol
        self.remote_address = remote_address
        self.ready_state = _OPEN  # the connection sets CLOSING and CLOSED
        self._conn = connection
        self._outbox = outbox
        self._ctx = context

    def __repr__(self) -> str:
        # Not ``data``: it often holds session secrets, and hook failures log this.
        return (
            f"<ServerWebSocket conn {self._conn.id} {self.ready_state.name} "
            f"{self.remote_address}>"
        )

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
        if not compress:
            return self._outbox.send_message(message, self._ctx.counters)
        opcode, payload = _payload(message)
        # What ``dropped`` gets: the str, or the payload already made bytes (a
        # bytes-like is not copied again for the hook).
        dropped = message if opcode == OP_TEXT else payload
        self._ctx.counters.sent(len(payload))
        return self._outbox.send(opcode, payload, compress, dropped)

    def send_text(self, message: str, compress: bool = False) -> int:
        """Send a text frame; returns like :meth:`send`. TypeError if ``message`` is
        not a str."""
        if not isinstance(message, str):
            raise TypeError(f"send_text needs a str, got {type(message).__name__}")
        if self.ready_state is not _OPEN:
            return 0
        payload = message.encode()
        self._ctx.counters.sent(len(payload))
        return self._outbox.send(OP_TEXT, payload, compress, message)

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
        payload = bytes(message)
        self._ctx.counters.sent(len(payload))
        return self._outbox.send(OP_BINARY, payload, compress, payload)

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
        sends return 0 (dropped); what this turn sent counts only from the next,
        unless it passes ``max(4 x backpressure_limit, 64 MiB)``.
        """
        return self._conn.buffered_amount()

    def cork(self, callback: Callable[[ServerWebSocket[DataT]], T]) -> T:
        """Run ``callback(ws)``; whatever it sends goes out in one write. Returns its result.

        Use it to send several frames from an async hook (whose sends are otherwise
        written one by one) or from outside any hook, such as a timer. The write
        happens when ``callback`` returns or raises; its exception propagates.
        """
        return self._conn.cork(callback)

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
        *,
        exclude: Iterable[ServerWebSocket[Any]] | None = None,
    ) -> int:
        """Send to every subscriber of ``topic`` except this socket (unless
        ``publish_to_self``) and the sockets in ``exclude``; return the worst code
        among this process's subscribers. With a broker, other processes deliver
        it to all their subscribers too (``exclude`` names local sockets only).

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
        dropped = message if opcode == OP_TEXT else payload  # as in send()
        return self._ctx.hub.publish(
            topic, opcode, payload, compress, dropped, self._conn, exclude
        )

    def publish_text(
        self,
        topic: str,
        message: str,
        compress: bool = False,
        *,
        exclude: Iterable[ServerWebSocket[Any]] | None = None,
    ) -> int:
        """:meth:`publish` a text frame (``exclude=`` too); TypeError if ``message``
        is not a str."""
        if not isinstance(message, str):
            raise TypeError(f"publish_text needs a str, got {type(message).__name__}")
        return self.publish(topic, message, compress, exclude=exclude)

    def publish_binary(
        self,
        topic: str,
        message: bytes | bytearray | memoryview,
        compress: bool = False,
        *,
        exclude: Iterable[ServerWebSocket[Any]] | None = None,
    ) -> int:
        """:meth:`publish` a binary frame (``exclude=`` too); TypeError if
        ``message`` is not bytes-like."""
        if not isinstance(message, bytes | bytearray | memoryview):
            raise TypeError(
                f"publish_binary needs a bytes-like object, got {type(message).__name__}"
            )
        return self.publish(topic, message, compress, exclude=exclude)

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
        if self.ready_state is _OPEN:
            self._conn.close(code, reason)

    def terminate(self) -> None:
        """Abort the connection at once, without a Close frame and dropping what is
        still buffered; the ``close`` hook sees 1006. After :meth:`close` (CLOSING)
        it cuts the closing handshake short (the hook has run). Idempotent."""
        if self.ready_state is not _CLOSED:
            self._conn.terminate()
