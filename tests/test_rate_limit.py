"""Per-socket rate limits (the ``rate_limit`` option): every frame a client sends
and its bytes are counted once per read; past the budget the ``rate_limited`` hook
runs and reading pauses until the budget is back, or, without the hook, the socket
is closed with 1008. The ping and continuation floods of issue 20 are tests here."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest

from aiohttp_upgrade import (
    InvalidOptionError,
    RateLimit,
    ServerWebSocket,
    TokenBucket,
    WebSocketHandler,
)
from aiohttp_upgrade._connection import Connection
from aiohttp_upgrade._parser import FrameParser
from aiohttp_upgrade._pausing import INBOX, RATE
from aiohttp_upgrade._ratelimit import ReadBudget
from aiohttp_upgrade._readsize import READ_FLOOR, read_size

from .conftest import Echo, Event, Recorder, Served, ServeFactory
from .wire import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Raw,
    client_frame,
    connect,
    parse_close,
)

POLICY_VIOLATION = 1008


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class LimitedRecorder(Recorder):
    """Records ``rate_limited`` too (the app's choice: the hook, not a close)."""

    def rate_limited(self, ws: ServerWebSocket[Any]) -> None:
        self.events.put_nowait(Event("rate_limited", ws, ()))


# -- the budget, with a fake clock ----------------------------------------------------


def test_budget_allows_the_burst_then_is_dry() -> None:
    """A fresh budget takes ``frame_burst`` frames at one instant, not one more."""
    budget = ReadBudget(RateLimit(frames_per_second=10, frame_burst=5), 0.0)
    assert budget.settle(0.0, 5, 0) == 0.0
    assert budget.settle(0.0, 6, 0) == pytest.approx(0.1)


def test_budget_debt_is_paid_at_the_rate() -> None:
    """A read far over budget is a debt: the wait is the debt over the rate."""
    budget = ReadBudget(RateLimit(frames_per_second=100, frame_burst=10), 0.0)
    assert budget.settle(0.0, 1010, 0) == pytest.approx(10.0)
    assert budget.settle(4.0, 1010, 0) == pytest.approx(6.0)
    assert budget.settle(10.0, 1010, 0) == 0.0


def test_budget_counts_bytes_apart_from_frames() -> None:
    """The byte budget limits alone: one frame of many bytes goes over it."""
    budget = ReadBudget(RateLimit(bytes_per_second=1000, byte_burst=2000), 0.0)
    assert budget.settle(0.0, 1, 2000) == 0.0
    assert budget.settle(0.0, 2, 3000) == pytest.approx(1.0)


def test_budget_holds_the_rate_over_a_long_flood() -> None:
    """Checked once per read, with reading paused while in debt, a flood of 5 s
    gets no more than twice the burst plus rate x time (plus one read)."""
    clock = FakeClock()
    start = clock.now
    budget = ReadBudget(RateLimit(frames_per_second=100, frame_burst=50), start)
    frames = 0
    paused_until = start
    while clock.now - start < 5.0:  # a read of 7 frames every millisecond
        if clock.now >= paused_until:
            frames += 7
            if frames > budget.frame_mark:
                paused_until = clock.now + budget.settle(clock.now, frames, 0)
        clock.now += 0.001
    assert 5 * 100 <= frames <= 2 * 50 + 5 * 100 + 7


def test_budget_never_refills_past_the_burst() -> None:
    """However long a socket rests, it gets at most twice the burst at once (the
    budget is refilled when it runs dry, counting the rest since it last was)."""
    budget = ReadBudget(RateLimit(frames_per_second=10, frame_burst=20), 0.0)
    assert budget.settle(3600.0, 21, 0) == 0.0
    assert budget.settle(3600.0, 41, 0) == 0.0
    assert budget.settle(3600.0, 42, 0) > 0.0


def test_budget_ignores_a_clock_stepping_back() -> None:
    """A clock that steps backwards refills nothing."""
    budget = ReadBudget(RateLimit(frames_per_second=1, frame_burst=1), 100.0)
    assert budget.settle(100.0, 2, 0) == pytest.approx(1.0)
    assert budget.settle(50.0, 2, 0) == pytest.approx(1.0)
    assert budget.settle(101.0, 2, 0) == 0.0


def test_token_bucket_takes_a_burst_then_refills() -> None:
    """The public bucket: ``burst`` at once, then one per ``1 / rate`` seconds."""
    bucket = TokenBucket(rate=2.0, burst=2)
    assert [bucket.take(0.0) for _ in range(3)] == [True, True, False]
    assert bucket.retry_after(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5)
    assert not bucket.is_full(0.5)
    assert bucket.is_full(1.5)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"frames_per_second": 0},
        {"frames_per_second": -1.0},
        {"frames_per_second": float("inf")},
        {"bytes_per_second": True},
        {"frames_per_second": 10, "frame_burst": 0},
        {"bytes_per_second": 10, "byte_burst": 1.5},
    ],
    ids=["none", "zero", "negative", "inf", "bool", "burst0", "burst-float"],
)
def test_rate_limit_refuses_bad_settings(options: dict[str, Any]) -> None:
    """A limit that is missing, not positive and finite, or a burst that is not a
    positive int, is an InvalidOptionError naming the setting."""
    with pytest.raises(InvalidOptionError, match="rate_limit"):
        RateLimit(**options)


