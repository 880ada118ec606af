"""RedisBroker on a real Redis Cluster (3 primaries, 3 replicas): sharded pub/sub
between two servers in this process, each topic on the primary of its slot.

The cluster is this module's own (tests/redis_cluster_support.py); one test
moves a slot, and the others look topics up live, so none depends on the order.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from aiohttp_upgrade import (
    SERVER_KEY,
    InvalidOptionError,
    RedisBroker,
    Server,
    ServerWebSocket,
    WebSocketHandler,
)
from aiohttp_upgrade._redis._slots import key_slot

from .conftest import ConnectWs, Fetch, upgrade_with_data
from .history_app import create_app
from .redis_cluster_support import (
    RedisClusterProcess,
    module_redis_cluster,  # noqa: F401 - the redis_cluster fixture
    requires_redis_cluster,
)
from .redis_support import wait_until
from .test_history import fields, resume, text, ws_url
from .test_presence import ROOM, Tracker, run, track

pytestmark = [pytest.mark.redis, requires_redis_cluster]

TIMEOUT = 10
PREFIX = "cl:"

Node = tuple[Server[Any], RedisBroker, str]
StartNode = Callable[..., Awaitable[Node]]


class Topics(WebSocketHandler[Any]):
    """Subscribes each socket to the topics its query string lists."""

    idle_timeout = 0

    def open(self, ws: ServerWebSocket[Any]) -> None:
        for topic in ws.data:
            ws.subscribe(topic)


def fetch_topics(
    request: web.Request, server: Server[Any]
) -> web.StreamResponse | None:
    if server.upgrade(request, data=request.query.getall("t", [])):
        return None
    return web.Response(status=400)


@pytest.fixture
async def node(
    redis_cluster: RedisClusterProcess,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> AsyncIterator[StartNode]:
    """Start a Server with a cluster RedisBroker seeded with one primary."""

    async def start(
        handler: WebSocketHandler[Any] | None = None, **options: Any
    ) -> Node:
        options.setdefault("channel_prefix", PREFIX)
        fetch = fetch_topics if handler is None else upgrade_with_data()
        return await start_node(
            aiohttp_server, redis_cluster, handler or Topics(), fetch, **options
        )

    yield start


async def start_node(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    cluster: RedisClusterProcess,
    handler: WebSocketHandler[Any],
    fetch: Fetch,
    **options: Any,
) -> Node:
    """A Server with a cluster RedisBroker (``options``) behind ``/ws`` on a
    loopback port, once the broker is connected."""
    broker = RedisBroker(cluster.seed_url, cluster=True, **options)
    server: Server[Any] = Server(handler, broker=broker)
    app = web.Application()
    server.setup(app)
    app.router.add_get("/ws", server.handler(fetch))
    http = await aiohttp_server(app)
    url = str(http.make_url("/ws")).replace("http://", "ws://", 1)
    await wait_until(lambda: broker.connected, what="broker connected")
    return server, broker, url


def channel(topic: str) -> bytes:
    """A topic's sharded channel, as the broker names it (docs/scaling.rst)."""
    return PREFIX.encode() + b"c:{" + topic.encode() + b"}:"


def spread_topics(cluster: RedisClusterProcess, per_primary: int) -> list[str]:
    """Topics whose channels are on every primary, ``per_primary`` each."""
    wanted: dict[int, list[str]] = {node.port: [] for node in cluster.primaries()}
    index = 0
    while any(len(topics) < per_primary for topics in wanted.values()):
        topic = f"t{index}"
        index += 1
        topics = wanted[cluster.primary_for_key(channel(topic)).port]
        if len(topics) < per_primary:
            topics.append(topic)
    return [topic for topics in wanted.values() for topic in topics]


def url_with(url: str, topics: list[str]) -> str:
    return url + "?" + "&".join(f"t={topic}" for topic in topics)


async def receive(ws: aiohttp.ClientWebSocketResponse) -> Any:
    return (await asyncio.wait_for(ws.receive(), TIMEOUT)).data


def sharded_channels(cluster: RedisClusterProcess, port: int) -> set[bytes]:
    return set(cluster.command(port, "PUBSUB", "SHARDCHANNELS", PREFIX + "*"))


