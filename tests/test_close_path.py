"""The close path is total: every socket that opened gets exactly one ``close`` hook
call, and ``close()`` never raises, whatever the transport raises while closing.

The first tests cause the fault for real: a client that sends something and closes
its socket at once is gone by the time the server answers, so on loopback the
server's Close frame draws a reset and the half-close that follows
(``transport.write_eof()``) fails with ENOTCONN (on asyncio's loop; uvloop's
transport may not fail there, and then the tests check only that every socket
that opened got one close). The last ones use a fault no real socket produces on
demand (a transport method raising OSError), injected by a wrapper put between
a real connection and its real transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import Awaitable
from typing import Any, cast

import pytest

from aiohttp_upgrade import ReadyState, ServerWebSocket, WebSocketHandler
from aiohttp_upgrade._connection import Connection

from .conftest import Served, ServeFactory
from .wire import OP_CLOSE, OP_TEXT, Raw, client_frame, close_payload, connect

SOCKETS = 20
"""How many clients each real-socket test runs: the issue's 20 opens, 0 closes."""

LATE_YIELDS = 10
"""Loop iterations a test lets pass after the last expected close hook call."""


class Boom(Exception):
    """What a failing hook raises."""


class Counting(WebSocketHandler[Any]):
    """Counts opens and close hook calls, per socket; ``all_closed`` is set once
    ``expected`` sockets got their close hook."""

    def __init__(self, expected: int = SOCKETS, **options: Any) -> None:
        super().__init__(**options)
        self.expected = expected
        self.opened: list[ServerWebSocket[Any]] = []
        self.closes: dict[int, list[int]] = {}
        self.errors: list[BaseException] = []
        self.all_closed = asyncio.Event()
        self.any_open = asyncio.Event()

    def open(self, ws: ServerWebSocket[Any]) -> None:
        self.opened.append(ws)
        self.any_open.set()

    # Typed as the base class's hooks, so that subclasses may make them async.

    def close(
        self, ws: ServerWebSocket[Any], code: int, reason: str
    ) -> Awaitable[None] | None:
        self.closes.setdefault(id(ws), []).append(code)
        if len(self.closes) >= self.expected:
            self.all_closed.set()
        return None

    def error(
        self, ws: ServerWebSocket[Any], exc: BaseException
    ) -> Awaitable[None] | None:
        self.errors.append(exc)
        return None

    async def wait_closed(self) -> None:
        """Wait until ``expected`` sockets were closed, or 10 s (the asserts that
        follow then show which were not), then let the loop run a few callbacks
        more, so that a late second close call would be counted too."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await self.all_closed.wait()
        for _ in range(LATE_YIELDS):
            await asyncio.sleep(0)  # a yield to the loop, not a wait for an event

    def close_counts(self) -> list[int]:
        return [len(self.closes.get(id(ws), [])) for ws in self.opened]


class ClosesOnMessage(Counting):
    """Calls ``ws.close(4000)`` from a plain message hook and records what it raised."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.raised: list[BaseException] = []

    def message(
        self, ws: ServerWebSocket[Any], message: str | bytes
    ) -> Awaitable[None] | None:
        try:
            ws.close(4000, "bye")
        except Exception as exc:
            self.raised.append(exc)
        return None