def test_the_option_takes_only_a_rate_limit() -> None:
    """``rate_limit=`` is None or a RateLimit."""
    with pytest.raises(InvalidOptionError, match="rate_limit"):
        WebSocketHandler(rate_limit=100)
    handler: WebSocketHandler[Any] = WebSocketHandler(
        rate_limit=RateLimit(frames_per_second=5)
    )
    assert handler.options.rate_limit == RateLimit(frames_per_second=5, frame_burst=5)


# -- the parser counts every frame -------------------------------------------------


class Sink:
    def on_message(self, message: str | bytes) -> None: ...
    def on_ping(self, data: bytes) -> None: ...
    def on_pong(self, data: bytes) -> None: ...
    def on_close(self, code: int, reason: str) -> None: ...
    def on_protocol_error(self, error: Exception) -> None: ...


def test_parser_counts_every_frame() -> None:
    """Pings, pongs, empty continuations and a frame split over reads all count,
    each once."""
    parser = FrameParser(Sink(), 1 << 20)
    frames = client_frame(OP_PING) + client_frame(OP_PONG)
    frames += client_frame(OP_TEXT, b"", fin=False)
    frames += client_frame(OP_CONTINUATION, b"", fin=False) * 5
    frames += client_frame(OP_CONTINUATION, b"end")
    parser.feed(frames)
    assert parser.frames == 9
    big = client_frame(OP_BINARY, b"x" * 1000)
    for n in range(0, len(big), 3):  # split everywhere, the masking key included
        parser.feed(big[n : n + 3])
    assert parser.frames == 10


# -- over real sockets ---------------------------------------------------------------


async def read_until_close(raw: Raw) -> tuple[int, int | None]:
    """Read server frames until its Close: (pongs seen, close code)."""
    pongs = 0
    async with asyncio.timeout(10):
        while True:
            _, opcode, payload = await raw.recv()
            if opcode == OP_PONG:
                pongs += 1
            elif opcode == OP_CLOSE:
                return pongs, parse_close(payload)[0]


async def test_a_ping_flood_is_closed_with_1008(serve: ServeFactory) -> None:
    """4 million answered pings were never limited: now the flood is closed with
    1008 (no ``rate_limited`` hook) and ``close`` sees it."""
    handler = Recorder(rate_limit=RateLimit(frames_per_second=100, frame_burst=200))
    served = await serve(handler)
    raw = await connect(served.port)
    await handler.next("open")
    raw.writer.write(client_frame(OP_PING) * 20_000)
    _, code = await read_until_close(raw)
    assert code == POLICY_VIOLATION
    assert (await handler.next("close")).args == (
        POLICY_VIOLATION,
        "rate limit exceeded",
    )
    await raw.close()


