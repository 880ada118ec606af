"""Shutdown's edges: a handshake answered during it, a socket still closing when
it starts, and a broker whose ``subscription`` raises."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiohttp import web

from aiohttp_upgrade import Broker, Server
from aiohttp_upgrade._broker import BrokerHost

from .conftest import Recorder, ServeFactory, upgrade_with_data
from .wire import OP_CLOSE, connect, handshake, parse_close

TIMEOUT = 10


async def test_a_handshake_answered_during_shutdown_opens_no_socket(
    serve: ServeFactory,
) -> None:
    """A fetch that upgrades, then awaits while the server shuts down, gets its 101
    followed by a 1001 Close; no socket opens, so none outlives the shutdown."""
    reached, release = asyncio.Event(), asyncio.Event()

    async def fetch(request: web.Request, server: Server[Any]) -> None:
        assert server.upgrade(request, data=None)
        reached.set()
        await release.wait()

    handler = Recorder()
    served = await serve(handler, fetch)
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    client = asyncio.create_task(handshake(reader, writer, "/ws"))
    async with asyncio.timeout(TIMEOUT):
        await reached.wait()
        await served.server.shutdown()
        release.set()
        response = await client
        assert response.status == 101
        frame = await reader.readexactly(4)
        assert frame[0] & 0x0F == OP_CLOSE
        assert parse_close(frame[2:])[0] == 1001
        assert await reader.read() == b""
    writer.close()
    await writer.wait_closed()
    assert handler.sockets == []
    assert served.server.pending_websockets == 0


async def test_shutdown_ends_a_socket_still_closing(serve: ServeFactory) -> None:
    """A socket closed on our side whose client never sends its FIN is aborted by
    shutdown, not left open with its close timer after the app is gone."""
    handler = Recorder(close_timeout=600.0)  # only the shutdown can end it
    served = await serve(handler)
    raw = await connect(served.port)
    ws = (await handler.next("open")).ws
    ws.close(4000, "bye")
    async with asyncio.timeout(TIMEOUT):
        _, opcode, payload = await raw.recv()
        assert (opcode, parse_close(payload)[0]) == (OP_CLOSE, 4000)
        assert (await handler.next("close")).args == (4000, "bye")
        await served.server.shutdown()
        # The half-closed connection is gone: EOF (or a reset) reaches the client.
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            while True:
                await raw.recv()
    await raw.close()


class FailingBroker(Broker):
    """A broker whose ``subscription`` raises for one topic."""

    async def start(self, host: BrokerHost) -> None:
        pass

    async def close(self) -> None:
        pass

    def subscription(self, topic: str, new_count: int, old_count: int) -> None:
        if topic == "a":
            raise RuntimeError("broker down")

    def publish(self, topic: str, opcode: int, payload: bytes, compress: bool) -> None:
        pass

    async def cluster_count(self, topic: str) -> int:
        return 0


async def test_a_failing_broker_subscription_stops_no_close(
    aiohttp_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A broker's ``subscription`` raising is logged; sockets still leave every
    topic, and shutdown closes each of them."""

    class Subscriber(Recorder):
        def open(self, ws: Any) -> None:
            ws.subscribe("a")
            ws.subscribe("b")
            super().open(ws)

    handler = Subscriber()
    server: Server[Any] = Server(handler, broker=FailingBroker())
    app = web.Application()
    server.setup(app)
    app.router.add_get("/ws", server.handler(upgrade_with_data()))
    http = await aiohttp_server(app)
    clients = [await connect(http.port) for _ in range(2)]
    async with asyncio.timeout(TIMEOUT):
        for _ in clients:
            await handler.next("open")
        with caplog.at_level(logging.ERROR):
            await server.shutdown()
        closes = [await handler.next("close") for _ in clients]
    assert [event.args[0] for event in closes] == [1001, 1001]
    assert server.pending_websockets == 0
    assert server.local_counts() == {}
    assert any("broker subscription" in r.getMessage() for r in caplog.records)
    for client in clients:
        await client.close()
