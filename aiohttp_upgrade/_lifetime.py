"""Timers of a server's sockets apart from the idle sweep: ``max_lifetime`` (close
a socket after a maximum age, with jitter) and ``ping_interval`` (a ping every so
often, whatever the traffic).

One :class:`Deadlines` per feature and server holds every socket's next due time
in a heap and arms one loop timer, for the earliest: no timer per socket, and
adding or forgetting a socket costs O(log n) at most. Due times close together
are served by one wake-up (``slack``). The clock is the event loop's, or a fake
one in tests (anything with ``time()`` and ``call_at()``).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Final, Generic, Protocol, TypeVar

from ._closecode import CloseCode
from ._frames import OP_PING, build_frame

if TYPE_CHECKING:
    from ._options import Options

logger = logging.getLogger("aiohttp_upgrade")

__all__ = ["LIFETIME_JITTER", "LIFETIME_REASON", "Aging", "Clock", "Deadlines"]

LIFETIME_JITTER: Final = 0.1
"""A socket's lifetime is drawn uniformly from the last tenth of ``max_lifetime``:
sockets opened together (after a deploy) close spread over that window."""
LIFETIME_CODE: Final = CloseCode.GOING_AWAY
LIFETIME_REASON: Final = "max lifetime"
# Due times within this fraction of the period are served by one wake-up; for
# lifetimes also at most LIFETIME_SLACK_CAP seconds, to keep the closes spread.
PING_SLACK: Final = 1 / 16
LIFETIME_SLACK: Final = 1 / 1000
LIFETIME_SLACK_CAP: Final = 0.05
_PING_FRAME: Final = build_frame(OP_PING, b"")


class Clock(Protocol):
    """What :class:`Deadlines` needs of an event loop."""

    def time(self) -> float: ...

    def call_at(
        self, when: float, callback: Callable[[], object], /
    ) -> asyncio.TimerHandle: ...


class ControlSink(Protocol):
    def enqueue_control(self, frame: bytes) -> None: ...


class AgingPort(Hashable, Protocol):
    """What the schedule does to a socket (``Connection`` implements it)."""

    @property
    def outbox(self) -> ControlSink: ...

    def close(self, code: int, reason: str) -> None: ...


P = TypeVar("P", bound=Hashable)
A = TypeVar("A", bound=AgingPort)


class Deadlines(Generic[P]):
    """Items due at a time each; ``on_due(item)`` runs when its time comes.

    Args:
        clock: the loop (or a fake clock).
        on_due: called once per item due, after the item left the schedule
            (it may add it again).
        slack: seconds: items due within ``slack`` of a wake-up are served by it.
    """

    __slots__ = (
        "_clock",
        "_heap",
        "_items",
        "_keys",
        "_on_due",
        "_seq",
        "_slack",
        "_timer",
        "_timer_at",
    )

    def __init__(self, clock: Clock, on_due: Callable[[P], None], slack: float) -> None:
        self._clock = clock
        self._on_due = on_due
        self._slack = slack
        self._seq = itertools.count()
        # The heap holds (when, key) only; a forgotten item's entry stays until it
        # surfaces or the heap is compacted, but the item itself is let go at once.
        self._heap: list[tuple[float, int]] = []
        self._items: dict[int, P] = {}
        self._keys: dict[P, int] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, item: P, delay: float) -> None:
        """Make ``item`` due ``delay`` seconds from now (replacing its due time)."""
        self.forget(item)
        key = next(self._seq)
        when = self._clock.time() + delay
        self._items[key] = item
        self._keys[item] = key
        heapq.heappush(self._heap, (when, key))
        if len(self._heap) > 2 * len(self._keys) + 64:
            self._heap = [entry for entry in self._heap if entry[1] in self._items]
            heapq.heapify(self._heap)
        self._arm()

    def forget(self, item: P) -> None:
        """Drop ``item`` from the schedule, if it is there."""
        key = self._keys.pop(item, None)
        if key is not None:
            del self._items[key]

    def stop(self) -> None:
        """Forget every item and cancel the timer."""
        self._heap.clear()
        self._items.clear()
        self._keys.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        heap, items = self._heap, self._items
        while heap and heap[0][1] not in items:
            heapq.heappop(heap)
        if not heap:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        when = heap[0][0]
        if self._timer is not None:
            if self._timer_at <= when:
                return
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._clock.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        horizon = self._clock.time() + self._slack
        heap, items, keys = self._heap, self._items, self._keys
        due = []
        while heap and heap[0][0] <= horizon:
            _, key = heapq.heappop(heap)
            item = items.pop(key, None)
            if item is not None:
                del keys[item]
                due.append(item)
        try:
            for item in due:
                try:
                    self._on_due(item)
                except Exception:  # one socket must not stop the others' timers
                    logger.exception("a timer of %r failed", item)
        finally:
            self._arm()


class Aging(Generic[A]):
    """The ``max_lifetime`` and ``ping_interval`` schedules of one server.

    Args:
        options: the handler's options.
        clock: the loop, or a fake clock; None: the running loop, taken when the
            first socket is added (a server may serve loop after loop in tests).
        rand: draws the jitter, a float in [0, 1).
    """

    __slots__ = ("_clock", "_lifetimes", "_loop", "_options", "_pings", "_rand")

    def __init__(
        self,
        options: Options,
        clock: Clock | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._options = options
        self._clock = clock
        self._rand = rand
        self._loop: Clock | None = None
        self._lifetimes: Deadlines[A] | None = None
        self._pings: Deadlines[A] | None = None

    def add(self, port: A) -> None:
        """Schedule a socket that has just opened."""
        options = self._options
        lifetime, interval = options.max_lifetime, options.ping_interval
        if not (lifetime or interval):
            return
        clock = self._clock or asyncio.get_running_loop()
        if clock is not self._loop:
            self.stop()
            self._loop = clock
            slack = min(lifetime * LIFETIME_SLACK, LIFETIME_SLACK_CAP)
            self._lifetimes = Deadlines(clock, _expire, slack) if lifetime else None
            self._pings = (
                Deadlines(clock, self._ping, interval * PING_SLACK)
                if interval
                else None
            )
        if self._lifetimes is not None:
            self._lifetimes.add(port, lifetime * (1 - LIFETIME_JITTER * self._rand()))
        if self._pings is not None:
            self._pings.add(port, interval)

    def forget(self, port: A) -> None:
        """Unschedule a socket that is closing."""
        if self._lifetimes is not None:
            self._lifetimes.forget(port)
        if self._pings is not None:
            self._pings.forget(port)

    def stop(self) -> None:
        """Unschedule every socket (at shutdown)."""
        for deadlines in (self._lifetimes, self._pings):
            if deadlines is not None:
                deadlines.stop()

    def _ping(self, port: A) -> None:
        port.outbox.enqueue_control(_PING_FRAME)  # not a send: no activity
        assert self._pings is not None
        self._pings.add(port, self._options.ping_interval)


def _expire(port: AgingPort) -> None:
    port.close(LIFETIME_CODE, LIFETIME_REASON)
