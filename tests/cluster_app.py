"""A small app that the cluster tests run as real processes, several at once:

    python -m aiohttp.web -H 127.0.0.1 -P 8080 tests.cluster_app:init_app

Configured by the environment: ``CLUSTER_REDIS_URL`` (no broker when unset),
``CLUSTER_HEARTBEAT`` (seconds), ``CLUSTER_BACKOFF_CAP`` (seconds).

``/ws?sub=T1,T2`` upgrades and subscribes the socket to the topics in ``open``.
A text message starting with ``!`` is a command, answered on the same socket::

    !sub T / !unsub T     -> "sub T True" / "unsub T True"
    !count T              -> "count T <local> <cluster>", or "count T unavailable: <why>"
                             when cluster_subscriber_count raised BrokerUnavailableError
    !stats                -> "stats {...broker counters...}"
    !pub T <text>         -> publishes <text> to T with ws.publish, answers nothing

Anything else is published to the socket's first topic as it came (text or binary),
with ``ws.publish``. ``GET /publish?topic=T&text=...`` publishes with
``server.publish``; ``GET /subscription-log`` returns the subscription hook calls.
"""

from __future__ import annotations

import json
import os
from typing import Any

from aiohttp import web

from aiohttp_upgrade import (
    Broker,
    BrokerUnavailableError,
    Server,
    ServerWebSocket,
    WebSocketHandler,
)

Topics = list[str]


class ClusterHandler(WebSocketHandler[Topics]):
    """Subscribes to the topics of its URL, runs commands, publishes the rest."""

    idle_timeout = 0

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, int, int]] = []

    def open(self, ws: ServerWebSocket[Topics]) -> None:
        for topic in ws.data:
            ws.subscribe(topic)

    def subscription(
        self, ws: ServerWebSocket[Topics], topic: str, new_count: int, old_count: int
    ) -> None:
        self.log.append((topic, new_count, old_count))

    async def message(self, ws: ServerWebSocket[Topics], message: str | bytes) -> None:
        if isinstance(message, str) and message.startswith("!"):
            command, _, rest = message[1:].partition(" ")
            if command == "sub":
                ws.send(f"sub {rest} {ws.subscribe(rest)}")
            elif command == "unsub":
                ws.send(f"unsub {rest} {ws.unsubscribe(rest)}")
            elif command == "count":
                try:
                    cluster = await self.server.cluster_subscriber_count(rest)
                except BrokerUnavailableError as exc:
                    ws.send(f"count {rest} unavailable: {exc}")
                    return
                ws.send(f"count {rest} {self.server.subscriber_count(rest)} {cluster}")
            elif command == "stats":
                ws.send("stats " + json.dumps(stats(self.server.broker)))
            elif command == "pub":
                topic, _, text = rest.partition(" ")
                ws.publish(topic, text)
            return
        ws.publish(ws.data[0], message)


def stats(broker: Broker) -> dict[str, Any]:
    names = (
        "published",
        "received",
        "dropped",
        "reconnects",
        "malformed",
        "task_failures",
        "queued_bytes",
        "connected",
    )
    values = {name: getattr(broker, name, None) for name in names}
    values["process_id"] = getattr(broker, "process_id", None)
    return values


def fetch(request: web.Request, server: Server[Topics]) -> web.StreamResponse | None:
    topics = [topic for topic in request.query.get("sub", "").split(",") if topic]
    if server.upgrade(request, data=topics or ["none"]):
        return None
    return web.Response(status=400, text="not a WebSocket handshake")


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
            backoff_cap=float(os.environ.get("CLUSTER_BACKOFF_CAP", "0.5")),
        )
    handler = ClusterHandler()
    server: Server[Topics] = Server(handler, broker=broker)

    async def publish(request: web.Request) -> web.Response:
        code = server.publish(request.query["topic"], request.query["text"])
        return web.Response(text=str(code))

    async def subscription_log(request: web.Request) -> web.Response:
        return web.json_response(handler.log)

    app = web.Application()
    server.setup(app)
    app.router.add_get("/ws", server.handler(fetch))
    app.router.add_get("/publish", publish)
    app.router.add_get("/subscription-log", subscription_log)
    return app
