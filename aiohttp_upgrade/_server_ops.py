"""What ``Server`` offers operators beyond Bun's API: whether it is shutting
down, the subscribers of a topic, its open sockets and its metrics. A base class of ``Server``, kept apart so
that ``_server.py`` stays small."""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, TypeVar

from ._bun_names import BunNames
from ._metrics import Metrics, snapshot
from ._topics import check_topic

if TYPE_CHECKING:
    from ._broker import Broker
    from ._hub import Hub
    from ._lifecycle import Lifecycle
    from ._websocket import ServerWebSocket

__all__ = ["ServerOps"]

DataT = TypeVar("DataT")


class ServerOps(BunNames, Generic[DataT]):
    """:attr:`shutting_down`, :meth:`subscribers`, :attr:`pending_websockets`
    and :meth:`metrics` of a ``Server``."""

    _hub: Hub
    _lifecycle: Lifecycle
    broker: Broker

    @property
    def shutting_down(self) -> bool:
        """True from :meth:`shutdown` (also the app's shutdown) until the app
        starts again: :meth:`upgrade` then returns False, and ``fetch`` can
        answer 503 with ``Retry-After`` instead of its usual refusal."""
        return self._lifecycle.shutting_down

    def subscribers(self, topic: str) -> list[ServerWebSocket[DataT]]:
        """A snapshot of this process's sockets subscribed to ``topic``, in
        subscription order (``[]`` for a topic without subscribers): safe to
        close or unsubscribe them while iterating.

        Raises:
            TypeError: ``topic`` is not a str.
            ValueError: ``topic`` is empty or not valid UTF-8 (a lone surrogate).
        """
        return [port.ws for port in self._hub.topics.subscribers(check_topic(topic))]

    def metrics(self) -> Metrics:
        """A snapshot of this server's counters and gauges (:class:`Metrics`, see
        the operations guide); no dependency, cheap to call at every scrape.

        Safe to call from another thread (an exporter's): it reads ints and takes
        ``len()`` of containers, each atomic under the GIL, and iterates nothing
        that the event loop changes."""
        hub = self._hub
        table = hub.presence
        members = table.member_count if table is not None else 0
        return snapshot(
            hub.counters,
            len(self._lifecycle.open),
            len(hub.topics),
            self.broker,
            members,
        )

    @property
    def pending_websockets(self) -> int:
        """Number of open sockets of this server (Bun's ``pendingWebSockets``).

        A socket counts from its 101 until it closes (it no longer counts when its
        ``close`` hook runs).
        """
        return len(self._lifecycle.open)
