"""Topic pub/sub with Bun's semantics, on real loopback sockets.

Slow subscribers are raw sockets with tiny kernel buffers that never read, so a
single large corked send leaves bytes in the server's write buffer at once.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import struct
import zlib
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web

from aiohttp_upgrade import Server, ServerWebSocket

from .conftest import Recorder, Served, ServeFactory, connection_of
from .wire import OP_CLOSE, client_frame, close_payload, request_bytes

TOPIC = "room"
SLOW_BUFFER = 4096
# A corked send of this size leaves most of it in the write buffer of a slow socket.
SMALL_BACKLOG = 128 * 1024
LARGE_BACKLOG = 2 * 1024 * 1024
LIMIT = 512 * 1024
TIMEOUT = 10

Publish = Callable[[ServerWebSocket[Any], Server[Any], Any], object]


# -- helpers --------------------------------------------------------------------


class Tap:
    """Records every buffer the server hands to one socket's transport, and makes
    its writes fail on demand: it takes the transport's place (``attach``) once
    the socket is open; ``transport`` is the socket's own."""

    def __init__(self) -> None:
        self.writes: list[list[bytes]] = []
        self.transport: Any = None
        self.fail_with: Exception | None = None

    def attach(self, ws: ServerWebSocket[Any]) -> None:
        connection = connection_of(ws)
        self.transport = connection.transport
        connection.use_transport(cast(asyncio.Transport, self))

    def write(self, data: Any) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.writes.append([data])
        self.transport.write(data)

    def writelines(self, lines: Iterable[Any]) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        buffers = list(lines)
        self.writes.append(buffers)
        self.transport.writelines(buffers)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def tapped(request: web.Request, server: Server[Any]) -> web.StreamResponse | None:
    """Upgrade with a :class:`Tap` as ``ws.data``; ``?slow`` shrinks the send buffer."""
    transport = request.transport
    assert transport is not None
    if "slow" in request.query:
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SLOW_BUFFER)
    if server.upgrade(request, data=Tap()):
        return None
    return web.Response(status=400)


class Watcher(Recorder):
    """A Recorder that notes what the close hook sees of pub/sub state."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.seen_in_close: list[tuple[int, list[str], bool]] = []
        self.publish_in_close: str | None = None
        self.published_in_close: list[int] = []

    def close(self, ws: ServerWebSocket[Any], code: int, reason: str) -> None:
        self.seen_in_close.append(
            (
                self.server.subscriber_count(TOPIC),
                ws.subscriptions,
                ws.is_subscribed(TOPIC),
            )
        )
        if self.publish_in_close is not None:
            self.published_in_close.append(
                self.server.publish(TOPIC, self.publish_in_close)
            )
        super().close(ws, code, reason)


async def start(serve: ServeFactory, **options: Any) -> tuple[Served, Watcher]:
    handler = Watcher(**options)
    served = await serve(handler, tapped)
    return served, handler


def attached(ws: ServerWebSocket[Any]) -> ServerWebSocket[Any]:
    """``ws``, its :class:`Tap` (if it has one) in its transport's place."""
    if isinstance(ws.data, Tap):
        ws.data.attach(ws)
    return ws


async def connect(
    served: Served, handler: Recorder, session: aiohttp.ClientSession
) -> tuple[aiohttp.ClientWebSocketResponse, ServerWebSocket[Any]]:
    """Connect an aiohttp client; return it and its server-side socket."""
    client = await session.ws_connect(served.url)
    return client, attached((await handler.next("open")).ws)


async def receive(client: aiohttp.ClientWebSocketResponse) -> str | bytes:
    msg = await client.receive(timeout=TIMEOUT)
    assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg
    data: str | bytes = msg.data
    return data


