"""Several real server processes sharing topics through a real redis-server.

Processes A and C listen on 127.0.0.1, B on 127.0.0.2 (two hosts, as far as
addresses go); each is ``tests/cluster_app.py`` under ``python -m aiohttp.web``
with a ``RedisBroker``. Clients are aiohttp's. A test waits for another
process's state (a Redis subscription, a count) by polling it with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from .conftest import ConnectWs
from .redis_support import (
    AppProcess,
    RedisProcess,
    requires_redis,
    wait_subscribed,
    wait_until,
)

pytestmark = [pytest.mark.redis, requires_redis]

CHANNEL_PREFIX = "aiohttp_upgrade:"
RECEIVE_TIMEOUT = 10.0
HEARTBEAT = 0.2


@dataclass
class Cluster:
    redis: RedisProcess
    a: AppProcess
    b: AppProcess
    c: AppProcess

    @property
    def apps(self) -> tuple[AppProcess, AppProcess, AppProcess]:
        return (self.a, self.b, self.c)


def start_cluster(redis: RedisProcess, heartbeat: float = 5.0) -> Cluster:
    return Cluster(
        redis,
        AppProcess("127.0.0.1", redis.url, heartbeat),
        AppProcess("127.0.0.2", redis.url, heartbeat),
        AppProcess("127.0.0.1", redis.url, heartbeat),
    )


def stop_cluster(cluster: Cluster) -> list[str]:
    outputs = [app.stop() for app in cluster.apps]
    cluster.redis.kill()
    return outputs


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Redis and three app processes, shared by the tests that leave them as found."""
    redis = RedisProcess()
    redis.start()
    started = start_cluster(redis)
    yield started
    stop_cluster(started)


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    """A cluster of its own, for a test that kills a process or Redis."""
    redis = RedisProcess()
    redis.start()
    started = start_cluster(redis, heartbeat=HEARTBEAT)
    yield started
    for app in started.apps:
        app.kill()
        app.stop()
    redis.kill()


Socket = aiohttp.ClientWebSocketResponse


async def receive(ws: Socket) -> str | bytes:
    """The next text or binary message of ``ws``."""
    msg = await asyncio.wait_for(ws.receive(), RECEIVE_TIMEOUT)
    assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg
    data: str | bytes = msg.data
    return data


async def command(ws: Socket, text: str) -> str:
    await ws.send_str(text)
    reply = await receive(ws)
    assert isinstance(reply, str)
    return reply


async def connect(connect_ws: ConnectWs, app: AppProcess, topics: str) -> Socket:
    return await connect_ws(app.ws_url(topics))


async def subscribed(redis: RedisProcess, topic: str, processes: int) -> None:
    """Wait until ``processes`` processes subscribe to ``topic`` in Redis."""
    await wait_subscribed(redis, CHANNEL_PREFIX + topic, processes)


async def publish_http(
    session: aiohttp.ClientSession, app: AppProcess, topic: str, text: str
) -> None:
    async with session.get(
        app.url("/publish"), params={"topic": topic, "text": text}
    ) as r:
        assert r.status == 200


async def test_publish_reaches_every_process_exactly_once(
    cluster: Cluster, connect_ws: ConnectWs, client_session: aiohttp.ClientSession
) -> None:
    """A publish on A reaches B and C once, A's other subscriber once, the sender never."""
    topic = "once"
    sender = await connect(connect_ws, cluster.a, topic)
    other_a = await connect(connect_ws, cluster.a, topic)
    on_b = await connect(connect_ws, cluster.b, topic)
    on_c = await connect(connect_ws, cluster.c, topic)
    await subscribed(cluster.redis, topic, 3)
    await sender.send_str("hello from A")
    await publish_http(client_session, cluster.a, topic, "sentinel")
    for ws in (other_a, on_b, on_c):
        assert await receive(ws) == "hello from A"
        assert await receive(ws) == "sentinel"  # not the first message again
    assert await receive(sender) == "sentinel"


