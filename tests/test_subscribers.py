"""``server.subscribers(topic)`` and publishing with ``exclude=``, on real sockets."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from aiohttp_upgrade import ServerWebSocket
from aiohttp_upgrade._frames import OP_TEXT
from aiohttp_upgrade._hub import Hub

from .conftest import ConnectWs, Recorder, Served, ServeFactory

TOPIC = "room"
Pair = tuple[aiohttp.ClientWebSocketResponse, ServerWebSocket[Any]]


async def pairs(
    serve: ServeFactory, connect_ws: ConnectWs, count: int
) -> tuple[Served, list[Pair]]:
    """Serve a Recorder, connect ``count`` clients, subscribe each to TOPIC."""
    handler = Recorder()
    served = await serve(handler)
    result = []
    for _ in range(count):
        client = await connect_ws(served.url)
        ws = (await handler.next("open")).ws
        ws.subscribe(TOPIC)
        result.append((client, ws))
    return served, result


async def first_text(client: aiohttp.ClientWebSocketResponse) -> str:
    message = await client.receive(timeout=10)
    assert message.type is aiohttp.WSMsgType.TEXT, message
    text: str = message.data
    return text


async def test_subscribers_lists_the_sockets_of_a_topic(
    serve: ServeFactory, connect_ws: ConnectWs
) -> None:
    """server.subscribers(topic) is the topic's sockets, in subscription order."""
    served, opened = await pairs(serve, connect_ws, 3)
    sockets = [ws for _, ws in opened]
    assert list(served.server.subscribers(TOPIC)) == sockets
    sockets[1].unsubscribe(TOPIC)
    assert list(served.server.subscribers(TOPIC)) == [sockets[0], sockets[2]]
    assert list(served.server.subscribers("nobody-here")) == []


async def test_subscribers_is_a_snapshot_safe_to_close_from(
    serve: ServeFactory, connect_ws: ConnectWs
) -> None:
    """Closing each socket while iterating server.subscribers(topic) closes them all."""
    served, _ = await pairs(serve, connect_ws, 3)
    for ws in served.server.subscribers(TOPIC):
        ws.close(4000, "kicked")
    assert served.server.subscriber_count(TOPIC) == 0


async def test_subscribers_checks_the_topic(serve: ServeFactory) -> None:
    """A topic that is not a str raises TypeError; an empty one ValueError."""
    served = await serve(Recorder())
    with pytest.raises(TypeError):
        served.server.subscribers(b"room")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        served.server.subscribers("")


async def test_server_publish_excludes_several_sockets(
    serve: ServeFactory, connect_ws: ConnectWs
) -> None:
    """server.publish(..., exclude=[a, b]) reaches every subscriber but a and b."""
    served, opened = await pairs(serve, connect_ws, 4)
    (a_client, a), (b_client, b), (c_client, _), (d_client, _) = opened
    code = served.server.publish(TOPIC, "news", exclude=[a, b])
    assert code == len("news")
    assert [await first_text(c_client), await first_text(d_client)] == ["news"] * 2
    a.send("marker")
    b.send("marker")
    assert [await first_text(a_client), await first_text(b_client)] == ["marker"] * 2


async def test_ws_publish_excludes_the_sender_and_others(
    serve: ServeFactory, connect_ws: ConnectWs
) -> None:
    """ws.publish(..., exclude={b}) skips the sender and b, reaching the rest."""
    _, opened = await pairs(serve, connect_ws, 3)
    (a_client, a), (b_client, b), (c_client, _) = opened
    assert a.publish_text(TOPIC, "news", exclude={b}) == len("news")
    assert await first_text(c_client) == "news"
    for ws, client in ((a, a_client), (b, b_client)):
        ws.send("marker")
        assert await first_text(client) == "marker"


async def test_publish_excluding_everyone_returns_0(
    serve: ServeFactory, connect_ws: ConnectWs
) -> None:
    """Excluding every subscriber delivers to nobody: the code is 0, as with none."""
    served, opened = await pairs(serve, connect_ws, 2)
    everyone = [ws for _, ws in opened]
    assert served.server.publish(TOPIC, b"x", exclude=everyone) == 0


class _Box:
    compressor = None

    def __init__(self) -> None:
        self.frames = 0

    def enqueue(self, frame: bytes, length: int, message: object = None) -> int:
        self.frames += 1
        return length


class _UnreadPort:
    """A subscriber whose ``ws`` must not be read: a publish without exclusions
    must cost nothing per subscriber beyond queueing the frame."""

    def __init__(self) -> None:
        self.outbox = _Box()

    @property
    def ws(self) -> object:
        raise AssertionError("a publish without exclude read a subscriber's ws")


@pytest.mark.parametrize("exclude", [None, [], ()], ids=["None", "list", "tuple"])
def test_a_publish_without_exclusions_reads_no_socket(exclude: Any) -> None:
    """Without exclusions (None or empty) the fan-out never looks at ``port.ws``."""
    hub = Hub()
    ports = [_UnreadPort() for _ in range(3)]
    for port in ports:
        hub.subscribe(port, TOPIC)  # type: ignore[arg-type]
    assert hub.publish(TOPIC, OP_TEXT, b"hi", False, "hi", None, exclude) == 2
    assert [port.outbox.frames for port in ports] == [1, 1, 1]
