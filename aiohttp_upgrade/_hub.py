"""The pub/sub hub: topics, encode-once fan-out and the broker relay, in one unit.

The :class:`Hub` is what a server and its sockets share for pub/sub: ``ws.publish``
and ``server.publish`` both call :meth:`Hub.publish` (never through the server),
``ws.subscribe`` and friends call :meth:`Hub.subscribe`..., the broker hands
messages from other processes to :meth:`Hub.deliver`. Nothing else touches a
socket's outgoing queue for pub/sub.

The hub sees a socket only through :class:`SocketPort`, the one seam to the socket
layer: adapting to a new socket implementation is a change to that Protocol and to
the methods that implement it (today on
:class:`~aiohttp_upgrade._connection.Connection`).

A message's way out::

    ws.publish / server.publish ---> Hub.publish --+--> broker.publish (other processes)
                                                   |
    broker (another process) -----> Hub.deliver ---+--> frame built once
                                                        -> port.outbox of each subscriber

History and presence are meant to be built on this unit: subscription
transitions (:meth:`Hub.subscribe`, :meth:`Hub.unsubscribe`, :meth:`Hub.leave_all`)
are the one place where a topic gains or loses a subscriber.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, Protocol

from ._counters import Counters
from ._frames import OP_TEXT, build_frame
from ._outbox import Outbox
from ._topics import TopicRegistry

try:
    import cython
except ImportError:  # run as Python, without Cython installed
    from . import _nocython as cython

if TYPE_CHECKING:
    from ._history import History
    from ._presence import PresenceTable

logger = logging.getLogger("aiohttp_upgrade")

__all__ = ["FrameSink", "Hub", "Relayed", "SocketPort"]

Relay = Callable[[str, int, bytes, bool], None]
"""``broker.publish(topic, opcode, payload, compress)``."""
Interest = Callable[[str, int, int], None]
"""``broker.subscription(topic, new_count, old_count)``."""


class FrameSink(Protocol):
    """A socket's outgoing queue as the fan-out uses it (``Outbox`` today).

    ``enqueue`` on a closed socket returns 0 and tells nobody; it never raises.
    """

    @property
    def compressor(self) -> object | None:
        """The socket's permessage-deflate compressor, or None."""
        ...

    def enqueue(self, frame: bytes, length: int, message: object = None) -> int:
        """Queue a built frame; return Bun's code (``length``, -1 or 0)."""
        ...

    def enqueue_control(self, frame: bytes) -> None:
        """Queue a control frame (a ping), never dropped, not a send."""
        ...

    def send(
        self,
        opcode: int,
        payload: bytes,
        compress: bool,
        message: object = None,
        frame: bytes | None = None,
        shared: dict[tuple[int, int], bytes] | None = None,
    ) -> int:
        """Queue a message, compressed once per compressor setting in ``shared``."""
        ...


class SocketPort(Protocol):
    """THE adapter between the hub (and the server's lifecycle) and one socket.

    Everything the server side does to a socket goes through these members; they
    are implemented by :class:`~aiohttp_upgrade._connection.Connection`.
    """

    def __hash__(self) -> int:
        """Sockets are told apart by identity (topic registry keys)."""
        ...

    @property
    def outbox(self) -> FrameSink:
        """Where the fan-out queues frames (read once per subscriber per publish:
        an attribute, not a call, to keep the hot path free of an extra hop)."""
        ...

    @property
    def ws(self) -> Any:
        """The socket's ``ServerWebSocket`` (what ``exclude`` and
        ``server.subscribers`` name)."""
        ...

    def subscription(self, topic: str, new_count: int, old_count: int) -> None:
        """Dispatch the ``subscription`` hook, in order with the socket's others."""
        ...

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake (``max_lifetime``)."""
        ...

    def shutdown(self, code: int, reason: str, frame: bytes) -> None:
        """Close for a server shutdown: send ``frame`` (a Close) and close TCP
        without waiting for the client's Close. Does nothing once closed."""
        ...

    def idle_tick(self, ticks_to_ping: int, ticks_to_close: int) -> None:
        """Advance the socket's idle timer by one tick (ping or close it)."""
        ...


