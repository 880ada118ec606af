"""Presence: who is tracked in which topic, the local view and its batched diffs.

A :class:`PresenceTable` holds the view of one server: every entry it knows of,
this process's own (tracked by its sockets) and, through a broker, the other
processes'. An entry is one socket tracked in one topic under a key, with a
meta (a JSON value); the entries of one key in a topic are one member with
several metas (tabs, devices). An entry is named by a :data:`Ref`: the node it
belongs to (``LOCAL`` for this process, a broker's process id otherwise) and a
number unique on that node.

Every change (join, meta update, leave) updates the view at once, in O(1); the
handler's ``presence`` hook hears of them in diffs per topic, batched over
``DIFF_INTERVAL`` seconds, in which a join and a leave of one entry cancel out.
Own changes also go to the broker's relay (:meth:`PresenceTable.attach`).
Synchronous; the hook's timer and task need a running loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any, Final

from ._errors import InvalidStateError

__all__ = [
    "DIFF_INTERVAL",
    "LOCAL",
    "Entry",
    "Members",
    "PresenceHook",
    "PresenceTable",
    "Ref",
    "Relay",
    "check_key",
    "encode_meta",
]

logger = logging.getLogger("aiohttp_upgrade")

# Changes within this many seconds reach the presence hook as one diff.
DIFF_INTERVAL: Final = 0.05
LOCAL: Final = ""
"""The node of this process's own entries."""

Ref = tuple[str, int]
"""(node, number): one entry of the cluster."""
Entry = tuple[str, str, Any]
"""(topic, key, meta) of an entry."""
Members = dict[str, list[Any]]
"""key -> its metas: a topic's members, or the joins or leaves of a diff."""
Relay = Callable[[int, "Entry | None"], None]
"""``relay(number, entry)``: an own entry joined or changed; ``entry`` None: it left."""
PresenceHook = Callable[[str, Members, Members], Awaitable[None] | None]

_ABSENT: Final[Any] = object()  # no meta: before a join, after a leave


def check_key(key: object) -> str:
    """Return ``key`` if it is a valid presence key: a non-empty str that
    encodes as UTF-8.

    Raises:
        TypeError: ``key`` is not a str.
        ValueError: ``key`` is empty or not valid UTF-8 (a lone surrogate).
    """
    if not isinstance(key, str):
        raise TypeError(f"presence key must be a str, got {type(key).__name__}")
    if not key:
        raise ValueError("presence key must not be empty")
    try:
        key.encode()
    except UnicodeEncodeError:
        raise ValueError("presence key is not valid UTF-8 (a lone surrogate)") from None
    return str(key)


