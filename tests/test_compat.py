"""The take-over of aiohttp's connection (``_compat.py``), pinned against the real aiohttp.

Each aiohttp internal the socket layer relies on is exercised here through a real
server and real clients: bytes buffered by aiohttp behind the handshake, aiohttp
forgetting the connection (access log at the 101, no request handler left),
reading paused and resumed by the inbox, and aiohttp's compiled XOR.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp.http_parser
import aiohttp.web_protocol
import pytest
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.test_utils import TestServer
from aiohttp.web_protocol import RequestHandler

from aiohttp_upgrade import Server, ServerWebSocket, WebSocketHandler, _compat
from aiohttp_upgrade._connection import Connection
from aiohttp_upgrade._dispatcher import INBOX_HIGH_WATER
from aiohttp_upgrade._parser import FrameParser

from .conftest import Echo, Recorder, ServeFactory, upgrade_with_data
from .wire import (
    OMIT,
    OP_TEXT,
    client_frame,
    read_frame,
    read_response,
    request_bytes,
)

PARSERS = {
    "c-parser": aiohttp.http_parser.HttpRequestParserC,
    "py-parser": aiohttp.http_parser.HttpRequestParserPy,
}


@pytest.fixture(params=sorted(PARSERS))
def http_parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Serve with aiohttp's C parser (llhttp) or its pure-Python one (what
    ``AIOHTTP_NO_EXTENSIONS=1`` selects); returns the parser's name."""
    name: str = request.param
    monkeypatch.setattr(aiohttp.web_protocol, "HttpRequestParser", PARSERS[name])
    return name


OpenWithTail = Callable[[int, bytes], Awaitable[asyncio.StreamReader]]


@pytest.fixture
async def open_with_tail() -> AsyncIterator[OpenWithTail]:
    """Send a handshake and ``tail`` in one write, then read the 101; closed at the end."""
    writers: list[asyncio.StreamWriter] = []

    async def open_one(port: int, tail: bytes) -> asyncio.StreamReader:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(writer)
        writer.write(request_bytes() + tail)
        await writer.drain()
        response = await read_response(reader)
        assert response.status == 101
        return reader

    yield open_one
    for writer in writers:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@pytest.mark.parametrize("count", [1, 3], ids=["one-frame", "three-frames"])
async def test_frames_in_the_same_read_as_the_handshake_are_delivered(
    serve: ServeFactory, open_with_tail: OpenWithTail, count: int
) -> None:
    """Frames written together with the handshake reach the hooks, in order."""
    served = await serve(Echo())
    frames = b"".join(client_frame(OP_TEXT, f"m{i}".encode()) for i in range(count))
    reader = await open_with_tail(served.port, frames)
    echoed = [(await read_frame(reader))[2] for _ in range(count)]
    assert echoed == [f"m{i}".encode() for i in range(count)]


async def test_a_large_burst_behind_the_handshake_is_all_delivered(
    serve: ServeFactory, open_with_tail: OpenWithTail
) -> None:
    """More than aiohttp's read buffer behind the handshake (it pauses reading) all arrives."""
    served = await serve(Echo())
    payload = b"x" * 1000
    count = 200  # ~200 KB: past aiohttp's 64 KiB read_bufsize, so it paused reading
    reader = await open_with_tail(served.port, client_frame(OP_TEXT, payload) * count)
    for _ in range(count):
        assert (await read_frame(reader))[2] == payload


class AccessEvents(AbstractAccessLogger):
    """An access logger that records each status and wakes the test."""

    logged: asyncio.Queue[int]

    def log(
        self, request: web.BaseRequest, response: web.StreamResponse, time: float
    ) -> None:
        AccessEvents.logged.put_nowait(response.status)


async def test_aiohttp_forgets_the_connection_at_the_101(
    aiohttp_server: Callable[..., Awaitable[TestServer]], open_with_tail: OpenWithTail
) -> None:
    """The access log and middlewares see the request end at the 101, while the socket
    stays open; afterwards no aiohttp request handler or request is left alive."""
    AccessEvents.logged = asyncio.Queue()
    finished: list[str] = []

    @web.middleware
    async def timing(
        request: web.Request, handler: Callable[[web.Request], Awaitable[Any]]
    ) -> Any:
        response = await handler(request)
        finished.append(request.path)
        return response

    handler = Recorder()
    server: Server[Any] = Server(handler)
    app = web.Application(middlewares=[timing])
    server.setup(app)
    app.router.add_get("/ws", server.handler(upgrade_with_data()))
    http = await aiohttp_server(app, access_log_class=AccessEvents)
    reader = await open_with_tail(http.port or 0, b"")
    await handler.next("open")
    assert await AccessEvents.logged.get() == 101
    assert finished == ["/ws"]
    ws = handler.sockets[0]
    ws.send("still open")
    assert (await read_frame(reader))[2] == b"still open"
    assert http.runner is not None and http.runner.server is not None
    assert http.runner.server.connections == []
    gc.collect()
    left = [
        type(obj).__name__
        for obj in gc.get_objects()
        if isinstance(obj, RequestHandler | web.BaseRequest)
    ]
    assert left == []


