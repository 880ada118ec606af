from dataclasses import dataclass

from aiohttp import web

from aiohttp_upgrade import Server, ServerWebSocket, WebSocketHandler


@dataclass
class Session:
    user_id: str
    room: str


class Chat(WebSocketHandler[Session]):
    idle_timeout = 60

    async def open(self, ws: ServerWebSocket[Session]) -> None:
        ws.subscribe(ws.data.room)
        ws.send(f"hello {ws.data.user_id}")

    async def message(self, ws: ServerWebSocket[Session], message: str | bytes) -> None:
        ws.publish(ws.data.room, message)


server = Server(Chat())


async def fetch(
    request: web.Request, server: Server[Session]
) -> web.StreamResponse | None:
    user_id = request.query.get("user", "anonymous")
    if server.upgrade(
        request, data=Session(user_id, "lobby"), headers={"X-Served-By": "a"}
    ):
        return None
    return web.Response(status=400, text="Upgrade failed")


app = web.Application()
server.setup(app)  # closes sockets with 1001 on shutdown; app[SERVER_KEY] is the server
app.router.add_get("/ws", server.handler(fetch))

if __name__ == "__main__":
    web.run_app(app)
