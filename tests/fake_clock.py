"""A fake event-loop clock: ``time()`` and ``call_at()`` driven by the test.

For timing decisions tested without sockets and without waiting: the test
advances the clock and the callbacks due by then run, in time order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FakeClock", "FakeHandle"]


@dataclass(eq=False)
class FakeHandle:
    """A timer of the fake clock (``asyncio.TimerHandle``'s ``cancel`` and ``when``)."""

    at: float
    callback: Callable[..., Any]
    args: tuple[Any, ...]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True

    def when(self) -> float:
        return self.at


@dataclass
class FakeClock:
    """What a loop offers timers: ``time()``, ``call_at()``; ``advance()`` runs them."""

    now: float = 0.0
    timers: list[FakeHandle] = field(default_factory=list)

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> Any:
        handle = FakeHandle(when, callback, args)
        self.timers.append(handle)
        return handle

    @property
    def armed(self) -> list[FakeHandle]:
        """The timers neither cancelled nor run yet."""
        return [handle for handle in self.timers if not handle.cancelled]

    def advance(self, seconds: float) -> None:
        """Move the clock on by ``seconds``, running each timer due, earliest first."""
        target = self.now + seconds
        while True:
            due = [handle for handle in self.armed if handle.at <= target]
            if not due:
                break
            handle = min(due, key=lambda handle: handle.at)
            self.timers.remove(handle)
            self.now = max(self.now, handle.at)
            handle.callback(*handle.args)
        self.now = target
