"""``server.upgrade()`` and ``server.handler()`` over real HTTP on a loopback port."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from websockets.asyncio.client import connect as websockets_connect
from websockets.typing import Subprotocol

from aiohttp_upgrade import InvalidStateError, Server

from .conftest import Echo, Recorder, ServeFactory, upgrade_with_data
from .test_compat import http_parser  # noqa: F401 - a fixture
from .wire import (
    OMIT,
    OP_TEXT,
    HTTPResponse,
    client_frame,
    connect,
    handshake,
    random_key,
    read_response,
    request_bytes,
)

AiohttpServer = Callable[..., Awaitable[TestServer]]

USER_KEY = web.RequestKey("user", str)


async def raw_request(
    port: int,
    headers: dict[str, str] | None = None,
    *,
    path: str = "/ws",
    method: str = "GET",
    websocket: bool = True,
) -> HTTPResponse:
    """Send one request (a WebSocket handshake unless ``websocket=False``) and close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return await handshake(
            reader, writer, path, headers, method=method, websocket=websocket
        )
    finally:
        writer.close()
        await writer.wait_closed()


def recording_fetch(
    results: list[bool], **upgrade_kwargs: Any
) -> Callable[[web.Request, Server[Any]], web.StreamResponse | None]:
    """A fetch that upgrades with ``upgrade_kwargs`` and records what upgrade() returned."""

    def fetch(request: web.Request, server: Server[Any]) -> web.StreamResponse | None:
        upgraded = server.upgrade(request, **upgrade_kwargs)
        results.append(upgraded)
        if upgraded:
            return None
        return web.Response(status=400, text="Upgrade failed")

    return fetch


# -- not a handshake: False, and fetch's own response -----------------------------------


