"""Slow clients cannot hold connections: the handshake timeout and the idle timeout.

A slowloris client opens connections and sends its request head a byte at a time,
never finishing, to use up the server's connections. ``Server(handshake_timeout=)``
bounds the time to a complete request head; after the upgrade, a client dribbling a
frame is bounded by the handler's ``idle_timeout``. The clients here dribble on a
timer (that is the attack); the tests wait for the server to close, never on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from aiohttp_upgrade import InvalidOptionError, Server
from aiohttp_upgrade._server import DEFAULT_HANDSHAKE_TIMEOUT

from .conftest import Echo, Recorder, upgrade_with_data
from .wire import OP_TEXT, client_frame, connect, request_bytes

TIMEOUT = 0.3
"""The handshake timeout under test: short, so a test takes well under a second."""
DRIBBLE_INTERVAL = 0.02
"""Seconds between two dribbled bytes: the head would take seconds to finish."""

AiohttpServer = Callable[..., Awaitable[TestServer]]


async def page(request: web.Request) -> web.Response:
    return web.Response(text="page")


def make_app(handshake_timeout: float | None, **handler_args: Any) -> web.Application:
    """An app with an echo WebSocket at /ws and a plain page at /."""
    app = web.Application(handler_args=handler_args or None)
    server: Server[Any] = Server(Echo(), handshake_timeout=handshake_timeout)
    server.setup(app)
    app.router.add_get("/ws", server.handler(upgrade_with_data()))
    app.router.add_get("/", page)
    return app


async def start(aiohttp_server: AiohttpServer, app: web.Application) -> int:
    test_server = await aiohttp_server(app)
    assert test_server.port is not None
    return test_server.port


async def dribble(writer: asyncio.StreamWriter, data: bytes) -> None:
    """Send ``data`` one byte at a time, as a slowloris does."""
    for byte in data:
        writer.write(bytes((byte,)))
        await writer.drain()
        await asyncio.sleep(DRIBBLE_INTERVAL)


async def dribble_until_closed(
    port: int, prefix: bytes = b"", path: str = "/ws"
) -> tuple[float, bytes]:
    """Connect, send ``prefix`` at once, dribble a WebSocket handshake after it and
    return (seconds until the server closed the connection, bytes it sent)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(prefix)
    head = request_bytes(path)
    sender = asyncio.ensure_future(dribble(writer, head))
    received = b""
    try:
        async with asyncio.timeout(10):
            # Closing with dribbled bytes still unread may reset rather than FIN
            # the connection (seen under load): either way the server gave up.
            with contextlib.suppress(ConnectionResetError):
                while chunk := await reader.read(65536):
                    received += chunk
    finally:
        finished = sender.done() and sender.exception() is None
        sender.cancel()
        writer.close()
    assert not finished, "the whole head was sent before the server gave up"
    return time.monotonic() - started, received


# -- the handshake timeout ------------------------------------------------------


async def test_dribbled_handshake_is_disconnected(
    aiohttp_server: AiohttpServer,
) -> None:
    """A handshake sent a byte at a time is cut off once handshake_timeout passes."""
    port = await start(aiohttp_server, make_app(TIMEOUT))
    elapsed, received = await dribble_until_closed(port)
    assert received == b""
    assert TIMEOUT * 0.9 <= elapsed < TIMEOUT + 2


async def test_silent_connection_is_disconnected(
    aiohttp_server: AiohttpServer,
) -> None:
    """A connection that sends nothing at all is closed once handshake_timeout passes."""
    port = await start(aiohttp_server, make_app(TIMEOUT))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    async with asyncio.timeout(10):
        assert await reader.read() == b""
    assert time.monotonic() - started < TIMEOUT + 2
    writer.close()


async def test_dribbled_request_after_a_response_is_disconnected(
    aiohttp_server: AiohttpServer,
) -> None:
    """On a keep-alive connection the deadline restarts after each response."""
    port = await start(aiohttp_server, make_app(TIMEOUT))
    first = request_bytes("/", websocket=False)
    elapsed, received = await dribble_until_closed(port, prefix=first)
    assert received.startswith(b"HTTP/1.1 200 OK")
    assert received.endswith(b"page")
    assert elapsed < TIMEOUT + 2


async def test_upgraded_socket_outlives_the_handshake_timeout(
    aiohttp_server: AiohttpServer,
) -> None:
    """A socket upgraded before the deadline is not cut by it."""
    port = await start(aiohttp_server, make_app(TIMEOUT))
    upgraded = await connect(port)
    # The dribbler connects later, so once it is cut off the upgraded socket's own
    # handshake deadline has passed too.
    await dribble_until_closed(port)
    await upgraded.send(OP_TEXT, b"still open")
    assert await upgraded.recv() == (True, OP_TEXT, b"still open")
    await upgraded.close()


