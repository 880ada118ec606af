"""Topic history and resume: ``server.history`` (:class:`History`).

A topic with history gives every message a :class:`~aiohttp_upgrade.Position`,
keeps the last ``size`` messages (for ``ttl`` seconds at most), and lets a
socket that lost its connection resume: :meth:`History.resume` delivers every
message after the position the client saw, in order and exactly once, then
continues live with no gap and no duplicate. See docs/history.rst.

Within a process, messages of a history topic reach subscribers through one
:class:`_Track` per topic, in offset order: a message whose offset is not the
next one is held while the missing ones are read from the history (a gap after a
Redis reconnect, or a subscription that started while messages were on their
way). A resuming socket is subscribed at once but *held*: live messages skip it
while its replay runs, and the replay ends, in the same loop turn, with the live
messages it missed meanwhile (kept in the track's ``recent`` ring while a
resume runs).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import deque
from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

from ._errors import InvalidStateError
from ._history_local import Backend, LocalHistory, Record, Slice
from ._history_upkeep import arm, log_failure, repair, skipped
from ._hub import Hub, SocketPort, _fan_out
from ._positions import (
    DEFAULT_HISTORY_SIZE,
    DEFAULT_HISTORY_TTL,
    Format,
    Policy,
    PolicyTable,
    Position,
    Resumed,
    data_of,
    formatted,
    parse_since,
)
from ._resume import READ_CHUNK, Replay
from ._topics import check_topic

if TYPE_CHECKING:
    from ._broker import Broker
    from ._history_local import Fetch, RemoteBackend, Skip
    from ._websocket import ServerWebSocket

__all__ = ["History", "Track"]

logger = logging.getLogger("aiohttp_upgrade")

# A hold at or above this is a running resume's token: the port takes no live
# message yet (each resume has its own, so that a later resume of the same
# socket is told from an earlier one still ending).
HOLD_ALL: Final = sys.maxsize >> 1
RECENT: Final = 1024  # live messages a track keeps for resumes finishing


class Track:
    """One history topic as this process delivers it."""

    __slots__ = ("again", "epoch", "held", "hold", "last", "recent", "repair")

    def __init__(self) -> None:
        self.epoch: str | None = None
        self.last: int | None = None  # the last offset delivered here
        self.recent: deque[tuple[int, int, bytes, bool, object]] = deque(maxlen=RECENT)
        self.hold: dict[SocketPort, int] = {}  # deliver only offsets above
        self.held: dict[int, Record] = {}  # early messages, waiting for a gap
        self.repair: asyncio.Task[None] | None = None
        self.again = False  # check() was called while the repair ran: read again


class History:
    """The history of a server's topics (``server.history``).

    Topics keep no history until :meth:`enable` names them; they then cost
    nothing more than before (the hub looks at the policy table only once
    history is enabled somewhere, one dict lookup per publish).
    """

    def __init__(self, hub: Hub, broker: Broker, backpressure_limit: int) -> None:
        self._hub = hub
        self._broker = broker
        self.backpressure_limit = backpressure_limit
        """The handler's ``backpressure_limit``: a replay stays well under it."""
        self._local: LocalHistory | None = None
        self.policies = PolicyTable()
        """Which topics keep history (``policies.get(topic)``: a policy or None)."""
        self._tracks: dict[str, Track] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._resumes = 0  # resumes started: the next one's hold token
        self._sweeper: asyncio.TimerHandle | None = None
        self.gaps = 0
        """How many messages live subscribers here never got, because they were
        trimmed from the history before a gap could be filled (monotonic)."""

    # -- configuration -----------------------------------------------------------

    def enable(
        self,
        topic: str,
        *,
        size: int = DEFAULT_HISTORY_SIZE,
        ttl: float = DEFAULT_HISTORY_TTL,
        format: Format | None = None,
        prefix: bool = False,
    ) -> None:
        """Keep the history of ``topic`` (with ``prefix=True``: of every topic
        that starts with ``topic``; the longest prefix wins, an exact name
        before any prefix).

        Args:
            size: messages kept at most, 1 to 1,000,000 (Redis: ``MAXLEN ~``,
                so up to about 100 more).
            ttl: seconds a message stays replayable at most (at most 30 days).
            format: ``format(position, data) -> str | bytes`` builds what
                subscribers get for ``data`` published at ``position`` (called
                once per process per message, and for each replayed message);
                None sends ``data`` as published.

        Raises:
            InvalidOptionError: ``size`` or ``ttl`` out of range.
            InvalidStateError: the server's broker keeps no history.
            TypeError, ValueError: ``topic`` is not a valid topic.
        """
        topic = check_topic(topic)
        policy = Policy(size, ttl, format)
        self._backend()
        self.policies.add(topic, policy, prefix)
        self._hub.history = self

    def fetcher(self) -> Fetch:
        """The ``fetch`` of the history's backend (in-process or Redis)."""
        return self._backend().fetch

    def _backend(self) -> Backend:
        if not self._broker.remote:
            if self._local is None:
                self._local = LocalHistory()
            return self._local
        return self._remote()

    def _remote(self) -> RemoteBackend:
        broker = self._broker
        backend = broker.history_backend()
        if backend is None:
            raise InvalidStateError(
                f"{type(broker).__name__} keeps no history: use LocalBroker or "
                "RedisBroker"
            )
        return backend

    def _policy(self, topic: str) -> Policy:
        policy = self.policies.get(check_topic(topic))
        if policy is None:
            raise InvalidStateError(
                f"topic {topic!r} keeps no history: call server.history.enable first"
            )
        return policy

    # -- publishing (from the hub) -------------------------------------------------

    def publish(
        self,
        topic: str,
        policy: Policy,
        opcode: int,
        payload: bytes,
        compress: bool,
        sender: SocketPort | None,
        exclude: Iterable[object] | None = None,
    ) -> int:
        """A publish to a history topic (``Hub.publish`` calls it).

        In-process: the message gets its offset and is delivered here now.
        Through a broker: it is queued for Redis, which assigns the offset, and
        delivered here (as on every process) when Redis sends it back. The
        sockets to skip (``sender``, ``exclude``) travel with the message.
        """
        skip: Skip = skipped(sender, exclude) if exclude else sender
        local = self._local
        if self._broker.remote or local is None:
            remote = self._remote()
            return remote.publish(topic, policy, opcode, payload, compress, skip)
        epoch, offset = local.append(topic, policy, opcode, payload, compress)
        return self.accept(topic, epoch, [(offset, opcode, payload, compress, skip)])

    # -- delivery, in offset order ---------------------------------------------------

    def accept(self, topic: str, epoch: str, records: Sequence[Record]) -> int:
        """Deliver messages of ``topic`` (live, or read to fill a gap) to the
        subscribers here, in offset order, each once; return the publish code
        of the last one delivered."""
        if self._sweeper is None:
            self._sweeper = arm(self._tick)
        track = self._tracks.get(topic)
        if track is None:
            if not self._hub.count(topic):
                return 0
            track = self._tracks[topic] = Track()
        if track.epoch != epoch:
            if track.epoch is not None:
                logger.warning("history of topic %r lost: new epoch %s", topic, epoch)
            track.epoch, track.last = epoch, None
            track.held.clear()
            track.recent.clear()
            for port in [p for p, above in track.hold.items() if above < HOLD_ALL]:
                del track.hold[port]  # offsets of the old history
        policy = self.policies.get(topic)
        code = 0
        for record in records:
            offset = record[0]
            last = track.last
            if last is None or offset == last + 1:
                code = self._deliver(topic, track, policy, record)
            elif offset > last:
                track.held[offset] = record
                self.check(topic, track)
        held = track.held
        while held and track.last is not None and track.last + 1 in held:
            code = self._deliver(topic, track, policy, held.pop(track.last + 1))
        if not (self._hub.count(topic) or track.hold or held or track.repair):
            del self._tracks[topic]
        return code

    def _deliver(
        self, topic: str, track: Track, policy: Policy | None, record: Record
    ) -> int:
        offset, opcode, payload, compress, skip = record
        track.last = offset
        assert track.epoch is not None
        opcode, payload, message = formatted(
            policy, track.epoch, offset, opcode, payload
        )
        members = self._hub.topics.subscribers(topic)
        subscribers: Collection[SocketPort] = members
        sender = None
        if isinstance(skip, frozenset):  # exclude=: the sockets (ws) to skip
            subscribers = [p for p in members if p.ws not in skip]
        else:
            sender = skip
        hold = track.hold
        if hold:  # a resume may need it (kept only while one runs)
            track.recent.append((offset, opcode, payload, compress, message))
            subscribers = [p for p in subscribers if hold.get(p, -1) < offset]
            for port in [p for p, v in hold.items() if v < offset or p not in members]:
                del hold[port]  # passed, or closed meanwhile
            if not hold:
                track.recent.clear()  # filled again, without a hole, by the next
        counters = self._hub.counters
        counters.publishes += 1
        if not subscribers:
            return 0
        reached = len(subscribers) - (sender in subscribers)
        counters.deliveries += reached
        counters.bytes_delivered += reached * len(payload)
        return _fan_out(subscribers, opcode, payload, compress, message, sender)

    def check(self, topic: str, track: Track | None = None) -> None:
        """Read what this process may have missed of ``topic`` (after a gap, a
        resume, a new Redis subscription) and deliver it in order."""
        track = track or self._tracks.get(topic)
        if track is None or track.last is None:
            return
        if track.repair is not None:
            track.again = True  # its read may be older than what prompted this
            return
        if self._backend() is self._local:
            return  # nothing is ever missed in-process
        task = track.repair = asyncio.get_running_loop().create_task(
            repair(self, topic, track, self._read_after)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(log_failure)

    # -- freeing memory ----------------------------------------------------------

    def sweep(self, now: float | None = None) -> None:
        """Free what nothing needs any more (every few seconds
        while history is in use here): messages past their ttl, idle emptied
        in-process histories, the tracks of topics nobody here subscribes to."""
        if self._local is not None:
            self._local.sweep(self.policies, time.monotonic() if now is None else now)
        count = self._hub.count
        for topic, track in list(self._tracks.items()):
            if not (count(topic) or track.hold or track.held or track.repair):
                del self._tracks[topic]

    def _tick(self) -> None:
        self._sweeper = None
        try:
            self.sweep()
        except Exception:
            logger.exception("sweeping the history failed")
        if self._tracks or self._local:
            self._sweeper = arm(self._tick)  # else armed by the next delivery

    async def _read_after(self, topic: str, after: int) -> Slice:
        backend: Backend = self._backend()
        return await backend.fetch(topic, self._policy(topic), after, READ_CHUNK)

    # -- resume and read -----------------------------------------------------------

    async def resume(
        self, ws: ServerWebSocket[Any], topic: str, since: object = None
    ) -> Resumed:
        """Subscribe ``ws`` to ``topic`` and deliver every message after
        ``since`` first, in order, exactly once; then live, with no gap and no
        duplicate between the two.

        Args:
            ws: an open socket, not subscribed to ``topic`` yet.
            since: the last :class:`Position` the client saw, or its string;
                None subscribes from now on and returns the position.

        Returns:
            :class:`Resumed`. Bad input (garbage, a negative offset, a future
            offset, another epoch, a position older than the history) never
            raises: the socket is subscribed from now on and ``recovered`` is
            False with the reason, so the app can reload the client's state up
            to ``position``.

        Raises:
            InvalidStateError: ``topic`` keeps no history.
        """
        policy = self._policy(topic)
        wanted = parse_since(since)
        if ws.is_subscribed(topic):
            return Resumed(False, None, 0, "subscribed")
        if not ws.subscribe(topic):
            return Resumed(False, None, 0, "closed")
        track = self._tracks.get(topic)
        if track is None:
            track = self._tracks[topic] = Track()
        members = self._hub.topics.subscribers(topic)
        assert isinstance(members, dict), "insertion-ordered: ws's port is last"
        port: SocketPort = next(reversed(members))
        assert getattr(port, "ws", ws) is ws, "the newest subscriber is ws"
        if self._sweeper is None:
            self._sweeper = arm(self._tick)
        self._resumes += 1
        token = track.hold[port] = HOLD_ALL + self._resumes
        replay = Replay(self, ws, port, topic, policy, track, token)
        try:
            resumed = await replay.run(wanted, since is not None)
            self._hub.counters.history_replays += resumed.replayed
            return resumed
        finally:
            if track.hold.get(port) == token:
                del track.hold[port]
            if all(above < HOLD_ALL for above in track.hold.values()):
                track.recent.clear()  # only a running resume reads it

    async def read(
        self, topic: str, since: object = None, limit: int = 100
    ) -> tuple[Position, list[tuple[Position, str | bytes]]]:
        """The history of ``topic`` (for a page's first load, an HTTP route).

        Args:
            since: a :class:`Position` (or its string): the messages after it;
                None: the last ``limit`` messages.
            limit: at most this many messages.

        Returns:
            The topic's position now, and ``(position, data)`` pairs, oldest
            first, ``data`` as published. With ``since`` from another epoch,
            or older than the history, the pairs are the last ``limit``
            messages (compare their first position with ``since``).

        Raises:
            InvalidStateError: ``topic`` keeps no history.
            ValueError: ``since`` is not a position, or ``limit`` < 1.
            HistoryUnavailable: the history could not be read.
        """
        policy = self._policy(topic)
        wanted = parse_since(since)
        if since is not None and wanted is None:
            raise ValueError(f"not a history position: {since!r:.80}")
        if type(limit) is not int or limit < 1:
            raise ValueError("limit must be an int >= 1")
        backend = self._backend()
        after = wanted.offset if wanted is not None else 0
        chunk = await backend.fetch(topic, policy, after, limit, tail=wanted is None)
        if wanted is not None and (
            wanted.epoch != chunk.epoch or not chunk.complete or after > chunk.last
        ):
            chunk = await backend.fetch(topic, policy, 0, limit, tail=True)
        items = [
            (Position(chunk.epoch, offset), data_of(opcode, payload))
            for offset, opcode, payload, _ in chunk.items
        ]
        return Position(chunk.epoch, chunk.last), items