async def test_text_and_binary_cross_byte_for_byte(
    cluster: Cluster, connect_ws: ConnectWs
) -> None:
    """Text stays text and binary stays binary, every byte intact, across Redis."""
    topic = "bytes"
    sender = await connect(connect_ws, cluster.a, topic)
    on_b = await connect(connect_ws, cluster.b, topic)
    await subscribed(cluster.redis, topic, 2)
    binary = bytes(range(256)) * 300 + b"\r\n\x00AU\x01"
    text = "héllo \u2603 \U0001f600 \x00 end"
    await sender.send_bytes(binary)
    await sender.send_str(text)
    await sender.send_bytes(b"")
    await sender.send_str("")
    assert await receive(on_b) == binary
    assert await receive(on_b) == text
    assert await receive(on_b) == b""
    assert await receive(on_b) == ""


async def test_ten_thousand_messages_arrive_in_order(
    cluster: Cluster, connect_ws: ConnectWs
) -> None:
    """10,000 messages from one publisher on A arrive at B and C complete and in order."""
    topic = "order"
    count = 10_000
    sender = await connect(connect_ws, cluster.a, topic)
    on_b = await connect(connect_ws, cluster.b, topic)
    on_c = await connect(connect_ws, cluster.c, topic)
    await subscribed(cluster.redis, topic, 3)

    async def collect(ws: Socket) -> list[str | bytes]:
        return [await receive(ws) for _ in range(count)]

    readers = [asyncio.create_task(collect(ws)) for ws in (on_b, on_c)]
    for i in range(count):
        await sender.send_str(str(i))
    expected = [str(i) for i in range(count)]
    for reader in readers:
        assert await reader == expected


async def test_last_local_unsubscribe_drops_the_redis_subscription(
    cluster: Cluster, connect_ws: ConnectWs
) -> None:
    """A process subscribes a topic's channel while it has a local subscriber, no longer."""
    topic = "interest"
    first = await connect(connect_ws, cluster.b, topic)
    second = await connect(connect_ws, cluster.b, topic)
    await subscribed(cluster.redis, topic, 1)
    assert await command(first, f"!unsub {topic}") == f"unsub {topic} True"
    await subscribed(cluster.redis, topic, 1)  # second still subscribes
    await second.close()
    await subscribed(cluster.redis, topic, 0)
    assert await command(first, f"!sub {topic}") == f"sub {topic} True"
    await subscribed(cluster.redis, topic, 1)


async def test_cluster_count_adds_up_every_process(
    cluster: Cluster, connect_ws: ConnectWs
) -> None:
    """cluster_subscriber_count counts every process's subscribers; subscriber_count only its own."""
    topic = "census"
    probe = await connect(connect_ws, cluster.a, topic)
    others = [await connect(connect_ws, cluster.a, topic)]
    others.append(await connect(connect_ws, cluster.b, topic))
    others += [await connect(connect_ws, cluster.c, topic) for _ in range(3)]
    await wait_until(lambda: _count_is(probe, topic, "2 6"), what="a count of 6")


async def _count_is(ws: Socket, topic: str, expected: str) -> bool:
    reply = await command(ws, f"!count {topic}")
    return reply == f"count {topic} {expected}"


async def test_subscription_hook_sees_local_counts(
    cluster: Cluster, connect_ws: ConnectWs, client_session: aiohttp.ClientSession
) -> None:
    """The subscription hook runs on subscribe, unsubscribe and close with local counts."""
    topic = "hooked"
    first = await connect(connect_ws, cluster.c, topic)
    second = await connect(connect_ws, cluster.c, topic)
    assert await command(second, f"!unsub {topic}") == f"unsub {topic} True"
    await first.close()

    async def log() -> list[Any]:
        async with client_session.get(cluster.c.url("/subscription-log")) as r:
            entries: list[Any] = await r.json()
        return [entry for entry in entries if entry[0] == topic]

    entries = await wait_until(
        lambda: _nonempty_len(log(), 4), what="four subscription hook calls"
    )
    assert entries == [[topic, 1, 0], [topic, 2, 1], [topic, 1, 2], [topic, 0, 1]]