async def test_topics_on_every_primary_reach_the_other_process_once(
    node: StartNode, redis_cluster: RedisClusterProcess, connect_ws: ConnectWs
) -> None:
    """Messages to topics spread over the 3 primaries cross from A to B, each
    once and in order per topic."""
    topics = spread_topics(redis_cluster, 4)
    a, broker_a, _ = await node()
    _, broker_b, url_b = await node()
    far = await connect_ws(url_with(url_b, topics))
    await wait_until(
        lambda: all(
            channel(t) in sharded_channels(redis_cluster, p.port)
            for t in topics
            for p in [redis_cluster.primary_for_key(channel(t))]
        ),
        what="every channel subscribed on its primary",
    )
    for round_ in range(3):
        for topic in topics:
            a.publish(topic, f"{topic}/{round_}")
    got = [await receive(far) for _ in range(3 * len(topics))]
    assert sorted(got) == sorted(f"{t}/{r}" for t in topics for r in range(3))
    for topic in topics:
        assert [m for m in got if m.startswith(topic + "/")] == [
            f"{topic}/{r}" for r in range(3)
        ]
    assert broker_b.received == 3 * len(topics)
    assert broker_a.dropped == broker_b.dropped == 0


async def test_each_channel_is_subscribed_on_its_own_primary_only(
    node: StartNode, redis_cluster: RedisClusterProcess, connect_ws: ConnectWs
) -> None:
    """A topic's SSUBSCRIBE goes to the primary of its slot and nowhere else."""
    topics = spread_topics(redis_cluster, 3)
    _, _, url = await node()
    await connect_ws(url_with(url, topics))
    for primary in redis_cluster.primaries():
        mine = {channel(t) for t in topics if primary.owns(key_slot(channel(t)))}
        await wait_until(
            functools.partial(has_channels, redis_cluster, primary.port, mine),
            what="subscribed",
        )
        assert (
            sharded_channels(redis_cluster, primary.port) & {channel(t) for t in topics}
            == mine
        )


def has_channels(cluster: RedisClusterProcess, port: int, wanted: set[bytes]) -> bool:
    return wanted <= sharded_channels(cluster, port)


def clients_are(cluster: RedisClusterProcess, port: int, expected: int) -> bool:
    return pubsub_clients(cluster, port) == expected


def pubsub_clients(cluster: RedisClusterProcess, port: int) -> int:
    """Connections to the node on ``port`` that hold sharded subscriptions."""
    listing = cluster.command(port, "CLIENT", "LIST")
    if isinstance(listing, bytes):
        listing = listing.decode()
    return sum(1 for line in listing.splitlines() if " ssub=0 " not in line + " ")


async def test_one_subscriber_connection_per_primary_per_process(
    node: StartNode, redis_cluster: RedisClusterProcess, connect_ws: ConnectWs
) -> None:
    """However many topics, a process reads each primary on one connection."""
    topics = spread_topics(redis_cluster, 10)
    before = {
        p.port: pubsub_clients(redis_cluster, p.port) for p in redis_cluster.primaries()
    }
    _, _, url = await node(channel_prefix="conn:")
    await connect_ws(url_with(url, topics))
    for port, count in before.items():
        await wait_until(
            functools.partial(clients_are, redis_cluster, port, count + 1),
            what="one subscriber connection",
        )


async def test_cluster_count_sums_the_processes(
    node: StartNode, connect_ws: ConnectWs
) -> None:
    """cluster_count on A counts B's subscribers, through the home shard."""
    _, broker_a, url_a = await node(channel_prefix="count:")
    _, _, url_b = await node(channel_prefix="count:")
    await connect_ws(url_with(url_a, ["room"]))
    for _ in range(2):
        await connect_ws(url_with(url_b, ["room"]))
    await wait_until(
        lambda: broker_a.cluster_count("room"), what="a count"
    )  # warms the pool
    await wait_until(
        lambda: _equals(broker_a.cluster_count("room"), 3), what="count of 3"
    )


async def _equals(count: Awaitable[int], expected: int) -> bool:
    return await count == expected