async def test_a_byte_flood_is_closed_with_1008(serve: ServeFactory) -> None:
    """The byte budget: a message larger than ``byte_burst`` closes with 1008."""
    handler = Recorder(rate_limit=RateLimit(bytes_per_second=1000, byte_burst=10_000))
    served = await serve(handler)
    raw = await connect(served.port)
    await raw.send(OP_BINARY, b"x" * 20_000)
    _, code = await read_until_close(raw)
    assert code == POLICY_VIOLATION
    await raw.close()


async def flood_continuations(raw: Raw, stop: asyncio.Event) -> None:
    """Empty continuation frames, as fast as the server takes them, until ``stop``."""
    await raw.send(OP_TEXT, b"", fin=False)
    burst = client_frame(OP_CONTINUATION, b"", fin=False) * 5000
    while not stop.is_set():
        raw.writer.write(burst)
        await raw.writer.drain()


async def test_a_continuation_flood_gets_the_hook_and_is_paused(
    serve: ServeFactory,
) -> None:
    """5 million empty continuations from one socket: the ``rate_limited`` hook
    runs once, and the socket stops being read while a bystander is still served."""
    handler = LimitedRecorder(
        rate_limit=RateLimit(frames_per_second=100, frame_burst=100)
    )
    served = await serve(handler)
    flooder = await connect(served.port)
    flooding_ws = (await handler.next("open")).ws
    stop = asyncio.Event()
    flood = asyncio.create_task(flood_continuations(flooder, stop))
    try:
        assert (await handler.next("rate_limited")).ws is flooding_ws
        connection = flooding_ws._conn
        assert isinstance(connection, Connection)
        assert not connection.transport.is_reading()
        bystander = await connect(served.port)
        bystanding_ws = (await handler.next("open")).ws
        for n in range(20):
            await bystander.send(OP_TEXT, f"hello {n}".encode())
            event = await handler.next("message")
            assert (event.ws, event.args) == (bystanding_ws, (f"hello {n}",))
        assert handler.events.empty()  # the hook ran once, for the flooder
        await bystander.close()
    finally:
        stop.set()
        flood.cancel()
        flooder.writer.transport.abort()  # megabytes wait in its buffer


async def test_reading_resumes_once_the_budget_is_back(serve: ServeFactory) -> None:
    """A client paused for going over its budget is read again once it is paid."""
    handler = LimitedRecorder(
        rate_limit=RateLimit(frames_per_second=1000, frame_burst=10)
    )
    served = await serve(handler)
    raw = await connect(served.port)
    await handler.next("open")
    raw.writer.write(client_frame(OP_PING) * 500)  # half a second of debt
    await handler.next("rate_limited")
    await raw.send(OP_TEXT, b"after the pause")
    assert (await handler.next("message")).args == ("after the pause",)
    await raw.close()


async def test_within_the_limit_nothing_happens(serve: ServeFactory) -> None:
    """A client within its budget is echoed as usual, and no hook runs."""

    class LimitedEcho(Echo):
        limited = 0

        def rate_limited(self, ws: ServerWebSocket[Any]) -> None:
            self.limited += 1

    handler = LimitedEcho(rate_limit=RateLimit(frames_per_second=10, frame_burst=50))
    served: Served = await serve(handler)
    raw = await connect(served.port)
    for n in range(40):
        await raw.send(OP_TEXT, str(n).encode())
        assert await raw.recv() == (True, OP_TEXT, str(n).encode())
    assert handler.limited == 0
    await raw.close()


async def test_without_a_limit_the_parser_is_fed_directly(
    serve: ServeFactory,
) -> None:
    """Off (the default), nothing stands between a read and the parser: no cost."""
    handler = Recorder()
    served = await serve(handler)
    raw = await connect(served.port)
    connection = (await handler.next("open")).ws._conn
    assert isinstance(connection, Connection)
    assert type(connection.parser) is FrameParser
    await raw.close()