def encode_meta(meta: object, limit: int) -> Any:
    """A copy of ``meta`` as JSON gives it back, if its JSON is at most
    ``limit`` bytes (ASCII, compact).

    Raises:
        TypeError: ``meta`` is not JSON (a set, an object, NaN, a cycle, or
            nested too deep to encode ...).
        ValueError: its JSON is longer than ``limit``.
    """
    try:
        text = json.dumps(meta, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise TypeError(f"presence meta must be a JSON value: {exc}") from None
    if len(text) > limit:
        raise ValueError(
            f"presence meta is {len(text)} bytes of JSON, more than "
            f"max_presence_meta_length ({limit})"
        )
    return json.loads(text)


class PresenceTable:
    """The presence view of one server and its own entries (see the module).

    Args:
        hook: the handler's ``presence(topic, joins, leaves)``, or None.
        is_async: ``hook`` is a coroutine function (its diffs run one at a time,
            in order, on a task in ``tasks``, which shutdown waits for).
        tasks: the server's hook tasks.
        limit: the largest meta, in bytes of JSON.
    """

    __slots__ = (
        "_async",
        "_hook",
        "_next",
        "_pending",
        "_queue",
        "_runner",
        "_tasks",
        "_timer",
        "entries",
        "limit",
        "member_count",
        "members",
        "nodes",
        "own",
        "relay",
    )

    def __init__(
        self,
        hook: PresenceHook | None,
        is_async: bool,
        tasks: set[asyncio.Task[None]],
        limit: int,
    ) -> None:
        self.members: dict[str, dict[str, dict[Ref, Any]]] = {}
        """topic -> key -> ref -> meta: the view."""
        self.member_count = 0
        """Keys in all topics of the view (a gauge other threads may read)."""
        self.entries: dict[Ref, Entry] = {}
        self.nodes: dict[str, set[int]] = {}
        """Other nodes -> the numbers of their entries."""
        self.own: dict[Hashable, dict[str, int]] = {}
        """socket -> topic -> number of its entry."""
        self.relay: Relay | None = None
        self.limit = limit
        self._hook = hook
        self._async = is_async
        self._tasks = tasks
        self._next = 0
        self._pending: dict[str, dict[Ref, list[Any]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._queue: deque[tuple[str, Members, Members]] = deque()
        self._runner: asyncio.Task[None] | None = None

    # -- this process's sockets --------------------------------------------------

    def track(self, port: Hashable, topic: str, key: str, meta: object) -> None:
        """Track ``port`` in ``topic`` under ``key`` (checked by the caller)."""
        topics = self.own.get(port)
        if topics is not None and topic in topics:
            raise InvalidStateError(
                f"this socket is already tracked in {topic!r}: update_presence() "
                "changes its meta, untrack() ends it"
            )
        value = encode_meta(meta, self.limit)
        self._next += 1
        number = self._next
        if topics is None:
            topics = self.own[port] = {}
        topics[topic] = number
        self._put((LOCAL, number), topic, key, value)
        if self.relay is not None:
            self.relay(number, (topic, key, value))

    def update(self, port: Hashable, topic: str, meta: object) -> None:
        """Replace the meta of ``port``'s entry in ``topic``."""
        number = self.own.get(port, {}).get(topic)
        if number is None:
            raise InvalidStateError(f"this socket is not tracked in {topic!r}")
        value = encode_meta(meta, self.limit)
        _, key, old = self.entries[LOCAL, number]
        if value == old:
            return
        self._put((LOCAL, number), topic, key, value)
        if self.relay is not None:
            self.relay(number, (topic, key, value))

    def untrack(self, port: Hashable, topic: str) -> bool:
        """End ``port``'s entry in ``topic``; True if there was one."""
        topics = self.own.get(port)
        number = None if topics is None else topics.pop(topic, None)
        if number is None:
            return False
        if not topics:
            del self.own[port]
        self._leave(number)
        return True

    def leave_all(self, port: Hashable) -> None:
        """End every entry of a closing socket."""
        topics = self.own.pop(port, None)
        if topics:
            for number in topics.values():
                self._leave(number)

    def _leave(self, number: int) -> None:
        self._remove((LOCAL, number))
        if self.relay is not None:
            self.relay(number, None)

    def own_entries(self) -> dict[int, Entry]:
        """This process's entries by number (for a broker's full resync)."""
        entries = self.entries
        return {
            number: entries[LOCAL, number]
            for topics in self.own.values()
            for number in topics.values()
        }

    # -- other processes' entries (from a broker) --------------------------------

    def attach(self, relay: Relay | None) -> None:
        """A broker (re)starts: ``relay`` hears of own changes from now on; the
        other processes' entries are dropped (the new session resyncs them)."""
        self.relay = relay
        for node in list(self.nodes):
            self.forget(node)

    def apply(self, node: str, number: int, entry: Entry | None) -> None:
        """Entry ``number`` of ``node`` joined or changed, or left (None). O(1)."""
        if entry is None:
            self._remove((node, number))
            numbers = self.nodes.get(node)
            if numbers is not None:
                numbers.discard(number)
            return
        topic, key, value = entry
        self._put((node, number), topic, key, value)
        self.nodes.setdefault(node, set()).add(number)

    def replace(self, node: str, entries: Mapping[int, Entry]) -> None:
        """``entries`` are all of ``node``'s now: only the differences count as
        changes (a resync shows no leave and rejoin)."""
        for number in self.nodes.get(node, set()) - entries.keys():
            self._remove((node, number))
        known = self.entries
        for number, entry in entries.items():
            if known.get((node, number)) != entry:
                self._put((node, number), *entry)
        if entries:
            self.nodes[node] = set(entries)
        else:
            self.nodes.pop(node, None)

    def forget(self, node: str) -> None:
        """``node`` is gone: every entry of it leaves."""
        for number in self.nodes.pop(node, ()):
            self._remove((node, number))

    # -- the view ----------------------------------------------------------------

    def _put(self, ref: Ref, topic: str, key: str, value: Any) -> None:
        old = self.entries.get(ref)
        before = _ABSENT
        if old is not None:
            if old[0] == topic and old[1] == key:
                before = old[2]
            else:  # moved (a remote node reusing a number): a leave, then a join
                self._remove(ref)
        self.entries[ref] = (topic, key, value)
        keys = self.members.get(topic)
        if keys is None:
            keys = self.members[topic] = {}
        metas = keys.get(key)
        if metas is None:
            metas = keys[key] = {}
            self.member_count += 1
        metas[ref] = value
        if self._hook is not None:
            self._record(topic, ref, key, before, value)

    def _remove(self, ref: Ref) -> None:
        old = self.entries.pop(ref, None)
        if old is None:
            return
        topic, key, value = old
        keys = self.members[topic]
        metas = keys[key]
        del metas[ref]
        if not metas:
            del keys[key]
            self.member_count -= 1
            if not keys:
                del self.members[topic]
        if self._hook is not None:
            self._record(topic, ref, key, value, _ABSENT)

    # -- diffs ---------------------------------------------------------------------

    def _record(self, topic: str, ref: Ref, key: str, before: Any, after: Any) -> None:
        pending = self._pending
        changes = pending.get(topic)
        if changes is None:
            changes = pending[topic] = {}
            if self._timer is None:
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(DIFF_INTERVAL, self.flush)
        change = changes.get(ref)
        if change is None:
            changes[ref] = [key, before, after]
        else:
            change[2] = after  # the meta before the batch stays

    def flush(self) -> None:
        """Hand the batched changes to the hook, one diff per topic (to an
        async hook still awaited: when it returns, merged with later ones)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._runner is None:
            self._hand_over()

    def _hand_over(self) -> None:
        pending, self._pending = self._pending, {}
        for topic, changes in pending.items():
            joins: Members = {}
            leaves: Members = {}
            for key, before, after in changes.values():
                if before is not _ABSENT and (after is _ABSENT or after != before):
                    leaves.setdefault(key, []).append(before)
                if after is not _ABSENT and (before is _ABSENT or after != before):
                    joins.setdefault(key, []).append(after)
            if joins or leaves:
                self._call(topic, joins, leaves)

    def _call(self, topic: str, joins: Members, leaves: Members) -> None:
        hook = self._hook
        assert hook is not None
        if not self._async:
            try:
                hook(topic, joins, leaves)
            except Exception:
                logger.exception("the presence hook failed (topic %r)", topic)
            return
        self._queue.append((topic, joins, leaves))
        if self._runner is None:
            task = self._runner = asyncio.get_running_loop().create_task(self._run())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        """Run the queued diffs through the async hook, in order."""
        hook = self._hook
        assert hook is not None
        try:
            while self._queue or self._pending:
                if not self._queue:
                    self._hand_over()  # what changed while the hook ran
                    continue
                topic, joins, leaves = self._queue.popleft()
                try:
                    await hook(topic, joins, leaves)  # type: ignore[misc]
                except Exception:
                    logger.exception("the presence hook failed (topic %r)", topic)
        finally:
            self._runner = None
