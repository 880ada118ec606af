"""A presence app that the presence cluster tests and benchmarks/presence.py run
as real processes, several at once:

    python -m aiohttp.web -H 127.0.0.1 -P 0 tests.presence_app:init_app

Configured by the environment like ``tests/cluster_app.py``: ``CLUSTER_REDIS_URL``
and ``CLUSTER_HEARTBEAT`` (seconds).

``/ws?topic=T`` upgrades; ``&watch=1`` subscribes the socket to ``T``, and the
``presence`` hook sends every diff of ``T`` to this process's watchers as
``{"joins": ..., "leaves": ...}`` (``publish_local``: each process tells its own).
Text commands, answered on the same socket::

    !track KEY META   -> "tracked KEY" (META is JSON)
    !untrack          -> "untracked True"
    !list             -> "list {...}" (server.presence.list(T))
"""

from __future__ import annotations

import json
import os
from typing import Any

from aiohttp import web

from aiohttp_upgrade import Broker, Server, ServerWebSocket, WebSocketHandler


class PresenceHandler(WebSocketHandler[str]):
    """Tracks and untracks on command; tells watchers of every diff."""

    idle_timeout = 0

    def open(self, ws: ServerWebSocket[str]) -> None:
        if ws.data.startswith("watch:"):
            ws.data = ws.data[len("watch:") :]
            ws.subscribe(ws.data)

    def message(self, ws: ServerWebSocket[str], message: str | bytes) -> None:
        assert isinstance(message, str)
        command, _, rest = message.partition(" ")
        if command == "!track":
            key, _, meta = rest.partition(" ")
            ws.track(ws.data, key, json.loads(meta or "null"))
            ws.send(f"tracked {key}")
        elif command == "!untrack":
            ws.send(f"untracked {ws.untrack(ws.data)}")
        elif command == "!list":
            ws.send("list " + json.dumps(self.server.presence.list(ws.data)))

    def presence(
        self, topic: str, joins: dict[str, list[Any]], leaves: dict[str, list[Any]]
    ) -> None:
        diff = json.dumps({"joins": joins, "leaves": leaves})
        self.server.presence.publish_local(topic, diff)


def init_app(argv: list[str] | None = None) -> web.Application:
    """The app, with a RedisBroker when CLUSTER_REDIS_URL is set."""
    broker: Broker | None = None
    url = os.environ.get("CLUSTER_REDIS_URL")
    if url:
        from aiohttp_upgrade import RedisBroker

        broker = RedisBroker(
            url,
            heartbeat_interval=float(os.environ.get("CLUSTER_HEARTBEAT", "5")),
            backoff_base=0.05,
            backoff_cap=0.5,
        )
    server: Server[str] = Server(PresenceHandler(), broker=broker)

    def upgrade(request: web.Request, server: Server[str]) -> web.Response | None:
        topic = request.query.get("topic", "room")
        data = f"watch:{topic}" if request.query.get("watch") else topic
        if server.upgrade(request, data=data):
            return None
        return web.Response(status=400, text="not a WebSocket handshake")

    app = web.Application()
    server.setup(app)
    app.router.add_get("/ws", server.handler(upgrade))
    return app
