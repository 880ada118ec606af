"""RedisBroker against a real redis-server, two Servers in this process.

Each Server has its own RedisBroker (its own origin and connections), as two
processes would; they are served on loopback ports and reached by real clients.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from aiohttp_upgrade import (
    BrokerUnavailableError,
    Server,
    ServerWebSocket,
    WebSocketHandler,
)
from aiohttp_upgrade.redis_broker import RedisBroker

from .conftest import ConnectWs, upgrade_with_data
from .redis_support import RedisProcess, requires_redis, wait_subscribed, wait_until

pytestmark = [pytest.mark.redis, requires_redis]

TIMEOUT = 10
TOPIC = "room"


class Subscribe(WebSocketHandler[str]):
    """Subscribes every socket to ``room``."""

    idle_timeout = 0

    def open(self, ws: ServerWebSocket[str]) -> None:
        ws.subscribe(TOPIC)


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisProcess]:
    process = RedisProcess()
    process.start()
    yield process
    process.kill()


Node = tuple[Server[str], RedisBroker, str]
StartNode = Callable[..., Awaitable[Node]]


@pytest.fixture
async def node(
    redis: RedisProcess, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> AsyncIterator[StartNode]:
    """Start a Server with a RedisBroker on the test Redis; return it and its URL."""

    async def start(**options: Any) -> Node:
        url_or_client = options.pop("client", redis.url)
        broker = RedisBroker(url_or_client, **options)
        server: Server[str] = Server(Subscribe(), broker=broker)
        app = web.Application()
        server.setup(app)
        app.router.add_get("/ws", server.handler(upgrade_with_data()))
        http = await aiohttp_server(app)
        url = str(http.make_url("/ws")).replace("http://", "ws://", 1)
        return server, broker, url

    yield start


async def receive(ws: aiohttp.ClientWebSocketResponse) -> Any:
    return (await asyncio.wait_for(ws.receive(), TIMEOUT)).data


def publish_calls(redis: RedisProcess) -> int:
    stats = redis.command("INFO", "commandstats")
    for line in stats.splitlines():
        if line.startswith("cmdstat_publish:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


async def test_queue_bound_drops_and_counts_the_excess(
    node: StartNode, redis: RedisProcess, connect_ws: ConnectWs
) -> None:
    """Past max_queue messages in one turn, publishes are dropped and counted; the
    queued ones arrive in order."""
    _, _, far_url = await node(channel_prefix="bound:")
    server, broker, _ = await node(channel_prefix="bound:", max_queue=5)
    far = await connect_ws(far_url)
    await wait_subscribed(redis, "bound:room", 1)
    for i in range(8):
        server.publish(TOPIC, f"m{i}")
    assert broker.dropped == 3
    assert [await receive(far) for _ in range(5)] == [f"m{i}" for i in range(5)]
    await wait_until(lambda: broker.published == 5, what="5 published")
    server.publish(TOPIC, "after")
    assert await receive(far) == "after"


async def test_one_turn_of_publishes_is_one_publish_command(
    node: StartNode, redis: RedisProcess, connect_ws: ConnectWs
) -> None:
    """100 publishes to one topic in one loop turn cross Redis as one PUBLISH."""
    _, _, far_url = await node(channel_prefix="batch:")
    server, broker, _ = await node(channel_prefix="batch:")
    far = await connect_ws(far_url)
    await wait_subscribed(redis, "batch:room", 1)
    before = publish_calls(redis)
    for i in range(100):
        server.publish(TOPIC, f"m{i}".encode())
    assert [await receive(far) for _ in range(100)] == [
        f"m{i}".encode() for i in range(100)
    ]
    assert publish_calls(redis) - before == 1
    assert broker.published == 100


async def test_channel_prefixes_keep_apps_apart(
    node: StartNode, redis: RedisProcess, connect_ws: ConnectWs
) -> None:
    """Two apps with different prefixes on one Redis do not see each other's topics."""
    _, _, other_url = await node(channel_prefix="app-one:")
    server, _, _ = await node(channel_prefix="app-two:")
    _, _, twin_url = await node(channel_prefix="app-two:")
    other = await connect_ws(other_url)
    twin = await connect_ws(twin_url)
    await wait_subscribed(redis, "app-two:room", 1)
    await wait_subscribed(redis, "app-one:room", 1)
    server.publish(TOPIC, "for app two")
    assert await receive(twin) == "for app two"
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(other.receive(), 0.3)
    assert await server.cluster_subscriber_count(TOPIC) == 1