# -- the limiter and the inbox pause reading apart -----------------------------------


class HeldRecorder(LimitedRecorder):
    """Its async ``message`` hook waits on ``gate``: the inbox fills meanwhile."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()  # the hook ran: the read before it is parsed

    async def message(  # type: ignore[override]
        self, ws: ServerWebSocket[Any], message: str | bytes
    ) -> None:
        self.entered.set()
        await self.gate.wait()
        self.events.put_nowait(Event("message", ws, (message,)))


class StoppedClock:
    """The limiter's clock, moved by the test only (the budget never refills alone)."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


async def test_a_drained_inbox_does_not_lift_the_rate_pause(
    serve: ServeFactory,
) -> None:
    """Once the held hook is released and the inbox drains, frames past the budget
    are still not read: only the paid debt resumes reading."""
    handler = HeldRecorder(rate_limit=RateLimit(frames_per_second=1, frame_burst=1))
    served = await serve(handler)
    raw = await connect(served.port)
    connection = (await handler.next("open")).ws._conn
    assert isinstance(connection, Connection)
    clock = StoppedClock()
    connection.parser._clock = clock  # type: ignore[union-attr]
    raw.writer.write(client_frame(OP_TEXT, b"x") * 200)
    await handler.entered.wait()  # after the flood's read, which paused reading
    raw.writer.write(client_frame(OP_TEXT, b"late") * 100)
    handler.gate.set()
    async with asyncio.timeout(10):  # every message read before the pause
        while (await handler.events.get()).hook != "rate_limited":
            pass
    assert not connection.transport.is_reading()
    clock.now += 1000  # the debt is paid: the limiter's next tick reads on
    assert (await handler.next("message")).args == ("x",)
    await raw.close()


async def test_the_rate_limit_does_not_resume_a_full_inbox(
    serve: ServeFactory,
) -> None:
    """Reading paused by the inbox and by the rate limit resumes only when both
    have let go, in either order."""
    handler = Recorder(rate_limit=RateLimit(frames_per_second=1))
    served = await serve(handler)
    raw = await connect(served.port)
    connection = (await handler.next("open")).ws._conn
    assert isinstance(connection, Connection)
    transport = connection.transport
    for first, second in [(INBOX, RATE), (RATE, INBOX)]:
        connection.pause_reading(first)
        connection.pause_reading(second)
        connection.resume_reading(first)
        assert not transport.is_reading()
        connection.resume_reading(second)
        assert transport.is_reading()
    await raw.close()


async def test_one_read_holds_little_more_than_the_burst(serve: ServeFactory) -> None:
    """10,000 pings in one write get a handful of pongs before the 1008, not one
    per ping of the first read: a limited socket's reads hold about its budget."""
    handler = Recorder(rate_limit=RateLimit(frames_per_second=5, frame_burst=5))
    served = await serve(handler)
    raw = await connect(served.port)
    await handler.next("open")
    raw.writer.write(client_frame(OP_PING) * 10_000)
    pongs, code = await read_until_close(raw)
    assert code == POLICY_VIOLATION
    assert pongs <= 5 + 3
    await raw.close()


@pytest.mark.parametrize(
    ("bytes_left", "frames_left", "needed", "size"),
    [
        (math.inf, 5, 0, 44),  # 5 frames of 6 bytes, and a header
        (math.inf, 5, 1000, 1044),  # and the rest of the frame being read
        (100, 5, 1000, 100),  # the byte budget is smaller
        (math.inf, -3, 0, READ_FLOOR),  # in debt, or a stale mark: the floor
        (math.inf, math.inf, 0, 256 * 1024),  # no frame limit: the whole buffer
    ],
    ids=["frames", "partial-frame", "bytes", "floor", "full"],
)
def test_a_limited_read_is_sized_to_the_budget(
    bytes_left: float, frames_left: float, needed: int, size: int
) -> None:
    """The next read holds what the budget has left, at least READ_FLOOR bytes."""
    assert read_size(bytes_left, frames_left, needed, 256 * 1024) == size
