"""The demo on two worker processes sharing one SQLite file and a real redis-server.

Every "nothing more arrived" check is closed by a sentinel message published by
the worker that would have published the unwanted frame: Redis keeps one
publisher's messages in order, so anything it sent earlier arrives first.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .demo_cluster_support import (
    HEARTBEAT,
    DemoWorker,
    Person,
    demo_env,
    demo_workers,
    next_frame,
    start_python,
    wait_for,
)
from .redis_support import RedisProcess, free_port, requires_redis, running_redis

pytestmark = requires_redis

Socket = aiohttp.ClientWebSocketResponse
# A killed worker's people leave within 3 heartbeats (the library's presence,
# through the RedisBroker); the rest is for a loaded machine.
KILL_BOUND = 4 * HEARTBEAT + 8.0


@pytest.fixture
def redis() -> Iterator[RedisProcess]:
    yield from running_redis()


@pytest.fixture
async def workers(
    redis: RedisProcess, tmp_path: Path
) -> AsyncIterator[tuple[DemoWorker, DemoWorker]]:
    async with demo_workers(tmp_path / "data", redis.url) as pair:
        yield pair


@pytest.fixture
async def people() -> AsyncIterator[list[Person]]:
    """Four people, each with a cookie jar of their own."""
    async with AsyncExitStack() as stack:
        sessions = [
            # unsafe: keep cookies set by an IP address (127.0.0.1), as browsers do
            await stack.enter_async_context(
                aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
            )
            for _ in range(4)
        ]
        yield [Person(session) for session in sessions]


def names(users: list[dict[str, Any]]) -> list[str]:
    return [user["name"] for user in users]


async def join(ws: Socket, room: str = "general") -> dict[str, Any]:
    await ws.send_json({"type": "join", "room": room})
    return await wait_for(ws, "joined")


async def say(ws: Socket, text: str, room: str = "general") -> None:
    await ws.send_json({"type": "message", "room": room, "text": text})


async def ada_and_bob_in_general(
    workers: tuple[DemoWorker, DemoWorker], people: list[Person]
) -> tuple[Socket, Socket]:
    """Sign people[0] in as Ada on worker A and people[1] as Bob on worker B, join
    both to "general", and return their sockets once Ada has seen Bob join."""
    a, b = workers
    ada, bob = people[0], people[1]
    await ada.sign_in(a, "ada")
    await bob.sign_in(b, "bob")
    ada_ws = await ada.connect(a)
    await join(ada_ws)
    bob_ws = await bob.connect(b)
    await join(bob_ws)
    await wait_for(ada_ws, "member_joined")
    return ada_ws, bob_ws


async def frames_until(ws: Socket, text: str) -> list[dict[str, Any]]:
    """The frames before the chat message ``text``, which ends the list."""
    frames = []
    while (frame := await next_frame(ws))["type"] != "message" or frame["text"] != text:
        frames.append(frame)
    return frames


async def test_users_on_two_workers_chat_and_see_each_other(
    workers: tuple[DemoWorker, DemoWorker], people: list[Person]
) -> None:
    """Ada on worker A and Bob on worker B see each other in the room and chat."""
    a, b = workers
    ada, bob = people[0], people[1]
    await ada.sign_in(a, "ada")
    await bob.sign_in(b, "bob")
    ada_ws = await ada.connect(a)
    assert names((await join(ada_ws))["members"]) == ["ada"]
    bob_ws = await bob.connect(b)
    assert names((await join(bob_ws))["members"]) == ["ada", "bob"]
    joined = await wait_for(ada_ws, "member_joined")
    assert joined["user"]["name"] == "bob"
    await say(ada_ws, "hello from A")
    heard = await wait_for(bob_ws, "message")
    assert (heard["text"], heard["user"]["name"]) == ("hello from A", "ada")
    await say(bob_ws, "hello from B")
    before = await frames_until(ada_ws, "hello from B")
    assert [(f["type"], f["text"]) for f in before] == [("message", "hello from A")]
    for ws in (ada_ws, bob_ws):
        await ws.close()


async def test_person_announced_once_over_tabs_on_two_workers(
    workers: tuple[DemoWorker, DemoWorker], people: list[Person]
) -> None:
    """Bob with a tab on each worker joins once, and leaves once, with the last."""
    a, b = workers
    ada, bob, carol = people[0], people[1], people[2]
    await ada.sign_in(a, "ada")
    await bob.sign_in(a, "bob")  # the same cookie works on every worker
    await carol.sign_in(b, "carol")
    ada_ws = await ada.connect(a)
    await join(ada_ws)
    carol_ws = await carol.connect(b)
    await join(carol_ws)
    await wait_for(ada_ws, "member_joined")  # carol, through Redis
    bob_on_a = await bob.connect(a)
    await join(bob_on_a)
    bob_on_b = await bob.connect(b)
    assert names((await join(bob_on_b))["members"]) == ["ada", "bob", "carol"]
    # Whatever B announced for Bob's second tab, it did before answering it.
    await say(bob_on_b, "second tab")
    frames = await frames_until(ada_ws, "second tab")
    assert [(f["type"], f["user"]["name"]) for f in frames] == [
        ("member_joined", "bob")
    ]
    await bob_on_b.send_json({"type": "leave", "room": "general"})
    await wait_for(bob_on_b, "left")
    await say(carol_ws, "after the second tab left")  # carol is on B too
    assert await frames_until(ada_ws, "after the second tab left") == []
    await bob_on_a.close()
    left = await wait_for(ada_ws, "member_left")
    assert left["user"]["name"] == "bob"
    for ws in (ada_ws, carol_ws, bob_on_b):
        await ws.close()


async def test_killed_worker_leaves_presence_within_the_bound(
    workers: tuple[DemoWorker, DemoWorker], people: list[Person]
) -> None:
    """After SIGKILL of worker B, Bob (only there) leaves Ada's room, once."""
    a, b = workers
    carol = people[2]
    ada_ws, bob_ws = await ada_and_bob_in_general(workers, people)
    b.kill()
    async with asyncio.timeout(KILL_BOUND):
        left = await wait_for(ada_ws, "member_left")
    assert left["user"]["name"] == "bob"
    await carol.sign_in(a, "carol")
    carol_ws = await carol.connect(a)
    assert names((await join(carol_ws))["members"]) == ["ada", "carol"]
    # A worker announced the leave; nobody announces it again.
    await say(carol_ws, "after the reap")
    frames = await frames_until(ada_ws, "after the reap")
    assert [f["type"] for f in frames] == ["member_joined"]
    # Bob's name is free again: his only session's sockets died with B.
    assert await carol.sign_in(a, "bob") == "/"
    # Bob's too, though B is dead: an unclosed client connection warns when the GC
    # finds it, in whichever test runs then.
    for ws in (ada_ws, carol_ws, bob_ws):
        await ws.close()


