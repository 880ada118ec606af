"""RedisBroker against a real redis-server, two Servers in this process.

Each Server has its own RedisBroker (its own origin and connections), as two
processes would; they are served on loopback ports and reached by real clients.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError

from aiohttp_upgrade import (
    BrokerUnavailableError,
    Server,
    ServerWebSocket,
)
from aiohttp_upgrade._redis import _compat
from aiohttp_upgrade._redis_broker import RedisBroker

from .conftest import ConnectWs, upgrade_with_data
from .redis_support import (
    ROOM,
    RedisProcess,
    Subscribe,
    module_redis,  # noqa: F401 - the redis fixture
    requires_redis,
    single_shard,
    wait_subscribed,
    wait_until,
)

pytestmark = [pytest.mark.redis, requires_redis]

TIMEOUT = 10
TOPIC = ROOM


Node = tuple[Server[str], RedisBroker, str]
StartNode = Callable[..., Awaitable[Node]]


@pytest.fixture
async def node(
    redis: RedisProcess, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> AsyncIterator[StartNode]:
    """Start a Server with a RedisBroker on the test Redis; return it and its URL."""

    async def start(**options: Any) -> Node:
        url_or_client = options.pop("client", redis.url)
        handler = options.pop("handler", None) or Subscribe()
        broker = RedisBroker(url_or_client, **options)
        server: Server[str] = Server(handler, broker=broker)
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


# -- topics that are not valid UTF-8 ---------------------------------------------------

# A lone surrogate: a str Python accepts, which cannot be encoded as UTF-8.
BAD_TOPIC = "room\ud800"


class Misuse(Subscribe):
    """A text message names a socket method to call with BAD_TOPIC; the error it
    raises comes back as text."""

    def message(self, ws: ServerWebSocket[str], message: str | bytes) -> None:
        name = str(message)
        args = (BAD_TOPIC, "x") if name == "publish" else (BAD_TOPIC,)
        try:
            getattr(ws, name)(*args)
        except Exception as exc:
            ws.send(f"{type(exc).__name__}: {exc}")
        else:
            ws.send("no error")


async def relays(server: Server[str], far: aiohttp.ClientWebSocketResponse) -> bool:
    """True once a publish on ``server`` reaches ``far`` through Redis."""
    server.publish(TOPIC, "relayed")
    return bool(await receive(far) == "relayed")


@pytest.mark.parametrize(
    "method", ["subscribe", "unsubscribe", "is_subscribed", "publish"]
)
async def test_socket_calls_refuse_a_topic_that_is_not_utf8(
    node: StartNode, redis: RedisProcess, connect_ws: ConnectWs, method: str
) -> None:
    """ws.subscribe/unsubscribe/is_subscribed/publish with a lone surrogate in the
    topic raise ValueError saying so, and the broker goes on relaying."""
    _, _, far_url = await node(channel_prefix=f"utf8-{method}:")
    server, broker, url = await node(channel_prefix=f"utf8-{method}:", handler=Misuse())
    far = await connect_ws(far_url)
    near = await connect_ws(url)
    await wait_subscribed(redis, f"utf8-{method}:room", 2)
    await near.send_str(method)
    reply = await receive(near)
    assert reply.startswith("ValueError: "), reply
    assert "not valid UTF-8" in reply
    assert await relays(server, far)
    assert broker.task_failures == 0


@pytest.mark.parametrize(
    "call",
    [
        lambda server: server.publish(BAD_TOPIC, "x"),
        lambda server: server.subscriber_count(BAD_TOPIC),
        lambda server: server.cluster_subscriber_count(BAD_TOPIC),
    ],
    ids=["publish", "subscriber_count", "cluster_subscriber_count"],
)
async def test_server_calls_refuse_a_topic_that_is_not_utf8(
    node: StartNode,
    redis: RedisProcess,
    connect_ws: ConnectWs,
    call: Callable[[Server[str]], Any],
) -> None:
    """server.publish/subscriber_count/cluster_subscriber_count with a lone
    surrogate in the topic raise ValueError, and the broker goes on relaying."""
    _, _, far_url = await node(channel_prefix="utf8-server:")
    server, broker, _ = await node(channel_prefix="utf8-server:")
    far = await connect_ws(far_url)
    await wait_subscribed(redis, "utf8-server:room", 1)
    with pytest.raises(ValueError, match="not valid UTF-8") as caught:
        result = call(server)
        if asyncio.iscoroutine(result):
            await result
    assert type(caught.value) is ValueError
    assert await relays(server, far)
    assert broker.task_failures == 0


# -- background tasks that fail -------------------------------------------------------


def task_failure_logs(caplog: pytest.LogCaptureFixture, task: str) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno == logging.ERROR
        and record.exc_info is not None
        and f"RedisBroker {task} task failed" in record.getMessage()
    ]


async def test_the_writer_survives_an_unexpected_exception(
    node: StartNode,
    redis: RedisProcess,
    connect_ws: ConnectWs,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A message the writer cannot encode (a lone surrogate in a topic handed to
    Broker.publish directly) fails the writer: it is logged with its traceback
    once, counted in task_failures, and the writer restarts and relays again."""
    _, _, far_url = await node(channel_prefix="crash-writer:")
    server, broker, _ = await node(channel_prefix="crash-writer:")
    far = await connect_ws(far_url)
    await wait_subscribed(redis, "crash-writer:room", 1)
    broker.publish(BAD_TOPIC, 1, b"x", False)
    await wait_until(lambda: broker.task_failures == 1, what="a writer failure")
    await wait_until(lambda: broker.connected, what="the writer to reconnect")
    assert await relays(server, far)
    assert len(task_failure_logs(caplog, "writer")) == 1
    assert broker.task_failures == 1