class Blocking(WebSocketHandler[Any]):
    """An async message hook that waits for the test to let it go."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.received: list[str | bytes] = []
        self.all_in = asyncio.Event()
        self.expected = 0
        self.ws: ServerWebSocket[Any] | None = None

    def open(self, ws: ServerWebSocket[Any]) -> None:
        self.ws = ws

    async def message(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
        self.started.set()
        await self.release.wait()
        self.received.append(message)
        if len(self.received) == self.expected:
            self.all_in.set()


async def test_reading_pauses_when_the_inbox_is_full_and_resumes(
    serve: ServeFactory, open_with_tail: OpenWithTail
) -> None:
    """A full inbox pauses reading from the transport; once drained, reading resumes
    and every message is delivered in order."""
    handler = Blocking()
    handler.expected = count = INBOX_HIGH_WATER * 3
    served = await serve(handler)
    frames = b"".join(client_frame(OP_TEXT, str(i).encode()) for i in range(count))
    await open_with_tail(served.port, frames)
    await handler.started.wait()
    assert handler.ws is not None
    connection = handler.ws._conn
    assert isinstance(connection, Connection)
    transport = connection.transport
    assert not transport.is_reading()
    handler.release.set()
    await handler.all_in.wait()
    assert handler.received == [str(i) for i in range(count)]
    assert transport.is_reading()


async def test_the_compiled_mask_is_used(
    serve: ServeFactory, open_with_tail: OpenWithTail
) -> None:
    """Sockets unmask with aiohttp's compiled XOR, not the pure-Python fallback."""
    assert _compat.compiled_mask is not None
    assert _compat.compiled_mask.__module__ == "aiohttp._websocket.mask"
    handler = Recorder()
    served = await serve(handler)
    await open_with_tail(served.port, client_frame(OP_TEXT, b"masked " * 100))
    event = await handler.next("message")
    assert event.args == ("masked " * 100,)
    connection = event.ws._conn
    assert isinstance(connection, Connection)
    assert isinstance(connection.parser, FrameParser)  # no rate_limit: fed directly
    assert connection.parser._mask is _compat.compiled_mask


async def test_import_check_names_what_an_aiohttp_lacks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The import-time check lists each missing aiohttp internal by name."""
    monkeypatch.setattr(RequestHandler, "__slots__", ("_force_close",))
    assert set(_compat._missing()) == {"_message_tail", "_manager"}


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, True),
        ({"Upgrade": "foo, websocket"}, False),
        ({"Upgrade": OMIT, "Connection": OMIT}, False),
    ],
    ids=["handshake", "upgrade-list", "plain-get"],
)
async def test_reads_as_upgrade_is_what_aiohttps_parser_decided(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    http_parser: str,
    headers: dict[str, str],
    expected: bool,
) -> None:
    """reads_as_upgrade() is True after a head aiohttp switches protocols on, False
    after one it parses more HTTP behind, with either of its parsers."""
    seen: list[bool] = []
    parsers: list[type] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(_compat.reads_as_upgrade(request))
        parsers.append(type(request.protocol._parser))
        return web.Response(status=400)

    app = web.Application()
    app.router.add_get("/ws", handle)
    http = await aiohttp_server(app)
    reader, writer = await asyncio.open_connection("127.0.0.1", http.port)
    try:
        writer.write(request_bytes(headers=headers))
        assert (await read_response(reader)).status == 400
    finally:
        writer.close()
        await writer.wait_closed()
    assert seen == [expected]
    assert parsers == [PARSERS[http_parser]]


def test_take_over_refuses_a_lost_connection(caplog: pytest.LogCaptureFixture) -> None:
    """take_over() on a request whose connection is gone raises RuntimeError."""

    class Gone:
        transport = None

    class Request:
        protocol = Gone()

    with caplog.at_level(logging.ERROR), pytest.raises(RuntimeError, match="lost"):
        _compat.take_over(Request(), asyncio.Protocol())  # type: ignore[arg-type]


@pytest.mark.asyncio_loop_only(
    reason="uvloop has no _ready queue: ready_callbacks() is a constant there"
)
async def test_ready_callbacks_is_the_loops_queue_of_this_turn() -> None:
    """ready_callbacks() is the queue that holds a callback scheduled in this turn."""
    loop = asyncio.get_running_loop()
    ready = _compat.ready_callbacks(loop)
    assert ready is not None
    done = asyncio.Event()
    loop.call_soon(done.set)
    assert len(ready) >= 1
    await done.wait()
    assert done.is_set()
