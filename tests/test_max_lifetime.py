"""``max_lifetime``: a socket is closed (1001) after a maximum age drawn with
jitter, so that sockets opened together do not all reconnect together.

The schedule is tested on a fake clock (tests/fake_clock.py); one test closes a
real socket.
"""

from __future__ import annotations

import gc
import random
import weakref
from typing import Any

import pytest

from aiohttp_upgrade import InvalidOptionError, WebSocketHandler
from aiohttp_upgrade._lifetime import LIFETIME_JITTER, LIFETIME_REASON, Aging
from aiohttp_upgrade._options import Options

from .conftest import ConnectRaw, Recorder, ServeFactory
from .fake_clock import FakeClock
from .wire import OP_CLOSE, parse_close

HOUR = 3600.0


class FakeOutbox:
    def __init__(self) -> None:
        self.control: list[bytes] = []

    def enqueue_control(self, frame: bytes) -> None:
        self.control.append(frame)


class FakePort:
    """A socket as the lifetime and ping schedule sees it; records what it gets."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.outbox = FakeOutbox()
        self.closed: list[tuple[float, int, str]] = []

    def close(self, code: int, reason: str) -> None:
        self.closed.append((self.clock.now, code, reason))


def aging(
    clock: FakeClock, rand: Any = random.random, **options: Any
) -> Aging[FakePort]:
    return Aging(Options(**options), clock, rand)


def test_a_socket_closes_with_1001_at_its_lifetime() -> None:
    """With no jitter drawn, a socket is closed with 1001 at max_lifetime, not before."""
    clock = FakeClock()
    schedule = aging(clock, lambda: 0.0, max_lifetime=HOUR)
    port = FakePort(clock)
    schedule.add(port)
    clock.advance(HOUR - 1)
    assert port.closed == []
    clock.advance(1)
    assert port.closed == [(HOUR, 1001, LIFETIME_REASON)]


def test_the_jitter_never_goes_past_max_lifetime() -> None:
    """The largest jitter closes a socket at (1 - LIFETIME_JITTER) x max_lifetime."""
    clock = FakeClock()
    schedule = aging(clock, lambda: 0.999999, max_lifetime=HOUR)
    port = FakePort(clock)
    schedule.add(port)
    clock.advance(HOUR * (1 - LIFETIME_JITTER) - 0.01)
    assert port.closed == []
    clock.advance(0.02)
    assert len(port.closed) == 1


def test_sockets_opened_together_close_spread_over_the_jitter_window() -> None:
    """1,000 sockets opened at once close over the last LIFETIME_JITTER of
    max_lifetime, no more than 2 % of them in any 1 % of the window."""
    clock = FakeClock()
    schedule = aging(clock, random.Random(20).random, max_lifetime=HOUR)
    ports = [FakePort(clock) for _ in range(1000)]
    for port in ports:
        schedule.add(port)
    clock.advance(HOUR)
    times = [port.closed[0][0] for port in ports]
    start = HOUR * (1 - LIFETIME_JITTER)
    assert all(start <= time <= HOUR for time in times)
    window = HOUR * LIFETIME_JITTER
    buckets = [0] * 100
    for time in times:
        buckets[min(99, int((time - start) / window * 100))] += 1
    assert max(buckets) <= 20


def test_a_forgotten_socket_is_not_closed_nor_kept() -> None:
    """A socket that closed on its own is never closed by the schedule, nor held by it."""
    clock = FakeClock()
    schedule = aging(clock, max_lifetime=HOUR)
    port = FakePort(clock)
    ref = weakref.ref(port)
    schedule.add(port)
    schedule.forget(port)
    del port
    gc.collect()
    assert ref() is None
    clock.advance(HOUR)
    assert clock.armed == []


def test_a_later_socket_due_earlier_rearms_the_timer() -> None:
    """A socket whose lifetime ends before the armed timer's moves it earlier."""
    clock = FakeClock()
    draws = iter([0.0, 0.99])
    schedule = aging(clock, lambda: next(draws), max_lifetime=HOUR)
    first, second = FakePort(clock), FakePort(clock)
    schedule.add(first)  # due at HOUR
    clock.advance(60)
    schedule.add(second)  # due at 60 + 0.901 HOUR
    clock.advance(HOUR * 0.91)
    assert len(second.closed) == 1 and first.closed == []


def test_zero_max_lifetime_arms_nothing() -> None:
    """max_lifetime=0 (the default) schedules no timer at all."""
    clock = FakeClock()
    schedule = aging(clock)
    schedule.add(FakePort(clock))
    assert clock.armed == []


def test_stop_cancels_the_timer() -> None:
    """stop() (at shutdown) cancels the schedule's timer."""
    clock = FakeClock()
    schedule = aging(clock, max_lifetime=HOUR)
    schedule.add(FakePort(clock))
    schedule.stop()
    assert clock.armed == []


@pytest.mark.parametrize(
    "value", [-1, float("inf"), float("nan"), "60", True, None], ids=repr
)
def test_invalid_max_lifetime_is_refused(value: object) -> None:
    """max_lifetime must be a finite number of seconds >= 0."""
    with pytest.raises(InvalidOptionError, match="max_lifetime"):
        WebSocketHandler(max_lifetime=value)


async def test_a_real_socket_gets_1001_at_its_max_lifetime(
    serve: ServeFactory, connect_raw: ConnectRaw
) -> None:
    """A socket past max_lifetime gets a Close with 1001 and the close hook sees it."""
    handler = Recorder(max_lifetime=0.2)
    served = await serve(handler)
    raw = await connect_raw(served.port)
    await handler.next("open")
    _, opcode, payload = await raw.recv()
    assert opcode == OP_CLOSE
    assert parse_close(payload) == (1001, LIFETIME_REASON.encode())
    code, reason = (await handler.next("close")).args
    assert (code, reason) == (1001, LIFETIME_REASON)