async def _nonempty_len(entries: Any, n: int) -> list[Any] | None:
    result: list[Any] = await entries
    return result if len(result) >= n else None


async def test_forged_messages_on_the_channel_are_ignored(
    cluster: Cluster, connect_ws: ConnectWs
) -> None:
    """Raw PUBLISHes of garbage to a topic's channel are counted and ignored; delivery goes on."""
    topic = "forged"
    sender = await connect(connect_ws, cluster.a, topic)
    on_b = await connect(connect_ws, cluster.b, topic)
    await subscribed(cluster.redis, topic, 2)
    before = json.loads((await command(on_b, "!stats")).removeprefix("stats "))
    channel = (CHANNEL_PREFIX + topic).encode()
    forged = [
        b"",
        b"hello",
        b"AU\x01" + b"\x00" * 8,  # no record
        b"AU\x02" + b"\x00" * 8 + b"\x01\x00\x00\x00\x01x",  # unknown version
        b"AU\x01" + b"\x00" * 8 + b"\x03\x00\x00\x00\x01x",  # unknown opcode
        b"AU\x01" + b"\x00" * 8 + b"\x01\xff\xff\xff\xffx",  # length past the end
        b"AU\x01" + b"\x00" * 8 + b"\x01\x00\x00\x00\x02\xc3\x28",  # invalid UTF-8
        b"\x80\x04\x95" + b"pickle" * 10,
    ]
    for payload in forged:
        cluster.redis.raw_command(b"PUBLISH", channel, payload)
    await sender.send_str("still here")
    assert await receive(on_b) == "still here"
    after = json.loads((await command(on_b, "!stats")).removeprefix("stats "))
    assert after["malformed"] - before["malformed"] == len(forged)


async def test_a_sigkilled_process_stops_counting(
    own_cluster: Cluster, connect_ws: ConnectWs
) -> None:
    """After SIGKILL, a process drops out of cluster counts within three heartbeats."""
    topic = "mortal"
    probe = await connect(connect_ws, own_cluster.a, topic)
    others = [await connect(connect_ws, app, topic) for app in own_cluster.apps[1:]]
    assert len(others) == 2
    await wait_until(lambda: _count_is(probe, topic, "1 3"), what="a count of 3")
    own_cluster.c.kill()
    await wait_until(
        lambda: _count_is(probe, topic, "1 2"),
        within=HEARTBEAT * 3 + 5,
        what="the killed process to stop counting",
    )


async def test_redis_restart_local_delivery_continues_and_remote_resumes(
    own_cluster: Cluster, connect_ws: ConnectWs
) -> None:
    """Redis killed and restarted: local delivery never stops, cross-process delivery
    resumes, nothing arrives twice, and each process logs the outage once."""
    topic = "phoenix"
    sender = await connect(connect_ws, own_cluster.a, topic)
    local = await connect(connect_ws, own_cluster.a, topic)
    remote = await connect(connect_ws, own_cluster.b, topic)
    await subscribed(own_cluster.redis, topic, 2)
    await sender.send_str("before")
    assert await receive(local) == "before"
    assert await receive(remote) == "before"

    own_cluster.redis.kill()
    for i in range(20):
        await sender.send_str(f"during {i}")
        assert await receive(local) == f"during {i}"

    own_cluster.redis.start()  # same port, empty
    sent: list[str] = []

    async def remote_got_one() -> str | None:
        text = f"after {len(sent)}"
        sent.append(text)
        await sender.send_str(text)
        assert await receive(local) == text
        try:
            message = await asyncio.wait_for(remote.receive(), 0.2)
        except TimeoutError:
            return None
        assert message.type is aiohttp.WSMsgType.TEXT
        return str(message.data)

    first = await wait_until(remote_got_one, within=30, what="delivery via Redis")
    received = [first]
    await sender.send_str("last")
    assert await receive(local) == "last"
    while received[-1] != "last":
        message = await receive(remote)
        assert isinstance(message, str)
        received.append(message)
    assert len(received) == len(set(received))  # nothing twice
    assert not any(text.startswith("during") for text in received)
    assert received == [*sorted(received[:-1], key=sent.index), "last"]

    async def recovered(ws: Socket) -> bool:
        stats = json.loads((await command(ws, "!stats")).removeprefix("stats "))
        assert stats["reconnects"] <= 1
        return bool(stats["reconnects"] == 1)

    # Each process declares the outage over once both its connections work again.
    await wait_until(lambda: recovered(local), what="A to count one reconnect")
    await wait_until(lambda: recovered(remote), what="B to count one reconnect")
    for ws in (sender, local, remote):
        await ws.close()
    for app in (own_cluster.a, own_cluster.b):
        output = app.stop()
        assert output.count("Redis unreachable") == 1, output
        assert output.count("Redis reachable again") == 1, output


