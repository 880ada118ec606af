"""aiohttp-upgrade added to an aiohttp app that already exists.

Everything here but the lines marked ``# + aiohttp-upgrade`` is an ordinary
aiohttp app: a page, a middleware that gives every request an id, and an
``/api`` sub-application. The marked lines add a WebSocket at ``/ws`` that
echoes messages and receives announcements posted to ``/api/announce``::

    python -m aiohttp.web -H 127.0.0.1 -P 8080 demo.existing_app:init_app
    python -m aiohttp.web -H 127.0.0.1 -P 8081 demo.existing_app:init_api  # /api alone
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from aiohttp_upgrade import SERVER_KEY, Server, ServerWebSocket, WebSocketHandler

__all__ = ["ANNOUNCEMENTS", "REQUEST_ID", "create_api", "init_api", "init_app"]

REQUEST_ID = web.RequestKey("request_id", str)
ANNOUNCEMENTS = "announcements"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- the app as it was ------------------------------------------------------------


@web.middleware
async def request_id(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tag each request and its response with an ``X-Request-Id``."""
    request[REQUEST_ID] = request.headers.get("X-Request-Id") or uuid.uuid4().hex
    response = await handler(request)
    # An upgraded request returns right after its 101 was written (the socket
    # lives on without aiohttp), so its response is already prepared: its headers
    # were set through server.upgrade(headers=...). Anything scoped to one socket
    # belongs in the open and close hooks, not around this await.
    if not response.prepared:
        response.headers["X-Request-Id"] = request[REQUEST_ID]
    return response


async def home(request: web.Request) -> web.Response:
    return web.Response(text="An ordinary aiohttp app, now with a WebSocket at /ws.\n")


async def request_info(request: web.Request) -> web.Response:
    return web.json_response({"request_id": request[REQUEST_ID]})


async def announce(request: web.Request) -> web.Response:
    """Publish the posted JSON ``{"text": ...}`` to every connected socket."""
    if request.content_type != "application/json":
        # A JSON body cannot come from a plain cross-site form.
        raise web.HTTPUnsupportedMediaType(text="send application/json")
    server = request.config_dict.get(SERVER_KEY)  # + aiohttp-upgrade
    if server is None:
        raise web.HTTPServiceUnavailable(text="no WebSocket server in this app")
    body = await request.json()
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str):
        raise web.HTTPBadRequest(text='expected {"text": "..."}')
    listeners = server.subscriber_count(ANNOUNCEMENTS)
    server.publish(ANNOUNCEMENTS, text)
    return web.json_response({"listeners": listeners})


def create_api() -> web.Application:
    """The ``/api`` sub-application."""
    api = web.Application()
    api.router.add_get("/id", request_info)
    api.router.add_post("/announce", announce)
    return api


def init_api(argv: list[str]) -> web.Application:
    """The sub-application on its own (it needs the middleware for request ids)."""
    app = web.Application(middlewares=[request_id])
    app.add_subapp("/api", create_api())
    return app


# -- what aiohttp-upgrade adds --------------------------------------------------------


@dataclass(frozen=True)
class Visitor:
    """``ws.data`` of each socket: the id of the request that opened it."""

    request_id: str


class Echo(WebSocketHandler[Visitor]):
    """Echoes each message and forwards announcements."""

    def open(self, ws: ServerWebSocket[Visitor]) -> None:
        ws.subscribe(ANNOUNCEMENTS)

    def message(self, ws: ServerWebSocket[Visitor], message: str | bytes) -> None:
        ws.send(message)


def fetch(request: web.Request, server: Server[Visitor]) -> web.StreamResponse | None:
    """Upgrade, carrying the middleware's request id into ``ws.data`` and the 101."""
    visitor = Visitor(request[REQUEST_ID])
    if server.upgrade(
        request, data=visitor, headers={"X-Request-Id": visitor.request_id}
    ):
        return None
    return web.Response(status=400, text="WebSocket only")


def init_app(argv: list[str]) -> web.Application:
    """The whole app: the old routes plus ``/ws``."""
    app = web.Application(middlewares=[request_id])
    app.router.add_get("/", home)
    app.add_subapp("/api", create_api())
    # Only pages of this origin may open the socket (add others to the tuple).
    server = Server(Echo(), allowed_origins=())  # + aiohttp-upgrade
    server.setup(app)  # + aiohttp-upgrade: app[SERVER_KEY], close sockets on shutdown
    app.router.add_get("/ws", server.handler(fetch))  # + aiohttp-upgrade
    return app
