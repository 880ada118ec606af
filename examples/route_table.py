"""A ``RouteTableDef`` whose app factory may run more than once (tests call it for
each app they start).

The route table is built once, at import. A ``Server`` belongs to one app, so the
factory creates it and stores what the routes need on the app; the module-level
``/ws`` route looks up its own app's handler at each request::

    python examples/route_table.py   # ws://127.0.0.1:8080/ws?user=ada
    curl -d 'back in 5' http://127.0.0.1:8080/announce
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from aiohttp_upgrade import Server, ServerWebSocket, WebSocketHandler

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CHAT: web.AppKey[Server[str]] = web.AppKey("chat", Server[str])
CHAT_WS: web.AppKey[Handler] = web.AppKey("chat_ws")

routes = web.RouteTableDef()


class Chat(WebSocketHandler[str]):
    """``ws.data`` is the user's name; everyone is in the lobby."""

    def open(self, ws: ServerWebSocket[str]) -> None:
        ws.subscribe("lobby")
        ws.send(f"welcome {ws.data}")

    def message(self, ws: ServerWebSocket[str], message: str | bytes) -> None:
        if isinstance(message, str):
            ws.publish("lobby", f"{ws.data}: {message}")


def fetch(request: web.Request, server: Server[str]) -> web.StreamResponse | None:
    if server.upgrade(request, data=request.query.get("user", "anonymous")):
        return None
    return web.Response(status=400, text="Upgrade failed")


@routes.get("/ws")
async def chat_ws(request: web.Request) -> web.StreamResponse:
    # This app's server.handler(fetch), made by create_app.
    return await request.config_dict[CHAT_WS](request)


@routes.post("/announce")
async def announce(request: web.Request) -> web.Response:
    text = await request.text()
    request.config_dict[CHAT].publish("lobby", f"announce: {text}")
    return web.Response(text="sent")


def create_app(argv: list[str] | None = None) -> web.Application:
    """A new app with a new ``Server``, however many times it is called (also as
    ``python -m aiohttp.web``'s factory, which passes ``argv``)."""
    app = web.Application()
    server = Server(Chat())
    server.setup(app, key=CHAT)
    app[CHAT_WS] = server.handler(fetch)
    app.add_routes(routes)
    return app


if __name__ == "__main__":
    web.run_app(create_app())