async def test_redis_down_at_startup(connect_ws: ConnectWs) -> None:
    """With Redis down, the app starts, logs it, delivers locally, and joins once Redis is up."""
    redis = RedisProcess()  # not started: nothing listens on its port
    apps = [AppProcess("127.0.0.1", redis.url), AppProcess("127.0.0.2", redis.url)]
    try:
        topic = "dawn"
        sender = await connect(connect_ws, apps[0], topic)
        local = await connect(connect_ws, apps[0], topic)
        remote = await connect(connect_ws, apps[1], topic)
        await sender.send_str("local only")
        assert await receive(local) == "local only"
        redis.start()
        await subscribed(redis, topic, 2)

        async def delivered() -> bool:
            await sender.send_str("via redis")
            assert await receive(local) == "via redis"
            try:
                message = await asyncio.wait_for(remote.receive(), 0.2)
            except TimeoutError:
                return False
            return bool(message.data == "via redis")

        await wait_until(delivered, what="delivery once Redis is up")
    finally:
        outputs = [app.stop() for app in apps]
        redis.kill()
    for output in outputs:
        assert output.count("Redis unreachable") == 1, output


async def _connected(ws: Socket) -> bool:
    stats = json.loads((await command(ws, "!stats")).removeprefix("stats "))
    return bool(stats["connected"])


def _registered(redis: RedisProcess) -> int:
    """How many processes are in the cluster-count set of the (restarted) Redis."""
    return len(redis.command("SMEMBERS", CHANNEL_PREFIX + "procs").split())


async def test_counts_after_a_redis_restart_are_right_or_unavailable(
    connect_ws: ConnectWs,
) -> None:
    """Redis restarted empty while B is frozen (SIGSTOP): A, connected again,
    answers its cluster count with BrokerUnavailableError until B has
    re-registered, never with a low count; then the count is right."""
    redis = RedisProcess()
    redis.start()
    # Heartbeats of 2 s: B, frozen for a moment, is not yet counted as dead.
    cluster = start_cluster(redis, heartbeat=2.0)
    frozen = cluster.b.process.pid
    try:
        topic = "restart-census"
        probe = await connect(connect_ws, cluster.a, topic)
        others = [await connect(connect_ws, app, topic) for app in cluster.apps[1:]]
        assert len(others) == 2
        await wait_until(lambda: _count_is(probe, topic, "1 3"), what="a count of 3")
        os.kill(frozen, signal.SIGSTOP)
        redis.kill()
        redis.start()  # same port, empty
        await wait_until(lambda: _registered(redis) == 2, what="A and C registered")
        await wait_until(lambda: _connected(probe), what="A connected again")
        reply = await command(probe, f"!count {topic}")
        assert reply.startswith(f"count {topic} unavailable: "), reply
        os.kill(frozen, signal.SIGCONT)
        replies: list[str] = []

        async def settled() -> bool:
            replies.append(await command(probe, f"!count {topic}"))
            return replies[-1] == f"count {topic} 1 3"

        await wait_until(settled, within=30, what="the count of 3 again")
        low = [
            r for r in replies if r != f"count {topic} 1 3" and "unavailable" not in r
        ]
        assert low == []
    finally:
        os.kill(frozen, signal.SIGCONT)
        stop_cluster(cluster)
