"""Server lifecycle: pending_websockets, graceful shutdown, ``python -m aiohttp.web``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import struct
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from websockets.asyncio.client import connect as websockets_connect
from websockets.exceptions import ConnectionClosed

from aiohttp_upgrade import (
    SERVER_KEY,
    InvalidStateError,
    Server,
    ServerWebSocket,
    WebSocketHandler,
)
from aiohttp_upgrade._options import DEFAULT_SHUTDOWN_TIMEOUT

from .conftest import Echo, Recorder, ServeFactory, upgrade_with_data
from .wire import OP_CLOSE, OP_TEXT, Raw, connect, parse_close, request_bytes

REPO_ROOT = Path(__file__).resolve().parent.parent

# How long a graceful shutdown may take with open sockets (aiohttp's own grace
# period below is far longer, so a shutdown that waits for sockets fails this).
SHUTDOWN_BUDGET = 3.0
AIOHTTP_SHUTDOWN_TIMEOUT = 30.0


@dataclass
class Running:
    """An app served by an AppRunner we control, so the test can shut it down."""

    runner: web.AppRunner
    server: Server[Any]
    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"


RunFactory = Callable[[WebSocketHandler[Any]], Awaitable[Running]]


@pytest.fixture
async def run_app() -> AsyncIterator[RunFactory]:
    """Serve a handler through web.AppRunner on a loopback port; cleaned up at the end."""
    runners: list[web.AppRunner] = []

    async def start(handler: WebSocketHandler[Any]) -> Running:
        server: Server[Any] = Server(handler)
        app = web.Application()
        server.setup(app)
        app.router.add_get("/ws", server.handler(upgrade_with_data()))
        runner = web.AppRunner(app, shutdown_timeout=AIOHTTP_SHUTDOWN_TIMEOUT)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        return Running(runner, server, port)

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def raw_clients() -> AsyncIterator[list[Raw]]:
    """A list to put raw clients in; all are closed when the test ends."""
    clients: list[Raw] = []
    yield clients
    for raw in clients:
        await raw.close()


async def read_close_code(raw: Raw) -> int | None:
    """Read frames until the server's Close and return its code."""
    while True:
        _, opcode, payload = await raw.recv()
        if opcode == OP_CLOSE:
            return parse_close(payload)[0]


# -- pending_websockets ------------------------------------------------------------------


