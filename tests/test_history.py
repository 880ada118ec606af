"""Topic history and resume in one process (LocalBroker), on real sockets.

The app is tests/history_app.py: topics under ``h:`` keep history and reach
clients as ``<epoch>:<offset>|<data>``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from aiohttp_upgrade import (
    SERVER_KEY,
    InvalidStateError,
    LocalBroker,
    Position,
    Server,
    ServerWebSocket,
    WebSocketHandler,
)
from aiohttp_upgrade._hub import Hub

from .conftest import ConnectWs
from .history_app import create_app

TOPIC = "h:room"
TIMEOUT = 10

Socket = aiohttp.ClientWebSocketResponse
Start = Callable[..., Awaitable[TestServer]]


@pytest.fixture
async def app(aiohttp_server: Start) -> TestServer:
    return await aiohttp_server(create_app(size=50))


def ws_url(app: TestServer) -> str:
    return str(app.make_url("/ws")).replace("http://", "ws://", 1)


async def text(ws: Socket) -> str:
    msg = await asyncio.wait_for(ws.receive(), TIMEOUT)
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    data: str = msg.data
    return data


async def resume(ws: Socket, topic: str = TOPIC, since: str = "") -> list[str]:
    """Send ``resume``; return the replayed lines and the answer's fields."""
    await ws.send_str(f"resume {topic} {since}".rstrip())
    lines = []
    while not (line := await text(ws)).startswith("resumed "):
        lines.append(line)
    return [*lines, line]


def fields(answer: str) -> tuple[bool, str, int, str]:
    _, recovered, position, replayed, reason = answer.split(" ")
    return recovered == "True", position, int(replayed), reason


async def publish(app: TestServer, texts: str, n: int, topic: str = TOPIC) -> None:
    async with aiohttp.ClientSession() as session:
        url = app.make_url("/publish").with_query(topic=topic, text=texts, n=n)
        async with session.get(url) as response:
            assert response.status == 200


async def test_messages_carry_consecutive_positions(
    app: TestServer, connect_ws: ConnectWs
) -> None:
    """Each message of a history topic reaches a subscriber formatted with its
    position, the offsets counting up from 1 in one epoch."""
    ws = await connect_ws(ws_url(app))
    *_, answer = await resume(ws)
    recovered, position, replayed, reason = fields(answer)
    epoch = position.split(":")[0]
    assert (recovered, position, replayed, reason) == (True, f"{epoch}:0", 0, "-")
    await publish(app, "m", 3)
    assert [await text(ws) for _ in range(3)] == [
        f"{epoch}:{i}|m-{i}" for i in (1, 2, 3)
    ]


async def test_resume_replays_missed_messages_once_in_order(
    app: TestServer, connect_ws: ConnectWs
) -> None:
    """A client that left at a position gets every message published since, in
    order, then the live ones, none twice."""
    first = await connect_ws(ws_url(app))
    await resume(first)
    await publish(app, "a", 2)
    seen = [await text(first) for _ in range(2)]
    await first.close()
    await publish(app, "b", 5)
    again = await connect_ws(ws_url(app))
    *replayed, answer = await resume(again, since=seen[-1].split("|")[0])
    recovered, position, count, _ = fields(answer)
    epoch = position.split(":")[0]
    assert recovered and count == 5 and position == f"{epoch}:7"
    assert replayed == [f"{epoch}:{i + 2}|b-{i}" for i in range(1, 6)]
    await publish(app, "c", 1)
    assert await text(again) == f"{epoch}:8|c-1"


async def test_replays_and_history_deliveries_are_in_the_metrics(
    aiohttp_server: Start, connect_ws: ConnectWs
) -> None:
    """``server.metrics()`` counts each replayed message in ``history_replays``
    and each history publish with its deliveries, as for other topics."""
    app = create_app(size=50)
    served = await aiohttp_server(app)
    server: Server[None] = app[SERVER_KEY]
    live = await connect_ws(ws_url(served))
    await resume(live)
    for i in range(4):
        server.publish(TOPIC, f"m-{i}")
    epoch = (await text(live)).split(":")[0]
    late = await connect_ws(ws_url(served))
    *replayed, _ = await resume(late, since=f"{epoch}:1")
    metrics = server.metrics()
    assert len(replayed) == 3
    assert (metrics.history_replays, metrics.publishes) == (3, 4)
    assert metrics.deliveries == 4


