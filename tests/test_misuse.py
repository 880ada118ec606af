"""API misuse that used to be silent: each now raises, warns or logs precisely."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from aiohttp_upgrade import (
    SERVER_KEY,
    InvalidStateError,
    Server,
    ServerWebSocket,
    WebSocketHandler,
)

from .conftest import Recorder, ServeFactory, upgrade_with_data
from .wire import OP_CLOSE, connect, parse_close

# -- near-miss names on a handler subclass --------------------------------------------


class TypoOption(WebSocketHandler[Any]):
    idle_timout = 1


class OnMessage(WebSocketHandler[Any]):
    def on_message(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
        pass


class OnOpen(WebSocketHandler[Any]):
    def onopen(self, ws: ServerWebSocket[Any]) -> None:
        pass


class BunCase(WebSocketHandler[Any]):
    maxPayloadLength = 1024


class Mesage(WebSocketHandler[Any]):
    def mesage(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
        pass


class Clsoe(WebSocketHandler[Any]):
    def clsoe(self, ws: ServerWebSocket[Any], code: int, reason: str) -> None:
        pass


class ResetTypo(WebSocketHandler[Any]):
    reset_idle_timeout_on_sned = False


@pytest.mark.parametrize(
    ("cls", "meant"),
    [
        (TypoOption, "idle_timeout"),
        (OnMessage, "message"),
        (OnOpen, "open"),
        (BunCase, "max_payload_length"),
        (Mesage, "message"),
        (Clsoe, "close"),
        (ResetTypo, "reset_idle_timeout_on_send"),
    ],
    ids=[
        "idle_timout",
        "on_message",
        "onopen",
        "maxPayloadLength",
        "mesage",
        "clsoe",
        "sned",
    ],
)
def test_near_miss_name_warns(cls: type[WebSocketHandler[Any]], meant: str) -> None:
    """A near-miss option or hook name warns at construction, naming what was meant."""
    with pytest.warns(UserWarning, match=rf"'{meant}'"):
        cls()


class Helpers(WebSocketHandler[Any]):
    """Names a real handler adds next to its hooks."""

    messages: list[str] = []
    rooms: dict[str, int] = {}
    opened_at = 0.0
    closed = False
    timeout_ms = 5
    ping_interval = 3
    max_rooms = 10
    idle_sockets = 0

    def broadcast(self, text: str) -> None:
        pass

    def massage(self, text: str) -> str:  # not a hook's arguments: not a typo
        return text.strip()

    def closed_sockets(self) -> int:
        return 0

    def on_error_log(self) -> None:
        pass

    def open_room(self, name: str) -> None:
        pass

    def send_history(self, ws: ServerWebSocket[Any]) -> None:
        pass

    def message(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
        self.on_message(ws, message)

    def on_message(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
        """A helper the real hook calls: ``message`` is defined, so no warning."""


def test_ordinary_helper_names_do_not_warn() -> None:
    """Helper methods and attributes that merely resemble hooks or options do not warn."""
    Helpers()  # filterwarnings=error turns any warning into a failure


# -- Server set-up mistakes ------------------------------------------------------------


def test_second_setup_on_another_app_raises() -> None:
    """One Server set up on two applications raises on the second setup()."""
    server: Server[Any] = Server(Recorder())
    server.setup(web.Application())
    with pytest.raises(InvalidStateError, match="one Server per application"):
        server.setup(web.Application())


def test_setup_on_sub_application_raises() -> None:
    """setup() on an app that is already a sub-application says to pass the root app."""
    root, sub = web.Application(), web.Application()
    root.add_subapp("/chat", sub)
    server: Server[Any] = Server(Recorder())
    with pytest.raises(InvalidStateError, match="root application"):
        server.setup(sub)


async def test_setup_on_sub_app_before_add_subapp_raises_at_startup(
    aiohttp_server: Any,
) -> None:
    """setup() on an app later added as a sub-application fails the startup: the handshake_timeout would not apply."""
    root, sub = web.Application(), web.Application()
    server: Server[Any] = Server(Recorder())
    server.setup(sub)
    root.add_subapp("/chat", sub)
    with pytest.raises(InvalidStateError, match="root application"):
        await aiohttp_server(root)


async def test_setup_on_sub_app_without_handshake_timeout_works(
    aiohttp_server: Any,
) -> None:
    """With handshake_timeout=None a sub-application may be set up: shutdown still closes its sockets."""
    root, sub = web.Application(), web.Application()
    handler = Recorder()
    server: Server[Any] = Server(handler, handshake_timeout=None)
    server.setup(sub)
    sub.router.add_get("/ws", server.handler(upgrade_with_data()))
    root.add_subapp("/chat", sub)
    http: TestServer = await aiohttp_server(root)
    assert http.port is not None
    raw = await connect(http.port, "/chat/ws")
    await handler.next("open")
    await http.close()
    _, opcode, payload = await raw.recv()
    assert opcode == OP_CLOSE
    assert parse_close(payload)[0] == 1001
    await raw.close()


async def test_missing_setup_warns_once(
    aiohttp_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Upgrading through a Server that was never set up logs one warning naming setup()."""
    handler = Recorder()
    server: Server[Any] = Server(handler)
    app = web.Application()
    app.router.add_get("/ws", server.handler(upgrade_with_data()))
    http: TestServer = await aiohttp_server(app)
    assert http.port is not None
    with caplog.at_level(logging.WARNING, logger="aiohttp_upgrade"):
        first = await connect(http.port)
        second = await connect(http.port)
        await handler.next("open")
        await handler.next("open")
    warnings = [r for r in caplog.records if "setup(app)" in r.getMessage()]
    assert len(warnings) == 1
    await first.close()
    await second.close()