async def test_the_reader_survives_an_unexpected_exception(
    node: StartNode,
    redis: RedisProcess,
    connect_ws: ConnectWs,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An exception the reader does not expect is logged once, counted, and the
    reader reconnects and delivers again. (Injected: the reader's own code raises
    nothing on any input Redis can send, so its reply handler is made to raise
    once.)"""
    server, _, _ = await node(channel_prefix="crash-reader:")
    _, far_broker, far_url = await node(channel_prefix="crash-reader:")
    far = await connect_ws(far_url)
    await wait_subscribed(redis, "crash-reader:room", 1)
    real = single_shard(far_broker).reader.on_reply
    calls: list[Any] = []

    def fail_once(reply: Any) -> None:
        calls.append(reply)
        if len(calls) == 1:
            raise RuntimeError("injected reader fault")
        real(reply)

    monkeypatch.setattr(single_shard(far_broker).reader, "on_reply", fail_once)
    server.publish(TOPIC, "lost")  # at most once: the failing reply is not retried
    await wait_until(lambda: far_broker.task_failures == 1, what="a reader failure")
    await wait_until(lambda: far_broker.connected, what="the reader to reconnect")
    await wait_subscribed(redis, "crash-reader:room", 1)
    assert await relays(server, far)
    assert len(task_failure_logs(caplog, "reader")) == 1


@pytest.mark.parametrize(
    ("task", "part", "method"),
    [
        ("heartbeat", lambda broker: single_shard(broker).reader, "ping"),
        ("watchdog", lambda broker: single_shard(broker).watchdog, "check_stalls"),
    ],
    ids=["heartbeat", "watchdog"],
)
async def test_a_timer_task_restarts_after_an_unexpected_exception(
    node: StartNode,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    task: str,
    part: Callable[[RedisBroker], object],
    method: str,
) -> None:
    """The heartbeat and the watchdog, failing once, are logged once, counted and
    run again. (Injected: what they call raises nothing on its own, so one method
    is made to raise once.)"""
    _, broker, _ = await node(
        channel_prefix=f"crash-{task}:", heartbeat_interval=0.05, stall_timeout=0.2
    )
    target = part(broker)
    real = getattr(target, method)
    calls: list[int] = []

    def fail_once() -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError(f"injected {task} fault")
        return real()

    monkeypatch.setattr(target, method, fail_once)
    await wait_until(lambda: len(calls) >= 3, what=f"the {task} to run again")
    assert broker.task_failures == 1
    assert len(task_failure_logs(caplog, task)) == 1


async def test_a_persistent_fault_restarts_with_backoff(
    node: StartNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task that fails every time is restarted after growing delays, not in a
    tight loop. (Injected: the watchdog's check is made to raise every time.)"""
    _, broker, _ = await node(
        channel_prefix="persistent:",
        stall_timeout=0.04,
        backoff_base=0.02,
        backoff_cap=0.08,
    )
    loop = asyncio.get_running_loop()
    times: list[float] = []

    def always_fail() -> None:
        times.append(loop.time())
        raise RuntimeError("injected persistent fault")

    monkeypatch.setattr(single_shard(broker).watchdog, "check_stalls", always_fail)
    await wait_until(lambda: len(times) >= 5, what="five failures")
    assert broker.task_failures >= 5
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    # Each restart waits the watchdog's tick plus a backoff of at least half
    # backoff_base, doubling up to backoff_cap. These minimums are reached when
    # the random draw is 0.5, and a timer may fire up to the loop's clock
    # resolution early (1 ms on uvloop): hence 25 % below them.
    margin = 0.75
    assert all(gap >= margin * (0.01 + 0.01) for gap in gaps), gaps
    assert gaps[-1] >= margin * (0.01 + 0.04), gaps


# -- queue bounds and a stalled Redis -------------------------------------------------


async def test_byte_bound_drops_and_counts_the_excess(
    node: StartNode, redis: RedisProcess, connect_ws: ConnectWs
) -> None:
    """Past max_queue_bytes of payload waiting for Redis, publishes are dropped
    and counted; the queued ones arrive in order."""
    _, _, far_url = await node(channel_prefix="bytes:")
    server, broker, _ = await node(channel_prefix="bytes:", max_queue_bytes=10_000)
    far = await connect_ws(far_url)
    await wait_subscribed(redis, "bytes:room", 1)
    await wait_until(lambda: broker.queued_bytes == 0, what="nothing in flight")
    messages = [f"{i:04d}" + "x" * 996 for i in range(15)]
    for message in messages:
        server.publish(TOPIC, message)
    assert broker.dropped == 5
    assert broker.queued_bytes == 10_000
    assert [await receive(far) for _ in range(10)] == messages[:10]
    await wait_until(lambda: broker.queued_bytes == 0, what="the queue to empty")


async def test_a_message_larger_than_the_byte_bound_goes_alone(
    node: StartNode, redis: RedisProcess, connect_ws: ConnectWs
) -> None:
    """One message larger than max_queue_bytes is still sent when nothing else
    waits for Redis; the next one in the same turn is dropped."""
    _, _, far_url = await node(channel_prefix="big:")
    server, broker, _ = await node(channel_prefix="big:", max_queue_bytes=1000)
    far = await connect_ws(far_url)
    await wait_subscribed(redis, "big:room", 1)
    await wait_until(lambda: broker.queued_bytes == 0, what="nothing in flight")
    server.publish(TOPIC, b"b" * 5000)
    server.publish(TOPIC, b"small")
    assert broker.dropped == 1
    assert await receive(far) == b"b" * 5000
    server.publish(TOPIC, b"next")
    assert await receive(far) == b"next"


@pytest.fixture
def stoppable() -> Iterator[RedisProcess]:
    """A redis-server of its own, for a test that stops it with SIGSTOP; continued
    and killed at the end whatever happened."""
    process = RedisProcess()
    process.start()
    yield process
    if process.process is not None:
        os.kill(process.pid, signal.SIGCONT)
    process.kill()


PAYLOAD_64K = b"p" * 65536


async def publish_until(server: Server[str], done: Callable[[], bool]) -> None:
    """Publish 64 KiB messages, letting the broker run between them, until
    ``done()`` (at most 30 s: generous, so that a slow machine does not fail)."""
    async with asyncio.timeout(30):
        while not done():
            server.publish(TOPIC, PAYLOAD_64K)
            await asyncio.sleep(0)


async def test_queued_bytes_stay_bounded_while_redis_is_stopped(
    node: StartNode, stoppable: RedisProcess
) -> None:
    """With Redis stopped (SIGSTOP) and 64 KiB publishes, what waits for Redis
    never passes max_queue_bytes; the excess is dropped and counted."""
    bound = 1024 * 1024
    server, broker, _ = await node(
        client=stoppable.url, max_queue_bytes=bound, stall_timeout=60
    )
    os.kill(stoppable.pid, signal.SIGSTOP)
    highest = 0

    def enough() -> bool:
        nonlocal highest
        highest = max(highest, broker.queued_bytes)
        assert broker.queued_bytes <= bound
        return broker.dropped >= 100

    await publish_until(server, enough)
    assert bound - len(PAYLOAD_64K) < highest <= bound
    assert broker.connected  # not yet detected: stall_timeout is 60 s


async def test_memory_while_sending_stays_within_twice_the_byte_bound(
    node: StartNode, stoppable: RedisProcess
) -> None:
    """With Redis stopped (SIGSTOP) and max_queue_bytes of distinct payloads handed
    to the broker in one turn, the process's peak memory while the writer sends
    them stays within about twice the bound, and once it is blocked sending, near
    one bound (what the socket has not taken)."""
    bound = 8 * 1024 * 1024
    server, broker, _ = await node(
        client=stoppable.url, max_queue_bytes=bound, stall_timeout=60
    )
    writer = single_shard(broker).writer
    await wait_until(lambda: not writer.in_flight, what="nothing in flight")
    os.kill(stoppable.pid, signal.SIGSTOP)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(bound // len(PAYLOAD_64K)):
            # Distinct objects that only the broker holds, as an app's would be.
            server.publish(TOPIC, i.to_bytes(4, "big") * (len(PAYLOAD_64K) // 4))
        assert broker.dropped == 0
        # Taking the batch, packing and writing it is synchronous up to drain().
        await wait_until(lambda: writer.in_flight, what="the batch to be sent")
        await asyncio.sleep(0)
        blocked, peak = (n - before for n in tracemalloc.get_traced_memory())
    finally:
        tracemalloc.stop()
    assert broker.queued_bytes == bound  # sent, not answered: Redis is stopped
    assert peak < 2.4 * bound, peak / bound
    assert blocked < 1.25 * bound, blocked / bound


async def test_a_stopped_redis_is_detected_while_the_writer_is_blocked(
    node: StartNode, stoppable: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """With Redis stopped (SIGSTOP) while the writer is blocked sending (more
    queued than the socket buffers take), the broker reports itself disconnected
    within stall_timeout, logs the outage once and lets go of what was queued."""
    server, broker, _ = await node(
        client=stoppable.url, stall_timeout=1.0, max_queue_bytes=32 * 1024 * 1024
    )
    assert broker.connected  # start() returns once connected and registered
    os.kill(stoppable.pid, signal.SIGSTOP)
    await publish_until(server, lambda: not broker.connected)
    assert broker.queued_bytes == 0
    outages = [r for r in caplog.records if "Redis unreachable" in r.getMessage()]
    assert len(outages) == 1, outages
    assert "no reply" in outages[0].getMessage()


async def test_delivery_resumes_after_a_stopped_redis_continues(
    node: StartNode, stoppable: RedisProcess, connect_ws: ConnectWs
) -> None:
    """After a stall was detected, SIGCONT brings delivery back, and the outage
    is counted as recovered from."""
    server, broker, _ = await node(client=stoppable.url, stall_timeout=1.0)
    _, _, far_url = await node(client=stoppable.url, stall_timeout=1.0)
    far = await connect_ws(far_url)
    await wait_subscribed(stoppable, "aiohttp_upgrade:room", 1)
    os.kill(stoppable.pid, signal.SIGSTOP)
    await publish_until(server, lambda: not broker.connected)
    os.kill(stoppable.pid, signal.SIGCONT)

    async def delivered() -> bool:
        server.publish(TOPIC, "after")
        try:
            async with asyncio.timeout(0.2):
                while True:
                    if await receive(far) == "after":
                        return True
        except TimeoutError:
            return False

    await wait_until(delivered, within=30, what="delivery after SIGCONT")
    await wait_until(lambda: broker.reconnects == 1, what="the outage to end")
    assert broker.connected


# -- cluster counts across a Redis restart --------------------------------------------


async def test_cluster_count_error_names_the_failure(node: StartNode) -> None:
    """BrokerUnavailableError says what failed, with the underlying message."""
    dead = RedisProcess()  # never started: nothing listens on its port
    server, _, _ = await node(client=dead.url, channel_prefix="why:")
    with pytest.raises(BrokerUnavailableError, match=r"connecting to 127\.0\.0\.1"):
        await server.cluster_subscriber_count(TOPIC)


async def test_first_cluster_count_after_a_redis_restart_is_right(
    node: StartNode, connect_ws: ConnectWs
) -> None:
    """Redis killed and restarted on the same port: once both brokers report
    themselves connected, the first cluster count is right (no stale pooled
    connection, no missing registration)."""
    redis = RedisProcess()
    redis.start()
    try:
        server, broker, url = await node(client=redis.url, channel_prefix="again:")
        _, far_broker, far_url = await node(client=redis.url, channel_prefix="again:")
        await connect_ws(url)
        await connect_ws(far_url)
        assert await wait_until(
            lambda: counted(server, 2), what="a count of 2"
        )  # the pool now holds a connection
        redis.kill()
        await wait_until(lambda: not broker.connected, what="the outage")
        await wait_until(lambda: not far_broker.connected, what="the outage")
        redis.start()
        await wait_until(
            lambda: broker.connected and far_broker.connected, what="reconnection"
        )
        assert await server.cluster_subscriber_count(TOPIC) == 2
    finally:
        redis.kill()


async def test_first_cluster_count_after_a_restart_with_several_pooled_connections(
    node: StartNode, connect_ws: ConnectWs
) -> None:
    """Redis killed and restarted on the same port while the pool held several
    idle connections (from concurrent counts): once the broker reports itself
    connected, the first cluster count is right, not BrokerUnavailableError."""
    redis = RedisProcess()
    redis.start()
    try:
        server, broker, url = await node(client=redis.url, channel_prefix="pool:")
        _, far_broker, far_url = await node(client=redis.url, channel_prefix="pool:")
        await connect_ws(url)
        await connect_ws(far_url)
        await wait_until(lambda: counted(server, 2), what="a count of 2")
        counts = [server.cluster_subscriber_count(TOPIC) for _ in range(6)]
        assert await asyncio.gather(*counts) == [2] * 6
        # Each broker has its writer and reader; the rest are pooled, idle.
        assert redis_connections(redis) >= 4 + 4
        redis.kill()
        await wait_until(lambda: not broker.connected, what="the outage")
        await wait_until(lambda: not far_broker.connected, what="the outage")
        redis.start()
        await wait_until(
            lambda: broker.connected and far_broker.connected, what="reconnection"
        )
        assert await server.cluster_subscriber_count(TOPIC) == 2
    finally:
        redis.kill()


async def test_a_broker_closed_after_a_redis_restart_leaves_the_count_at_once(
    node: StartNode, connect_ws: ConnectWs
) -> None:
    """After Redis was restarted while the pool held idle connections, a broker
    that closes still removes itself from the cluster counts at once (its
    unregister does not meet a stale pooled connection)."""
    redis = RedisProcess()
    redis.start()
    try:
        server, broker, url = await node(client=redis.url, channel_prefix="gone:")
        far, far_broker, _ = await node(client=redis.url, channel_prefix="gone:")
        await connect_ws(url)
        await wait_until(lambda: counted(far, 1), what="a count of 1")
        counts = [server.cluster_subscriber_count(TOPIC) for _ in range(4)]
        assert await asyncio.gather(*counts) == [1] * 4  # the pool holds several
        redis.kill()
        await wait_until(lambda: not broker.connected, what="the outage")
        redis.start()
        await wait_until(
            lambda: broker.connected and far_broker.connected, what="reconnection"
        )
        await wait_until(lambda: broker.reconnects == 1, what="the outage to end")
        await wait_until(lambda: counted(far, 1), what="registered again")
        await broker.close()
        assert await far.cluster_subscriber_count(TOPIC) == 0
    finally:
        redis.kill()


async def counted(server: Server[str], expected: int) -> bool:
    return await server.cluster_subscriber_count(TOPIC) == expected


# -- the redis-py internals the broker relies on (aiohttp_upgrade._redis._compat) --


@pytest.fixture
async def dedicated(
    redis: RedisProcess, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Redis, AbstractConnection]]:
    """A client of the test Redis (RESP ``request.param``, default 2) and one
    connected connection from its pool."""
    client = Redis.from_url(redis.url, protocol=getattr(request, "param", 2))
    pool = client.connection_pool
    connection: AbstractConnection = pool.get_available_connection()  # type: ignore[no-untyped-call]
    await connection.connect()  # type: ignore[no-untyped-call]
    yield client, connection
    await connection.disconnect(nowait=True)
    await pool.release(connection)
    await client.aclose()


async def test_compat_abort_ends_a_redis_py_connection_at_once(
    dedicated: tuple[Redis, AbstractConnection],
) -> None:
    """_compat.abort still finds the socket of this redis-py's connection and
    closes it: a task reading from it sees the end."""
    _, connection = dedicated
    assert _compat.abort(connection)
    with pytest.raises(RedisConnectionError):
        async with asyncio.timeout(TIMEOUT):
            await connection.read_response()
    assert not _compat.abort(None)


@pytest.mark.parametrize("dedicated", [2, 3], ids=["resp2", "resp3"], indirect=True)
async def test_compat_push_messages_reach_read_response(
    dedicated: tuple[Redis, AbstractConnection],
) -> None:
    """After _compat.return_push_messages, a message published to a channel the
    connection subscribed is returned by read_response (RESP2 and RESP3)."""
    client, connection = dedicated
    _compat.return_push_messages(connection)
    await connection.send_command("SUBSCRIBE", "compat")
    async with asyncio.timeout(TIMEOUT):
        confirmation = await connection.read_response(push_request=True)
        assert confirmation[0] == b"subscribe"
        await client.publish("compat", b"hi")
        message = await connection.read_response(push_request=True)
    assert list(message) == [b"message", b"compat", b"hi"]


def test_compat_finds_the_push_handler_of_this_redis_py() -> None:
    """The parser of this redis-py's asyncio connection still has the push
    handler that _compat.return_push_messages sets (the private attribute it
    reads is still there)."""
    connection = Redis().connection_pool.make_connection()  # type: ignore[no-untyped-call]
    assert _compat.return_push_messages(connection)