async def test_resume_while_publishing_has_no_gap_and_no_duplicate(
    aiohttp_server: Start, connect_ws: ConnectWs
) -> None:
    """Resumes racing a publisher that publishes every loop turn still deliver
    each offset exactly once, in order, to every resumed socket."""
    app = create_app(size=5000)
    served = await aiohttp_server(app)
    server: Server[None] = app[SERVER_KEY]
    for i in range(200):
        server.publish(TOPIC, f"x-{i}")
    done = asyncio.Event()

    async def publisher() -> None:
        for i in range(600):
            server.publish(TOPIC, f"y-{i}")
            await asyncio.sleep(0)
        done.set()

    task = asyncio.create_task(publisher())
    clients = [await connect_ws(ws_url(served)) for _ in range(5)]
    for index, ws in enumerate(clients):
        await ws.send_str(f"resume {TOPIC} {await epoch_of(served)}:{index * 30}")
    await done.wait()
    await task
    for index, ws in enumerate(clients):
        offsets: list[int] = []
        while len(offsets) < 800 - index * 30:
            line = await text(ws)
            if line.startswith("resumed "):
                assert fields(line)[0], line
                continue
            offsets.append(int(line.split("|")[0].split(":")[1]))
        assert offsets == list(range(index * 30 + 1, 801))


async def epoch_of(app: TestServer) -> str:
    async with aiohttp.ClientSession() as session:
        url = app.make_url("/history").with_query(topic=TOPIC, limit=1)
        async with session.get(url) as response:
            body: dict[str, Any] = await response.json()
            return str(body["position"]).split(":")[0]


@pytest.mark.parametrize(
    ("since", "reason"),
    [
        ("garbage", "invalid"),
        ("{epoch}:-1", "invalid"),
        ("{epoch}:99", "future"),
        ("abc123:2", "epoch"),
        ("{epoch}:1", "too_old"),
    ],
    ids=["garbage", "negative", "future", "other-epoch", "trimmed"],
)
async def test_bad_position_is_told_and_goes_live(
    aiohttp_server: Start, connect_ws: ConnectWs, since: str, reason: str
) -> None:
    """A position that cannot be resumed from is answered with recovered False,
    the reason and the current position, and the socket continues live."""
    app = await aiohttp_server(create_app(size=3))
    await publish(app, "old", 10)
    epoch = await epoch_of(app)
    ws = await connect_ws(ws_url(app))
    *replayed, answer = await resume(ws, since=since.format(epoch=epoch))
    assert replayed == []
    assert fields(answer) == (False, f"{epoch}:10", 0, reason)
    await publish(app, "new", 1)
    assert await text(ws) == f"{epoch}:11|new-1"


async def test_resume_on_a_subscribed_topic_does_nothing(
    app: TestServer, connect_ws: ConnectWs
) -> None:
    """Resuming a topic the socket is subscribed to already says so and
    replays nothing (the socket keeps its one subscription)."""
    ws = await connect_ws(ws_url(app))
    await resume(ws)
    *replayed, answer = await resume(ws, since="abc:0")
    assert replayed == [] and fields(answer) == (False, "None", 0, "subscribed")


async def test_history_read_returns_positions_and_data(app: TestServer) -> None:
    """server.history.read gives the topic's position and the (position, data)
    pairs after ``since``, or the last ``limit`` without it."""
    await publish(app, "r", 6)
    epoch = await epoch_of(app)
    async with aiohttp.ClientSession() as session:
        url = app.make_url("/history")
        async with session.get(url.with_query(topic=TOPIC, limit=2)) as response:
            tail = await response.json()
        since = f"{epoch}:3"
        query: dict[str, str] = {"topic": TOPIC, "since": since, "limit": "2"}
        async with session.get(url.with_query(query)) as response:
            after = await response.json()
        query = {"topic": TOPIC, "since": "nonsense"}
        async with session.get(url.with_query(query)) as response:
            assert response.status == 400
    assert tail == {
        "position": f"{epoch}:6",
        "items": [[f"{epoch}:5", "r-5"], [f"{epoch}:6", "r-6"]],
    }
    assert after["items"] == [[f"{epoch}:4", "r-4"], [f"{epoch}:5", "r-5"]]


async def test_topic_without_history_refuses_resume_and_read(app: TestServer) -> None:
    """resume and read on a topic that keeps no history raise InvalidStateError."""
    server: Server[None] = app.app[SERVER_KEY]
    with pytest.raises(InvalidStateError, match="keeps no history"):
        await server.history.read("plain")


