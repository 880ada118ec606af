"""The demo's workers on a real Redis Cluster (``DEMO_REDIS_CLUSTER=1``): two
worker processes on one SQLite file, their brokers on sharded pub/sub."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import pytest

from .demo_cluster_support import (
    DemoWorker,
    Person,
    demo_env,
    demo_workers,
    start_python,
    wait_for,
)
from .redis_cluster_support import (
    RedisClusterProcess,
    module_redis_cluster,  # noqa: F401 - the redis_cluster fixture
    requires_redis_cluster,
)
from .redis_support import free_port, wait_until

pytestmark = [pytest.mark.redis, requires_redis_cluster]

Socket = aiohttp.ClientWebSocketResponse
CLUSTER_PORTS = re.compile(rb"Redis Cluster .* on 127\.0\.0\.1 ports ([\d, ]+)\n")


@pytest.fixture
async def workers(
    redis_cluster: RedisClusterProcess, tmp_path: Path
) -> AsyncIterator[tuple[DemoWorker, DemoWorker]]:
    async with demo_workers(
        tmp_path / "data", redis_cluster.seed_url, cluster=True
    ) as pair:
        yield pair


@pytest.fixture
async def people() -> AsyncIterator[list[Person]]:
    """Three people, each with a cookie jar of their own."""
    async with AsyncExitStack() as stack:
        sessions = [
            # unsafe: keep cookies set by an IP address (127.0.0.1), as browsers do
            await stack.enter_async_context(
                aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
            )
            for _ in range(3)
        ]
        yield [Person(session) for session in sessions]


async def join(ws: Socket, room: str) -> list[str]:
    """Join ``room``; the names in the member list of the answer."""
    await ws.send_json({"type": "join", "room": room})
    return [user["name"] for user in (await wait_for(ws, "joined"))["members"]]


async def announced(ws: Socket, kind: str, room: str) -> str:
    """Wait for a ``member_joined``/``member_left`` of ``room``; the person's name."""
    while (frame := await wait_for(ws, kind))["room"] != room:
        pass
    name: str = frame["user"]["name"]
    return name


def room_subscribers(cluster: RedisClusterProcess, room: str) -> int:
    """Connections subscribed to ``room``'s shard channel on its primary (0
    while no primary has it): the room's pub/sub is sharded."""
    tag = f"{{room:{room}}}".encode()
    for primary in cluster.primaries():
        shard = cluster.command(primary.port, "PUBSUB", "SHARDCHANNELS", "demo-chat:*")
        for channel in shard:
            if tag in channel:
                reply = cluster.command(primary.port, "PUBSUB", "SHARDNUMSUB", channel)
                count: int = reply[1]
                return count
    return 0


async def test_message_crosses_workers_through_sharded_pub_sub(
    workers: tuple[DemoWorker, DemoWorker],
    people: list[Person],
    redis_cluster: RedisClusterProcess,
) -> None:
    """Ada on worker A and Bob on worker B chat both ways through the room's
    shard channel, to which each worker subscribed on the room's primary."""
    a, b = workers
    ada, bob = people[0], people[1]
    await ada.sign_in(a, "ada")
    await bob.sign_in(b, "bob")
    ada_ws = await ada.connect(a)
    bob_ws = await bob.connect(b)
    await join(ada_ws, "sharded")
    await join(bob_ws, "sharded")
    # The subscribe window (docs/scaling.rst): both SSUBSCRIBEs confirmed.
    await wait_until(
        lambda: room_subscribers(redis_cluster, "sharded") == 2,
        what="both workers subscribed to the room's shard channel",
    )
    await ada_ws.send_json({"type": "message", "room": "sharded", "text": "from A"})
    heard = await wait_for(bob_ws, "message")
    assert (heard["text"], heard["user"]["name"]) == ("from A", "ada")
    await bob_ws.send_json({"type": "message", "room": "sharded", "text": "from B"})
    while (heard := await wait_for(ada_ws, "message"))["text"] == "from A":
        pass  # Ada's own message comes back to her first
    assert (heard["text"], heard["user"]["name"]) == ("from B", "bob")
    for ws in (ada_ws, bob_ws):
        await ws.close()


async def test_presence_crosses_workers_both_ways(
    workers: tuple[DemoWorker, DemoWorker], people: list[Person]
) -> None:
    """ "Here now" crosses the cluster both ways: Bob on B sees Ada on A join
    and leave, Ada sees Bob and Carol on B, each once."""
    a, b = workers
    ada, bob, carol = people
    await ada.sign_in(a, "ada")
    await bob.sign_in(b, "bob")
    await carol.sign_in(b, "carol")
    bob_ws = await bob.connect(b)
    assert await join(bob_ws, "here") == ["bob"]
    ada_ws = await ada.connect(a)
    # Bob is in Ada's list, or announced to her next (B's presence reached A).
    expected = ["carol"] if "bob" in await join(ada_ws, "here") else ["bob", "carol"]
    assert await announced(bob_ws, "member_joined", "here") == "ada"
    carol_ws = await carol.connect(b)
    assert await join(carol_ws, "here") == ["ada", "bob", "carol"]
    seen = [await announced(ada_ws, "member_joined", "here")]
    while seen[-1] != "carol":
        seen.append(await announced(ada_ws, "member_joined", "here"))
    assert seen == expected
    await ada_ws.close()
    assert await announced(bob_ws, "member_left", "here") == "ada"
    assert await announced(carol_ws, "member_left", "here") == "ada"
    for ws in (bob_ws, carol_ws):
        await ws.close()


async def test_demo_cluster_command_starts_and_stops_a_private_cluster(
    tmp_path: Path,
) -> None:
    """``DEMO_REDIS_CLUSTER=1 python -m demo.cluster`` without ``DEMO_REDIS_URL``
    serves the chat from two workers on a Redis Cluster of 6 nodes it started,
    and stops every node when it stops."""
    port = free_port()
    process = await start_python(
        *("-m", "demo.cluster", "--workers", "2", "--port", str(port)),
        env=demo_env(tmp_path / "data", DEMO_REDIS_CLUSTER="1"),
    )
    assert process.stdout is not None
    output = b""
    try:
        async with asyncio.timeout(60):
            while output.count(b"chat database:") < 2:
                line = await process.stdout.readline()
                assert line, output.decode()
                output += line
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/") as response,
        ):
            assert response.status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            rest, _ = await process.communicate()
    output += rest
    assert process.returncode == 0, output.decode()
    assert b"Traceback" not in output, output.decode()
    assert output.count(b"publishing through a Redis Cluster") == 2, output.decode()
    match = CLUSTER_PORTS.search(output)
    assert match is not None, output.decode()
    ports = [int(p) for p in match.group(1).split(b", ")]
    assert len(ports) == 6
    for node_port in ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", node_port), timeout=5).close()


async def test_demo_cluster_command_refuses_a_bad_cluster_setting(
    tmp_path: Path,
) -> None:
    """``DEMO_REDIS_CLUSTER=yes`` stops ``python -m demo.cluster`` with a message
    naming the variable, before it starts anything."""
    process = await start_python(
        *("-m", "demo.cluster", "--port", str(free_port())),
        env=demo_env(tmp_path / "data", DEMO_REDIS_CLUSTER="yes"),
    )
    try:
        async with asyncio.timeout(30):
            output, _ = await process.communicate()
    finally:
        if process.returncode is None:  # it started the chat after all
            process.send_signal(signal.SIGTERM)
            await process.wait()
    assert process.returncode == 1
    assert output.decode().strip() == (
        "demo-cluster: DEMO_REDIS_CLUSTER must be 1 or 0, got 'yes'"
    )
