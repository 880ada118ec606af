"""RedisBroker through the failover of a Redis Cluster primary: a real primary
SIGKILLed, its replica promoted by the cluster, the broker following by itself.

This module has its own cluster (tests/redis_cluster_support.py); each test puts
the node it killed back as a replica before it ends.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from aiohttp_upgrade import RedisBroker, WebSocketHandler
from aiohttp_upgrade._redis._slots import key_slot

from .redis_cluster_support import (
    RedisClusterProcess,
    module_redis_cluster,  # noqa: F401 - the redis_cluster fixture
    requires_redis_cluster,
)
from .redis_support import wait_until
from .test_presence import ROOM, Tracker, run, track
from .test_redis_cluster_broker import (
    Node,
    Topics,
    arrives,
    channel,
    fetch_topics,
    start_node,
    url_with,
)

pytestmark = [pytest.mark.redis, requires_redis_cluster]

PREFIX = "fo:"
HOME_SLOT = key_slot(b"{" + PREFIX.encode() + b"}")


@pytest.fixture
async def node(
    redis_cluster: RedisClusterProcess,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> AsyncIterator[Callable[..., Awaitable[Node]]]:
    """Start a Server with a cluster RedisBroker that reconnects quickly."""

    async def start(handler: WebSocketHandler[Any] | None = None) -> Node:
        return await start_node(
            aiohttp_server,
            redis_cluster,
            handler or Topics(),
            fetch_topics,
            channel_prefix=PREFIX,
            backoff_base=0.05,
            backoff_cap=0.5,
            heartbeat_interval=1.0,
        )

    yield start


def topic_away_from_home(cluster: RedisClusterProcess) -> str:
    """A topic whose primary is not the one keeping the counts."""
    home = cluster.primary_for_slot(HOME_SLOT).port
    index = 0
    while cluster.primary_for_key(channel(f"f{index}")).port == home:
        index += 1
    return f"f{index}"


async def test_delivery_comes_back_after_a_primary_fails_over(
    node: Callable[..., Awaitable[Node]],
    redis_cluster: RedisClusterProcess,
    connect_ws: Callable[..., Awaitable[aiohttp.ClientWebSocketResponse]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The primary of a topic is killed: once its replica is promoted, messages
    flow again without a restart; nothing arrives twice or out of order; the
    messages lost are counted, and the outage logged once at each end."""
    caplog.set_level(logging.WARNING, "aiohttp_upgrade")
    topic = topic_away_from_home(redis_cluster)
    a, broker_a, _ = await node()
    _, _, url_b = await node()
    far = await connect_ws(url_with(url_b, [topic]))
    seen: list[int] = []
    sent = 0
    for _ in range(50):
        sent += 1
        a.publish(topic, str(sent))
        if await arrives(far, sent, seen):
            break
    dead = redis_cluster.primary_for_key(channel(topic)).port
    redis_cluster.kill(dead)
    await wait_until(lambda: broker_a.dropped > 0 or not broker_a.connected)
    promoted = await redis_cluster.wait_failover(dead)
    for _ in range(200):  # until a message published now arrives
        sent += 1
        a.publish(topic, str(sent))
        if await arrives(far, sent, seen):
            break
    assert seen[-1] == sent, "delivery did not come back"
    assert seen == sorted(set(seen)), "a duplicate or out of order"
    lost = sent - len(seen)
    assert broker_a.dropped >= 1
    assert lost >= 0
    label = f"127.0.0.1:{dead}"
    down = [
        r
        for r in caplog.records
        if label in r.getMessage() and "unreachable" in r.getMessage()
    ]
    assert len(down) == 2, [r.getMessage() for r in caplog.records]  # A's and B's

    def recoveries() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if "reachable again" in r.getMessage()
            and f"127.0.0.1:{promoted}" in r.getMessage()
            and "dropped meanwhile" in r.getMessage()
        ]

    await wait_until(lambda: len(recoveries()) == 2, what="A's and B's recovery logged")
    await redis_cluster.restart(dead)


async def test_counts_and_presence_survive_the_home_primary_failing_over(
    node: Callable[..., Awaitable[Node]],
    redis_cluster: RedisClusterProcess,
    connect_ws: Callable[..., Awaitable[aiohttp.ClientWebSocketResponse]],
) -> None:
    """The primary keeping the counts and the presence channel fails over: both
    work again from its replica, and presence shows no leave meanwhile."""
    handler = Tracker()
    _, broker_a, url_a = await node(handler)
    b, _, _ = await node(Tracker())
    client = await connect_ws(url_a)
    await run(handler, client, track("alice", {"name": "Alice"}))
    await wait_until(lambda: "alice" in b.presence.list(ROOM), what="alice on B")
    dead = redis_cluster.primary_for_slot(HOME_SLOT).port
    redis_cluster.kill(dead)
    await redis_cluster.wait_failover(dead)
    await wait_until(lambda: broker_a.connected, what="A reconnected")
    assert "alice" in b.presence.list(ROOM)
    other = await connect_ws(url_a)
    assert await run(handler, other, track("bob", {"name": "Bob"})) is None
    await wait_until(lambda: "bob" in b.presence.list(ROOM), what="bob on B")
    assert await run(handler, other, lambda ws: ws.subscribe("counted")) is None
    broker_b = b.broker
    assert isinstance(broker_b, RedisBroker)
    await wait_until(
        lambda: _is_one(broker_b.cluster_count("counted")), what="B counts A's one"
    )
    await redis_cluster.restart(dead)


async def _is_one(count: Awaitable[int]) -> bool:
    return await count == 1
