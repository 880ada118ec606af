"""A handler hook that raises: logged with its traceback, only that socket closes (1011).

Each handler here fails only for sockets upgraded with ``data == "fail"``; a bystander
socket (``data == "ok"``) on the same server must keep its echo, a new connection must
still be served, and nothing may end up in asyncio's "Task exception was never
retrieved" or aiohttp's "Error handling request" logs.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from aiohttp_upgrade import Server, ServerWebSocket, WebSocketHandler

from .conftest import Served, ServeFactory
from .wire import OP_CLOSE, OP_TEXT, Raw, close_payload, handshake

INTERNAL_ERROR = 1011
NORMAL_CLOSURE = 1000

BIG = 16 * 1024 * 1024
"""A send this large cannot fit in the kernel's buffers when the client reads nothing."""


class Boom(Exception):
    """What the failing hooks raise."""


class HookFailures(WebSocketHandler[str]):
    """Echoes; the hooks named in ``failing`` raise on sockets whose data is "fail".

    The message hook also understands "fill" (send BIG bytes) and "more" (send a short
    text and record its return code), which the drain test uses to get a -1 and a drain.
    """

    backpressure_limit = 4 * BIG

    def __init__(self, *failing: str, how: str = "raise") -> None:
        super().__init__()
        self.failing = failing
        self.how = how
        self.raised = asyncio.Event()
        self.more_codes: list[int] = []
        self.more_sent = asyncio.Event()
        self.errors: list[BaseException] = []

    def maybe_fail(self, hook: str, ws: ServerWebSocket[str]) -> None:
        if ws.data == "fail" and hook in self.failing:
            self.raised.set()
            if self.how == "cancel":
                raise asyncio.CancelledError
            raise Boom(f"{hook} failed")

    def on_message(self, ws: ServerWebSocket[str], message: str | bytes) -> None:
        if message == "fill":
            ws.send(bytes(BIG))
        elif message == "more":
            self.more_codes.append(ws.send("more"))
            self.more_sent.set()
        else:
            ws.send(message)


class SyncHooks(HookFailures):
    def open(self, ws: ServerWebSocket[str]) -> None:
        self.maybe_fail("open", ws)

    def message(self, ws: ServerWebSocket[str], message: str | bytes) -> None:
        self.maybe_fail("message", ws)
        self.on_message(ws, message)

    def drain(self, ws: ServerWebSocket[str]) -> None:
        self.maybe_fail("drain", ws)

    def close(self, ws: ServerWebSocket[str], code: int, reason: str) -> None:
        self.maybe_fail("close", ws)

    def error(self, ws: ServerWebSocket[str], exc: BaseException) -> None:
        self.errors.append(exc)
        self.maybe_fail("error", ws)


class AsyncHooks(HookFailures):
    async def open(self, ws: ServerWebSocket[str]) -> None:
        await asyncio.sleep(0)
        self.maybe_fail("open", ws)

    async def message(self, ws: ServerWebSocket[str], message: str | bytes) -> None:
        await asyncio.sleep(0)
        self.maybe_fail("message", ws)
        self.on_message(ws, message)

    async def drain(self, ws: ServerWebSocket[str]) -> None:
        await asyncio.sleep(0)
        self.maybe_fail("drain", ws)

    async def close(self, ws: ServerWebSocket[str], code: int, reason: str) -> None:
        await asyncio.sleep(0)
        self.maybe_fail("close", ws)

    async def error(self, ws: ServerWebSocket[str], exc: BaseException) -> None:
        self.errors.append(exc)
        await asyncio.sleep(0)
        self.maybe_fail("error", ws)


STYLES = [pytest.param(SyncHooks, id="sync"), pytest.param(AsyncHooks, id="async")]


def upgrade_with_role(request: web.Request, server: Server[Any]) -> None:
    assert server.upgrade(request, data=request.query["role"])


Start = Callable[[HookFailures], Awaitable[Served]]


@pytest.fixture
async def start(
    serve: ServeFactory,
    caplog: pytest.LogCaptureFixture,
) -> AsyncIterator[Start]:
    """Start a server for a handler; after the test, check the logs stayed clean."""
    caplog.set_level(logging.INFO)

    async def start(handler: HookFailures) -> Served:
        return await serve(handler, upgrade_with_role)

    yield start
    gc.collect()
    noise = [
        r.getMessage()
        for r in caplog.records
        if r.name in ("asyncio", "aiohttp.server", "aiohttp.web")
    ]
    assert noise == []


