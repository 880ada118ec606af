"""A connection flood: 5,000 WebSockets opened at once and held, all of them served.

The clients are plain non-blocking sockets driven by the test's event loop (no
client library per connection), so the test measures the server, not the clients.
Both ends live in this process: 10,000 file descriptors, so the test raises its
soft RLIMIT_NOFILE and skips when the hard limit does not allow it.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import time
from collections.abc import Iterator

import pytest

from aiohttp_upgrade import ServerWebSocket, WebSocketHandler

from .conftest import Served, ServeFactory
from .wire import OP_TEXT, client_frame, random_key, request_bytes

CONNECTIONS = 5_000
TOPIC = "flood"
CONNECT_CONCURRENCY = 100
"""Handshakes in flight at once: the listen backlog is 128."""
FDS_NEEDED = 2 * CONNECTIONS + 500
"""Both ends of every connection, plus what pytest and the loop hold."""
HELLO = b"\x81\x05hello"
"""The published frame every client must receive."""


class Flood(WebSocketHandler[None]):
    """Subscribes every socket to TOPIC; counts opens and closes."""

    def __init__(self, expected: int) -> None:
        super().__init__()
        self.expected = expected
        self.opened = 0
        self.closed = 0
        self.all_open = asyncio.Event()
        self.all_closed = asyncio.Event()

    def open(self, ws: ServerWebSocket[None]) -> None:
        ws.subscribe(TOPIC)
        self.opened += 1
        if self.opened == self.expected:
            self.all_open.set()

    def message(self, ws: ServerWebSocket[None], message: str | bytes) -> None:
        ws.send(message)

    def close(self, ws: ServerWebSocket[None], code: int, reason: str) -> None:
        self.closed += 1
        if self.closed == self.expected:
            self.all_closed.set()


@pytest.fixture
def many_files() -> Iterator[None]:
    """Raise the soft file-descriptor limit for the test; restore it afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < FDS_NEEDED:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {FDS_NEEDED}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, FDS_NEEDED), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class Client:
    """One raw WebSocket client connection on a non-blocking socket."""

    __slots__ = ("buffer", "sock")

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setblocking(False)
        self.buffer = b""

    async def read_until(self, loop: asyncio.AbstractEventLoop, n: int) -> None:
        while len(self.buffer) < n:
            data = await loop.sock_recv(self.sock, 65536)
            assert data, "server closed the connection"
            self.buffer += data

    async def handshake(self, loop: asyncio.AbstractEventLoop, port: int) -> None:
        await loop.sock_connect(self.sock, ("127.0.0.1", port))
        headers = {"Sec-WebSocket-Key": random_key()}
        await loop.sock_sendall(self.sock, request_bytes("/ws", headers))
        while b"\r\n\r\n" not in self.buffer:
            data = await loop.sock_recv(self.sock, 4096)
            assert data, "server closed the connection during the handshake"
            self.buffer += data
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head[:40]

    async def receive(self, loop: asyncio.AbstractEventLoop, n: int) -> bytes:
        await self.read_until(loop, n)
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data


async def open_all(port: int, n: int) -> list[Client]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    clients = [Client() for _ in range(n)]

    async def open_one(client: Client) -> None:
        async with gate:
            await client.handshake(loop, port)

    try:
        await asyncio.gather(*(open_one(client) for client in clients))
    except BaseException:
        for client in clients:
            client.sock.close()
        raise
    return clients


async def test_five_thousand_held_sockets_are_all_served(
    many_files: None, serve: ServeFactory
) -> None:
    """5,000 sockets held open at once each get a published message, and a sample echoes."""
    handler = Flood(CONNECTIONS)
    served: Served = await serve(handler)
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    clients = await open_all(served.port, CONNECTIONS)
    try:
        async with asyncio.timeout(60):
            await handler.all_open.wait()
        assert served.server.pending_websockets == CONNECTIONS
        assert served.server.subscriber_count(TOPIC) == CONNECTIONS

        assert served.server.publish(TOPIC, "hello") == len("hello")
        received = await asyncio.gather(
            *(client.receive(loop, len(HELLO)) for client in clients)
        )
        assert received == [HELLO] * CONNECTIONS

        sample = clients[:: CONNECTIONS // 50]
        for i, client in enumerate(sample):
            await loop.sock_sendall(client.sock, client_frame(OP_TEXT, b"%d" % i))
        echoes = await asyncio.gather(
            *(
                client.receive(loop, 2 + len(b"%d" % i))
                for i, client in enumerate(sample)
            )
        )
        assert echoes == [bytes((0x81, len(b"%d" % i))) + b"%d" % i for i in range(50)]
    finally:
        for client in clients:
            client.sock.close()
    async with asyncio.timeout(60):
        await handler.all_closed.wait()
    assert served.server.pending_websockets == 0
    assert time.monotonic() - started < 60