class AsyncClosesOnMessage(ClosesOnMessage):
    """The same from an async message hook."""

    async def message(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
        ClosesOnMessage.message(self, ws, message)


class FailsOnMessage(Counting):
    """A plain message hook that raises."""

    def message(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
        raise Boom("message failed")


class AsyncFailsOnMessage(Counting):
    """An async message hook that raises."""

    async def message(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
        raise Boom("message failed")


class AsyncErrorHook(FailsOnMessage):
    """A failing plain message hook with async error and close hooks (queued)."""

    async def error(self, ws: ServerWebSocket[Any], exc: BaseException) -> None:
        await asyncio.sleep(0)
        Counting.error(self, ws, exc)

    async def close(self, ws: ServerWebSocket[Any], code: int, reason: str) -> None:
        await asyncio.sleep(0)
        Counting.close(self, ws, code, reason)


async def send_and_vanish(served: Served, frame: bytes, count: int = SOCKETS) -> None:
    """Open ``count`` clients; each writes ``frame`` and closes its socket at once."""
    for _ in range(count):
        raw = await connect(served.port)
        raw.writer.write(frame)
        await raw.close()


def assert_half_close_failed(caplog: pytest.LogCaptureFixture) -> None:
    """On asyncio's loop, at least one socket's half-close failed (the client's
    reset came first) and was aborted: the fault path these tests are about ran.
    uvloop's transport may not fail there: nothing to check then."""
    if type(asyncio.get_running_loop()).__module__.startswith("uvloop"):
        return
    assert any(
        record.levelno == logging.DEBUG
        and " ending " in record.getMessage()
        and record.getMessage().endswith("; aborting it")
        for record in caplog.records
    ), [record.getMessage() for record in caplog.records]


# -- real sockets: the peer is gone when the server closes ------------------------


async def test_unmasked_frame_then_close_gives_every_socket_its_close_hook(
    serve: ServeFactory,
    loop_errors: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A protocol error from a client that already left runs close once per opened socket (1002)."""
    handler = Counting()
    served = await serve(handler)
    with caplog.at_level(logging.DEBUG, logger="aiohttp_upgrade"):
        await send_and_vanish(served, client_frame(OP_TEXT, b"hi", mask=False))
        await handler.wait_closed()
    assert_half_close_failed(caplog)
    assert handler.close_counts() == [1] * SOCKETS
    assert len(handler.closes) == SOCKETS
    assert {codes[0] for codes in handler.closes.values()} == {1002}
    assert loop_errors == []


@pytest.mark.parametrize(
    "handler_class", [ClosesOnMessage, AsyncClosesOnMessage], ids=["sync", "async"]
)
async def test_close_from_a_hook_after_the_peer_left_does_not_raise(
    serve: ServeFactory,
    loop_errors: list[dict[str, Any]],
    handler_class: type[ClosesOnMessage],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """ws.close() in a hook after the client vanished raises nothing and close runs once per socket."""
    handler = handler_class()
    served = await serve(handler)
    with caplog.at_level(logging.DEBUG, logger="aiohttp_upgrade"):
        await send_and_vanish(served, client_frame(OP_TEXT, b"hi"))
        await handler.wait_closed()
    assert_half_close_failed(caplog)
    assert handler.raised == []
    assert handler.close_counts() == [1] * SOCKETS
    assert loop_errors == []


@pytest.mark.parametrize(
    "handler_class",
    [FailsOnMessage, AsyncFailsOnMessage, AsyncErrorHook],
    ids=["sync", "async", "async-error-and-close-hooks"],
)
async def test_hook_failure_after_the_peer_left_runs_error_and_close(
    serve: ServeFactory,
    loop_errors: list[dict[str, Any]],
    handler_class: type[Counting],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A hook that raises after the client vanished still gets error, then close, once per socket."""
    handler = handler_class()
    served = await serve(handler)
    with caplog.at_level(logging.DEBUG, logger="aiohttp_upgrade"):
        await send_and_vanish(served, client_frame(OP_TEXT, b"hi"))
        await handler.wait_closed()
    assert_half_close_failed(caplog)
    assert handler.close_counts() == [1] * SOCKETS
    assert len(handler.errors) == SOCKETS
    assert all(isinstance(exc, Boom) for exc in handler.errors)
    assert loop_errors == []


# -- faults injected through a wrapper transport -----------------------------------


class FaultyTransport:
    """Delegates to a real transport, but the methods named in ``failing`` (of
    ``write``, ``write_eof``, ``close``, ``abort``) raise OSError(ENOTCONN) instead;
    ``half_close`` is what ``can_write_eof`` answers (None: the real answer).

    A wrapper, not methods set on the transport: uvloop's transports do not let
    anyone set their attributes. ``raised`` lists the faults that happened;
    ``faulted`` is set by the first.
    """

    def __init__(
        self,
        transport: asyncio.Transport,
        failing: tuple[str, ...],
        half_close: bool | None = None,
    ) -> None:
        self.transport = transport
        self.failing = set(failing)
        self.half_close = half_close
        self.raised: list[str] = []
        self.faulted = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)

    def _fault(self, name: str) -> None:
        if name in self.failing:
            self.raised.append(name)
            self.faulted.set()
            raise OSError(errno.ENOTCONN, f"{name} failed")

    def write(self, data: bytes) -> None:
        self._fault("write")
        self.transport.write(data)

    def write_eof(self) -> None:
        self._fault("write_eof")
        self.transport.write_eof()

    def close(self) -> None:
        self._fault("close")
        self.transport.close()

    def abort(self) -> None:
        self._fault("abort")
        self.transport.abort()

    def can_write_eof(self) -> bool:
        if self.half_close is None:
            return self.transport.can_write_eof()
        return self.half_close

    async def wait_faulted(self) -> None:
        async with asyncio.timeout(10):
            await self.faulted.wait()

    def heal(self) -> None:
        """Stop failing and abort the real transport (the test's cleanup)."""
        self.failing.clear()
        self.transport.abort()


def inject(
    ws: ServerWebSocket[Any], failing: tuple[str, ...], half_close: bool | None = None
) -> FaultyTransport:
    """Put a :class:`FaultyTransport` between ``ws``'s connection (and its outbox)
    and the connection's real transport; return it."""
    connection = cast(Connection, ws._conn)
    faulty = FaultyTransport(connection.transport, failing, half_close)
    connection.use_transport(cast(asyncio.Transport, faulty))
    return faulty


async def opened(handler: Counting, served: Served) -> tuple[ServerWebSocket[Any], Raw]:
    """Connect one raw client; return its server socket and the client."""
    raw = await connect(served.port)
    async with asyncio.timeout(10):
        await handler.any_open.wait()
    return handler.opened[-1], raw


@pytest.mark.parametrize(
    ("failing", "half_close"),
    [
        (("write_eof",), None),
        (("write",), None),
        (("close",), False),
        (("write_eof", "abort"), None),
    ],
    ids=["write_eof", "write", "close", "write_eof-then-abort"],
)
async def test_close_survives_a_raising_transport(
    serve: ServeFactory,
    loop_errors: list[dict[str, Any]],
    failing: tuple[str, ...],
    half_close: bool | None,
) -> None:
    """With write_eof, write, close or abort raising OSError (through a wrapper transport: no socket fails on demand), ws.close() returns and close runs once."""
    handler = Counting(expected=1)
    served = await serve(handler)
    ws, raw = await opened(handler, served)
    faulty = inject(ws, failing, half_close)
    ws.close(4000, "bye")
    if "close" in failing:  # as over TLS: TCP is closed once the client answers
        await raw.send(OP_CLOSE, close_payload(4000))
    await faulty.wait_faulted()
    await handler.wait_closed()
    assert faulty.raised == list(failing)
    assert list(handler.closes.values()) == [[4000]]
    # CLOSING while the connection is still there (an abort that failed).
    assert ws.ready_state is not ReadyState.OPEN
    assert loop_errors == []
    faulty.heal()
    await raw.close()


async def test_terminate_survives_a_raising_abort(
    serve: ServeFactory, loop_errors: list[dict[str, Any]]
) -> None:
    """With abort raising OSError (through a wrapper transport), terminate() returns and close sees 1006 once."""
    handler = Counting(expected=1)
    served = await serve(handler)
    ws, raw = await opened(handler, served)
    faulty = inject(ws, ("abort",))
    ws.terminate()
    await handler.wait_closed()
    assert faulty.raised == ["abort"]
    assert list(handler.closes.values()) == [[1006]]
    assert loop_errors == []
    faulty.heal()
    await raw.close()


async def test_answering_a_client_close_survives_a_raising_close(
    serve: ServeFactory, loop_errors: list[dict[str, Any]]
) -> None:
    """With transport.close raising OSError (through a wrapper transport), a client's Close still runs close once with its code."""
    handler = Counting(expected=1)
    served = await serve(handler)
    ws, raw = await opened(handler, served)
    faulty = inject(ws, ("close",))
    await raw.send(OP_CLOSE, close_payload(4001))
    await faulty.wait_faulted()
    await handler.wait_closed()
    assert faulty.raised == ["close"]
    assert list(handler.closes.values()) == [[4001]]
    assert loop_errors == []
    faulty.heal()
    await raw.close()
