"""The ``subscription`` hook runs through the socket's dispatcher like every other hook:
in order with that socket's other hooks, awaited by shutdown, cancellation handled."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from aiohttp_upgrade import Server, ServerWebSocket, WebSocketHandler

from .conftest import ConnectWs, Served, ServeFactory, upgrade_with_data

TIMEOUT = 10
INTERNAL_ERROR = 1011


class LeavesSlowly(WebSocketHandler[Any]):
    """Subscribes on open; its async subscription hook, when the socket leaves its
    topic, waits for ``release`` before it records that it finished."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []
        self.subscribed = asyncio.Event()
        self.leaving = asyncio.Event()
        self.release = asyncio.Event()

    def open(self, ws: ServerWebSocket[Any]) -> None:
        ws.subscribe("room")

    async def subscription(
        self, ws: ServerWebSocket[Any], topic: str, new: int, old: int
    ) -> None:
        if new > old:
            self.subscribed.set()
            return
        self.leaving.set()
        await self.release.wait()
        self.events.append("subscription finished")

    def close(self, ws: ServerWebSocket[Any], code: int, reason: str) -> None:
        self.events.append("close")


StartRunner = Callable[[LeavesSlowly], Awaitable[tuple[web.AppRunner, str]]]


@pytest.fixture
async def runner() -> AsyncIterator[StartRunner]:
    """Serve a handler through web.AppRunner; an on_shutdown callback added after
    ``server.setup`` records when the server's own shutdown has returned."""
    runners: list[web.AppRunner] = []

    async def start(handler: LeavesSlowly) -> tuple[web.AppRunner, str]:
        server: Server[Any] = Server(handler)
        app = web.Application()
        server.setup(app)

        async def after_server_shutdown(app: web.Application) -> None:
            handler.events.append("server shutdown returned")

        app.on_shutdown.append(after_server_shutdown)
        app.router.add_get("/ws", server.handler(upgrade_with_data()))
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner, f"ws://127.0.0.1:{runner.addresses[0][1]}/ws"

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_shutdown_awaits_an_async_subscription_hook(
    runner: StartRunner,
    connect_ws: ConnectWs,
) -> None:
    """App shutdown waits for an async subscription hook run as a socket leaves its
    topics, as it waits for close hooks."""
    handler = LeavesSlowly()
    app_runner, url = await runner(handler)
    await connect_ws(url)
    await asyncio.wait_for(handler.subscribed.wait(), TIMEOUT)
    cleanup = asyncio.create_task(app_runner.cleanup())
    await asyncio.wait_for(handler.leaving.wait(), TIMEOUT)
    handler.release.set()
    await asyncio.wait_for(cleanup, TIMEOUT)
    assert handler.events == [
        "subscription finished",
        "close",
        "server shutdown returned",
    ]


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_subscription_hook_waits_for_the_running_message_hook(
    serve: ServeFactory, connect_ws: ConnectWs, is_async: bool
) -> None:
    """A subscription made by an async message hook is reported after that hook
    returned, not while it awaits: one hook of a socket at a time."""
    order: list[str] = []
    go = asyncio.Event()
    done = asyncio.Event()

    class Subscriber(WebSocketHandler[Any]):
        async def message(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
            ws.subscribe("room")
            ws.send("subscribed")
            await go.wait()
            order.append("message finished")

    def record(topic: str, new: int, old: int) -> None:
        order.append(f"subscription {topic} {new} {old}")
        done.set()

    class SyncHook(Subscriber):
        def subscription(
            self, ws: ServerWebSocket[Any], topic: str, new: int, old: int
        ) -> None:
            record(topic, new, old)

    class AsyncHook(Subscriber):
        async def subscription(
            self, ws: ServerWebSocket[Any], topic: str, new: int, old: int
        ) -> None:
            record(topic, new, old)

    served = await serve(AsyncHook() if is_async else SyncHook())
    client = await connect_ws(served.url)
    await client.send_str("subscribe")
    assert await client.receive_str(timeout=TIMEOUT) == "subscribed"
    go.set()
    await asyncio.wait_for(done.wait(), TIMEOUT)
    assert order == ["message finished", "subscription room 1 0"]


async def test_subscription_hook_raising_cancelled_error_closes_1011(
    serve: ServeFactory, connect_ws: ConnectWs, caplog: pytest.LogCaptureFixture
) -> None:
    """An async subscription hook raising CancelledError of its own (nobody cancelled
    it) is a hook failure like any other: logged once, ``error`` called, 1011."""
    errors: list[BaseException] = []

    class Cancels(WebSocketHandler[Any]):
        def open(self, ws: ServerWebSocket[Any]) -> None:
            ws.subscribe("room")

        async def subscription(
            self, ws: ServerWebSocket[Any], topic: str, new: int, old: int
        ) -> None:
            if new > old:
                raise asyncio.CancelledError

        def error(self, ws: ServerWebSocket[Any], exc: BaseException) -> None:
            errors.append(exc)

    served: Served = await serve(Cancels())
    client = await connect_ws(served.url)
    msg = await client.receive(timeout=TIMEOUT)
    assert msg.data == INTERNAL_ERROR
    assert [type(exc) for exc in errors] == [asyncio.CancelledError]
    records = [
        r
        for r in caplog.records
        if r.name == "aiohttp_upgrade" and r.levelno >= logging.ERROR
    ]
    assert len(records) == 1
    assert records[0].exc_info is not None


async def test_cancelled_subscription_hook_still_gets_close(
    serve: ServeFactory, connect_ws: ConnectWs
) -> None:
    """Cancelling the task running an async subscription hook (as the loop does when
    it stops) aborts that socket and its close hook still runs, once."""
    running = asyncio.Event()
    closed: list[int] = []
    hook_task: list[asyncio.Task[Any]] = []

    class Blocks(WebSocketHandler[Any]):
        def open(self, ws: ServerWebSocket[Any]) -> None:
            ws.subscribe("room")

        async def subscription(
            self, ws: ServerWebSocket[Any], topic: str, new: int, old: int
        ) -> None:
            if new > old:
                task = asyncio.current_task()
                assert task is not None
                hook_task.append(task)
                running.set()
                await asyncio.Event().wait()

        def close(self, ws: ServerWebSocket[Any], code: int, reason: str) -> None:
            closed.append(code)

    served = await serve(Blocks())
    client = await connect_ws(served.url)
    await asyncio.wait_for(running.wait(), TIMEOUT)
    hook_task[0].cancel()
    msg = await client.receive(timeout=TIMEOUT)
    assert msg.type.name in ("CLOSE", "CLOSED", "CLOSING")
    assert closed == [1006]


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_subscription_hook_raising_as_the_socket_closes(
    serve: ServeFactory, connect_ws: ConnectWs, is_async: bool
) -> None:
    """A subscription hook raising for a topic its closing socket leaves is a hook
    failure like any other: logged, ``error`` gets it, then ``close`` runs once."""
    events: list[str] = []
    closed = asyncio.Event()

    class RaisesOnLeave(WebSocketHandler[Any]):
        def open(self, ws: ServerWebSocket[Any]) -> None:
            ws.subscribe("room")

        def leave(self, new: int, old: int) -> None:
            if new < old:
                events.append("subscription")
                raise RuntimeError("boom")

        def error(self, ws: ServerWebSocket[Any], exc: BaseException) -> None:
            events.append(f"error {exc}")

        def close(self, ws: ServerWebSocket[Any], code: int, reason: str) -> None:
            events.append(f"close {code}")
            closed.set()

    class Sync(RaisesOnLeave):
        def subscription(
            self, ws: ServerWebSocket[Any], topic: str, new: int, old: int
        ) -> None:
            self.leave(new, old)

    class Async(RaisesOnLeave):
        async def subscription(
            self, ws: ServerWebSocket[Any], topic: str, new: int, old: int
        ) -> None:
            self.leave(new, old)

    served = await serve(Async() if is_async else Sync())
    client = await connect_ws(served.url)
    await client.close()
    await asyncio.wait_for(closed.wait(), TIMEOUT)
    assert events == ["subscription", "error boom", "close 1000"]