async def test_pending_websockets_counts_open_sockets(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """pending_websockets goes up with each open socket and down as each closes."""
    handler = Recorder()
    served = await serve(handler)
    assert served.server.pending_websockets == 0
    async with client_session.ws_connect(served.url):
        await handler.next("open")
        assert served.server.pending_websockets == 1
        async with client_session.ws_connect(served.url):
            await handler.next("open")
            assert served.server.pending_websockets == 2
        await handler.next("close")
        assert served.server.pending_websockets == 1
    await handler.next("close")
    assert served.server.pending_websockets == 0


async def test_pending_websockets_drops_on_server_close(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """A socket closed by the server stops counting at once, before its close hook."""
    handler = Recorder()
    served = await serve(handler)
    async with client_session.ws_connect(served.url):
        ws = (await handler.next("open")).ws
        ws.close()
        assert served.server.pending_websockets == 0


# -- graceful shutdown -----------------------------------------------------------------------


async def test_shutdown_closes_every_socket_with_1001(
    run_app: RunFactory, raw_clients: list[Raw]
) -> None:
    """On app shutdown (runner.cleanup) every client receives a Close with 1001."""
    handler = Recorder()
    running = await run_app(handler)
    for _ in range(3):
        raw_clients.append(await connect(running.port))
        await handler.next("open")
    codes = asyncio.gather(*(read_close_code(raw) for raw in raw_clients))
    await running.runner.cleanup()
    assert await codes == [1001, 1001, 1001]


async def test_shutdown_runs_every_close_hook_with_1001(
    run_app: RunFactory, raw_clients: list[Raw]
) -> None:
    """On app shutdown every open socket's close hook runs with 1001 before cleanup returns."""
    handler = Recorder()
    running = await run_app(handler)
    for _ in range(3):
        raw_clients.append(await connect(running.port))
        await handler.next("open")
    await running.runner.cleanup()
    closes = [handler.events.get_nowait() for _ in range(3)]
    assert [(event.hook, event.args[0]) for event in closes] == [("close", 1001)] * 3
    assert len({id(event.ws) for event in closes}) == 3


async def test_shutdown_is_not_delayed_by_open_sockets(
    run_app: RunFactory, raw_clients: list[Raw]
) -> None:
    """Clients that never answer the Close do not hold up the app's shutdown."""
    handler = Recorder()
    running = await run_app(handler)
    for _ in range(5):
        raw_clients.append(await connect(running.port))
        await handler.next("open")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await running.runner.cleanup()
    assert loop.time() - started < SHUTDOWN_BUDGET
    assert running.server.pending_websockets == 0


class SlowClose(WebSocketHandler[Any]):
    """An async close hook that does real work (a thread hop) before it records."""

    def __init__(self) -> None:
        super().__init__()
        self.closed: list[int] = []

    async def close(self, ws: ServerWebSocket[Any], code: int, reason: str) -> None:
        await asyncio.to_thread(str, "flush to a database")
        self.closed.append(code)


async def test_shutdown_waits_for_async_close_hooks(
    run_app: RunFactory, client_session: aiohttp.ClientSession
) -> None:
    """runner.cleanup() returns only after async close hooks have finished."""
    handler = SlowClose()
    running = await run_app(handler)
    async with client_session.ws_connect(running.url) as ws:
        await ws.send_str("ready")  # the socket is open once its first frame is in
        await running.runner.cleanup()
        assert handler.closed == [1001]


class StuckClose(WebSocketHandler[Any]):
    """An async close hook that waits until the test releases it."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.release = asyncio.Event()
        self.entered = asyncio.Event()
        self.finished = asyncio.Event()

    async def close(self, ws: ServerWebSocket[Any], code: int, reason: str) -> None:
        self.entered.set()
        await self.release.wait()
        self.finished.set()


async def test_shutdown_waits_for_close_hooks_at_most_shutdown_timeout(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """server.shutdown() returns after shutdown_timeout while a close hook still
    runs, well before the 5 s default; the hook then finishes on its own."""
    handler = StuckClose(shutdown_timeout=0.05)
    served = await serve(handler)
    async with client_session.ws_connect(served.url) as ws:
        await ws.send_str("ready")  # the socket is open once its first frame is in
        async with asyncio.timeout(DEFAULT_SHUTDOWN_TIMEOUT / 2):
            await served.server.shutdown()
        assert handler.entered.is_set() and not handler.finished.is_set()
        handler.release.set()
    async with asyncio.timeout(10):
        await handler.finished.wait()


async def test_upgrade_refused_after_shutdown(
    run_app: RunFactory, client_session: aiohttp.ClientSession
) -> None:
    """A server that has shut down refuses upgrades on a new app run (False, not 101)."""
    running = await run_app(Echo())
    await running.server.shutdown()
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client_session.ws_connect(running.url)
    assert info.value.status == 400


# -- real processes under each runner ----------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Cli:
    process: asyncio.subprocess.Process
    port: int
    output: list[str]

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def pending(self) -> int:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{self.port}/pending"
            async with session.get(url) as response:
                return int(await response.text())


RUNNERS = {
    "python-m-aiohttp.web": (
        [
            "-m",
            "aiohttp.web",
            "-H",
            "127.0.0.1",
            "-P",
            "{port}",
            "tests.app_for_cli:init_func",
        ],
        "Running on",
    ),
    "web.run_app": (["-m", "tests.app_for_cli", "run_app", "{port}"], "Running on"),
    "web.AppRunner": (
        ["-m", "tests.app_for_cli", "app_runner", "{port}"],
        "Running on",
    ),
    "gunicorn": (
        [
            "-m",
            "gunicorn",
            "tests.app_for_cli:gunicorn_app",
            "-w",
            "1",
            "-k",
            "aiohttp.GunicornWebWorker",
            "-b",
            "127.0.0.1:{port}",
        ],
        # The master listens before the worker starts; connections wait in the
        # backlog until the worker accepts them.
        "Listening at",
    ),
}


@pytest.fixture(params=sorted(RUNNERS), ids=sorted(RUNNERS))
async def cli_app(request: pytest.FixtureRequest) -> AsyncIterator[Cli]:
    """Run tests/app_for_cli.py under one runner in its own process until it serves."""
    port = free_port()
    args, ready = RUNNERS[request.param]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *(arg.format(port=port) for arg in args),
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    output: list[str] = []
    try:
        async with asyncio.timeout(30):
            while ready not in (output[-1] if output else ""):
                line = await process.stdout.readline()
                if not line:
                    raise AssertionError(f"{request.param} exited: {output}")
                output.append(line.decode())
        yield Cli(process, port, output)
    finally:
        if process.returncode is None:
            process.terminate()
        rest, _ = await process.communicate()
        output.append(rest.decode())


async def test_runner_serves_websockets(cli_app: Cli) -> None:
    """An app started by each runner in its own process upgrades and echoes."""
    assert f"127.0.0.1:{cli_app.port}" in cli_app.output[-1]
    async with websockets_connect(cli_app.url) as conn:
        await conn.send("over the runner")
        assert await conn.recv() == "over the runner"
        assert await cli_app.pending() == 1


async def test_runner_sigterm_closes_with_1001_and_awaits_close_hooks(
    cli_app: Cli,
) -> None:
    """SIGTERM closes every open socket with 1001, awaits the async close hooks, exits 0."""
    async with (
        websockets_connect(cli_app.url) as first,
        websockets_connect(cli_app.url) as second,
    ):
        for conn in (first, second):
            await conn.send("hello")
            await conn.recv()
        assert await cli_app.pending() == 2
        cli_app.process.send_signal(signal.SIGTERM)
        codes = []
        for conn in (first, second):
            with pytest.raises(ConnectionClosed) as info:
                await conn.recv()
            assert info.value.rcvd is not None
            codes.append(info.value.rcvd.code)
    assert codes == [1001, 1001]
    assert await cli_app.process.wait() == 0
    assert cli_app.process.stdout is not None
    rest = (await cli_app.process.stdout.read()).decode()
    assert rest.count("close 1001") == 2


# -- a peer that leaves during the handshake -------------------------------------------


async def leave_after_handshake(port: int, how: str) -> None:
    """Send a handshake, then half-close (``shutdown``) or reset (``rst``) at once."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request_bytes())
    if how == "rst":
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await writer.drain()
        writer.transport.abort()
        return
    await writer.drain()
    writer.write_eof()
    with contextlib.suppress(ConnectionError):
        await reader.read()  # the 101 if it was written in time, then EOF
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


@pytest.mark.parametrize("how", ["shutdown", "rst"], ids=["half-close", "reset"])
async def test_a_peer_leaving_during_the_handshake_logs_no_error(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    caplog: pytest.LogCaptureFixture,
    how: str,
) -> None:
    """Clients that half-close or reset right after their handshake leave a debug
    line, no error or traceback, in the log, and the server goes on serving."""
    handled: asyncio.Queue[None] = asyncio.Queue()

    @web.middleware
    async def count(
        request: web.Request, handler: Callable[[web.Request], Awaitable[Any]]
    ) -> Any:
        try:
            return await handler(request)
        finally:
            handled.put_nowait(None)

    handler = Recorder()
    server: Server[Any] = Server(handler)
    app = web.Application(middlewares=[count])
    server.setup(app)
    app.router.add_get("/ws", server.handler(upgrade_with_data()))
    http = await aiohttp_server(app)
    assert http.port is not None
    clients = 50
    with caplog.at_level(logging.DEBUG):
        await asyncio.gather(
            *(leave_after_handshake(http.port, how) for _ in range(clients))
        )
        for _ in range(clients):
            await handled.get()
        async with websockets_connect(f"ws://127.0.0.1:{http.port}/ws") as conn:
            await conn.send("still serving")
            assert (await handler.next("message")).args == ("still serving",)
    errors = [
        record
        for record in caplog.records
        if record.levelno >= logging.ERROR
        and record.name.startswith(("aiohttp", "aiohttp_upgrade"))
    ]
    assert errors == []
    # Each client either was gone before its socket opened (a debug line) or got
    # a socket, which then closed; which one depends on timing and on the Python
    # version (3.11 mostly the first, 3.13 the second for a half-close).
    left = [r.levelno for r in caplog.records if "abandoned" in r.getMessage()]
    assert set(left) <= {logging.DEBUG}
    assert len(left) + len(handler.sockets) - 1 == clients  # - 1: "still serving"


# -- two servers on one app ------------------------------------------------------------

ADMIN_KEY = web.AppKey("admin", Server[Any])


class Shout(WebSocketHandler[Any]):
    """Echoes text upper-cased: tells its endpoint apart from Echo's."""

    def message(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
        ws.send(message.upper())


async def test_two_servers_on_one_app_each_serve_and_close_their_sockets(
    raw_clients: list[Raw],
) -> None:
    """Two Servers set up on one app, the second under its own key, each serve their
    endpoint with their handler, and the app's shutdown closes both with 1001."""
    chat: Server[Any] = Server(Echo())
    admin: Server[Any] = Server(Shout())
    app = web.Application()
    chat.setup(app)
    admin.setup(app, key=ADMIN_KEY)
    app.router.add_get("/ws", chat.handler(upgrade_with_data()))
    app.router.add_get("/admin", admin.handler(upgrade_with_data()))
    runner = web.AppRunner(app, shutdown_timeout=AIOHTTP_SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        raw_clients.extend([await connect(port, "/ws"), await connect(port, "/admin")])
        for raw in raw_clients:
            await raw.send(OP_TEXT, b"hi")
        assert [(await raw.recv())[2] for raw in raw_clients] == [b"hi", b"HI"]
        assert (chat.pending_websockets, admin.pending_websockets) == (1, 1)
        codes = asyncio.gather(*(read_close_code(raw) for raw in raw_clients))
    finally:
        await runner.cleanup()
    assert await codes == [1001, 1001]


def test_a_second_server_with_its_own_key_leaves_server_key_to_the_first() -> None:
    """SERVER_KEY holds the first Server set up on an app; a second is under its key."""
    chat: Server[Any] = Server(Echo())
    admin: Server[Any] = Server(Shout())
    app = web.Application()
    chat.setup(app)
    admin.setup(app, key=ADMIN_KEY)
    assert app[SERVER_KEY] is chat
    assert app[ADMIN_KEY] is admin


@pytest.mark.parametrize("first_key", [None, ADMIN_KEY], ids=["no-key", "own-key"])
def test_a_second_server_without_a_key_is_a_clear_error(
    first_key: web.AppKey[Server[Any]] | None,
) -> None:
    """setup(app) of a second Server without a key raises, saying to pass key=, and
    leaves the first in place."""
    chat: Server[Any] = Server(Echo())
    admin: Server[Any] = Server(Shout())
    app = web.Application()
    chat.setup(app, key=first_key)
    with pytest.raises(InvalidStateError, match=r"already has a Server.*key="):
        admin.setup(app)
    assert app[SERVER_KEY] is chat


def test_a_second_server_under_a_taken_key_is_a_clear_error() -> None:
    """setup(app, key=...) with a key another Server already holds raises."""
    chat: Server[Any] = Server(Echo())
    admin: Server[Any] = Server(Shout())
    app = web.Application()
    chat.setup(app, key=ADMIN_KEY)
    with pytest.raises(InvalidStateError, match="admin"):
        admin.setup(app, key=ADMIN_KEY)
    assert app[ADMIN_KEY] is chat


@pytest.mark.parametrize(
    "short_first", [True, False], ids=["short-first", "long-first"]
)
async def test_the_shorter_handshake_timeout_of_two_servers_applies(
    aiohttp_server: Callable[..., Awaitable[TestServer]], short_first: bool
) -> None:
    """An app has one handshake deadline: with two Servers, the shorter one holds,
    whichever was set up first."""
    short: Server[Any] = Server(Echo(), handshake_timeout=0.3)
    long: Server[Any] = Server(Shout(), handshake_timeout=3600)
    app = web.Application()
    first, second = (short, long) if short_first else (long, short)
    first.setup(app)
    second.setup(app, key=ADMIN_KEY)
    app.router.add_get("/ws", short.handler(upgrade_with_data()))
    http = await aiohttp_server(app)
    reader, writer = await asyncio.open_connection("127.0.0.1", http.port)
    try:
        async with asyncio.timeout(10):
            assert await reader.read() == b""  # closed by the server
    finally:
        writer.close()
