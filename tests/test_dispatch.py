"""No task per socket: plain hooks run inside ``data_received``, async hooks get a
task only while they have work, against a real server and real clients."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from aiohttp_upgrade import ServerWebSocket, WebSocketHandler
from aiohttp_upgrade._connection import Connection

from .conftest import ConnectRaw, ServeFactory
from .wire import OP_TEXT

SOCKETS = 10


class TaskProbe(WebSocketHandler[Any]):
    """Echoes each message with the name of the task it ran in ("none" outside one)."""

    def message(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
        task = asyncio.current_task()
        ws.send("none" if task is None else "task")


class AsyncTaskProbe(TaskProbe):
    async def message(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:  # type: ignore[override]
        await asyncio.sleep(0)
        super().message(ws, message)


async def test_plain_hooks_run_without_a_task(
    serve: ServeFactory, connect_raw: ConnectRaw
) -> None:
    """A plain message hook is called from data_received: no task is running."""
    served = await serve(TaskProbe())
    raw = await connect_raw(served.port)
    await raw.send(OP_TEXT, b"where am I")
    assert (await raw.recv())[2] == b"none"


async def test_async_hooks_get_a_task_only_while_they_have_work(
    serve: ServeFactory, connect_raw: ConnectRaw
) -> None:
    """Async hooks run in a task, which is gone once the socket's queue is empty:
    idle sockets hold no task."""
    served = await serve(AsyncTaskProbe())
    clients = [await connect_raw(served.port) for _ in range(SOCKETS)]
    for raw in clients:
        await raw.send(OP_TEXT, b"work")
    for raw in clients:
        assert (await raw.recv())[2] == b"task"
    # The echo left inside the hook's last step; by the time it was read here,
    # that step (and so the task) had ended.
    assert served.server.pending_websockets == SOCKETS
    lifecycle = served.server._lifecycle
    assert lifecycle.tasks == set()
    assert all(not cast(Connection, port).dispatcher.busy for port in lifecycle.open)