class Relayed:
    """A text payload from another process, decoded only if a ``dropped`` hook
    asks for it (:meth:`decode`): a relayed message reaching every subscriber
    costs no decode."""

    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def decode(self) -> str:
        """The message as ``publish`` was given it (invalid UTF-8 replaced)."""
        return self.payload.decode(errors="replace")


class Hub:
    """Topics, fan-out and relay for the sockets of one server.

    Args:
        relay: the broker's ``publish``, or None for no other processes.
        interest: the broker's ``subscription``, or None.
        subscription_hook: dispatch the handler's ``subscription`` hook to each
            socket whose subscriptions change.
        publish_to_self: ``ws.publish`` reaches ``ws`` too (the handler option).
        counters: the server's metrics (``publishes``, ``deliveries``), kept
            as ``counters``; a new one if not given.

    All methods are synchronous and never await. Topics must have been checked
    with :func:`~aiohttp_upgrade._topics.check_topic` by the caller.
    """

    __slots__ = (
        "_interest",
        "_publish_to_self",
        "_relay",
        "_subscription",
        "counters",
        "history",
        "presence",
        "topics",
    )

    def __init__(
        self,
        *,
        relay: Relay | None = None,
        interest: Interest | None = None,
        subscription_hook: bool = False,
        publish_to_self: bool = False,
        counters: Counters | None = None,
    ) -> None:
        self.counters = Counters() if counters is None else counters
        self._relay = relay
        self._interest = interest
        self._subscription = subscription_hook
        self._publish_to_self = publish_to_self
        watch = interest is not None or subscription_hook
        self.topics: Final[TopicRegistry[SocketPort]] = TopicRegistry(
            self._changed if watch else None
        )
        """Who is subscribed to what; read it, change it through the hub only."""
        self.presence: PresenceTable | None = None
        """Presence entries; a closing socket's end in :meth:`leave_all`."""
        self.history: History | None = None
        """Set once a topic keeps history (docs/history.rst); None costs nothing."""

    # -- subscriptions ------------------------------------------------------------

    def subscribe(self, port: SocketPort, topic: str) -> bool:
        """Subscribe ``port`` to ``topic``; True if it was not subscribed yet."""
        return self.topics.subscribe(port, topic)

    def unsubscribe(self, port: SocketPort, topic: str) -> bool:
        """Unsubscribe ``port`` from ``topic``; True if it was subscribed."""
        return self.topics.unsubscribe(port, topic)

    def is_subscribed(self, port: SocketPort, topic: str) -> bool:
        """True if ``port`` is subscribed to ``topic``."""
        return self.topics.is_subscribed(port, topic)

    def topics_of(self, port: SocketPort) -> list[str]:
        """A snapshot of the topics of ``port``, in subscription order."""
        return self.topics.topics_of(port)

    def leave_all(self, port: SocketPort) -> list[str]:
        """Unsubscribe a closing socket from every topic; return the topics left.
        The broker and the ``subscription`` hook hear of each, before ``close``;
        the socket's presence entries end too."""
        if self.presence is not None:
            self.presence.leave_all(port)
        return self.topics.unsubscribe_all(port)

    def count(self, topic: str) -> int:
        """Local subscribers of ``topic``."""
        return self.topics.count(topic)

    def counts(self) -> dict[str, int]:
        """A snapshot of the topics with local subscribers, and how many."""
        return self.topics.counts()

    def _changed(self, port: SocketPort, topic: str, new: int, old: int) -> None:
        """Every subscription transition: tell the broker, then dispatch the
        ``subscription`` hook to the socket, in order with its other hooks."""
        interest = self._interest
        if interest is not None:
            try:
                interest(topic, new, old)
            except Exception:  # a broker's fault must not stop a close or a fan-out
                logger.exception("broker subscription(%r) failed", topic)
        if self._subscription:
            port.subscription(topic, new, old)

    # -- fan-out ------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        opcode: int,
        payload: bytes,
        compress: bool,
        message: object,
        sender: SocketPort | None = None,
        exclude: Iterable[object] | None = None,
    ) -> int:
        """Relay a message to the broker and fan it out to the local subscribers.

        Args:
            topic: a checked topic.
            opcode: ``OP_TEXT`` or ``OP_BINARY``.
            payload: the encoded payload.
            compress: deflate it for subscribers that negotiated it.
            message: what a subscriber's ``dropped`` hook gets if it drops it.
            sender: the publishing socket, skipped unless ``publish_to_self``.
            exclude: sockets (``ServerWebSocket``) skipped too; None or empty
                costs nothing per subscriber.

        Returns:
            Bun's publish code for this process: the payload length if every
            subscriber took it at once, -1 if any queued it behind buffered bytes,
            0 if any dropped it or nobody (else) here is subscribed.
        """
        history = self.history
        if history is not None:
            policy = history.policies.get(topic)
            if policy is not None:  # positions first, through the broker if any
                skip = None if self._publish_to_self else sender
                return history.publish(
                    topic, policy, opcode, payload, compress, skip, exclude
                )
        relay = self._relay
        if relay is not None:
            relay(topic, opcode, payload, compress)
        subscribers = self.topics.subscribers(topic)
        if not subscribers:
            self.counters.publishes += 1
            return 0
        skip = None if self._publish_to_self else sender
        if exclude:
            subscribers = _without(subscribers, exclude)
        # Counted once per publish (the subscribers reached), not per subscriber.
        reached = len(subscribers) - (skip in subscribers)
        counters = self.counters
        counters.publishes += 1
        counters.deliveries += reached
        counters.bytes_delivered += reached * len(payload)
        return _fan_out(subscribers, opcode, payload, compress, message, skip)

    def deliver(self, topic: str, opcode: int, payload: bytes, compress: bool) -> int:
        """Fan out a message another process published (the broker calls it): to
        every local subscriber, not relayed again; the payload of a text message
        is decoded only for a ``dropped`` hook. Returns the publish code."""
        subscribers = self.topics.subscribers(topic)
        if not subscribers:
            self.counters.publishes += 1
            return 0
        counters = self.counters
        counters.publishes += 1
        counters.deliveries += len(subscribers)
        counters.bytes_delivered += len(subscribers) * len(payload)
        message = Relayed(payload) if opcode == OP_TEXT else payload
        return _fan_out(subscribers, opcode, payload, compress, message, None)