async def test_plain_topics_bypass_history(
    app: TestServer, connect_ws: ConnectWs
) -> None:
    """A topic outside every history policy is published as before: no
    position, the message as it was."""
    server: Server[None] = app.app[SERVER_KEY]
    assert server.history.policies.get("plain") is None
    assert server.history.policies.get("h:x") is not None
    hub = Hub()
    assert hub.history is None  # a server that never enables history


async def test_replay_respects_backpressure(
    aiohttp_server: Start, connect_ws: ConnectWs
) -> None:
    """A replay of 3,000 messages of 1 KiB to a socket with a 64 KiB
    backpressure limit that closes on it delivers all of them (the replay
    waits for the socket instead of overrunning it)."""

    class Strict(WebSocketHandler[None]):
        backpressure_limit = 64 * 1024
        close_on_backpressure_limit = True
        idle_timeout = 0

        async def message(
            self, ws: ServerWebSocket[None], message: str | bytes
        ) -> None:
            result = await self.server.history.resume(ws, TOPIC, str(message))
            ws.send(f"resumed {result.recovered} {result.replayed} {result.reason}")

    server: Server[None] = Server(Strict())
    server.history.enable(TOPIC, size=5000)
    app = aiohttp_web_app(server)
    served = await aiohttp_server(app)
    for i in range(3000):
        server.publish(TOPIC, f"{i:04d}" + "z" * 1020)
    epoch = (await server.history.read(TOPIC))[0].epoch
    ws = await connect_ws(ws_url(served))
    await ws.send_str(f"{epoch}:0")
    got = [await text(ws) for _ in range(3001)]
    assert got[-1] == "resumed True 3000 "
    assert [line[:4] for line in got[:-1]] == [f"{i:04d}" for i in range(3000)]


def aiohttp_web_app(server: Server[None]) -> Any:
    from aiohttp import web

    def fetch(request: web.Request, server: Server[None]) -> web.StreamResponse | None:
        return None if server.upgrade(request) else web.Response(status=400)

    app = web.Application()
    server.setup(app)
    app.router.add_get("/ws", server.handler(fetch))
    return app


async def test_format_failure_sends_the_message_as_published(
    aiohttp_server: Start, connect_ws: ConnectWs, caplog: pytest.LogCaptureFixture
) -> None:
    """A format() that raises is logged and the message still reaches the
    subscriber, as published."""

    def broken(position: Position, data: str | bytes) -> str:
        raise RuntimeError("boom")

    class Resume(WebSocketHandler[None]):
        idle_timeout = 0

        async def message(
            self, ws: ServerWebSocket[None], message: str | bytes
        ) -> None:
            await self.server.history.resume(ws, TOPIC)
            ws.send("ready")

    server: Server[None] = Server(Resume())
    server.history.enable(TOPIC, format=broken)
    served = await aiohttp_server(aiohttp_web_app(server))
    ws = await connect_ws(ws_url(served))
    await ws.send_str("go")
    assert await text(ws) == "ready"
    with caplog.at_level(logging.ERROR, "aiohttp_upgrade"):
        server.publish(TOPIC, "plain text")
        assert await text(ws) == "plain text"
    assert "format() failed" in caplog.text


async def test_a_broker_without_history_refuses_enable() -> None:
    """enable() on a server whose remote broker keeps no history raises
    InvalidStateError instead of giving positions each process would count alone."""

    class Relay(LocalBroker):
        remote = True

    server: Server[None] = Server(WebSocketHandler(), broker=Relay())
    with pytest.raises(InvalidStateError, match="keeps no history"):
        server.history.enable("h:x")
    assert server.history.policies.get("h:x") is None


async def test_exclude_skips_sockets_on_a_history_topic(
    app: TestServer, connect_ws: ConnectWs
) -> None:
    """server.publish(..., exclude=[ws]) to a history topic skips ws and reaches
    the other subscribers."""
    excluded, other = await connect_ws(ws_url(app)), await connect_ws(ws_url(app))
    for ws in (excluded, other):
        await resume(ws)
    await excluded.send_str(f"xpub {TOPIC} hidden")
    await excluded.send_str(f"spub {TOPIC} shown")
    assert [(await text(other)).split("|")[1] for _ in range(2)] == ["hidden", "shown"]
    assert (await text(excluded)).endswith("|shown")