async def connect_as(served: Served, role: str, rcvbuf: int | None = None) -> Raw:
    """Open a raw WebSocket with ``data == role``; ``rcvbuf`` shrinks its receive buffer."""
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", served.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    response = await handshake(reader, writer, f"/ws?role={role}")
    assert response.status == 101
    return Raw(reader, writer, response)


async def frames_until_eof(raw: Raw) -> list[tuple[int, bytes]]:
    frames: list[tuple[int, bytes]] = []
    async with asyncio.timeout(10):
        while True:
            try:
                _, opcode, payload = await raw.recv()
            except asyncio.IncompleteReadError:
                await raw.close()
                return frames
            frames.append((opcode, payload))


async def assert_served(
    served: Served, bystander: aiohttp.ClientWebSocketResponse
) -> None:
    """The bystander still echoes and a new connection is still served."""
    await bystander.send_str("still here")
    assert await bystander.receive_str(timeout=10) == "still here"
    fresh = await connect_as(served, "ok")
    await fresh.send(OP_TEXT, b"new")
    assert await fresh.recv() == (True, OP_TEXT, b"new")
    await fresh.close()


def handler_failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("aiohttp_upgrade")]


def assert_logged_once_with_traceback(
    caplog: pytest.LogCaptureFixture, needle: str
) -> None:
    records = handler_failures(caplog)
    assert len(records) == 1, [r.getMessage() for r in records]
    (record,) = records
    assert record.levelno == logging.ERROR
    assert needle in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], Boom)
    assert record.exc_text is None or "Boom" in record.exc_text


@pytest.mark.parametrize("handler_class", STYLES)
async def test_open_hook_raising_closes_1011(
    start: Start,
    client_session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    handler_class: type[HookFailures],
) -> None:
    """An open hook that raises is logged with its traceback and closes with 1011."""
    handler = handler_class("open")
    served = await start(handler)
    async with client_session.ws_connect(served.url + "?role=ok") as bystander:
        raw = await connect_as(served, "fail")
        assert await frames_until_eof(raw) == [
            (OP_CLOSE, close_payload(INTERNAL_ERROR))
        ]
        assert_logged_once_with_traceback(caplog, "1011")
        await assert_served(served, bystander)


@pytest.mark.parametrize("handler_class", STYLES)
async def test_message_hook_raising_closes_1011(
    start: Start,
    client_session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    handler_class: type[HookFailures],
) -> None:
    """A message hook that raises is logged with its traceback and closes with 1011."""
    handler = handler_class("message")
    served = await start(handler)
    async with client_session.ws_connect(served.url + "?role=ok") as bystander:
        raw = await connect_as(served, "fail")
        await raw.send(OP_TEXT, b"boom")
        await raw.send(OP_TEXT, b"never dispatched")
        assert await frames_until_eof(raw) == [
            (OP_CLOSE, close_payload(INTERNAL_ERROR))
        ]
        assert_logged_once_with_traceback(caplog, "1011")
        await assert_served(served, bystander)


@pytest.mark.parametrize("handler_class", STYLES)
async def test_drain_hook_raising_closes_1011_after_the_data(
    start: Start,
    client_session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    handler_class: type[HookFailures],
) -> None:
    """A drain hook that raises closes with 1011 once the queued data was delivered."""
    handler = handler_class("drain")
    served = await start(handler)
    async with client_session.ws_connect(served.url + "?role=ok") as bystander:
        raw = await connect_as(served, "fail", rcvbuf=4096)
        await raw.send(OP_TEXT, b"fill")
        # The big frame's header has arrived: its flush happened and the rest waits
        # in the server's write buffer, since this client reads nothing more yet.
        await raw.reader.readexactly(10)
        await raw.send(OP_TEXT, b"more")
        await handler.more_sent.wait()
        assert handler.more_codes == [-1]
        assert len(await raw.reader.readexactly(BIG)) == BIG
        assert await frames_until_eof(raw) == [
            (OP_TEXT, b"more"),
            (OP_CLOSE, close_payload(INTERNAL_ERROR)),
        ]
        assert_logged_once_with_traceback(caplog, "1011")
        await assert_served(served, bystander)


