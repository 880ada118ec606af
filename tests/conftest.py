"""Shared fixtures: a real aiohttp server on a loopback port running aiohttp-upgrade.

The event loop is asyncio's unless ``--loop=uvloop`` (or the environment variable
``AIOHTTP_UPGRADE_TEST_LOOP=uvloop``) selects uvloop's, as ``make test-uvloop`` does;
a test that depends on asyncio's own loop is marked ``asyncio_loop_only``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from aiohttp_upgrade import Server, ServerWebSocket, WebSocketHandler
from aiohttp_upgrade._connection import Connection

from .wire import Raw, connect

Fetch = Callable[[web.Request, Server[Any]], Any]

LOOPS = ("asyncio", "uvloop")
LOOP_ENV = "AIOHTTP_UPGRADE_TEST_LOOP"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--loop",
        choices=LOOPS,
        default=os.environ.get(LOOP_ENV) or "asyncio",
        help=f"the event loop the tests run on (default: ${LOOP_ENV} or asyncio)",
    )


class UvloopFactory:
    """A pytest-asyncio plugin that runs every async test and fixture on uvloop."""

    @staticmethod
    def pytest_asyncio_loop_factories(
        config: pytest.Config, item: pytest.Item
    ) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
        import uvloop

        return {"uvloop": uvloop.new_event_loop}


@pytest.hookimpl(tryfirst=True)  # before pytest-timeout reads its method
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "asyncio_loop_only(reason): skipped when the tests run on uvloop"
    )
    loop = config.getoption("loop")
    if loop not in LOOPS:  # a default from the environment is not checked by argparse
        raise pytest.UsageError(f"{LOOP_ENV}={loop!r}: expected one of {LOOPS}")
    if loop == "uvloop":
        config.pluginmanager.register(UvloopFactory(), "aiohttp-upgrade-uvloop")
        # uvloop catches and logs what pytest-timeout's SIGALRM handler raises,
        # so a hung test would hang the run; the thread method ends the run
        # instead (stacks dumped).
        if config.getoption("timeout_method", None) is None and not config.getini(
            "timeout_method"
        ):
            config.option.timeout_method = "thread"


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    if config.getoption("loop") != "uvloop":
        return
    for item in items:
        marker = item.get_closest_marker("asyncio_loop_only")
        if marker is not None:
            reason = marker.kwargs.get("reason") or (marker.args or ("",))[0]
            item.add_marker(pytest.mark.skip(reason=f"asyncio's loop only: {reason}"))


def upgrade_with_data(data: Any = None) -> Fetch:
    """A fetch that upgrades every request with ``data``."""

    def fetch(request: web.Request, server: Server[Any]) -> web.StreamResponse | None:
        if server.upgrade(request, data=data):
            return None
        return web.Response(status=400, text="Upgrade failed")

    return fetch


@dataclass
class Served:
    """A running app: the Server, its aiohttp test server and the WebSocket URL."""

    server: Server[Any]
    http: TestServer
    url: str

    @property
    def port(self) -> int:
        assert self.http.port is not None
        return self.http.port


ServeFactory = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> AsyncIterator[ServeFactory]:
    """Start ``Server(handler)`` behind a route at /ws on a loopback port."""

    async def start(
        handler: WebSocketHandler[Any],
        fetch: Fetch | None = None,
        *,
        allowed_origins: Iterable[str] | None = None,
        app: web.Application | None = None,
    ) -> Served:
        server: Server[Any] = Server(handler, allowed_origins=allowed_origins)
        app = app or web.Application()
        server.setup(app)
        app.router.add_get("/ws", server.handler(fetch or upgrade_with_data()))
        test_server = await aiohttp_server(app)
        url = str(test_server.make_url("/ws")).replace("http://", "ws://", 1)
        return Served(server, test_server, url)

    yield start


ConnectRaw = Callable[[int], Awaitable[Raw]]


@pytest.fixture
async def connect_raw() -> AsyncIterator[ConnectRaw]:
    """Open raw WebSocket clients to a port; all are closed when the test ends."""
    opened: list[Raw] = []

    async def open_one(port: int) -> Raw:
        raw = await connect(port)
        opened.append(raw)
        return raw

    yield open_one
    for raw in opened:
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


@pytest.fixture
async def client_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


ConnectWs = Callable[..., Awaitable[aiohttp.ClientWebSocketResponse]]


@pytest.fixture
async def connect_ws(
    client_session: aiohttp.ClientSession,
) -> AsyncIterator[ConnectWs]:
    """Open aiohttp WebSocket clients (``ws_connect``'s arguments); all are closed
    when the test ends. One left open is only reclaimed by the garbage collector,
    and if a reference cycle holds it (on Python 3.12+ a finished coroutine's frame
    keeps its caller's frame alive), aiohttp's Connection may be finalized first and
    warn "Unclosed connection"."""
    opened: list[aiohttp.ClientWebSocketResponse] = []

    async def open_one(url: str, **options: Any) -> aiohttp.ClientWebSocketResponse:
        ws: aiohttp.ClientWebSocketResponse = await client_session.ws_connect(
            url, **options
        )
        opened.append(ws)
        return ws

    yield open_one
    for ws in opened:
        await ws.close()


@dataclass
class Event:
    hook: str
    ws: ServerWebSocket[Any]
    args: tuple[Any, ...]


@dataclass
class Recorder(WebSocketHandler[Any]):
    """A handler that records every hook call; tests await the events they expect."""

    events: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.events = asyncio.Queue()
        self.sockets: list[ServerWebSocket[Any]] = []

    async def next(self, hook: str, seconds: float = 10) -> Event:
        """Return the next recorded event of ``hook``, skipping others."""
        async with asyncio.timeout(seconds):
            while True:
                event = await self.events.get()
                if event.hook == hook:
                    return event

    def open(self, ws: ServerWebSocket[Any]) -> None:
        self.sockets.append(ws)
        self.events.put_nowait(Event("open", ws, ()))

    def message(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
        self.events.put_nowait(Event("message", ws, (message,)))

    def close(self, ws: ServerWebSocket[Any], code: int, reason: str) -> None:
        self.events.put_nowait(Event("close", ws, (code, reason)))

    def drain(self, ws: ServerWebSocket[Any]) -> None:
        self.events.put_nowait(Event("drain", ws, ()))

    def ping(self, ws: ServerWebSocket[Any], data: bytes) -> None:
        self.events.put_nowait(Event("ping", ws, (data,)))

    def pong(self, ws: ServerWebSocket[Any], data: bytes) -> None:
        self.events.put_nowait(Event("pong", ws, (data,)))

    def error(self, ws: ServerWebSocket[Any], exc: BaseException) -> None:
        self.events.put_nowait(Event("error", ws, (exc,)))


class Echo(WebSocketHandler[Any]):
    """Echoes text as text and binary as binary."""

    def message(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
        ws.send(message)


def connection_of(ws: ServerWebSocket[Any]) -> Connection:
    """The connection behind ``ws`` (tests look inside)."""
    return cast(Connection, ws._conn)


class OpenedEcho(Echo):
    """An echo that keeps its sockets, in the order they opened."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.opened: list[ServerWebSocket[Any]] = []

    def open(self, ws: ServerWebSocket[Any]) -> None:
        self.opened.append(ws)
