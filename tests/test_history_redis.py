"""Topic history and resume through RedisBroker on Redis Streams: two servers in
this process on one real redis-server (two workers, as far as Redis can tell).

The app is tests/history_app.py: topics under ``h:`` keep history and reach
clients as ``<epoch>:<offset>|<data>``.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from aiohttp_upgrade import SERVER_KEY, Server
from aiohttp_upgrade._redis_broker import RedisBroker

from .conftest import ConnectWs
from .history_app import create_app
from .redis_support import (
    RedisProcess,
    module_redis,  # noqa: F401 - the redis fixture
    requires_redis,
    wait_subscribed,
    wait_until,
)
from .test_history import fields, resume, text, ws_url

pytestmark = [pytest.mark.redis, requires_redis]

TOPIC = "h:redis"
Socket = aiohttp.ClientWebSocketResponse


@dataclass
class Worker:
    http: TestServer

    @property
    def server(self) -> Server[None]:
        return self.http.app[SERVER_KEY]

    @property
    def broker(self) -> RedisBroker:
        broker = self.server.broker
        assert isinstance(broker, RedisBroker)
        return broker


Start = Callable[..., Awaitable[Worker]]


@pytest.fixture
async def worker(
    aiohttp_server: Callable[..., Awaitable[TestServer]], redis: RedisProcess
) -> AsyncIterator[Start]:
    async def start(size: int = 1000, url: str | None = None) -> Worker:
        broker = RedisBroker(url or redis.url, backoff_base=0.05, backoff_cap=0.2)
        started = Worker(await aiohttp_server(create_app(broker, size)))
        await wait_until(lambda: started.broker.connected, what="broker connected")
        return started

    yield start


def topic_for(request: pytest.FixtureRequest) -> str:
    """A topic of the test's own (the module shares one Redis)."""
    return f"{TOPIC}:{request.node.name}"


async def lines(ws: Socket, n: int) -> list[str]:
    return [await text(ws) for _ in range(n)]


async def test_every_worker_sees_the_same_positions(
    worker: Start, connect_ws: ConnectWs, request: pytest.FixtureRequest
) -> None:
    """Messages published on either worker reach subscribers on both with the
    same consecutive positions, in the same order."""
    topic = topic_for(request)
    a, b = await worker(), await worker()
    on_a, on_b = await connect_ws(ws_url(a.http)), await connect_ws(ws_url(b.http))
    epoch = fields((await resume(on_a, topic))[-1])[1].split(":")[0]
    await resume(on_b, topic)
    await wait_until(lambda: a.broker.connected and b.broker.connected)
    a.server.publish(topic, "one")
    seen_a = await lines(on_a, 1)
    b.server.publish(topic, "two")
    seen_a += await lines(on_a, 1)
    seen_b = await lines(on_b, 2)
    assert seen_a == seen_b == [f"{epoch}:1|one", f"{epoch}:2|two"]


async def test_resume_on_another_worker_replays_from_redis(
    worker: Start, connect_ws: ConnectWs, request: pytest.FixtureRequest
) -> None:
    """A client that left worker A resumes on worker B and gets every message
    published meanwhile once, in order, then the live ones."""
    topic = topic_for(request)
    a, b = await worker(), await worker()
    first = await connect_ws(ws_url(a.http))
    position = fields((await resume(first, topic))[-1])[1]
    epoch = position.split(":")[0]
    await first.close()
    for i in range(1, 301):
        a.server.publish(topic, f"m{i}")
    await wait_until(lambda: a.broker.published >= 300, what="published")
    again = await connect_ws(ws_url(b.http))
    *replayed, answer = await resume(again, topic, position)
    assert fields(answer) == (True, f"{epoch}:300", 300, "-")
    assert replayed == [f"{epoch}:{i}|m{i}" for i in range(1, 301)]
    a.server.publish(topic, "live")
    assert await text(again) == f"{epoch}:301|live"


async def test_stream_holds_exactly_what_was_published(
    worker: Start, redis: RedisProcess, request: pytest.FixtureRequest
) -> None:
    """Every history publish is in the topic's stream and its offset counted:
    the Lua script adds and publishes together."""
    topic = topic_for(request)
    a = await worker()
    for i in range(50):
        a.server.publish(topic, f"x{i}")
    await wait_until(lambda: a.broker.published >= 50, what="published")
    meta, stream = a.broker.history_backend().keys(topic)
    assert redis.raw_command(b"XLEN", stream) == "50"
    assert redis.raw_command(b"HGET", meta, b"o") == "50"


