"""The in-process history: a bounded ring per topic, for one process (LocalBroker).

What the history backends share: :class:`Slice` (what a read returns),
``Item`` and ``Record``, and the :class:`Backend` protocol that
:class:`~aiohttp_upgrade._history.History` drives.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from itertools import islice
from typing import TYPE_CHECKING, Final, NamedTuple, Protocol, TypeAlias

from ._errors import BrokerUnavailableError
from ._positions import Policy, PolicyTable

if TYPE_CHECKING:
    from ._hub import SocketPort

__all__ = [
    "IDLE_KEEP",
    "Backend",
    "Fetch",
    "HistoryUnavailable",
    "Item",
    "LocalHistory",
    "Record",
    "RemoteBackend",
    "Skip",
    "Slice",
]

# An idle topic's emptied history (its epoch and last offset) is kept this long
# (at least its ttl), as Redis keeps a topic's hash: a client that saw the last
# message resumes with nothing to replay instead of being told "epoch".
IDLE_KEEP: Final = 86_400.0

Item = tuple[int, int, bytes, bool]
"""(offset, opcode, payload, compress): one stored message."""

Skip: TypeAlias = "SocketPort | frozenset[object] | None"
"""Who a message skips: the sender's port, the sockets (ws) of ``exclude``
with the sender's, or nobody."""

Record = tuple[int, int, bytes, bool, Skip]
"""(offset, opcode, payload, compress, skip): one message to deliver; skip is
the sender port, the frozenset of sockets (ws) a publish excluded, or None."""


class HistoryUnavailable(BrokerUnavailableError):
    """The history could not be read (Redis unreachable or too slow)."""


class Slice(NamedTuple):
    """A read of a topic's history.

    ``items`` follow ``after`` in order, without a hole, each younger than the
    topic's ttl; ``complete`` is False when the message right after ``after``
    is no longer kept (trimmed by size or age).
    """

    epoch: str
    last: int
    items: list[Item]
    complete: bool


class Backend(Protocol):
    """Where a history lives: this process (:class:`LocalHistory`) or Redis."""

    remote: bool

    async def fetch(
        self, topic: str, policy: Policy, after: int, limit: int, tail: bool = False
    ) -> Slice:
        """Up to ``limit`` messages after offset ``after`` (with ``tail``: the
        last ``limit`` messages).

        Raises:
            HistoryUnavailable: the history could not be read.
        """
        ...


Fetch = Callable[[str, Policy, int, int], Awaitable[Slice]]
"""A backend's ``fetch`` (``tail`` left False)."""


class RemoteBackend(Backend, Protocol):
    """A history kept by a broker (Redis): it assigns the offsets."""

    def publish(
        self,
        topic: str,
        policy: Policy,
        opcode: int,
        payload: bytes,
        compress: bool,
        sender: Skip,
    ) -> int:
        """Queue a message; its publish code (-1 queued, 0 dropped)."""
        ...


def new_epoch() -> str:
    """A random epoch (16 hex digits)."""
    return os.urandom(8).hex()


class _Ring:
    __slots__ = ("epoch", "items", "last", "times", "used")

    def __init__(self, size: int, epoch: str) -> None:
        self.items: deque[Item] = deque(maxlen=size)
        self.times: deque[float] = deque(maxlen=size)
        self.last = 0
        self.epoch = epoch
        self.used = time.monotonic()  # the last write or read


class LocalHistory:
    """Histories kept in this process's memory, ``size`` messages per topic at
    most (each for ``ttl`` seconds at most). A topic's epoch is new when its
    history starts here: at its first use, or after :meth:`sweep` dropped it."""

    remote = False

    def __init__(self) -> None:
        self._rings: dict[str, _Ring] = {}

    def __len__(self) -> int:
        """The topics with a history here."""
        return len(self._rings)

    def append(
        self, topic: str, policy: Policy, opcode: int, payload: bytes, compress: bool
    ) -> tuple[str, int]:
        """Store a message; return its epoch and offset."""
        ring = self._rings.get(topic)
        if ring is None or ring.items.maxlen != policy.size:
            ring = self._resized(topic, ring, policy.size)
        now = ring.used = time.monotonic()
        self._expire(ring, now - policy.ttl)
        offset = ring.last = ring.last + 1
        ring.items.append((offset, opcode, payload, compress))
        ring.times.append(now)
        return ring.epoch, offset

    def _resized(self, topic: str, old: _Ring | None, size: int) -> _Ring:
        ring = self._rings[topic] = _Ring(size, old.epoch if old else new_epoch())
        if old is not None:
            ring.last = old.last
            ring.items.extend(old.items)
            ring.times.extend(old.times)
        return ring

    @staticmethod
    def _expire(ring: _Ring, oldest: float) -> None:
        times, items = ring.times, ring.items
        while times and times[0] < oldest:
            times.popleft()
            items.popleft()

    async def fetch(
        self, topic: str, policy: Policy, after: int, limit: int, tail: bool = False
    ) -> Slice:
        return self.read(topic, policy, after, limit, tail)

    def read(
        self, topic: str, policy: Policy, after: int, limit: int, tail: bool = False
    ) -> Slice:
        """:meth:`fetch`, synchronously."""
        ring = self._rings.get(topic)
        if ring is None:  # its epoch starts now (dropped by sweep when idle)
            ring = self._resized(topic, None, policy.size)
        now = ring.used = time.monotonic()
        self._expire(ring, now - policy.ttl)
        items = ring.items
        first = items[0][0] if items else ring.last + 1
        if tail:
            chosen = list(islice(reversed(items), max(limit, 0)))[::-1]
            return Slice(ring.epoch, ring.last, chosen, True)
        complete = after >= first - 1
        start = max(after + 1 - first, 0)
        chosen = [items[i] for i in range(start, min(start + limit, len(items)))]
        return Slice(ring.epoch, ring.last, chosen, complete)

    def sweep(self, policies: PolicyTable, now: float) -> None:
        """Drop the messages past their topic's ttl, and the topics whose
        history is empty and idle for ``IDLE_KEEP`` (and their ttl; a topic
        only ever read: its ttl)."""
        rings = self._rings
        for topic, ring in list(rings.items()):
            policy = policies.get(topic)
            ttl = policy.ttl if policy is not None else 0.0
            self._expire(ring, now - ttl)
            keep = max(ttl, IDLE_KEEP) if ring.last else ttl  # else only read
            if not ring.items and now - ring.used > keep:
                del rings[topic]
