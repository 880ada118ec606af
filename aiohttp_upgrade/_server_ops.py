"""What ``Server`` offers operators beyond Bun's API: whether it is shutting
down, and the subscribers of a topic. A base class of ``Server``, kept apart so
that ``_server.py`` stays small."""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, TypeVar

from ._bun_names import BunNames
from ._topics import check_topic

if TYPE_CHECKING:
    from ._hub import Hub
    from ._lifecycle import Lifecycle
    from ._websocket import ServerWebSocket

__all__ = ["ServerOps"]

DataT = TypeVar("DataT")


class ServerOps(BunNames, Generic[DataT]):
    """:attr:`shutting_down` and :meth:`subscribers` of a ``Server``."""

    _hub: Hub
    _lifecycle: Lifecycle

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
