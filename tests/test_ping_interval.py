"""``ping_interval``: pings of their own, apart from the idle timeout, also with
``idle_timeout=0`` (keep-alive through proxies, never closing).

The schedule is tested on a fake clock; the rest on real sockets.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aiohttp_upgrade import InvalidOptionError, ReadyState, WebSocketHandler
from aiohttp_upgrade._frames import OP_PING as SERVER_OP_PING
from aiohttp_upgrade._frames import build_frame
from aiohttp_upgrade._lifetime import Aging
from aiohttp_upgrade._options import Options

from .conftest import ConnectRaw, Recorder, ServeFactory
from .fake_clock import FakeClock
from .flow_support import read_raw_frame
from .test_max_lifetime import FakePort
from .wire import OP_PING

PING = build_frame(SERVER_OP_PING, b"")


def schedule(clock: FakeClock, **options: Any) -> Aging[FakePort]:
    return Aging(Options(**options), clock, lambda: 0.0)


def test_a_socket_is_pinged_every_interval() -> None:
    """With ping_interval=30 a socket gets one ping per 30 s, and is never closed."""
    clock = FakeClock()
    aging = schedule(clock, idle_timeout=0, ping_interval=30)
    port = FakePort(clock)
    aging.add(port)
    clock.advance(29)
    assert port.outbox.control == []
    clock.advance(1)
    assert port.outbox.control == [PING]
    clock.advance(90)
    assert port.outbox.control == [PING] * 4
    assert port.closed == []


def test_a_forgotten_socket_is_pinged_no_more() -> None:
    """A closed socket leaves the ping schedule."""
    clock = FakeClock()
    aging = schedule(clock, ping_interval=30)
    port = FakePort(clock)
    aging.add(port)
    clock.advance(30)
    aging.forget(port)
    clock.advance(300)
    assert port.outbox.control == [PING]
    assert clock.armed == []


def test_zero_ping_interval_pings_never() -> None:
    """ping_interval=0 (the default) arms no timer."""
    clock = FakeClock()
    aging = schedule(clock)
    aging.add(FakePort(clock))
    assert clock.armed == []


@pytest.mark.parametrize("value", [-1, float("inf"), "30", False, None], ids=repr)
def test_invalid_ping_interval_is_refused(value: object) -> None:
    """ping_interval must be a finite number of seconds >= 0."""
    with pytest.raises(InvalidOptionError, match="ping_interval"):
        WebSocketHandler(ping_interval=value)


async def test_keep_alive_pings_with_idle_timeout_0_never_close(
    serve: ServeFactory, connect_raw: ConnectRaw
) -> None:
    """idle_timeout=0 with ping_interval: a silent client gets ping after ping and
    its socket stays open."""
    handler = Recorder(idle_timeout=0, ping_interval=0.05)
    served = await serve(handler)
    raw = await connect_raw(served.port)
    ws = (await handler.next("open")).ws
    for _ in range(4):
        frame = await read_raw_frame(raw.reader)
        assert frame.opcode == OP_PING
    assert ws.ready_state is ReadyState.OPEN


async def test_pings_arrive_long_before_the_idle_timeout(
    serve: ServeFactory, connect_raw: ConnectRaw
) -> None:
    """With idle_timeout=960 and ping_interval=0.05, three pings arrive while the
    idle ping (at 720 s) is far off."""
    handler = Recorder(idle_timeout=960, ping_interval=0.05)
    served = await serve(handler)
    raw = await connect_raw(served.port)
    await handler.next("open")
    async with asyncio.timeout(10):
        for _ in range(3):
            assert (await read_raw_frame(raw.reader)).opcode == OP_PING


async def test_interval_pings_do_not_keep_a_dead_client_open(
    serve: ServeFactory, connect_raw: ConnectRaw
) -> None:
    """Pings are not activity: a client that never answers is still closed at the
    idle timeout (1006)."""
    handler = Recorder(idle_timeout=0.4, send_pings=False, ping_interval=0.05)
    served = await serve(handler)
    await connect_raw(served.port)
    await handler.next("open")
    code, _ = (await handler.next("close")).args
    assert code == 1006


def test_handler_default_is_off() -> None:
    """A handler has neither interval pings nor a max lifetime unless asked."""
    options = WebSocketHandler().options
    assert (options.ping_interval, options.max_lifetime) == (0, 0)