async def test_none_leaves_aiohttp_keepalive_timeout_in_charge(
    aiohttp_server: AiohttpServer,
) -> None:
    """With handshake_timeout=None the app's own keepalive_timeout is what cuts it off."""
    app = make_app(None, keepalive_timeout=TIMEOUT)
    port = await start(aiohttp_server, app)
    elapsed, _ = await dribble_until_closed(port)
    assert elapsed < TIMEOUT + 2


async def test_handshake_timeout_replaces_the_app_keepalive_timeout(
    aiohttp_server: AiohttpServer,
) -> None:
    """setup() applies handshake_timeout over a keepalive_timeout in handler_args."""
    port = await start(aiohttp_server, make_app(TIMEOUT, keepalive_timeout=3600))
    elapsed, _ = await dribble_until_closed(port)
    assert elapsed < TIMEOUT + 2


async def test_handshake_timeout_applies_under_app_runner() -> None:
    """A plain web.AppRunner and TCPSite (what run_app uses) get the timeout too."""
    runner = web.AppRunner(make_app(TIMEOUT))
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        elapsed, _ = await dribble_until_closed(port)
        assert elapsed < TIMEOUT + 2
    finally:
        await runner.cleanup()


def init_app(argv: list[str]) -> web.Application:
    """The app factory ``python -m aiohttp.web`` runs in the test below."""
    return make_app(TIMEOUT)


@pytest.fixture
async def aiohttp_web_cli() -> AsyncIterator[int]:
    """Run this module's app with ``python -m aiohttp.web``; yield its port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aiohttp.web",
        "-H",
        "127.0.0.1",
        "-P",
        str(port),
        f"{__name__}:init_app",
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).parents[1],
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(20):
            while b"Running on" not in (line := await process.stdout.readline()):
                assert line, "python -m aiohttp.web exited before it served"
        yield port
    finally:
        process.terminate()
        await process.wait()


async def test_handshake_timeout_applies_under_python_m_aiohttp_web(
    aiohttp_web_cli: int,
) -> None:
    """An app started with ``python -m aiohttp.web`` cuts off a dribbled handshake."""
    elapsed, _ = await dribble_until_closed(aiohttp_web_cli)
    assert elapsed < TIMEOUT + 2


def test_default_handshake_timeout_is_bun_s() -> None:
    """By default a connection gets 10 seconds for its request head, as in Bun."""
    assert DEFAULT_HANDSHAKE_TIMEOUT == 10
    assert Server(Echo()).handshake_timeout == DEFAULT_HANDSHAKE_TIMEOUT


@pytest.mark.parametrize(
    "value",
    [0, -1, math.nan, math.inf, True, "10"],
    ids=["zero", "negative", "nan", "inf", "bool", "str"],
)
def test_invalid_handshake_timeout_is_rejected(value: Any) -> None:
    """A handshake_timeout that is not a finite number > 0 or None raises, naming it."""
    with pytest.raises(InvalidOptionError) as info:
        Server(Echo(), handshake_timeout=value)
    assert info.value.option == "handshake_timeout"


# -- after the upgrade: the idle timeout ------------------------------------------


async def test_frame_dribbled_after_upgrade_is_cut_by_idle_timeout(
    aiohttp_server: AiohttpServer,
) -> None:
    """A frame sent a byte at a time never completes, so idle_timeout closes the socket."""
    handler = Recorder(idle_timeout=0.4)
    app = web.Application()
    server: Server[Any] = Server(handler)
    server.setup(app)
    app.router.add_get("/ws", server.handler(upgrade_with_data()))
    port = await start(aiohttp_server, app)
    raw = await connect(port)
    sender = asyncio.ensure_future(
        dribble(raw.writer, client_frame(OP_TEXT, bytes(10_000)))
    )
    try:
        event = await handler.next("close")
    finally:
        sender.cancel()
    assert event.args == (1006, "idle timeout")
    await raw.close()


async def test_slow_clients_leave_others_served(
    aiohttp_server: AiohttpServer, client_session: aiohttp.ClientSession
) -> None:
    """Twenty dribbling clients at once do not delay a normal client's echo."""
    port = await start(aiohttp_server, make_app(TIMEOUT))
    dribblers = [asyncio.ensure_future(dribble_until_closed(port)) for _ in range(20)]
    async with client_session.ws_connect(f"ws://127.0.0.1:{port}/ws") as ws:
        await ws.send_str("hello")
        assert await ws.receive_str(timeout=10) == "hello"
    await asyncio.gather(*dribblers)