def parse_frames(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Remove complete server frames from ``buffer``; return (first byte, payload)."""
    frames = []
    while len(buffer) >= 2:
        length = buffer[1] & 0x7F
        start = 2
        if length == 126:
            if len(buffer) < 4:
                break
            (length,) = struct.unpack("!H", buffer[2:4])
            start = 4
        elif length == 127:
            if len(buffer) < 10:
                break
            (length,) = struct.unpack("!Q", buffer[2:10])
            start = 10
        if len(buffer) < start + length:
            break
        frames.append((buffer[0], bytes(buffer[start : start + length])))
        del buffer[: start + length]
    return frames


class RawClient:
    """A client on a plain socket that reads only when asked, with tiny kernel
    buffers when ``slow`` (wire.connect's asyncio streams would read ahead and
    absorb the backlog a slow subscriber must leave in the server's buffer)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    @classmethod
    async def connect(
        cls, served: Served, *, slow: bool = True, deflate: bool = False
    ) -> RawClient:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        if slow:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_BUFFER)
        await loop.sock_connect(sock, ("127.0.0.1", served.port))
        extensions = {"Sec-WebSocket-Extensions": "permessage-deflate"}
        request = request_bytes(
            "/ws?slow" if slow else "/ws", extensions if deflate else None
        )
        await loop.sock_sendall(sock, request)
        client = cls(sock)
        async with asyncio.timeout(TIMEOUT):
            while b"\r\n\r\n" not in client.buffer:
                chunk = await loop.sock_recv(sock, 4096)
                assert chunk, "connection closed during the handshake"
                client.buffer += chunk
        head, _, rest = bytes(client.buffer).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        client.buffer = bytearray(rest)
        return client

    async def frames(self, count: int) -> list[tuple[int, bytes]]:
        """Read until ``count`` frames have arrived; return them."""
        loop = asyncio.get_running_loop()
        frames = parse_frames(self.buffer)
        async with asyncio.timeout(TIMEOUT):
            while len(frames) < count:
                chunk = await loop.sock_recv(self.sock, 65536)
                assert chunk, "connection closed"
                self.buffer += chunk
                frames += parse_frames(self.buffer)
        assert len(frames) == count, frames
        return frames

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    def reset(self) -> None:
        """Drop the connection with a TCP RST."""
        self.sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        self.sock.close()


@pytest.fixture
async def raw_clients() -> AsyncIterator[list[RawClient]]:
    """Raw clients appended here are closed after the test."""
    clients: list[RawClient] = []
    yield clients
    for client in clients:
        client.sock.close()


async def connect_raw(
    served: Served,
    handler: Recorder,
    clients: list[RawClient],
    *,
    slow: bool = True,
    deflate: bool = False,
) -> tuple[RawClient, ServerWebSocket[Any]]:
    client = await RawClient.connect(served, slow=slow, deflate=deflate)
    clients.append(client)
    return client, attached((await handler.next("open")).ws)


async def backlog(ws: ServerWebSocket[Any], size: int) -> None:
    """Leave about ``size`` bytes waiting in the write buffer of a slow socket, and
    return in a later loop turn, where they count against its backpressure limit
    (what a turn sends is not held against the limit within that turn)."""
    ws.cork(lambda ws: ws.send(bytes(size)))
    assert ws.get_buffered_amount() > 0
    await asyncio.sleep(0)  # not synchronisation: the next loop turn


# -- subscribe / unsubscribe / is_subscribed / subscriptions -------------------


async def test_subscribe_returns_true_then_false(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """subscribe returns True for a new subscription and False for a repeated one."""
    served, handler = await start(serve)
    _, ws = await connect(served, handler, client_session)
    assert [ws.subscribe(TOPIC), ws.subscribe(TOPIC)] == [True, False]


async def test_unsubscribe_returns_whether_it_was_subscribed(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """unsubscribe returns True only when the socket was subscribed."""
    served, handler = await start(serve)
    _, ws = await connect(served, handler, client_session)
    before = ws.unsubscribe(TOPIC)
    ws.subscribe(TOPIC)
    assert [before, ws.unsubscribe(TOPIC), ws.unsubscribe(TOPIC)] == [
        False,
        True,
        False,
    ]


async def test_is_subscribed_follows_subscribe_and_unsubscribe(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """is_subscribed is False, True, False around a subscribe and an unsubscribe."""
    served, handler = await start(serve)
    _, ws = await connect(served, handler, client_session)
    states = [ws.is_subscribed(TOPIC)]
    ws.subscribe(TOPIC)
    states.append(ws.is_subscribed(TOPIC))
    ws.unsubscribe(TOPIC)
    states.append(ws.is_subscribed(TOPIC))
    assert states == [False, True, False]


async def test_is_subscribed_is_per_socket(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """One socket's subscription does not make another socket subscribed."""
    served, handler = await start(serve)
    _, first = await connect(served, handler, client_session)
    _, second = await connect(served, handler, client_session)
    first.subscribe(TOPIC)
    assert (first.is_subscribed(TOPIC), second.is_subscribed(TOPIC)) == (True, False)


async def test_subscriptions_in_order(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """subscriptions lists the socket's topics in the order it subscribed."""
    served, handler = await start(serve)
    _, ws = await connect(served, handler, client_session)
    for topic in ("b", "c", "a"):
        ws.subscribe(topic)
    ws.unsubscribe("c")
    assert ws.subscriptions == ["b", "a"]


async def test_subscriptions_is_a_snapshot(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """The list subscriptions returns neither follows nor causes later changes."""
    served, handler = await start(serve)
    _, ws = await connect(served, handler, client_session)
    ws.subscribe("a")
    snapshot = ws.subscriptions
    ws.subscribe("b")
    snapshot.clear()
    assert snapshot == []
    assert ws.subscriptions == ["a", "b"]


async def test_subscriptions_empty_when_closed(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """A closed socket reports no subscriptions."""
    served, handler = await start(serve)
    _, ws = await connect(served, handler, client_session)
    ws.subscribe(TOPIC)
    ws.close()
    assert ws.subscriptions == []


CLOSED_CALLS: list[tuple[str, Callable[[ServerWebSocket[Any]], object], object]] = [
    ("subscribe", lambda ws: ws.subscribe("other"), False),
    ("unsubscribe", lambda ws: ws.unsubscribe(TOPIC), False),
    ("is_subscribed", lambda ws: ws.is_subscribed(TOPIC), False),
    ("publish", lambda ws: ws.publish(TOPIC, "x"), 0),
    ("publish_text", lambda ws: ws.publish_text(TOPIC, "x"), 0),
    ("publish_binary", lambda ws: ws.publish_binary(TOPIC, b"x"), 0),
]


@pytest.mark.parametrize(
    ("call", "expected"),
    [(call, expected) for _, call, expected in CLOSED_CALLS],
    ids=[name for name, _, _ in CLOSED_CALLS],
)
async def test_closed_socket_calls_return_false(
    serve: ServeFactory,
    client_session: aiohttp.ClientSession,
    call: Callable[[ServerWebSocket[Any]], object],
    expected: object,
) -> None:
    """On a closed socket the pub/sub calls return False (0 for publish)."""
    served, handler = await start(serve)
    _, ws = await connect(served, handler, client_session)
    ws.subscribe(TOPIC)
    ws.close()
    result = call(ws)
    assert result == expected
    assert type(result) is type(expected)


async def test_closed_socket_publish_reaches_nobody(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """A publish from a closed socket is not delivered to the topic's subscribers."""
    served, handler = await start(serve)
    _, closed = await connect(served, handler, client_session)
    client, ws = await connect(served, handler, client_session)
    ws.subscribe(TOPIC)
    closed.close()
    closed.publish(TOPIC, "from the dead")
    ws.send("marker")
    assert await receive(client) == "marker"


TOPIC_CALLS: list[tuple[str, Publish]] = [
    ("subscribe", lambda ws, server, topic: ws.subscribe(topic)),
    ("unsubscribe", lambda ws, server, topic: ws.unsubscribe(topic)),
    ("is_subscribed", lambda ws, server, topic: ws.is_subscribed(topic)),
    ("ws.publish", lambda ws, server, topic: ws.publish(topic, "x")),
    ("publish_text", lambda ws, server, topic: ws.publish_text(topic, "x")),
    ("publish_binary", lambda ws, server, topic: ws.publish_binary(topic, b"x")),
    ("server.publish", lambda ws, server, topic: server.publish(topic, "x")),
    ("subscriber_count", lambda ws, server, topic: server.subscriber_count(topic)),
]


@pytest.mark.parametrize(
    "call",
    [call for _, call in TOPIC_CALLS],
    ids=[name for name, _ in TOPIC_CALLS],
)
@pytest.mark.parametrize(
    ("topic", "error"),
    [("", ValueError), (None, TypeError), (b"room", TypeError), (1, TypeError)],
    ids=["empty", "none", "bytes", "int"],
)
async def test_invalid_topic_raises(
    serve: ServeFactory,
    client_session: aiohttp.ClientSession,
    call: Publish,
    topic: object,
    error: type[Exception],
) -> None:
    """An empty topic raises ValueError and a non-str topic TypeError, everywhere."""
    served, handler = await start(serve)
    _, ws = await connect(served, handler, client_session)
    with pytest.raises(error):
        call(ws, served.server, topic)


# -- who receives a publish ------------------------------------------------------


async def test_server_publish_reaches_every_subscriber(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """server.publish delivers the message to each subscriber of the topic."""
    served, handler = await start(serve)
    pairs = [await connect(served, handler, client_session) for _ in range(3)]
    for _, ws in pairs:
        ws.subscribe(TOPIC)
    served.server.publish(TOPIC, "hello")
    assert [await receive(client) for client, _ in pairs] == ["hello"] * 3


async def test_publish_skips_non_subscribers(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """A socket subscribed to another topic, or to none, does not get the message."""
    served, handler = await start(serve)
    client, ws = await connect(served, handler, client_session)
    ws.subscribe("elsewhere")
    served.server.publish(TOPIC, "not for you")
    ws.send("marker")
    assert await receive(client) == "marker"


async def test_unsubscribed_socket_gets_nothing(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """After unsubscribe a socket no longer receives the topic's messages."""
    served, handler = await start(serve)
    client, ws = await connect(served, handler, client_session)
    ws.subscribe(TOPIC)
    ws.unsubscribe(TOPIC)
    served.server.publish(TOPIC, "too late")
    ws.send("marker")
    assert await receive(client) == "marker"


@pytest.mark.parametrize(
    ("publish_to_self", "expected"),
    [(False, "marker"), (True, "news")],
    ids=["excludes-self", "publish-to-self"],
)
async def test_ws_publish_and_self(
    serve: ServeFactory,
    client_session: aiohttp.ClientSession,
    publish_to_self: bool,
    expected: str,
) -> None:
    """ws.publish skips the publishing socket unless publish_to_self is set."""
    served, handler = await start(serve, publish_to_self=publish_to_self)
    client, ws = await connect(served, handler, client_session)
    ws.subscribe(TOPIC)
    ws.publish(TOPIC, "news")
    ws.send("marker")
    assert await receive(client) == expected


async def test_ws_publish_reaches_the_others(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """ws.publish delivers to the other subscribers, whether or not it subscribed."""
    served, handler = await start(serve)
    _, publisher = await connect(served, handler, client_session)
    pairs = [await connect(served, handler, client_session) for _ in range(2)]
    for _, ws in pairs:
        ws.subscribe(TOPIC)
    publisher.publish(TOPIC, "hi")
    assert [await receive(client) for client, _ in pairs] == ["hi", "hi"]


PUBLISH_VARIANTS: list[tuple[str, Publish, str | bytes]] = [
    ("publish-str", lambda ws, s, t: ws.publish(t, "é"), "é"),
    ("publish-bytes", lambda ws, s, t: ws.publish(t, b"\x00\xff"), b"\x00\xff"),
    ("publish-bytearray", lambda ws, s, t: ws.publish(t, bytearray(b"ab")), b"ab"),
    ("publish-memoryview", lambda ws, s, t: ws.publish(t, memoryview(b"cd")), b"cd"),
    ("publish_text", lambda ws, s, t: ws.publish_text(t, "text"), "text"),
    ("publish_binary", lambda ws, s, t: ws.publish_binary(t, b"bin"), b"bin"),
    ("server-str", lambda ws, s, t: s.publish(t, "srv"), "srv"),
    ("server-bytes", lambda ws, s, t: s.publish(t, b"srv"), b"srv"),
]


@pytest.mark.parametrize(
    ("call", "expected"),
    [(call, expected) for _, call, expected in PUBLISH_VARIANTS],
    ids=[name for name, _, _ in PUBLISH_VARIANTS],
)
async def test_publish_frame_type(
    serve: ServeFactory,
    client_session: aiohttp.ClientSession,
    call: Publish,
    expected: str | bytes,
) -> None:
    """str arrives as a text message and bytes-like as a binary one, unchanged."""
    served, handler = await start(serve)
    _, publisher = await connect(served, handler, client_session)
    client, ws = await connect(served, handler, client_session)
    ws.subscribe(TOPIC)
    call(publisher, served.server, TOPIC)
    received = await receive(client)
    assert (type(received), received) == (type(expected), expected)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (ServerWebSocket.publish_text, b"bytes"),
        (ServerWebSocket.publish_binary, "str"),
        (ServerWebSocket.publish, 1),
    ],
    ids=["text-given-bytes", "binary-given-str", "publish-given-int"],
)
async def test_publish_wrong_message_type_raises(
    serve: ServeFactory,
    client_session: aiohttp.ClientSession,
    call: Callable[[ServerWebSocket[Any], str, Any], int],
    message: object,
) -> None:
    """A message of the wrong type raises TypeError."""
    served, handler = await start(serve)
    _, ws = await connect(served, handler, client_session)
    with pytest.raises(TypeError):
        call(ws, TOPIC, message)


async def test_server_publish_wrong_message_type_raises(
    serve: ServeFactory,
) -> None:
    """server.publish of something that is neither str nor bytes-like raises TypeError."""
    served, _ = await start(serve)
    with pytest.raises(TypeError):
        served.server.publish(TOPIC, 1)  # type: ignore[arg-type]


# -- return codes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "expected"),
    [("hello", 5), ("é", 2), (b"\x00" * 300, 300), ("", 0)],
    ids=["ascii", "utf8-bytes", "binary-16-bit-length", "empty"],
)
async def test_publish_returns_payload_length(
    serve: ServeFactory,
    client_session: aiohttp.ClientSession,
    message: str | bytes,
    expected: int,
) -> None:
    """When every subscriber takes the message at once, publish returns its byte length."""
    served, handler = await start(serve)
    for _ in range(2):
        _, ws = await connect(served, handler, client_session)
        ws.subscribe(TOPIC)
    assert served.server.publish(TOPIC, message) == expected


async def test_ws_publish_returns_payload_length(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """ws.publish returns the byte length when every other subscriber takes it."""
    served, handler = await start(serve)
    _, publisher = await connect(served, handler, client_session)
    _, ws = await connect(served, handler, client_session)
    publisher.subscribe(TOPIC)
    ws.subscribe(TOPIC)
    assert publisher.publish(TOPIC, "four") == 4


async def test_publish_without_subscribers_returns_zero(serve: ServeFactory) -> None:
    """A publish to a topic nobody subscribed to returns 0."""
    served, _ = await start(serve)
    assert served.server.publish(TOPIC, "anyone?") == 0


async def test_ws_publish_only_self_subscribed_returns_zero(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """ws.publish returns 0 when the publisher is the topic's only subscriber."""
    served, handler = await start(serve)
    _, ws = await connect(served, handler, client_session)
    ws.subscribe(TOPIC)
    assert ws.publish(TOPIC, "echo?") == 0


# Kinds of subscriber for the worst-status-wins table.
FAST, SLOW, OVER = "fast", "slow", "over"


@pytest.mark.parametrize(
    ("kinds", "expected"),
    [
        ((FAST, FAST), 3),
        ((FAST, SLOW), -1),
        ((SLOW, FAST), -1),
        ((FAST, OVER), 0),
        ((FAST, SLOW, OVER), 0),
        ((OVER, SLOW, FAST), 0),
    ],
    ids=["all-fast", "fast-slow", "slow-fast", "fast-over", "all-three", "reversed"],
)
async def test_publish_worst_status_wins(
    serve: ServeFactory,
    client_session: aiohttp.ClientSession,
    raw_clients: list[RawClient],
    kinds: tuple[str, ...],
    expected: int,
) -> None:
    """publish returns length, -1 if any subscriber is backpressured, 0 if any dropped."""
    served, handler = await start(serve, backpressure_limit=LIMIT)
    for kind in kinds:
        if kind == FAST:
            _, ws = await connect(served, handler, client_session)
        else:
            _, ws = await connect_raw(served, handler, raw_clients)
            await backlog(ws, SMALL_BACKLOG if kind == SLOW else LARGE_BACKLOG)
        ws.subscribe(TOPIC)
    assert served.server.publish(TOPIC, "abc") == expected


async def test_backpressured_publish_is_delivered(
    serve: ServeFactory, raw_clients: list[RawClient]
) -> None:
    """A message for which publish returned -1 arrives, after the backlog, in order."""
    served, handler = await start(serve)
    client, ws = await connect_raw(served, handler, raw_clients)
    ws.subscribe(TOPIC)
    await backlog(ws, SMALL_BACKLOG)
    codes = [served.server.publish(TOPIC, f"m{i}") for i in range(3)]
    frames = await client.frames(4)
    assert codes == [-1, -1, -1]
    assert [payload for _, payload in frames[1:]] == [b"m0", b"m1", b"m2"]


async def test_dropped_publish_is_not_delivered(
    serve: ServeFactory, raw_clients: list[RawClient]
) -> None:
    """A message for which publish returned 0 never arrives; later ones still can."""
    served, handler = await start(serve, backpressure_limit=LIMIT)
    client, ws = await connect_raw(served, handler, raw_clients)
    ws.subscribe(TOPIC)
    await backlog(ws, LARGE_BACKLOG)
    dropped = served.server.publish(TOPIC, "dropped")
    await client.frames(1)  # the whole backlog: the server's buffer is empty again
    kept = served.server.publish(TOPIC, "kept")
    frames = await client.frames(1)
    assert (dropped, kept, frames[0][1]) == (0, 4, b"kept")


# -- subscriber_count --------------------------------------------------------------


async def test_subscriber_count_follows_every_change(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """subscriber_count is exact right after each subscribe, unsubscribe and close."""
    served, handler = await start(serve)
    _, first = await connect(served, handler, client_session)
    _, second = await connect(served, handler, client_session)
    count = served.server.subscriber_count
    counts = [count(TOPIC)]
    first.subscribe(TOPIC)
    counts.append(count(TOPIC))
    second.subscribe(TOPIC)
    counts.append(count(TOPIC))
    first.unsubscribe(TOPIC)
    counts.append(count(TOPIC))
    second.close()
    counts.append(count(TOPIC))
    assert counts == [0, 1, 2, 1, 0]


async def close_by_client(client: RawClient, ws: ServerWebSocket[Any]) -> None:
    await client.send(client_frame(OP_CLOSE, close_payload(1000)))


async def close_by_server(client: RawClient, ws: ServerWebSocket[Any]) -> None:
    ws.close()


async def terminate(client: RawClient, ws: ServerWebSocket[Any]) -> None:
    ws.terminate()


async def connection_lost(client: RawClient, ws: ServerWebSocket[Any]) -> None:
    client.reset()


async def backpressure_close(client: RawClient, ws: ServerWebSocket[Any]) -> None:
    await backlog(ws, LARGE_BACKLOG)
    ws.send("over the limit")


CLOSINGS = [close_by_client, close_by_server, terminate, connection_lost]


@pytest.mark.parametrize(
    "closing",
    [*CLOSINGS, backpressure_close],
    ids=[
        "client-close",
        "server-close",
        "terminate",
        "connection-lost",
        "backpressure-limit",
    ],
)
async def test_close_hook_sees_socket_gone(
    serve: ServeFactory,
    raw_clients: list[RawClient],
    closing: Callable[[RawClient, ServerWebSocket[Any]], Any],
) -> None:
    """In its close hook a socket has left every topic: the count excludes it and
    subscriptions is [], however the socket closed."""
    served, handler = await start(
        serve, backpressure_limit=LIMIT, close_on_backpressure_limit=True
    )
    _, stays = await connect_raw(served, handler, raw_clients, slow=False)
    client, leaves = await connect_raw(served, handler, raw_clients)
    for ws in (stays, leaves):
        ws.subscribe(TOPIC)
        ws.subscribe("other")
    await closing(client, leaves)
    event = await handler.next("close")
    assert event.ws is leaves
    assert handler.seen_in_close == [(1, [], False)]


async def test_close_hook_publish_reaches_remaining(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """server.publish from a close hook reaches the remaining subscribers only."""
    served, handler = await start(serve)
    handler.publish_in_close = "someone left"
    leaving, leaves = await connect(served, handler, client_session)
    client, stays = await connect(served, handler, client_session)
    leaves.subscribe(TOPIC)
    stays.subscribe(TOPIC)
    await leaving.close()
    assert await receive(client) == "someone left"
    assert handler.published_in_close == [len("someone left")]


# -- never blocking, never stopping -------------------------------------------------


async def test_publish_does_not_wait_for_a_slow_subscriber(
    serve: ServeFactory,
    client_session: aiohttp.ClientSession,
    raw_clients: list[RawClient],
) -> None:
    """With a subscriber that never reads, publish still returns at once each time
    and a reading subscriber gets every message."""
    served, handler = await start(serve)
    _, stuck = await connect_raw(served, handler, raw_clients)
    client, ws = await connect(served, handler, client_session)
    stuck.subscribe(TOPIC)
    ws.subscribe(TOPIC)
    await backlog(stuck, SMALL_BACKLOG)
    codes = [served.server.publish(TOPIC, f"{i}") for i in range(50)]
    received = [await receive(client) for _ in range(50)]
    assert set(codes) == {-1}
    assert received == [f"{i}" for i in range(50)]


async def test_fan_out_continues_past_subscriber_closed_by_limit(
    serve: ServeFactory,
    client_session: aiohttp.ClientSession,
    raw_clients: list[RawClient],
) -> None:
    """A subscriber closed by its backpressure limit mid-publish does not stop the
    delivery to the subscribers after it."""
    served, handler = await start(
        serve, backpressure_limit=LIMIT, close_on_backpressure_limit=True
    )
    first, ws1 = await connect(served, handler, client_session)
    _, over = await connect_raw(served, handler, raw_clients)
    last, ws2 = await connect(served, handler, client_session)
    for ws in (ws1, over, ws2):
        ws.subscribe(TOPIC)
    await backlog(over, LARGE_BACKLOG)
    code = served.server.publish(TOPIC, "still here")
    assert (await receive(first), await receive(last)) == ("still here",) * 2
    assert (code, served.server.subscriber_count(TOPIC)) == (0, 2)


async def test_fan_out_continues_past_failing_write(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """A subscriber whose transport write raises does not stop the others' delivery."""
    served, handler = await start(serve)
    pairs = [await connect(served, handler, client_session) for _ in range(3)]
    for _, ws in pairs:
        ws.subscribe(TOPIC)

    pairs[1][1].data.fail_with = OSError("broken transport")
    served.server.publish(TOPIC, "one")
    served.server.publish(TOPIC, "two")
    first, last = pairs[0][0], pairs[2][0]
    assert [await receive(first) for _ in range(2)] == ["one", "two"]
    assert [await receive(last) for _ in range(2)] == ["one", "two"]


async def test_failing_write_aborts_that_subscriber(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """A subscriber whose transport write raises is closed (1006) and leaves its topics."""
    served, handler = await start(serve)
    _, ws = await connect(served, handler, client_session)
    ws.subscribe(TOPIC)

    ws.data.fail_with = OSError("broken transport")
    served.server.publish(TOPIC, "lost")
    event = await handler.next("close")
    assert (event.ws, event.args[0]) == (ws, 1006)
    assert served.server.subscriber_count(TOPIC) == 0


async def test_fan_out_continues_past_closed_transport(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """A subscriber whose transport was closed underneath it is skipped quietly."""
    served, handler = await start(serve)
    pairs = [await connect(served, handler, client_session) for _ in range(3)]
    for _, ws in pairs:
        ws.subscribe(TOPIC)
    pairs[1][1].data.transport.close()
    served.server.publish(TOPIC, "ok")
    assert [await receive(pairs[0][0]), await receive(pairs[2][0])] == ["ok", "ok"]


async def test_publish_retains_no_object_per_subscriber(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """A publish to 50 subscribers leaves fewer than 5 new GC-tracked objects
    behind, so nothing (list, tuple) is allocated per delivery."""
    served, handler = await start(serve)
    pairs = [await connect(served, handler, client_session) for _ in range(50)]
    for _, ws in pairs:
        ws.subscribe(TOPIC)
    served.server.publish(TOPIC, "warm-up")
    for client, _ in pairs:
        await receive(client)
    gc.disable()
    try:
        before = gc.get_count()[0]
        served.server.publish(TOPIC, "counted")
        after = gc.get_count()[0]
    finally:
        gc.enable()
    assert after - before < 5


# -- ordering and coalescing --------------------------------------------------------


async def test_send_and_publish_keep_their_order(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """Interleaved send, server.publish and ws.publish arrive in call order."""
    served, handler = await start(serve)
    client, ws = await connect(served, handler, client_session)
    _, other = await connect(served, handler, client_session)
    ws.subscribe(TOPIC)
    ws.send("1")
    served.server.publish(TOPIC, "2")
    ws.send("3")
    other.publish(TOPIC, "4")
    ws.send_binary(b"5")
    assert [await receive(client) for _ in range(5)] == ["1", "2", "3", "4", b"5"]


async def test_one_turn_is_one_write(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """Everything sent to a socket during one loop turn goes out in one write."""
    served, handler = await start(serve)
    client, ws = await connect(served, handler, client_session)
    tap: Tap = ws.data
    ws.subscribe(TOPIC)
    before = len(tap.writes)
    ws.send("a")
    served.server.publish(TOPIC, "b")
    ws.send("c")
    assert [await receive(client) for _ in range(3)] == ["a", "b", "c"]
    assert len(tap.writes) - before == 1


async def test_cork_writes_once_before_returning(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """cork writes everything its callback sent in a single write before it returns."""
    served, handler = await start(serve)
    client, ws = await connect(served, handler, client_session)
    _, other = await connect(served, handler, client_session)
    tap: Tap = ws.data
    ws.subscribe(TOPIC)
    before = len(tap.writes)

    def burst(ws: ServerWebSocket[Any]) -> str:
        ws.send("a")
        served.server.publish(TOPIC, "b")
        other.publish(TOPIC, "c")
        ws.send(b"d")
        return "done"

    assert ws.cork(burst) == "done"
    assert len(tap.writes) - before == 1
    assert [await receive(client) for _ in range(4)] == ["a", "b", "c", b"d"]


async def test_publish_shares_one_frame(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """A publish hands the very same frame bytes to every subscriber's transport."""
    served, handler = await start(serve)
    pairs = [await connect(served, handler, client_session) for _ in range(3)]
    for _, ws in pairs:
        ws.subscribe(TOPIC)
    befores = [len(ws.data.writes) for _, ws in pairs]
    served.server.publish(TOPIC, "shared")
    for client, _ in pairs:
        assert await receive(client) == "shared"
    buffers = [
        ws.data.writes[before][0]
        for (_, ws), before in zip(pairs, befores, strict=True)
    ]
    assert all(buffer is buffers[0] for buffer in buffers)


# -- compression ---------------------------------------------------------------------


async def test_compressed_publish_to_mixed_subscribers(
    serve: ServeFactory, raw_clients: list[RawClient]
) -> None:
    """publish(compress=True) deflates for a client that negotiated it and sends the
    plain frame to one that did not; both get the message."""
    served, handler = await start(serve, per_message_deflate=True)
    deflating, ws1 = await connect_raw(served, handler, raw_clients, deflate=True)
    plain, ws2 = await connect_raw(served, handler, raw_clients, slow=False)
    ws1.subscribe(TOPIC)
    ws2.subscribe(TOPIC)
    message = "compress me " * 100
    code = served.server.publish(TOPIC, message, compress=True)
    [(first1, payload1)] = await deflating.frames(1)
    [(first2, payload2)] = await plain.frames(1)
    inflated = zlib.decompressobj(-15).decompress(payload1 + b"\x00\x00\xff\xff")
    assert (first1 & 0x40, len(payload1) < len(message)) == (0x40, True)
    assert inflated.decode() == message
    assert (first2, payload2.decode()) == (0x81, message)
    assert code == len(message)


async def test_uncompressed_publish_to_deflate_client(
    serve: ServeFactory, raw_clients: list[RawClient]
) -> None:
    """Without compress=True a publish is sent plain even when deflate was negotiated."""
    served, handler = await start(serve, per_message_deflate=True)
    client, ws = await connect_raw(served, handler, raw_clients, deflate=True)
    ws.subscribe(TOPIC)
    served.server.publish(TOPIC, "plain " * 50)
    [(first, payload)] = await client.frames(1)
    assert (first, payload.decode()) == (0x81, "plain " * 50)


class AsyncSender(Recorder):
    """An async message hook that counts the writes its sends cause."""

    def __init__(self) -> None:
        super().__init__()
        self.writes_per_send: list[int] = []
        self.writes_in_cork: int | None = None

    async def message(  # type: ignore[override]  # Recorder.message is sync
        self, ws: ServerWebSocket[Any], message: str | bytes
    ) -> None:
        tap: Tap = ws.data
        if message == "cork":
            before = len(tap.writes)
            ws.cork(lambda ws: [ws.send(part) for part in ("x", "y", "z")])
            self.writes_in_cork = len(tap.writes) - before
            return
        for part in ("first", "second"):
            before = len(tap.writes)
            ws.send(part)
            self.writes_per_send.append(len(tap.writes) - before)
            await asyncio.sleep(0)


async def test_async_hook_sends_are_written_at_once(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """A send from an async hook is handed to the transport before send returns."""
    handler = AsyncSender()
    served = await serve(handler, tapped)
    client, _ = await connect(served, handler, client_session)
    await client.send_str("go")
    assert [await receive(client) for _ in range(2)] == ["first", "second"]
    assert handler.writes_per_send == [1, 1]


async def test_cork_inside_an_async_hook_is_one_write(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """Sends inside cork() from an async hook still go out in a single write."""
    handler = AsyncSender()
    served = await serve(handler, tapped)
    client, _ = await connect(served, handler, client_session)
    await client.send_str("cork")
    assert [await receive(client) for _ in range(3)] == ["x", "y", "z"]
    assert handler.writes_in_cork == 1


async def test_a_dropped_relayed_text_message_reaches_the_hook_as_str(
    serve: ServeFactory, raw_clients: list[RawClient]
) -> None:
    """A message from another process that a backpressured subscriber drops reaches
    its dropped hook decoded, as the str the other process published."""
    seen: list[object] = []

    class Dropped(Watcher):
        def dropped(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
            seen.append(message)

    handler = Dropped(backpressure_limit=LIMIT)
    served = await serve(handler, tapped)
    _, ws = await connect_raw(served, handler, raw_clients)
    ws.subscribe("room")
    await backlog(ws, LARGE_BACKLOG)
    assert served.server.deliver("room", 1, "ünï".encode(), False) == 0
    assert seen == ["ünï"]
