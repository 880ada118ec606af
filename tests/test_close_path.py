"""The close path is total: every socket that opened gets exactly one ``close`` hook
call, and ``close()`` never raises, whatever the transport raises while closing.

The first tests cause the fault for real: a client that sends something and closes
its socket at once is gone by the time the server answers, so on loopback the
server's Close frame draws a reset and the half-close that follows
(``transport.write_eof()``) fails with ENOTCONN. The last ones use a fault no real
socket produces on demand (a transport method raising OSError), set on the real
transport of a real connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from aiohttp_upgrade import ReadyState, Server, ServerWebSocket, WebSocketHandler

from .conftest import Served, ServeFactory
from .wire import OP_CLOSE, OP_TEXT, client_frame, close_payload, connect

SOCKETS = 20
"""How many clients each real-socket test runs: the issue's 20 opens, 0 closes."""


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
        follow then show which were not)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await self.all_closed.wait()

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


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """What reached the event loop's exception handler during the test."""
    errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: errors.append(context))
    yield errors
    loop.set_exception_handler(previous)


# -- real sockets: the peer is gone when the server closes ------------------------


async def test_unmasked_frame_then_close_gives_every_socket_its_close_hook(
    serve: ServeFactory, loop_errors: list[dict[str, Any]]
) -> None:
    """A protocol error from a client that already left runs close once per opened socket (1002)."""
    handler = Counting()
    served = await serve(handler)
    await send_and_vanish(served, client_frame(OP_TEXT, b"hi", mask=False))
    await handler.wait_closed()
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
) -> None:
    """ws.close() in a hook after the client vanished raises nothing and close runs once per socket."""
    handler = handler_class()
    served = await serve(handler)
    await send_and_vanish(served, client_frame(OP_TEXT, b"hi"))
    await handler.wait_closed()
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
    with caplog.at_level(logging.ERROR, logger="aiohttp_upgrade"):
        await send_and_vanish(served, client_frame(OP_TEXT, b"hi"))
        await handler.wait_closed()
    assert handler.close_counts() == [1] * SOCKETS
    assert len(handler.errors) == SOCKETS
    assert all(isinstance(exc, Boom) for exc in handler.errors)
    assert loop_errors == []


# -- faults set on a real transport ----------------------------------------------


@dataclass
class Conn:
    """The ``data`` of a socket: its transport, so a test can make it fail."""

    transport: asyncio.Transport
    raw: Any = None


def with_transport(request: web.Request, server: Server[Any]) -> web.StreamResponse:
    transport = request.transport
    assert transport is not None
    assert server.upgrade(request, data=Conn(transport))
    return web.Response()  # not reached: the upgrade answered


def fail_with(name: str) -> Callable[..., None]:
    def failing(*args: Any) -> None:
        raise OSError(errno.ENOTCONN, f"{name} failed")

    return failing


async def opened(handler: Counting, served: Served) -> ServerWebSocket[Any]:
    """Connect one raw client; return its server socket."""
    raw = await connect(served.port)
    async with asyncio.timeout(10):
        await handler.any_open.wait()
    ws = handler.opened[-1]
    ws.data.raw = raw  # keep the client alive until the test ends
    return ws


@pytest.mark.parametrize(
    "failing",
    [("write_eof",), ("write",), ("close", "can_write_eof"), ("write_eof", "abort")],
    ids=["write_eof", "write", "close", "write_eof-then-abort"],
)
async def test_close_survives_a_raising_transport(
    serve: ServeFactory, loop_errors: list[dict[str, Any]], failing: tuple[str, ...]
) -> None:
    """With write_eof, write, close or abort raising OSError (set on the real transport: no socket fails on demand), ws.close() returns and close runs once."""
    handler = Counting(expected=1)
    served = await serve(handler, with_transport)
    ws = await opened(handler, served)
    transport = ws.data.transport
    for name in failing:
        setattr(transport, name, fail_with(name))
    if "can_write_eof" in failing:  # close() is what a TLS transport gets
        setattr(transport, "can_write_eof", lambda: False)  # noqa: B010
    ws.close(4000, "bye")
    await handler.wait_closed()
    assert list(handler.closes.values()) == [[4000]]
    assert ws.ready_state is ReadyState.CLOSED
    assert loop_errors == []
    for name in failing:
        vars(transport).pop(name)
    transport.abort()
    await ws.data.raw.close()


async def test_terminate_survives_a_raising_abort(
    serve: ServeFactory, loop_errors: list[dict[str, Any]]
) -> None:
    """With abort raising OSError (set on the real transport), terminate() returns and close sees 1006 once."""
    handler = Counting(expected=1)
    served = await serve(handler, with_transport)
    ws = await opened(handler, served)
    transport = ws.data.transport
    setattr(transport, "abort", fail_with("abort"))  # noqa: B010
    ws.terminate()
    await handler.wait_closed()
    assert list(handler.closes.values()) == [[1006]]
    assert loop_errors == []
    vars(transport).pop("abort", None)
    transport.abort()
    await ws.data.raw.close()


async def test_answering_a_client_close_survives_a_raising_close(
    serve: ServeFactory, loop_errors: list[dict[str, Any]]
) -> None:
    """With transport.close raising OSError (set on the real transport), a client's Close still runs close once with its code."""
    handler = Counting(expected=1)
    served = await serve(handler, with_transport)
    ws = await opened(handler, served)
    transport = ws.data.transport
    setattr(transport, "close", fail_with("close"))  # noqa: B010
    await ws.data.raw.send(OP_CLOSE, close_payload(4001))
    await handler.wait_closed()
    assert list(handler.closes.values()) == [[4001]]
    assert loop_errors == []
    vars(transport).pop("close", None)
    transport.abort()
    await ws.data.raw.close()