async def test_presence_reaches_the_other_process(
    node: StartNode, connect_ws: ConnectWs
) -> None:
    """A member tracked on A is listed by B: presence runs on the home shard."""
    handler = Tracker()
    _, _, url_a = await node(handler, channel_prefix="presence:")
    b, _, _ = await node(Tracker(), channel_prefix="presence:")
    client = await connect_ws(url_a)
    await run(handler, client, track("alice", {"name": "Alice"}))
    await wait_until(
        lambda: b.presence.list(ROOM) == {"alice": [{"name": "Alice"}]},
        what="alice on B",
    )


async def test_history_resume_on_another_process(
    redis_cluster: RedisClusterProcess,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    connect_ws: ConnectWs,
) -> None:
    """History on a cluster: a client resumes on B what was published on A
    while it was away, once and in order, then gets the live messages."""
    servers = []
    for _ in range(2):
        broker = RedisBroker(
            redis_cluster.seed_url, cluster=True, channel_prefix="hist:"
        )
        servers.append(await aiohttp_server(create_app(broker, 1000)))
        await wait_until(functools.partial(getattr, broker, "connected"))
    a, b = servers
    topic = "h:cluster"
    first = await connect_ws(ws_url(a))
    position = fields((await resume(first, topic))[-1])[1]
    epoch = position.split(":")[0]
    await first.close()
    server_a: Server[None] = a.app[SERVER_KEY]
    for i in range(1, 51):
        server_a.publish(topic, f"m{i}")
    broker_a = server_a.broker
    assert isinstance(broker_a, RedisBroker)
    await wait_until(lambda: broker_a.published >= 50, what="published")
    again = await connect_ws(ws_url(b))
    *replayed, answer = await resume(again, topic, position)
    assert fields(answer) == (True, f"{epoch}:50", 50, "-")
    assert replayed == [f"{epoch}:{i}|m{i}" for i in range(1, 51)]
    server_a.publish(topic, "live")
    assert await text(again) == f"{epoch}:51|live"


def test_a_prefix_with_braces_is_refused_on_a_cluster() -> None:
    """The prefix is the hash tag of the broker's own keys: no braces in it."""
    with pytest.raises(InvalidOptionError, match="channel_prefix"):
        RedisBroker("redis://127.0.0.1:1", cluster=True, channel_prefix="a{b}:")
    with pytest.raises(InvalidOptionError, match="channel_prefix"):
        RedisBroker("redis://127.0.0.1:1", cluster=True, channel_prefix="")


async def test_a_slot_moving_while_publishing_duplicates_nothing(
    node: StartNode, redis_cluster: RedisClusterProcess, connect_ws: ConnectWs
) -> None:
    """Publishing through a slot migration: the subscriber sees every number at
    most once, in order, and delivery goes on from the new primary."""
    topic = "moving"
    slot = key_slot(channel(topic))
    a, _, _ = await node(channel_prefix=PREFIX)
    _, _, url_b = await node(channel_prefix=PREFIX)
    far = await connect_ws(url_with(url_b, [topic]))
    source = redis_cluster.primary_for_slot(slot)
    await wait_until(
        lambda: channel(topic) in sharded_channels(redis_cluster, source.port)
    )
    target = next(p for p in redis_cluster.primaries() if p.port != source.port)
    sent = 0
    seen: list[int] = []

    async def publish_some(_step: str = "") -> None:
        nonlocal sent
        for _ in range(20):
            sent += 1
            a.publish(topic, str(sent))
            await asyncio.sleep(0)

    await publish_some()
    await redis_cluster.migrate_slot(slot, target.port, publish_some)
    await wait_until(
        lambda: channel(topic) in sharded_channels(redis_cluster, target.port),
        what="subscribed on the new primary",
    )
    for _ in range(50):  # until a message published now arrives
        sent += 1
        a.publish(topic, str(sent))
        if await arrives(far, sent, seen):
            break
    assert seen == sorted(set(seen)), "a duplicate or out of order"
    assert seen[-1] == sent


async def arrives(
    ws: aiohttp.ClientWebSocketResponse, last: int, seen: list[int]
) -> bool:
    """Collect numbers into ``seen`` until ``last`` arrives (True) or nothing
    comes for a second (False: it was lost, as pub/sub may while a slot moves)."""
    while True:
        try:
            message = await asyncio.wait_for(ws.receive(), 1.0)
        except TimeoutError:
            return False
        seen.append(int(message.data))
        if seen[-1] == last:
            return True
