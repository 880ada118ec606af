"""Rolling drain: a shutdown spreads its closes over ``drain`` seconds instead of
closing every socket in the same millisecond, and still ends within its bound.

The plan (which sockets close when) is tested without a clock; the shutdown on
real sockets waits for events (each Close), never for a fixed time.
"""

from __future__ import annotations

import asyncio

import pytest

from aiohttp_upgrade import InvalidOptionError, WebSocketHandler
from aiohttp_upgrade._drain import DRAIN_STEP, drain_plan

from .conftest import ConnectRaw, Recorder, ServeFactory
from .wire import OP_CLOSE, OP_TEXT, Raw, parse_close


def test_without_drain_every_socket_closes_at_once() -> None:
    """drain=0: one batch, every socket at offset 0."""
    assert drain_plan(5000, 0) == [(0.0, 0, 5000)]


def test_no_socket_no_batch() -> None:
    """Nothing to close, nothing planned."""
    assert drain_plan(0, 5) == []


def test_5000_sockets_over_5_seconds_close_10_per_step() -> None:
    """5,000 sockets over 5 s: 500 batches DRAIN_STEP apart, 10 each, every socket
    once, the last batch before the window ends."""
    plan = drain_plan(5000, 5)
    assert len(plan) == round(5 / DRAIN_STEP) == 500
    assert {stop - start for _, start, stop in plan} == {10}
    assert [start for _, start, _ in plan[1:]] == [stop for _, _, stop in plan[:-1]]
    assert (plan[0][1], plan[-1][2]) == (0, 5000)
    offsets = [offset for offset, _, _ in plan]
    assert offsets == sorted(offsets) and offsets[-1] < 5
    assert offsets[1] == pytest.approx(DRAIN_STEP)


def test_few_sockets_spread_over_the_whole_window() -> None:
    """4 sockets over 2 s: one every 0.5 s."""
    assert drain_plan(4, 2) == [(0.0, 0, 1), (0.5, 1, 2), (1.0, 2, 3), (1.5, 3, 4)]


@pytest.mark.parametrize("value", [-1, float("inf"), "5", True, None], ids=repr)
def test_invalid_shutdown_drain_is_refused(value: object) -> None:
    """shutdown_drain must be a finite number of seconds >= 0."""
    with pytest.raises(InvalidOptionError, match="shutdown_drain"):
        WebSocketHandler(shutdown_drain=value)


async def test_a_bad_drain_argument_is_refused(serve: ServeFactory) -> None:
    """shutdown(drain=-1) raises ValueError naming drain, and shuts nothing down."""
    served = await serve(Recorder())
    with pytest.raises(ValueError, match="drain"):
        await served.server.shutdown(drain=-1)
    assert not served.server.shutting_down


async def close_code(raw: Raw) -> int | None:
    """Read until the server's Close; return its code."""
    async with asyncio.timeout(10):
        while True:
            _, opcode, payload = await raw.recv()
            if opcode == OP_CLOSE:
                return parse_close(payload)[0]


@pytest.mark.parametrize("how", ["argument", "option"])
async def test_a_drained_shutdown_closes_one_socket_while_the_other_serves(
    serve: ServeFactory, connect_raw: ConnectRaw, how: str
) -> None:
    """With a drain over two sockets the first gets 1001 at once while the second
    still serves, and gets its 1001 before shutdown() returns."""
    handler = Recorder(shutdown_drain=1.0 if how == "option" else 0)
    served = await serve(handler)
    first, second = [await connect_raw(served.port) for _ in range(2)]
    for _ in range(2):
        await handler.next("open")
    drain = 1.0 if how == "argument" else None
    shutdown = asyncio.create_task(served.server.shutdown(drain=drain))
    assert await close_code(first) == 1001
    assert served.server.shutting_down and served.server.pending_websockets == 1
    handler.sockets[1].send("still here")
    assert await second.recv() == (True, OP_TEXT, b"still here")
    assert await close_code(second) == 1001
    async with asyncio.timeout(10):
        await shutdown


async def test_cancelling_a_drained_shutdown_closes_the_rest_at_once(
    serve: ServeFactory, connect_raw: ConnectRaw
) -> None:
    """A shutdown cancelled halfway through its drain (a supervisor's deadline)
    still closes every remaining socket with 1001."""
    handler = Recorder()
    served = await serve(handler)
    first, second = [await connect_raw(served.port) for _ in range(2)]
    for _ in range(2):
        await handler.next("open")
    shutdown = asyncio.create_task(served.server.shutdown(drain=60))
    assert await close_code(first) == 1001
    shutdown.cancel()
    assert await close_code(second) == 1001
    with pytest.raises(asyncio.CancelledError):
        await shutdown
    assert served.server.pending_websockets == 0