async def test_worker_stopped_cleanly_announces_its_people_leaving(
    workers: tuple[DemoWorker, DemoWorker], people: list[Person]
) -> None:
    """A worker stopped with SIGINT announces, through Redis, that Bob left."""
    b = workers[1]
    ada_ws, bob_ws = await ada_and_bob_in_general(workers, people)
    await b.stop()
    left = await wait_for(ada_ws, "member_left")  # long before any expiry
    assert left["user"]["name"] == "bob"
    assert b"Traceback" not in b.output, b.output.decode()
    await ada_ws.close()
    await bob_ws.close()


async def test_name_in_use_on_another_worker_is_refused(
    workers: tuple[DemoWorker, DemoWorker], people: list[Person]
) -> None:
    """A name with an open socket on worker A cannot be signed into on worker B."""
    a, b = workers
    ada, mallory = people[0], people[1]
    await ada.sign_in(a, "ada")
    ada_ws = await ada.connect(a)
    assert await mallory.sign_in(b, "ADA") == "/?error=taken"
    await ada_ws.close()


async def test_socket_cap_counts_both_workers(
    workers: tuple[DemoWorker, DemoWorker], people: list[Person]
) -> None:
    """A session's sockets on two workers together are capped (5 by default):
    once each worker has seen the other's, both refuse a 6th."""
    a, b = workers
    ada, bob = people[0], people[1]
    await bob.sign_in(a, "bob")
    bob_on_a, bob_on_b = await bob.connect(a), await bob.connect(b)
    await join(bob_on_a, "from-b")
    await join(bob_on_b, "from-a")
    await ada.sign_in(a, "ada")
    tabs = [await ada.connect(a if i % 2 else b) for i in range(5)]  # 2 on A, 3 on B
    # The cap counts the other worker's sockets through presence, which lags by
    # a delta's trip through Redis (docs/demo.rst). A worker's presence deltas
    # arrive in order, so Bob hearing that Ada joined a room on the other worker,
    # which her tab there did after the 5 tabs opened, means that his worker
    # has seen the 5 tabs.
    for tab, room, observer in (
        (tabs[3], "from-a", bob_on_b),
        (tabs[4], "from-b", bob_on_a),
    ):
        await join(tab, room)
        while (frame := await wait_for(observer, "member_joined"))["room"] != room:
            pass
        assert frame["user"]["name"] == "ada"
    for worker in (a, b):
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await ada.session.ws_connect(worker.url + "/ws")
        assert info.value.status == 429
    for tab in (*tabs, bob_on_a, bob_on_b):
        await tab.close()


async def test_sign_out_on_one_worker_closes_sockets_on_the_other(
    workers: tuple[DemoWorker, DemoWorker], people: list[Person]
) -> None:
    """Signing out through worker A closes the session's socket on worker B (4001)."""
    a, b = workers
    ada = people[0]
    await ada.sign_in(a, "ada")
    on_b = await ada.connect(b)
    await ada.sign_out(a)
    async with asyncio.timeout(KILL_BOUND):
        message = await on_b.receive()
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert on_b.close_code == 4001


async def test_demo_cluster_command_starts_and_stops_its_redis(tmp_path: Path) -> None:
    """``python -m demo.cluster`` (``make demo-cluster``) serves the chat on one
    port from two workers, and stops the redis-server it started when it stops."""
    port = free_port()
    process = await start_python(
        *("-m", "demo.cluster", "--workers", "2", "--port", str(port)),
        env=demo_env(tmp_path / "data"),
    )
    assert process.stdout is not None
    output = b""
    try:
        async with asyncio.timeout(30):
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
        async with asyncio.timeout(30):
            rest, _ = await process.communicate()
    output += rest
    assert process.returncode == 0, output.decode()
    assert b"Traceback" not in output, output.decode()
    redis_port = int(output.split(b"redis-server on 127.0.0.1:")[1].split()[0])
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", redis_port), timeout=5).close()
