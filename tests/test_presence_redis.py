"""Presence through RedisBroker: servers in this process, each with its own
broker, on a real redis-server. Deltas, resyncs, expiry and a Redis restart."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from aiohttp_upgrade import RedisBroker, Server

from .conftest import ConnectWs, upgrade_with_data
from .redis_support import RedisProcess, requires_redis, wait_until
from .test_presence import ROOM, Action, Diff, Tracker, run, track

pytestmark = [pytest.mark.redis, requires_redis]

TIMEOUT = 10
CHANNEL = "\xffpresence"

Node = tuple[Server[Any], Tracker, str]
StartNode = Callable[..., Awaitable[Node]]


@pytest.fixture
def redis() -> Iterator[RedisProcess]:
    """A redis-server of this test's own (some tests restart it)."""
    process = RedisProcess()
    process.start()
    yield process
    process.kill()


@pytest.fixture
async def node(
    redis: RedisProcess, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> AsyncIterator[StartNode]:
    """Start a Server (a Tracker handler) with a RedisBroker on the test Redis."""

    async def start(**options: Any) -> Node:
        handler = Tracker()
        broker = RedisBroker(redis.url, **options)
        server: Server[Any] = Server(handler, broker=broker)
        app = web.Application()
        server.setup(app)
        app.router.add_get("/ws", server.handler(upgrade_with_data()))
        http = await aiohttp_server(app)
        url = str(http.make_url("/ws")).replace("http://", "ws://", 1)
        return server, handler, url

    yield start


async def diff_with(handler: Tracker, check: Callable[[Diff], bool]) -> Diff:
    """The first diff of ``handler`` that passes ``check`` (earlier ones dropped)."""
    while True:
        diff = await asyncio.wait_for(handler.diffs.get(), TIMEOUT)
        if check(diff):
            return diff


async def started(server: Server[Any]) -> None:
    """Wait until the broker is connected and listening to presence."""
    broker = server.broker
    assert isinstance(broker, RedisBroker)
    await wait_until(lambda: broker.connected, what="the broker connected")


async def test_a_join_on_one_process_reaches_the_others_view_and_hook(
    node: StartNode, connect_ws: ConnectWs
) -> None:
    """A member tracked on A is listed by B and B's hook gets the join."""
    a, a_handler, a_url = await node()
    b, b_handler, _ = await node()
    await started(a)
    await started(b)
    client = await connect_ws(a_url)
    await run(a_handler, client, track("alice", {"name": "Alice"}))
    diff = await diff_with(b_handler, lambda d: "alice" in d[1])
    assert diff == (ROOM, {"alice": [{"name": "Alice"}]}, {})
    assert b.presence.list(ROOM) == {"alice": [{"name": "Alice"}]}


async def test_a_close_on_one_process_is_a_leave_on_the_others(
    node: StartNode, connect_ws: ConnectWs
) -> None:
    """A's socket closing removes its member from B's view (B's hook sees it leave)."""
    a, a_handler, a_url = await node()
    b, b_handler, _ = await node()
    await started(a)
    await started(b)
    client = await connect_ws(a_url)
    await run(a_handler, client, track("bob", 1))
    await diff_with(b_handler, lambda d: "bob" in d[1])
    await client.close()
    diff = await diff_with(b_handler, lambda d: "bob" in d[2])
    assert diff == (ROOM, {}, {"bob": [1]})
    assert b.presence.list(ROOM) == {}


async def test_one_key_on_two_processes_is_one_member_with_two_metas(
    node: StartNode, connect_ws: ConnectWs
) -> None:
    """Tabs of one key on two processes are one member everywhere, metas from both."""
    a, a_handler, a_url = await node()
    b, b_handler, b_url = await node()
    await started(a)
    await started(b)
    await run(a_handler, await connect_ws(a_url), track("carol", "laptop"))
    await run(b_handler, await connect_ws(b_url), track("carol", "phone"))
    await diff_with(a_handler, lambda d: "phone" in d[1].get("carol", []))
    await diff_with(b_handler, lambda d: "laptop" in d[1].get("carol", []))
    assert sorted(a.presence.get(ROOM, "carol")) == ["laptop", "phone"]
    assert sorted(b.presence.get(ROOM, "carol")) == ["laptop", "phone"]


async def test_an_update_reaches_the_other_process(
    node: StartNode, connect_ws: ConnectWs
) -> None:
    """update_presence() on A shows on B as the old meta leaving, the new joining."""
    a, a_handler, a_url = await node()
    b, b_handler, _ = await node()
    await started(a)
    await started(b)
    client = await connect_ws(a_url)
    await run(a_handler, client, track("dave", "here"))
    await diff_with(b_handler, lambda d: "dave" in d[1])
    await run(a_handler, client, lambda ws: ws.update_presence(ROOM, "away"))
    diff = await diff_with(b_handler, lambda d: "dave" in d[2])
    assert diff == (ROOM, {"dave": ["away"]}, {"dave": ["here"]})


async def test_a_process_started_later_gets_the_members_already_there(
    node: StartNode, connect_ws: ConnectWs
) -> None:
    """A new process asks for everyone's state and lists the members tracked before it."""
    a, a_handler, a_url = await node()
    await started(a)
    await run(a_handler, await connect_ws(a_url), track("erin", 5))
    b, b_handler, _ = await node()
    diff = await diff_with(b_handler, lambda d: "erin" in d[1])
    assert diff == (ROOM, {"erin": [5]}, {})
    assert b.presence.list(ROOM) == {"erin": [5]}


async def test_a_new_process_makes_no_diff_on_the_others(
    node: StartNode, connect_ws: ConnectWs
) -> None:
    """B answering C's hello resends its state; A, which has it, sees no change."""
    a, a_handler, _ = await node()
    b, b_handler, b_url = await node()
    await started(a)
    await started(b)
    await run(b_handler, await connect_ws(b_url), track("frank", 1))
    await diff_with(a_handler, lambda d: "frank" in d[1])
    _, c_handler, c_url = await node()
    await diff_with(c_handler, lambda d: "frank" in d[1])
    # A marker after C's resync: the next diff A sees is the marker's.
    await run(c_handler, await connect_ws(c_url), track("marker", 1))
    diff = await diff_with(a_handler, lambda d: True)
    assert diff == (ROOM, {"marker": [1]}, {})


async def test_a_redis_restart_shows_no_leave_and_later_changes_arrive(
    node: StartNode, connect_ws: ConnectWs, redis: RedisProcess
) -> None:
    """After Redis restarts empty, B keeps A's members (no leave is seen) and a
    member A tracks afterwards reaches B."""
    a, a_handler, a_url = await node(backoff_cap=0.2, heartbeat_interval=0.2)
    b, b_handler, _ = await node(backoff_cap=0.2, heartbeat_interval=0.2)
    await started(a)
    await started(b)
    await run(a_handler, await connect_ws(a_url), track("gina", 1))
    await diff_with(b_handler, lambda d: "gina" in d[1])
    redis.kill()
    redis.start()
    await started(a)
    await started(b)
    await run(a_handler, await connect_ws(a_url), track("hal", 2))
    diff = await diff_with(b_handler, lambda d: bool(d[1] or d[2]))
    assert diff == (ROOM, {"hal": [2]}, {})
    assert b.presence.list(ROOM) == {"gina": [1], "hal": [2]}


async def test_a_process_that_stops_beating_has_its_members_removed(
    node: StartNode, connect_ws: ConnectWs
) -> None:
    """When A's broker stops without untracking (as a killed process), B drops
    A's members once A has been silent for 3 heartbeat intervals."""
    a, a_handler, a_url = await node(heartbeat_interval=0.1)
    b, b_handler, _ = await node(heartbeat_interval=0.1)
    await started(a)
    await started(b)
    await run(a_handler, await connect_ws(a_url), track("ivy", 1))
    await diff_with(b_handler, lambda d: "ivy" in d[1])
    a.presence.attach(None)  # A's sockets stay tracked, but A tells nobody ...
    await a.broker.close()  # ... and stops beating
    diff = await diff_with(b_handler, lambda d: "ivy" in d[2])
    assert diff == (ROOM, {}, {"ivy": [1]})


async def test_publish_local_stays_on_this_process(
    node: StartNode, connect_ws: ConnectWs
) -> None:
    """presence.publish_local() reaches this process's subscribers, not the others'."""
    a, a_handler, a_url = await node()
    b, b_handler, b_url = await node()
    await started(a)
    await started(b)
    near, far = await connect_ws(a_url), await connect_ws(b_url)
    await run(a_handler, near, lambda ws: ws.subscribe(ROOM))
    await run(b_handler, far, lambda ws: ws.subscribe(ROOM))
    a.presence.publish_local(ROOM, "local news")
    b.publish(ROOM, "marker")
    assert (await asyncio.wait_for(near.receive(), TIMEOUT)).data == "local news"
    assert (await asyncio.wait_for(far.receive(), TIMEOUT)).data == "marker"


async def test_a_malformed_presence_message_is_counted_and_ignored(
    node: StartNode, connect_ws: ConnectWs, redis: RedisProcess
) -> None:
    """Garbage on the presence channel is counted in malformed; presence goes on."""
    a, a_handler, a_url = await node()
    b, b_handler, _ = await node()
    await started(a)
    await started(b)
    channel = "aiohttp_upgrade:" + CHANNEL
    redis.raw_command(b"PUBLISH", channel.encode("latin-1"), b"{not json")
    bad = json.dumps({"o": "x", "t": "d", "s": 1, "c": [[]]}).encode()
    redis.raw_command(b"PUBLISH", channel.encode("latin-1"), bad)
    assert isinstance(b.broker, RedisBroker)
    await wait_until(lambda: b.broker.malformed == 2, what="two malformed")  # type: ignore[attr-defined]
    await run(a_handler, await connect_ws(a_url), track("jack", 1))
    await diff_with(b_handler, lambda d: "jack" in d[1])


async def test_a_gap_in_a_process_deltas_asks_it_for_its_state(
    node: StartNode, redis: RedisProcess
) -> None:
    """A delta whose number skips one makes the receiver ask its sender (a hello
    addressed to it) for its state; the delta is applied meanwhile."""
    b, _, _ = await node()
    await started(b)
    listener = Redis.from_url(redis.url)
    pubsub = listener.pubsub()
    channel = ("aiohttp_upgrade:" + CHANNEL).encode("latin-1")
    await pubsub.subscribe(channel)
    try:

        def delta(seq: int, key: str) -> bytes:
            change = [seq, ROOM, key, None]
            return json.dumps(
                {"o": "ghost", "t": "d", "s": seq, "c": [change]}
            ).encode()

        await listener.publish(channel, delta(1, "first"))
        await listener.publish(channel, delta(3, "after a gap"))
        async with asyncio.timeout(TIMEOUT):
            async for message in pubsub.listen():
                if message["type"] != "message":
                    continue
                sent = json.loads(message["data"])
                if sent.get("t") == "h" and sent.get("to") == "ghost":
                    break
        assert b.presence.list(ROOM) == {"first": [None], "after a gap": [None]}
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await listener.aclose()


async def test_a_failing_forget_is_logged_and_expiry_goes_on(
    node: StartNode,
    connect_ws: ConnectWs,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """When forgetting one silent process raises, the error is logged and the
    expiry timer still removes the members of another silent process."""
    a, a_handler, a_url = await node(heartbeat_interval=0.1)
    b, b_handler, _ = await node(heartbeat_interval=0.1)
    c, c_handler, c_url = await node(heartbeat_interval=0.1)
    for server in (a, b, c):
        await started(server)
    await run(a_handler, await connect_ws(a_url), track("ivy", 1))
    await run(c_handler, await connect_ws(c_url), track("jo", 2))
    await diff_with(b_handler, lambda d: "jo" in d[1] or "ivy" in d[1])
    await wait_until(lambda: len(b.presence.list(ROOM)) == 2, what="both members")
    view, forget = b.presence, type(b.presence).forget
    failures: list[str] = []

    def failing(self: Any, node: str) -> None:
        if self is view and not failures:
            failures.append(node)
            raise RuntimeError("forget failed")
        forget(self, node)

    monkeypatch.setattr(type(view), "forget", failing)
    for server in (a, c):
        server.presence.attach(None)  # their sockets stay tracked, untold ...
        await server.broker.close()  # ... and they stop beating
    await wait_until(lambda: len(b.presence.list(ROOM)) == 1, what="one expired")
    assert "forget failed" in caplog.text


def track_many(topics: int, meta: str) -> Action:
    """Track the socket in ``topics`` topics, each entry with ``meta``."""

    def action(ws: Any) -> None:
        for index in range(topics):
            ws.track(f"room-{index}", "many", meta)

    return action


async def test_a_state_larger_than_the_pubsub_buffer_arrives_in_parts(
    node: StartNode, connect_ws: ConnectWs, redis: RedisProcess
) -> None:
    """A process's state bigger than a subscriber's output-buffer limit reaches
    a process started later whole: it is sent in parts of at most
    max_batch_bytes, the last one replacing what the receiver knew."""
    redis.raw_command(
        b"CONFIG", b"SET", b"client-output-buffer-limit", b"pubsub 262144 0 0"
    )
    a, a_handler, a_url = await node(max_batch_bytes=65_536)
    await started(a)
    await run(a_handler, await connect_ws(a_url), track_many(1000, "m" * 500))
    b, _, _ = await node()
    await started(b)
    await wait_until(lambda: len(b.presence.topics()) == 1000, what="the state")
    assert b.presence.get("room-999", "many") == ["m" * 500]


async def test_a_delta_larger_than_the_pubsub_buffer_arrives_in_parts(
    node: StartNode, connect_ws: ConnectWs, redis: RedisProcess
) -> None:
    """A turn's changes bigger than a subscriber's output-buffer limit reach
    the other process: they are sent as several deltas of at most
    max_batch_bytes."""
    redis.raw_command(
        b"CONFIG", b"SET", b"client-output-buffer-limit", b"pubsub 262144 0 0"
    )
    a, a_handler, a_url = await node(max_batch_bytes=65_536)
    b, _, _ = await node()
    await started(a)
    await started(b)
    await run(a_handler, await connect_ws(a_url), track_many(1000, "m" * 500))
    await wait_until(lambda: len(b.presence.topics()) == 1000, what="the deltas")
    assert b.presence.get("room-0", "many") == ["m" * 500]
