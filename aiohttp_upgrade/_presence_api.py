"""Presence's public faces: ``server.presence`` (:class:`Presence`) and the
socket methods ``ws.track``, ``ws.untrack`` and ``ws.update_presence``
(:class:`PresenceSocket`, a base of ``ServerWebSocket``).

Both are thin: the work is done by :class:`~aiohttp_upgrade._presence.PresenceTable`,
which the hub holds (a closing socket's entries end where it leaves its topics).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._errors import InvalidStateError
from ._payloads import message_payload
from ._presence import Entry, Members, PresenceTable, Relay, check_key
from ._protocol import ReadyState
from ._topics import check_topic

if TYPE_CHECKING:
    from ._hub import Hub
    from ._websocket import SocketContext, SocketOwner

__all__ = ["Presence", "PresenceSocket"]

Metas = list[Any]
Topics = list[str]


class Presence:
    """Who is here: the members of each topic on every process, from this
    process's view (``server.presence``; made by the server, never by you).

    Members are tracked by sockets (:meth:`ServerWebSocket.track
    <aiohttp_upgrade.ServerWebSocket.track>`); with ``RedisBroker`` the view
    holds every process's members, kept current by deltas (see the presence
    guide). Reading it never waits for Redis. Nothing of it reaches clients
    unless the application sends it (in the handler's ``presence`` hook, say).

    The metas returned are the view's own objects: read them, do not change them.
    """

    __slots__ = ("_hub", "_table")

    def __init__(self, table: PresenceTable, hub: Hub) -> None:
        self._table = table
        self._hub = hub

    def list(self, topic: str) -> Members:
        """The members of ``topic``: key -> the metas of its entries, in the
        order this process saw them join (processes may differ), as a new dict
        (``{}`` for a topic nobody is in).

        Raises:
            TypeError: ``topic`` is not a str.
            ValueError: ``topic`` is empty or not valid UTF-8.
        """
        keys = self._table.members.get(check_topic(topic))
        if keys is None:
            return {}
        return {key: [*metas.values()] for key, metas in keys.items()}

    def get(self, topic: str, key: str) -> Metas:
        """The metas of ``key`` in ``topic`` (``[]`` if it is not there). Raises
        like :meth:`list`, and TypeError/ValueError for a bad ``key``."""
        keys = self._table.members.get(check_topic(topic))
        metas = None if keys is None else keys.get(check_key(key))
        return [] if metas is None else [*metas.values()]

    def count(self, topic: str) -> int:
        """How many members (keys) ``topic`` has. Raises like :meth:`list`."""
        return len(self._table.members.get(check_topic(topic), ()))

    def topics(self) -> Topics:
        """The topics that have members now."""
        return [*self._table.members]

    def flush(self) -> None:
        """Hand the changes batched so far to the ``presence`` hook now (a plain
        hook has run when this returns). Call it before sending a client a
        snapshot from :meth:`list`: the diffs it gets afterwards then start from
        that snapshot (otherwise a change in the batch under way, such as a
        join and a leave that cancel out, is in neither)."""
        self._table.flush()

    def publish_local(
        self,
        topic: str,
        message: str | bytes | bytearray | memoryview,
        compress: bool = False,
    ) -> int:
        """Send ``message`` to this process's subscribers of ``topic`` only (not
        to other processes): every process's ``presence`` hook sees every change,
        so each tells its own clients. Returns like ``server.publish``.

        Raises:
            TypeError: ``topic`` is not a str, or ``message`` not str or bytes-like.
            ValueError: ``topic`` is empty or not valid UTF-8.
        """
        topic = check_topic(topic)
        opcode, payload = message_payload(message)
        return self._hub.deliver(topic, opcode, payload, compress)

    # -- for brokers -----------------------------------------------------------

    def attach(self, relay: Relay | None) -> None:
        """For brokers, at start: ``relay(number, entry)`` hears of every change
        of this process's entries from now on (None detaches); the entries of
        other processes are dropped (the broker resyncs them)."""
        self._table.attach(relay)

    def own_entries(self) -> dict[int, Entry]:
        """For brokers: this process's entries, by number."""
        return self._table.own_entries()

    def apply(self, node: str, number: int, entry: Entry | None) -> None:
        """For brokers: entry ``number`` of process ``node`` joined or changed
        (``entry`` is ``(topic, key, meta)``) or left (None)."""
        self._table.apply(node, number, entry)

    def replace(self, node: str, entries: Mapping[int, Entry]) -> None:
        """For brokers: ``entries`` are all of ``node``'s (only what differs
        from the view counts as a change)."""
        self._table.replace(node, entries)

    def forget(self, node: str) -> None:
        """For brokers: process ``node`` is gone; its entries leave."""
        self._table.forget(node)


class PresenceSocket:
    """The presence methods of :class:`~aiohttp_upgrade.ServerWebSocket`."""

    __slots__ = ()

    if TYPE_CHECKING:
        _conn: SocketOwner
        _ctx: SocketContext
        ready_state: ReadyState

    def _presence(self, topic: str) -> tuple[PresenceTable, str]:
        topic = check_topic(topic)
        if self.ready_state is not ReadyState.OPEN:
            raise InvalidStateError("the socket is closed: its presence has ended")
        table = self._ctx.hub.presence
        assert table is not None
        return table, topic

    def track(self, topic: str, key: str, meta: object = None) -> None:
        """Be present in ``topic`` as ``key`` (a user id, say) with ``meta``, a
        small JSON value (a name, a device, a status), until :meth:`untrack` or
        the socket closes. Sockets tracked under one key (tabs, devices) are
        one member with several metas; it leaves when its last entry ends.

        Raises:
            TypeError: ``topic`` or ``key`` is not a str, ``meta`` is not a
                JSON value.
            ValueError: ``topic`` or ``key`` is empty or not valid UTF-8; the
                JSON of ``meta`` exceeds ``max_presence_meta_length``.
            InvalidStateError: the socket is closed, or already tracked in
                ``topic`` (nothing changes).
        """
        table, topic = self._presence(topic)
        table.track(self._conn, topic, check_key(key), meta)

    def update_presence(self, topic: str, meta: object) -> None:
        """Replace the meta of this socket's entry in ``topic`` (a diff with the
        old meta in ``leaves`` and the new one in ``joins``, as Phoenix).

        Raises:
            TypeError, ValueError: as :meth:`track`.
            InvalidStateError: the socket is closed or not tracked in ``topic``.
        """
        table, topic = self._presence(topic)
        table.update(self._conn, topic, meta)

    def untrack(self, topic: str) -> bool:
        """End this socket's presence in ``topic``; True if it was tracked there
        (False too once closed: closing ends every entry).

        Raises:
            TypeError: ``topic`` is not a str.
            ValueError: ``topic`` is empty or not valid UTF-8.
        """
        try:
            table, topic = self._presence(topic)
        except InvalidStateError:
            return False
        return table.untrack(self._conn, topic)