async def test_plain_get_is_not_upgraded(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """A plain HTTP GET makes upgrade() return False and fetch's 400 is sent."""
    results: list[bool] = []
    served = await serve(Recorder(), recording_fetch(results))
    async with client_session.get(served.http.make_url("/ws")) as response:
        assert response.status == 400
        assert await response.text() == "Upgrade failed"
    assert results == [False]
    assert served.server.pending_websockets == 0


@pytest.mark.parametrize(
    "headers",
    [
        {"Upgrade": OMIT},
        {"Upgrade": "h2c"},
        {"Connection": OMIT},
        {"Connection": "keep-alive"},
        {"Sec-WebSocket-Key": OMIT},
        {"Sec-WebSocket-Key": "short"},
        {"Sec-WebSocket-Key": "AQIDBAUGBwgJCgsMDQ4P"},
    ],
    ids=[
        "no-upgrade",
        "other-upgrade",
        "no-connection",
        "connection-without-upgrade",
        "no-key",
        "bad-key",
        "15-byte-key",
    ],
)
async def test_invalid_handshake_returns_false(
    serve: ServeFactory, headers: dict[str, str]
) -> None:
    """upgrade() returns False for a broken handshake and fetch's response is sent."""
    results: list[bool] = []
    served = await serve(Recorder(), recording_fetch(results))
    response = await raw_request(served.port, headers)
    assert (response.status, response.body) == (400, b"Upgrade failed")
    assert results == [False]


async def test_handshake_with_another_method_returns_false(
    aiohttp_server: AiohttpServer,
) -> None:
    """A handshake sent with POST is not upgraded (RFC 6455 4.1: the method is GET)."""
    results: list[bool] = []
    server: Server[Any] = Server(Recorder())
    app = web.Application()
    app.router.add_post("/ws", server.handler(recording_fetch(results)))
    http = await aiohttp_server(app)
    assert http.port is not None
    response = await raw_request(http.port, method="POST")
    assert response.status == 400
    assert results == [False]


@pytest.mark.parametrize("version", [OMIT, "8", "14"], ids=["missing", "8", "14"])
async def test_wrong_version_answers_426_with_version_13(
    serve: ServeFactory, version: str
) -> None:
    """A wrong Sec-WebSocket-Version makes upgrade() return False and answers 426 naming 13."""
    results: list[bool] = []
    served = await serve(Recorder(), recording_fetch(results))
    response = await raw_request(served.port, {"Sec-WebSocket-Version": version})
    assert response.status == 426
    assert response.headers["Sec-WebSocket-Version"] == "13"
    assert results == [False]


async def test_second_upgrade_of_a_request_returns_false(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """Calling upgrade() again on an upgraded request returns False and changes nothing."""
    results: list[bool] = []

    def fetch(request: web.Request, server: Server[Any]) -> None:
        results.append(server.upgrade(request, data="first"))
        results.append(server.upgrade(request, data="second"))

    handler = Recorder()
    served = await serve(handler, fetch)
    async with client_session.ws_connect(served.url):
        event = await handler.next("open")
    assert results == [True, False]
    assert event.ws.data == "first"


async def test_upgrade_during_shutdown_returns_false(serve: ServeFactory) -> None:
    """Once the server is shutting down, upgrade() returns False."""
    results: list[bool] = []
    served = await serve(Recorder(), recording_fetch(results))
    await served.server.shutdown()
    response = await raw_request(served.port)
    assert response.status == 400
    assert results == [False]


# -- the 101 response --------------------------------------------------------------------


async def test_valid_handshake_answers_101_with_accept(serve: ServeFactory) -> None:
    """A valid handshake gets 101 with the RFC 6455 accept value for its key."""
    served = await serve(Echo())
    raw = await connect(served.port)
    try:
        assert raw.response.headers["Upgrade"] == "websocket"
        assert raw.response.headers["Connection"] == "Upgrade"
        assert raw.response.headers["Sec-WebSocket-Accept"] == (
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        )
    finally:
        await raw.close()


async def test_extra_headers_are_sent_in_the_101(serve: ServeFactory) -> None:
    """headers= passed to upgrade() appear in the 101 response."""
    served = await serve(
        Echo(), recording_fetch([], headers={"X-Served-By": "a", "Set-Cookie": "s=1"})
    )
    raw = await connect(served.port)
    try:
        assert raw.response.headers["X-Served-By"] == "a"
        assert raw.response.headers["Set-Cookie"] == "s=1"
    finally:
        await raw.close()


async def test_extra_headers_may_be_a_list_of_pairs(serve: ServeFactory) -> None:
    """headers= may be a list of (name, value) pairs, with repeated names kept."""
    served = await serve(
        Echo(),
        recording_fetch([], headers=[("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]),
    )
    raw = await connect(served.port)
    try:
        assert raw.response.headers.getall("Set-Cookie") == ["a=1", "b=2"]
    finally:
        await raw.close()


async def test_handshake_headers_from_the_user_are_ignored(serve: ServeFactory) -> None:
    """Upgrade, Connection, Sec-WebSocket-Accept and framing headers from the user are ignored."""
    bogus = {
        "Upgrade": "h2c",
        "Connection": "close",
        "Sec-WebSocket-Accept": "bogus",
        "Sec-WebSocket-Extensions": "permessage-deflate",
        "Content-Length": "5",
        "Transfer-Encoding": "chunked",
    }
    served = await serve(Echo(), recording_fetch([], headers=bogus))
    raw = await connect(served.port)
    try:
        headers = raw.response.headers
        assert headers.getall("Upgrade") == ["websocket"]
        assert headers.getall("Connection") == ["Upgrade"]
        assert headers.getall("Sec-WebSocket-Accept") == [
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        ]
        for name in ("Sec-WebSocket-Extensions", "Content-Length", "Transfer-Encoding"):
            assert name not in headers
    finally:
        await raw.close()


async def test_client_library_completes_handshake_despite_bogus_user_headers(
    serve: ServeFactory,
) -> None:
    """A strict client (websockets) accepts the 101 even when the user passed handshake headers."""
    served = await serve(
        Echo(), recording_fetch([], headers={"Sec-WebSocket-Accept": "bogus"})
    )
    async with websockets_connect(served.url) as conn:
        await conn.send("ok")
        assert await conn.recv() == "ok"


# -- subprotocols -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (None, "a"),
        ({"Sec-WebSocket-Protocol": "b"}, "b"),
    ],
    ids=["first-offered", "chosen-by-headers"],
)
async def test_subprotocol_negotiation(
    serve: ServeFactory, headers: dict[str, str] | None, expected: str
) -> None:
    """The first offered subprotocol is chosen unless the headers choose one; ws and client agree."""
    handler = Recorder()
    served = await serve(handler, recording_fetch([], headers=headers))
    async with websockets_connect(
        served.url, subprotocols=[Subprotocol("a"), Subprotocol("b")]
    ) as conn:
        event = await handler.next("open")
        assert conn.subprotocol == expected
        assert event.ws.subprotocol == expected


async def test_no_subprotocol_when_none_is_offered(serve: ServeFactory) -> None:
    """Without an offer the 101 has no Sec-WebSocket-Protocol and ws.subprotocol is None."""
    handler = Recorder()
    served = await serve(handler)
    raw = await connect(served.port)
    try:
        event = await handler.next("open")
        assert "Sec-WebSocket-Protocol" not in raw.response.headers
        assert event.ws.subprotocol is None
    finally:
        await raw.close()


# -- fetch: sync, async, awaits before upgrade, None without upgrading --------------------


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_fetch_may_be_sync_or_async(
    serve: ServeFactory, client_session: aiohttp.ClientSession, is_async: bool
) -> None:
    """Both a plain and an async fetch can upgrade, and data reaches the socket."""

    def sync_fetch(request: web.Request, server: Server[Any]) -> None:
        assert server.upgrade(request, data="sync")

    async def async_fetch(request: web.Request, server: Server[Any]) -> None:
        assert server.upgrade(request, data="async")

    handler = Recorder()
    served = await serve(handler, async_fetch if is_async else sync_fetch)
    async with client_session.ws_connect(served.url):
        event = await handler.next("open")
    assert event.ws.data == ("async" if is_async else "sync")


async def test_upgrade_after_an_await(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """An async fetch may await (a database lookup) before it calls upgrade()."""

    def lookup(token: str) -> str:
        return f"user-for-{token}"

    async def fetch(request: web.Request, server: Server[Any]) -> web.Response | None:
        user = await asyncio.to_thread(lookup, request.query["token"])
        await request.read()
        if server.upgrade(request, data=user):
            return None
        return web.Response(status=400)

    handler = Recorder()
    served = await serve(handler, fetch)
    async with client_session.ws_connect(served.url + "?token=t1") as ws:
        event = await handler.next("open")
        await ws.send_str("hi")
        assert (await handler.next("message")).args == ("hi",)
    assert event.ws.data == "user-for-t1"


async def test_fetch_response_is_served_for_plain_requests(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """A fetch can serve ordinary HTTP responses from the same route it upgrades on."""

    def fetch(request: web.Request, server: Server[Any]) -> web.Response | None:
        if "Upgrade" not in request.headers:
            return web.Response(text="page")
        assert server.upgrade(request)
        return None

    served = await serve(Echo(), fetch)
    async with client_session.get(served.http.make_url("/ws")) as response:
        assert (response.status, await response.text()) == (200, "page")


@pytest.mark.parametrize("websocket", [False, True], ids=["plain-get", "handshake"])
async def test_fetch_returning_none_without_upgrading_is_500_and_logged(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture, websocket: bool
) -> None:
    """fetch returning None without an upgrade answers 500 and logs an error saying so."""

    def fetch(request: web.Request, server: Server[Any]) -> None:
        return None

    served = await serve(Recorder(), fetch)
    with caplog.at_level(logging.ERROR, logger="aiohttp_upgrade"):
        response = await raw_request(served.port, websocket=websocket)
    assert response.status == 500
    messages = [r.getMessage() for r in caplog.records if r.name == "aiohttp_upgrade"]
    assert len(messages) == 1
    assert "returned None without upgrading" in messages[0]


async def test_fetch_returning_none_after_failed_upgrade_is_500(
    serve: ServeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """fetch that ignores upgrade()'s False and returns None gets 500, not a hang."""

    def fetch(request: web.Request, server: Server[Any]) -> None:
        server.upgrade(request)

    served = await serve(Recorder(), fetch)
    with caplog.at_level(logging.ERROR, logger="aiohttp_upgrade"):
        response = await raw_request(served.port, {"Sec-WebSocket-Key": "bad"})
    assert response.status == 500
    assert any(
        "returned None without upgrading" in r.getMessage() for r in caplog.records
    )


async def test_fetch_that_upgrades_and_returns_a_response_is_upgraded_with_warning(
    serve: ServeFactory,
    client_session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """If fetch upgrades and also returns a response, the upgrade wins and a warning is logged."""

    def fetch(request: web.Request, server: Server[Any]) -> web.Response:
        server.upgrade(request)
        return web.Response(text="ignored")

    served = await serve(Echo(), fetch)
    with caplog.at_level(logging.WARNING, logger="aiohttp_upgrade"):
        async with client_session.ws_connect(served.url) as ws:
            await ws.send_str("x")
            assert await ws.receive_str() == "x"
    assert any("response is ignored" in r.getMessage() for r in caplog.records)


# -- misuse ----------------------------------------------------------------------------------


async def test_upgrade_outside_server_handler_is_invalid_state(
    aiohttp_server: AiohttpServer, client_session: aiohttp.ClientSession
) -> None:
    """upgrade() on a request that did not come through server.handler() raises InvalidStateError."""
    server: Server[Any] = Server(Echo())
    raised: list[BaseException] = []

    async def plain(request: web.Request) -> web.Response:
        try:
            server.upgrade(request)
        except InvalidStateError as exc:
            raised.append(exc)
        return web.Response(status=400)

    app = web.Application()
    server.setup(app)
    app.router.add_get("/ws", plain)
    http = await aiohttp_server(app)
    async with client_session.get(http.make_url("/ws")) as response:
        assert response.status == 400
    assert len(raised) == 1


async def test_upgrade_by_another_server_is_invalid_state(
    aiohttp_server: AiohttpServer, client_session: aiohttp.ClientSession
) -> None:
    """upgrade() on a request routed through a different Server's handler raises InvalidStateError."""
    routed: Server[Any] = Server(Echo())
    other: Server[Any] = Server(Echo())
    raised: list[BaseException] = []

    def fetch(request: web.Request, server: Server[Any]) -> web.Response:
        try:
            other.upgrade(request)
        except InvalidStateError as exc:
            raised.append(exc)
        return web.Response(status=400)

    app = web.Application()
    app.router.add_get("/ws", routed.handler(fetch))
    http = await aiohttp_server(app)
    async with client_session.get(http.make_url("/ws")) as response:
        assert response.status == 400
    assert len(raised) == 1


def test_server_needs_a_handler_instance() -> None:
    """Server() given a handler class instead of an instance raises TypeError."""
    with pytest.raises(TypeError):
        Server(Echo)  # type: ignore[arg-type]


# -- aiohttp integration: middlewares, RouteTableDef, sub-applications ------------------------


async def test_middleware_rejects_with_401_before_fetch(serve: ServeFactory) -> None:
    """An auth middleware answering 401 stops the handshake before fetch runs."""
    results: list[bool] = []

    @web.middleware
    async def auth(
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        if request.headers.get("Authorization") != "Bearer ok":
            return web.Response(status=401, text="no")
        return await handler(request)

    served = await serve(
        Recorder(), recording_fetch(results), app=web.Application(middlewares=[auth])
    )
    response = await raw_request(served.port)
    assert response.status == 401
    assert results == []


async def test_middleware_passes_authorised_handshake(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """A handshake that passes the middleware is upgraded and can read what it stored."""

    @web.middleware
    async def auth(
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        if request.headers.get("Authorization") != "Bearer ok":
            return web.Response(status=401)
        request[USER_KEY] = "alice"
        return await handler(request)

    def fetch(request: web.Request, server: Server[Any]) -> None:
        assert server.upgrade(request, data=request[USER_KEY])

    handler = Recorder()
    served = await serve(handler, fetch, app=web.Application(middlewares=[auth]))
    async with client_session.ws_connect(
        served.url, headers={"Authorization": "Bearer ok"}
    ):
        event = await handler.next("open")
    assert event.ws.data == "alice"


async def test_route_table_def(
    aiohttp_server: AiohttpServer, client_session: aiohttp.ClientSession
) -> None:
    """server.handler(fetch) can be registered through a RouteTableDef."""
    server: Server[Any] = Server(Echo())
    routes = web.RouteTableDef()
    routes.get("/socket")(server.handler(upgrade_with_data()))
    app = web.Application()
    server.setup(app)
    app.add_routes(routes)
    http = await aiohttp_server(app)
    async with client_session.ws_connect(http.make_url("/socket")) as ws:
        await ws.send_str("routed")
        assert await ws.receive_str() == "routed"


async def test_sub_application_route(
    aiohttp_server: AiohttpServer, client_session: aiohttp.ClientSession
) -> None:
    """A handler on a sub-application's route upgrades under the sub-app prefix."""
    server: Server[Any] = Server(Echo())
    sub = web.Application()
    sub.router.add_get("/ws", server.handler(upgrade_with_data()))
    app = web.Application()
    server.setup(app)
    app.add_subapp("/chat", sub)
    http = await aiohttp_server(app)
    async with client_session.ws_connect(http.make_url("/chat/ws")) as ws:
        await ws.send_bytes(b"sub")
        assert await ws.receive_bytes() == b"sub"


async def test_each_handshake_gets_its_own_accept(serve: ServeFactory) -> None:
    """The accept value is SHA-1 of each request's own key plus the RFC 6455 GUID."""
    served = await serve(Echo())
    key = random_key()
    raw = await connect(served.port, headers={"Sec-WebSocket-Key": key})
    try:
        digest = hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()
        ).digest()
        assert raw.response.headers["Sec-WebSocket-Accept"] == (
            base64.b64encode(digest).decode()
        )
    finally:
        await raw.close()


# -- what aiohttp reads as an upgrade ---------------------------------------------------


def head(headers: list[tuple[str, str]]) -> bytes:
    """A handshake head with ``headers`` replacing or added to the standard ones."""
    return request_bytes(headers=headers)


# Each case is sent as head + body + one frame in a single write: the client does
# not wait for the 101, as a browser does not.
HANDSHAKES_WITH_A_FRAME: dict[str, tuple[bytes, bytes, int]] = {
    "plain": (head([]), b"", 101),
    "mixed-case": (head([("Upgrade", "WebSocket")]), b"", 101),
    "connection-list": (head([("Connection", "keep-alive, Upgrade")]), b"", 101),
    "connection-two-lines": (
        head([("Connection", "keep-alive"), ("Connection", "Upgrade")]),
        b"",
        101,
    ),
    "content-length-0": (head([("Content-Length", "0")]), b"", 101),
    "upgrade-list-websocket-last": (head([("Upgrade", "foo, websocket")]), b"", 400),
    "upgrade-list-websocket-first": (head([("Upgrade", "websocket, foo")]), b"", 400),
    "two-upgrade-lines-websocket-last": (
        head([("Upgrade", "foo"), ("Upgrade", "websocket")]),
        b"",
        400,
    ),
    "two-upgrade-lines-websocket-first": (
        head([("Upgrade", "websocket"), ("Upgrade", "foo")]),
        b"",
        400,
    ),
    # U+212A KELVIN SIGN lower-cases to "k".
    "upgrade-non-ascii-lookalike": (
        head([("Upgrade", "WEBSOC-K-ET")]).replace(b"-K-", "\u212a".encode()),
        b"",
        400,
    ),
    "content-length-body": (head([("Content-Length", "4")]), b"body", 400),
    "content-length-swallows-the-frame": (
        head([("Content-Length", "7")]),
        b"",
        400,
    ),
    "chunked-body": (
        head([("Transfer-Encoding", "chunked")]),
        b"4\r\nbody\r\n0\r\n\r\n",
        400,
    ),
}


@pytest.mark.parametrize(
    ("head_bytes", "body", "status"),
    list(HANDSHAKES_WITH_A_FRAME.values()),
    ids=list(HANDSHAKES_WITH_A_FRAME),
)
@pytest.mark.usefixtures("http_parser")
async def test_a_frame_sent_with_the_handshake_is_never_lost(
    serve: ServeFactory,
    head_bytes: bytes,
    body: bytes,
    status: int,
) -> None:
    """A handshake sent together with a frame gets 400, or 101 with that frame the
    first message, whichever aiohttp parser reads it."""
    handler = Recorder()
    served = await serve(handler)
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    try:
        frame = client_frame(OP_TEXT, b"first")  # 7 bytes
        writer.write(head_bytes + body + frame)
        response = await read_response(reader)
        assert response.status == status
        if status == 101:
            # Sent after the 101: it arrives whatever became of the first frame.
            writer.write(client_frame(OP_TEXT, b"second"))
            assert (await handler.next("message")).args == ("first",)
        else:
            assert served.server.pending_websockets == 0
    finally:
        writer.close()
        await writer.wait_closed()