# -- bad arguments ---------------------------------------------------------------------


def test_handler_needs_a_callable() -> None:
    """server.handler() with something that is not callable raises TypeError."""
    server: Server[Any] = Server(Recorder())
    with pytest.raises(TypeError, match="fetch"):
        server.handler("nope")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("headers", "error", "match"),
    [
        ({"X-Int": 5}, TypeError, "X-Int"),
        ({b"X-Bytes": "v"}, TypeError, "X-Bytes"),
        ({"X-Inject": "a\r\nSet-Cookie: s=1"}, ValueError, "X-Inject"),
        ({"X-Lf": "a\nb"}, ValueError, "X-Lf"),
        ({"X-Bad Name": "v"}, ValueError, "X-Bad Name"),
        ({"X-Bad\r\nName": "v"}, ValueError, "X-Bad"),
        ({"": "v"}, ValueError, "header name"),
    ],
    ids=[
        "int-value",
        "bytes-name",
        "crlf-value",
        "lf-value",
        "space-name",
        "crlf-name",
        "empty-name",
    ],
)
async def test_upgrade_validates_headers_at_the_call(
    serve: ServeFactory,
    client_session: Any,
    headers: dict[Any, Any],
    error: type[Exception],
    match: str,
) -> None:
    """upgrade(headers=...) raises at the call, naming the header, and the request is not upgraded."""
    raised: list[BaseException] = []

    def fetch(request: web.Request, server: Server[Any]) -> web.StreamResponse:
        try:
            server.upgrade(request, data=None, headers=headers)
        except Exception as exc:
            raised.append(exc)
            return web.Response(status=400, text="bad headers")
        return web.Response(status=200, text="upgraded?")

    handler = Recorder()
    served = await serve(handler, fetch)
    async with client_session.get(
        f"http://127.0.0.1:{served.port}/ws",
        headers={
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
        },
    ) as response:
        assert response.status == 400
    assert len(raised) == 1
    assert isinstance(raised[0], error)
    assert match in str(raised[0])
    assert handler.sockets == []


async def test_returning_upgrade_result_is_logged_for_what_it_is(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """``return server.upgrade(...)`` upgrades and logs that fetch returned True, not "a response"."""

    def fetch(request: web.Request, server: Server[Any]) -> Any:
        return server.upgrade(request)

    handler = Recorder()
    served = await serve(handler, fetch)
    with caplog.at_level(logging.WARNING, logger="aiohttp_upgrade"):
        raw = await connect(served.port)
        await handler.next("open")
    messages = [r.getMessage() for r in caplog.records]
    assert any("returned True" in m for m in messages), messages
    assert not any("also returned a response" in m for m in messages)
    await raw.close()


async def test_returning_false_answers_500_with_a_precise_log(
    serve: ServeFactory,
    client_session: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``return server.upgrade(...)`` on a plain request answers 500 and logs that fetch returned False."""

    def fetch(request: web.Request, server: Server[Any]) -> Any:
        return server.upgrade(request)

    served = await serve(Recorder(), fetch)
    with caplog.at_level(logging.ERROR, logger="aiohttp_upgrade"):
        async with client_session.get(f"http://127.0.0.1:{served.port}/ws") as r:
            assert r.status == 500
    assert any("returned False" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("code", [1005, 1006, 1015, 999, 2000, 5000])
async def test_close_with_unsendable_code_names_the_allowed_codes(
    serve: ServeFactory, code: int
) -> None:
    """ws.close() with a code that may not be sent says which codes may be."""
    handler = Recorder()
    served = await serve(handler)
    raw = await connect(served.port)
    ws = (await handler.next("open")).ws
    with pytest.raises(ValueError, match=r"1000-1003, 1007-1014 or 3000-4999") as info:
        ws.close(code)
    assert str(code) in str(info.value)
    await raw.close()


def test_shutdown_with_unsendable_code_names_the_allowed_codes() -> None:
    """server.shutdown() checks its code with the same message as ws.close()."""
    server: Server[Any] = Server(Recorder())
    with pytest.raises(ValueError, match=r"1000-1003, 1007-1014 or 3000-4999"):
        asyncio.run(server.shutdown(1006))


def test_setup_key_stores_the_server_under_the_users_key() -> None:
    """setup(app, key=...) stores the server under the given typed key and SERVER_KEY."""
    key = web.AppKey("chat.server", Server[str])
    server: Server[str] = Server(WebSocketHandler[str]())
    app = web.Application()
    server.setup(app, key=key)
    assert app[key] is server
    assert app[SERVER_KEY] is server


async def test_set_up_app_may_run_twice() -> None:
    """The root app a Server was set up on starts again after a full stop (in-process restart)."""
    handler = Recorder()
    server: Server[Any] = Server(handler)
    app = web.Application()
    server.setup(app)
    app.router.add_get("/ws", server.handler(upgrade_with_data()))
    for _ in range(2):
        http = TestServer(app)
        await http.start_server()
        assert http.port is not None
        raw = await connect(http.port)
        await handler.next("open")
        await http.close()
        assert (await raw.recv())[1] == OP_CLOSE
        await raw.close()
