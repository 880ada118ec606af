"""The broker interface: how a :class:`~aiohttp_upgrade.Server` shares topics with
other processes.

A broker carries the messages published on one process to the other processes
that have subscribers of the same topic, and answers how many subscribers a topic
has across all of them. :class:`LocalBroker` is the default and does nothing: one
process, today's behaviour, at no cost. ``RedisBroker`` (extra ``redis``) goes
through Redis pub/sub; a NATS or Redis Streams broker would implement the same
six methods.

The contract between the server and its broker (the server's pub/sub hub,
:class:`~aiohttp_upgrade._hub.Hub`, makes the hot-path calls; the server, the
broker's host, passes ``deliver`` on to it)::

    Server / its Hub                        Broker
    ----------------                        ------
    app startup (Server)     ---->  await start(host)          host: the Server
    a socket subscribes or
    unsubscribes, or leaves
    its topics on close (Hub) ---->  subscription(topic, new_count, old_count)
    publish, any kind (Hub)   ---->  publish(topic, opcode, payload, compress)
    host.deliver(...) -> Hub  <----  a message from another process
    cluster_subscriber_count  ---->  await cluster_count(topic)
    app cleanup (Server)      ---->  await close()

``subscription`` and ``publish`` are called on the server's hot paths: they must
be synchronous and cheap (queue, and do the I/O later in the broker's own task),
and must never raise. Every topic the server passes has been through
:func:`~aiohttp_upgrade._topics.check_topic`: a non-empty ``str`` that encodes as
UTF-8. A broker's own tasks should survive their own bugs (log, count, restart):
nothing else watches them. The socket layer (``websocket.py``) knows nothing of
brokers; only the hub and the server call them.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:
    from ._history_local import RemoteBackend
    from ._presence_api import Presence

__all__ = ["Broker", "BrokerHost", "LocalBroker"]


class BrokerHost(Protocol):
    """What a broker may call on the server it serves."""

    def deliver(self, topic: str, opcode: int, payload: bytes, compress: bool) -> int:
        """Fan a message that came from another process out to the local
        subscribers of ``topic`` (the frame built once, the payload decoded only
        for a ``dropped`` hook); return the publish code. Synchronous; call it
        from the event loop's thread."""
        ...

    def local_counts(self) -> dict[str, int]:
        """A snapshot of the topics that have local subscribers, with their counts."""
        ...

    def subscriber_count(self, topic: str) -> int:
        """The number of local subscribers of ``topic`` now."""
        ...

    @property
    def presence(self) -> Presence:
        """The server's presence view: a broker that carries presence attaches
        to it at start and applies the other processes' entries (optional: a
        broker that does not leaves presence to this process)."""
        ...


class Broker(abc.ABC):
    """Carries publishes between processes. Subclass it to add a transport.

    A broker serves one server at a time, between ``start`` and ``close``.
    Delivery between processes is at-most-once: a broker never buffers without a
    bound, and drops (and counts) what it cannot send.
    """

    remote: ClassVar[bool] = True
    """False only for :class:`LocalBroker`: the server then skips the broker
    entirely on its hot paths."""

    @abc.abstractmethod
    async def start(self, host: BrokerHost) -> None:
        """Start serving ``host`` (called at app startup). Must not fail because
        the backend is unreachable: log it and keep retrying in the background."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop, release connections and tasks (called at app cleanup); idempotent."""

    @abc.abstractmethod
    def subscription(self, topic: str, new_count: int, old_count: int) -> None:
        """The local subscriber count of ``topic`` changed from ``old_count`` to
        ``new_count``. 0 -> 1: start receiving ``topic``; 1 -> 0: stop."""

    @abc.abstractmethod
    def publish(self, topic: str, opcode: int, payload: bytes, compress: bool) -> None:
        """Queue a message for the other processes (``opcode`` is 1 for text, 2
        for binary; ``payload`` the raw bytes). Synchronous, never raises."""

    @abc.abstractmethod
    async def cluster_count(self, topic: str) -> int:
        """Subscribers of ``topic`` on every live process, this one included."""

    def history_backend(self) -> RemoteBackend | None:
        """Where topic histories live with this broker (docs/history.rst), or
        None (the default) if it keeps none: ``server.history.enable`` then
        raises. :class:`LocalBroker`'s are kept by the server itself."""
        return None


class LocalBroker(Broker):
    """One process, no transport: the default. Publishes stay on this process."""

    remote: ClassVar[bool] = False

    def __init__(self) -> None:
        self._host: BrokerHost | None = None

    async def start(self, host: BrokerHost) -> None:
        self._host = host

    async def close(self) -> None:
        self._host = None

    def subscription(self, topic: str, new_count: int, old_count: int) -> None:
        return None

    def publish(self, topic: str, opcode: int, payload: bytes, compress: bool) -> None:
        return None

    async def cluster_count(self, topic: str) -> int:
        """The local count (there are no other processes)."""
        return 0 if self._host is None else self._host.subscriber_count(topic)