@pytest.mark.parametrize("handler_class", STYLES)
async def test_close_hook_raising_is_logged(
    start: Start,
    client_session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    handler_class: type[HookFailures],
) -> None:
    """A close hook that raises is logged with its traceback; the close already happened."""
    handler = handler_class("close")
    served = await start(handler)
    async with client_session.ws_connect(served.url + "?role=ok") as bystander:
        raw = await connect_as(served, "fail")
        await raw.send(OP_CLOSE, close_payload(NORMAL_CLOSURE))
        assert await frames_until_eof(raw) == [
            (OP_CLOSE, close_payload(NORMAL_CLOSURE))
        ]
        await handler.raised.wait()
        assert_logged_once_with_traceback(caplog, "close hook")
        await assert_served(served, bystander)


@pytest.mark.parametrize("handler_class", STYLES)
async def test_error_hook_sees_the_exception(
    start: Start,
    client_session: aiohttp.ClientSession,
    handler_class: type[HookFailures],
) -> None:
    """The error hook receives the exception a message hook raised."""
    handler = handler_class("message")
    served = await start(handler)
    raw = await connect_as(served, "fail")
    await raw.send(OP_TEXT, b"boom")
    await frames_until_eof(raw)
    assert [type(exc) for exc in handler.errors] == [Boom]


@pytest.mark.parametrize("handler_class", STYLES)
async def test_error_hook_raising_too_is_logged(
    start: Start,
    client_session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    handler_class: type[HookFailures],
) -> None:
    """An error hook that raises while handling a failure is logged; the close stays 1011."""

    handler = handler_class("message", "error")
    served = await start(handler)
    async with client_session.ws_connect(served.url + "?role=ok") as bystander:
        raw = await connect_as(served, "fail")
        await raw.send(OP_TEXT, b"boom")
        assert await frames_until_eof(raw) == [
            (OP_CLOSE, close_payload(INTERNAL_ERROR))
        ]
        await assert_served(served, bystander)
    messages = sorted(r.getMessage().split(";")[0] for r in handler_failures(caplog))
    assert messages[0].startswith("WebSocket error hook raised")
    assert messages[1] == "WebSocket handler raised"
    assert all(r.exc_info is not None for r in handler_failures(caplog))


@pytest.mark.parametrize("handler_class", STYLES)
@pytest.mark.parametrize("hook", ["open", "message"])
async def test_hook_raising_cancelled_error_closes_1011(
    start: Start,
    client_session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    handler_class: type[HookFailures],
    hook: str,
) -> None:
    """A hook raising CancelledError of its own (nobody cancelled the socket) is a
    hook failure: logged, 1011, nothing leaks into asyncio or aiohttp."""
    handler = handler_class(hook, how="cancel")
    served = await start(handler)
    async with client_session.ws_connect(served.url + "?role=ok") as bystander:
        raw = await connect_as(served, "fail")
        if hook == "message":
            await raw.send(OP_TEXT, b"boom")
        assert await frames_until_eof(raw) == [
            (OP_CLOSE, close_payload(INTERNAL_ERROR))
        ]
        records = handler_failures(caplog)
        assert len(records) == 1
        assert records[0].exc_info is not None
        await assert_served(served, bystander)


@pytest.mark.parametrize("handler_class", STYLES)
async def test_close_hook_raising_cancelled_error_is_logged(
    start: Start,
    caplog: pytest.LogCaptureFixture,
    handler_class: type[HookFailures],
) -> None:
    """A close hook raising CancelledError of its own is logged like any failure."""
    handler = handler_class("close", how="cancel")
    served = await start(handler)
    raw = await connect_as(served, "fail")
    await raw.send(OP_CLOSE, close_payload(NORMAL_CLOSURE))
    assert await frames_until_eof(raw) == [(OP_CLOSE, close_payload(NORMAL_CLOSURE))]
    await handler.raised.wait()
    records = handler_failures(caplog)
    assert [r.getMessage().split(" for ")[0] for r in records] == [
        "WebSocket close hook raised"
    ]
    assert records[0].exc_info is not None