def _without(
    subscribers: Iterable[SocketPort], exclude: Iterable[object]
) -> list[SocketPort]:
    """The subscribers whose ``ws`` is not in ``exclude`` (read once, as a set)."""
    excluded = exclude if isinstance(exclude, set | frozenset) else set(exclude)
    return [port for port in subscribers if port.ws not in excluded]


def _fan_out(
    subscribers: Iterable[SocketPort],
    opcode: int,
    payload: bytes,
    compress: bool,
    message: object,
    skip: SocketPort | None,
) -> int:
    """Queue one frame, built once (and deflated once per shareable compressor
    setting), on every subscriber but ``skip``; return the worst code."""
    length = len(payload)
    frame = build_frame(opcode, payload)
    shared: dict[tuple[int, int], bytes] | None = {} if compress and length else None
    # The last shareable compressor that built a frame (the loop's one in shared
    # mode) and that frame: its other sockets get it without another lookup.
    last: object = None
    zframe = frame
    delivered = dropped = queued = False
    # Compiled, a socket's own outbox is called in C (box); other sinks, and all as
    # Python, through the method.
    typed = cython.compiled
    # A snapshot: a subscriber closed by its backpressure limit leaves mid-loop.
    # A socket closed meanwhile takes nothing (enqueue returns 0).
    for port in tuple(subscribers):
        if port is skip:
            continue
        delivered = True
        outbox = port.outbox
        if typed and shared is None and type(outbox) is Outbox:
            box = outbox
            code = box.enqueue(frame, length, message)
        elif shared is None or (compressor := outbox.compressor) is None:
            code = outbox.enqueue(frame, length, message)
        elif compressor is last:
            code = outbox.enqueue(zframe, length, message)
        else:
            built = len(shared)
            code = outbox.send(opcode, payload, True, message, frame, shared)
            if len(shared) > built:  # a shareable compressor added its frame
                last = compressor
                zframe = next(reversed(shared.values()))
        if code <= 0:
            if code:
                queued = True
            else:
                dropped = True
    if not delivered or dropped:
        return 0
    return -1 if queued else length