async def test_redis_restart_changes_the_epoch(
    worker: Start, connect_ws: ConnectWs, request: pytest.FixtureRequest
) -> None:
    """After Redis restarts empty, a position of the lost history is answered
    'epoch' and the socket continues live in the new epoch."""
    redis = RedisProcess()
    redis.start()
    try:
        topic = topic_for(request)
        a = await worker(url=redis.url)
        for i in range(5):
            a.server.publish(topic, f"x{i}")
        await wait_until(lambda: a.broker.published >= 5, what="published")
        old = (await a.server.history.read(topic))[0]
        redis.kill()
        redis.start()
        await wait_until(lambda: a.broker.reconnects >= 1, what="reconnected")
        ws = await connect_ws(ws_url(a.http))
        recovered, position, replayed, reason = fields(
            (await resume(ws, topic, str(old)))[-1]
        )
        assert (recovered, replayed, reason) == (False, 0, "epoch")
        new_epoch, offset = position.split(":")
        assert new_epoch != old.epoch and offset == "0"
        a.server.publish(topic, "after")
        assert await text(ws) == f"{new_epoch}:1|after"
    finally:
        redis.kill()


async def test_position_older_than_the_trimmed_stream_is_too_old(
    worker: Start, connect_ws: ConnectWs, request: pytest.FixtureRequest
) -> None:
    """A position whose next message was trimmed (MAXLEN) is answered 'too_old'."""
    topic = topic_for(request)
    a = await worker(size=10)
    for i in range(500):
        a.server.publish(topic, f"x{i}")
    await wait_until(lambda: a.broker.published >= 500, what="published")
    epoch = (await a.server.history.read(topic))[0].epoch
    ws = await connect_ws(ws_url(a.http))
    answer = fields((await resume(ws, topic, f"{epoch}:3"))[-1])
    assert answer == (False, f"{epoch}:500", 0, "too_old")


async def test_ws_publish_skips_its_sender_through_redis(
    worker: Start, connect_ws: ConnectWs, request: pytest.FixtureRequest
) -> None:
    """ws.publish to a history topic reaches the other subscribers, on both
    workers, but not the socket that published it."""
    topic = topic_for(request)
    a, b = await worker(), await worker()
    sender, local, remote = (
        await connect_ws(ws_url(a.http)),
        await connect_ws(ws_url(a.http)),
        await connect_ws(ws_url(b.http)),
    )
    for ws in (sender, local, remote):
        await resume(ws, topic)
    await sender.send_str(f"pub {topic} from-sender")
    await sender.send_str(f"spub {topic} from-server")
    assert [line.split("|")[1] for line in await lines(local, 2)] == [
        "from-sender",
        "from-server",
    ]
    assert [line.split("|")[1] for line in await lines(remote, 2)] == [
        "from-sender",
        "from-server",
    ]
    assert (await text(sender)).endswith("|from-server")


async def test_resumes_racing_publishes_through_redis_lose_nothing(
    worker: Start, connect_ws: ConnectWs, request: pytest.FixtureRequest
) -> None:
    """Sockets resuming on a worker that has no subscriber of the topic yet,
    while the other worker publishes every loop turn, each get every offset
    after their position exactly once, in order."""
    topic = topic_for(request)
    a, b = await worker(), await worker()
    for i in range(100):
        a.server.publish(topic, f"x{i}")
    await wait_until(lambda: a.broker.published >= 100, what="published")
    epoch = (await a.server.history.read(topic))[0].epoch
    total = 1100

    async def publisher() -> None:
        for i in range(1000):
            a.server.publish(topic, f"y{i}")
            await asyncio.sleep(0)

    task = asyncio.create_task(publisher())
    clients = [await connect_ws(ws_url(b.http)) for _ in range(4)]
    for index, ws in enumerate(clients):
        await ws.send_str(f"resume {topic} {epoch}:{index * 20}")
        await asyncio.sleep(0.01 * index)
    await task
    for index, ws in enumerate(clients):
        offsets: list[int] = []
        while len(offsets) < total - index * 20:
            line = await text(ws)
            if line.startswith("resumed "):
                assert fields(line)[0], line
                continue
            offsets.append(int(line.split("|")[0].split(":")[1]))
        assert offsets == list(range(index * 20 + 1, total + 1))


async def test_messages_older_than_ttl_are_not_replayed(
    worker: Start,
    connect_ws: ConnectWs,
    redis: RedisProcess,
    request: pytest.FixtureRequest,
) -> None:
    """A stored message whose Redis time is older than the topic's ttl is
    outside the window: resuming before it answers 'too_old'."""
    topic = topic_for(request)
    a = await worker()
    meta, stream = a.broker.history_backend().keys(topic)
    record = struct.pack("!IBI", 3, 1, 0) + b"old"
    redis.raw_command(b"HSET", meta, b"e", b"abc", b"o", b"1")
    redis.raw_command(b"XADD", stream, b"1-0", b"r", record, b"t", b"0")
    ws = await connect_ws(ws_url(a.http))
    assert fields((await resume(ws, topic, "abc:0"))[-1]) == (
        False,
        "abc:1",
        0,
        "too_old",
    )


