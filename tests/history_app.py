"""A small app with topic history, run in-process by tests/test_history.py and as
real worker processes by tests/test_history_redis.py and the chaos benchmark:

    python -m aiohttp.web -H 127.0.0.1 -P 0 tests.history_app:init_app

``HISTORY_REDIS_URL`` set: a ``RedisBroker`` on it; ``HISTORY_SIZE`` the size of
each history (default 1000). Every topic starting with ``h:`` keeps history and
its messages are formatted ``<position>|<data>``.

Text commands on ``/ws``, each answered on the same socket::

    resume TOPIC [SINCE]  -> "resumed <recovered> <position> <replayed> <reason>"
    pub TOPIC TEXT        -> publishes TEXT with ws.publish (no answer)
    spub TOPIC TEXT       -> publishes TEXT with server.publish (no answer)
    xpub TOPIC TEXT       -> server.publish excluding this socket (no answer)
    sub TOPIC             -> "sub TOPIC True" (a plain subscribe)
    echo TEXT             -> "TEXT"

``GET /history?topic=T[&since=P][&limit=N]`` answers the history as JSON;
``GET /publish?topic=T&text=...&n=N`` publishes N messages (``text-1``...).
"""

from __future__ import annotations

import os
from typing import Any

from aiohttp import web

from aiohttp_upgrade import (
    Broker,
    HistoryUnavailable,
    Position,
    Server,
    ServerWebSocket,
    WebSocketHandler,
)

PREFIX = "h:"


def line(position: Position, data: str | bytes) -> str:
    """The wire format of the test app: ``<position>|<data>``."""
    text = data if isinstance(data, str) else data.hex()
    return f"{position}|{text}"


class HistoryHandler(WebSocketHandler[None]):
    """Runs the commands above."""

    idle_timeout = 0

    async def message(self, ws: ServerWebSocket[None], message: str | bytes) -> None:
        assert isinstance(message, str)
        command, _, rest = message.partition(" ")
        if command == "resume":
            topic, _, since = rest.partition(" ")
            result = await self.server.history.resume(ws, topic, since or None)
            ws.send(
                f"resumed {result.recovered} {result.position} {result.replayed} "
                f"{result.reason or '-'}"
            )
        elif command == "sub":
            ws.send(f"sub {rest} {ws.subscribe(rest)}")
        elif command == "echo":
            ws.send(rest)
        elif command in ("pub", "spub", "xpub"):
            topic, _, text = rest.partition(" ")
            if command == "pub":
                ws.publish(topic, text)
            elif command == "xpub":
                self.server.publish(topic, text, exclude=[ws])
            else:
                self.server.publish(topic, text)


def create_app(broker: Broker | None = None, size: int = 1000) -> web.Application:
    """The app; ``server.history`` enabled for every topic under ``h:``."""
    server: Server[None] = Server(HistoryHandler(), broker=broker)
    server.history.enable(PREFIX, prefix=True, size=size, ttl=600, format=line)

    def fetch(request: web.Request, server: Server[None]) -> web.StreamResponse | None:
        if server.upgrade(request):
            return None
        return web.Response(status=400)

    async def history(request: web.Request) -> web.Response:
        query = request.query
        try:
            position, items = await server.history.read(
                query["topic"], query.get("since"), int(query.get("limit", "100"))
            )
        except ValueError as exc:
            return web.Response(status=400, text=str(exc))
        except HistoryUnavailable as exc:
            return web.Response(status=503, text=str(exc))
        body: dict[str, Any] = {
            "position": str(position),
            "items": [[str(p), d] for p, d in items],
        }
        return web.json_response(body)

    async def publish(request: web.Request) -> web.Response:
        topic, text = request.query["topic"], request.query["text"]
        for index in range(int(request.query.get("n", "1"))):
            server.publish(topic, f"{text}-{index + 1}")
        return web.Response(text="ok")

    app = web.Application()
    server.setup(app)
    app.router.add_get("/ws", server.handler(fetch))
    app.router.add_get("/history", history)
    app.router.add_get("/publish", publish)
    return app


def init_app(argv: list[str] | None = None) -> web.Application:
    """For ``python -m aiohttp.web``: a RedisBroker when HISTORY_REDIS_URL is set."""
    broker: Broker | None = None
    url = os.environ.get("HISTORY_REDIS_URL")
    if url:
        from aiohttp_upgrade import RedisBroker

        broker = RedisBroker(url, heartbeat_interval=1.0, backoff_cap=0.5)
    return create_app(broker, int(os.environ.get("HISTORY_SIZE", "1000")))