@pytest.mark.parametrize("protocol", [2, 3], ids=["resp2", "resp3"])
async def test_a_given_client_is_used_and_left_open(
    node: StartNode,
    redis: RedisProcess,
    connect_ws: ConnectWs,
    protocol: int,
) -> None:
    """A redis.asyncio.Redis client passed in (RESP2 or RESP3) carries the traffic
    both ways and is not closed."""
    client = Redis.from_url(redis.url, protocol=protocol)
    prefix = f"given{protocol}:"
    try:
        server, broker, url = await node(client=client, channel_prefix=prefix)
        far_server, _, far_url = await node(channel_prefix=prefix)
        near = await connect_ws(url)
        far = await connect_ws(far_url)
        await wait_subscribed(redis, prefix + "room", 2)
        server.publish(TOPIC, b"\x00\x01")
        assert await receive(far) == b"\x00\x01"
        assert await receive(near) == b"\x00\x01"  # local delivery
        far_server.publish(TOPIC, "back")
        assert await receive(near) == "back"
        assert broker.received == 1
        await broker.close()
        assert await client.ping()
    finally:
        await client.aclose()


async def test_a_closed_broker_leaves_the_cluster_count_at_once(
    node: StartNode, redis: RedisProcess, connect_ws: ConnectWs
) -> None:
    """A process that shuts down cleanly stops counting without waiting for expiry."""
    counter, _, _ = await node(channel_prefix="leave:", heartbeat_interval=60)
    server, broker, url = await node(channel_prefix="leave:", heartbeat_interval=60)
    ws = await connect_ws(url)
    assert not ws.closed

    async def counted(expected: int) -> bool:
        return await counter.cluster_subscriber_count(TOPIC) == expected

    await wait_until(lambda: counted(1), what="a count of 1")
    await server.shutdown()
    await broker.close()
    assert await counter.cluster_subscriber_count(TOPIC) == 0


def redis_connections(redis: RedisProcess) -> int:
    """Connections the redis-server has open, besides the one asking."""
    listing = redis.command("CLIENT", "LIST")
    return sum(1 for line in listing.splitlines() if "cmd=client|list" not in line)


async def test_a_closed_broker_leaves_no_connection_open(
    node: StartNode, connect_ws: ConnectWs
) -> None:
    """After close, Redis sees none of the broker's connections (reader, writer,
    and the pool's, here used by a cluster count)."""
    redis = RedisProcess()  # its own, so that other tests' connections do not count
    redis.start()
    try:
        assert redis_connections(redis) == 0
        server, broker, url = await node(client=redis.url, channel_prefix="closed:")
        await connect_ws(url)
        await wait_subscribed(redis, "closed:room", 1)
        assert await server.cluster_subscriber_count(TOPIC) == 1
        assert redis_connections(redis) == 3
        await broker.close()
        await wait_until(lambda: redis_connections(redis) == 0, what="no connection")
    finally:
        redis.kill()


async def test_own_messages_are_not_delivered_twice(
    node: StartNode, redis: RedisProcess, connect_ws: ConnectWs
) -> None:
    """A process's own publish comes back from Redis and is ignored: one delivery."""
    server, broker, url = await node(channel_prefix="self:")
    _, far_broker, far_url = await node(channel_prefix="self:")
    local = await connect_ws(url)
    far = await connect_ws(far_url)
    await wait_subscribed(redis, "self:room", 2)
    server.publish(TOPIC, "one")
    server.publish(TOPIC, "two")
    assert await receive(far) == "one"
    assert await receive(far) == "two"
    assert await receive(local) == "one"
    assert await receive(local) == "two"
    assert far_broker.received == 2
    assert broker.received == 0


async def test_cluster_count_without_redis_raises_broker_unavailable(
    node: StartNode,
) -> None:
    """With Redis unreachable, cluster_subscriber_count raises BrokerUnavailableError
    while the local count still works."""
    dead = RedisProcess()  # never started: nothing listens on its port
    server, broker, _ = await node(client=dead.url, channel_prefix="dead:")
    assert not broker.connected
    with pytest.raises(BrokerUnavailableError):
        await server.cluster_subscriber_count(TOPIC)
    assert server.subscriber_count(TOPIC) == 0