async def test_malformed_history_envelope_is_counted_and_ignored(
    worker: Start,
    connect_ws: ConnectWs,
    redis: RedisProcess,
    request: pytest.FixtureRequest,
) -> None:
    """A forged message on a history channel is counted in ``malformed`` and
    reaches nobody; the topic goes on."""
    topic = topic_for(request)
    a = await worker()
    ws = await connect_ws(ws_url(a.http))
    epoch = fields((await resume(ws, topic))[-1])[1].split(":")[0]
    await wait_subscribed(redis, a.broker.channel(topic).decode(), 1)
    channel = a.broker.channel(topic)
    for forged in (b"AH\x01" + b"o" * 8 + b"zz;1;", b"AH\x01" + b"o" * 8 + b"ab;x;"):
        redis.raw_command(b"PUBLISH", channel, forged)
    await wait_until(lambda: a.broker.malformed == 2, what="both counted")
    a.server.publish(topic, "fine")
    assert await text(ws) == f"{epoch}:1|fine"


async def test_plain_subscribe_gets_positioned_messages_through_redis(
    worker: Start,
    connect_ws: ConnectWs,
    redis: RedisProcess,
    request: pytest.FixtureRequest,
) -> None:
    """A socket that subscribed with ws.subscribe (no resume) to a history topic
    gets its messages formatted with their positions, from either worker."""
    topic = topic_for(request)
    a, b = await worker(), await worker()
    ws = await connect_ws(ws_url(b.http))
    await ws.send_str(f"sub {topic}")
    assert await text(ws) == f"sub {topic} True"
    await wait_subscribed(redis, b.broker.channel(topic).decode(), 1)
    a.server.publish(topic, "first")
    line = await text(ws)
    epoch = (await a.server.history.read(topic))[0].epoch
    assert line == f"{epoch}:1|first"


async def test_exclude_skips_sockets_through_redis(
    worker: Start, connect_ws: ConnectWs, request: pytest.FixtureRequest
) -> None:
    """server.publish(..., exclude=[ws]) to a history topic skips ws when the
    message comes back from Redis, and reaches the others on both workers."""
    topic = topic_for(request)
    a, b = await worker(), await worker()
    excluded, local, remote = (
        await connect_ws(ws_url(a.http)),
        await connect_ws(ws_url(a.http)),
        await connect_ws(ws_url(b.http)),
    )
    for ws in (excluded, local, remote):
        await resume(ws, topic)
    await excluded.send_str(f"xpub {topic} hidden")
    await excluded.send_str(f"spub {topic} shown")
    for ws in (local, remote):
        assert [line.split("|")[1] for line in await lines(ws, 2)] == [
            "hidden",
            "shown",
        ]
    assert (await text(excluded)).endswith("|shown")


def hash_tag(key: bytes) -> bytes:
    """What Redis Cluster hashes of ``key``: its first non-empty ``{...}``
    section, else the whole key."""
    start = key.find(b"{")
    end = key.find(b"}", start + 1)
    if start < 0 or end < 0 or end == start + 1:
        return key
    return key[start + 1 : end]


async def test_a_topics_keys_share_one_non_empty_hash_tag(worker: Start) -> None:
    """Both keys of a topic hash to one slot, whatever braces the topic has (one
    starting with '}' included), and distinct topics get distinct keys."""
    backend = (await worker()).broker.history_backend()
    topics = ["h:a", "}h", "}", "h:}x", "h:{y}", "{}", "}}"]
    keys = [backend.keys(topic) for topic in topics]
    for meta, stream in keys:
        assert hash_tag(meta) == hash_tag(stream) != meta
    assert len({key for pair in keys for key in pair}) == 2 * len(topics)


async def test_a_read_only_topic_expires_after_its_ttl(
    worker: Start, redis: RedisProcess, request: pytest.FixtureRequest
) -> None:
    """Reading a topic nobody published to creates its hash for the topic's ttl
    (600 s in the app), not for the day a published topic keeps it."""
    topic = topic_for(request)
    a = await worker()
    await a.server.history.read(topic)
    meta, _ = a.broker.history_backend().keys(topic)
    assert 0 < int(redis.raw_command(b"PTTL", meta)) <= 600_000
