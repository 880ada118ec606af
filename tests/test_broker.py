"""The broker interface and the ``subscription`` hook, in one process, no Redis.

A ``RecordingBroker`` is a real :class:`Broker` that keeps what the server told
it, so these tests check the contract between server and broker with real
sockets and no transport.
"""

from __future__ import annotations

import ast
import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from aiohttp_upgrade import (
    Broker,
    BrokerUnavailableError,
    InvalidOptionError,
    LocalBroker,
    Server,
    ServerWebSocket,
    WebSocketHandler,
)
from aiohttp_upgrade._broker import BrokerHost
from aiohttp_upgrade._handler import hook_table
from aiohttp_upgrade._hooks import Kind

from .conftest import ConnectWs, upgrade_with_data

TIMEOUT = 10
PACKAGE = Path(__file__).resolve().parent.parent / "aiohttp_upgrade"
REDIS_MODULES = [
    PACKAGE / "_redis_broker.py",
    *sorted((PACKAGE / "_redis").glob("*.py")),
]


class RecordingBroker(Broker):
    """Keeps every call the server makes, and lets a test inject remote messages."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.host: BrokerHost | None = None
        self.published: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    async def start(self, host: BrokerHost) -> None:
        self.host = host
        self.calls.append(("start",))

    async def close(self) -> None:
        self.calls.append(("close",))

    def subscription(self, topic: str, new_count: int, old_count: int) -> None:
        self.calls.append(("subscription", topic, new_count, old_count))

    def publish(self, topic: str, opcode: int, payload: bytes, compress: bool) -> None:
        self.calls.append(("publish", topic, opcode, payload, compress))
        self.published.put_nowait((topic, opcode, payload, compress))

    async def cluster_count(self, topic: str) -> int:
        return 100

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [call[1:] for call in self.calls if call[0] == kind]


class Events(WebSocketHandler[str]):
    """Subscribes to ``ws.data`` on open; records subscription and close calls."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.events: list[tuple[Any, ...]] = []
        self.closed = asyncio.Event()
        self.counts: asyncio.Queue[int] = asyncio.Queue()

    async def wait_count(self, count: int) -> None:
        """Wait until a subscription hook call reports ``count`` subscribers."""
        async with asyncio.timeout(TIMEOUT):
            while await self.counts.get() != count:
                pass

    def open(self, ws: ServerWebSocket[str]) -> None:
        ws.subscribe(ws.data)

    def message(self, ws: ServerWebSocket[str], message: str | bytes) -> None:
        if message == "unsub":
            ws.unsubscribe(ws.data)
        elif message == "sub-again":
            ws.subscribe(ws.data)
        else:
            ws.publish(ws.data, message)

    def subscription(
        self, ws: ServerWebSocket[str], topic: str, new_count: int, old_count: int
    ) -> None:
        self.events.append(("subscription", topic, new_count, old_count))
        self.counts.put_nowait(new_count)

    def close(self, ws: ServerWebSocket[str], code: int, reason: str) -> None:
        self.events.append(("close",))
        self.closed.set()


Start = Callable[..., Awaitable[tuple[Server[str], str]]]


@pytest.fixture
async def start(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> AsyncIterator[Start]:
    """Serve ``Server(handler, broker=...)`` at /ws; return it and its URL."""

    async def run(
        handler: WebSocketHandler[str], broker: Broker | None = None
    ) -> tuple[Server[str], str]:
        server: Server[str] = Server(handler, broker=broker)
        app = web.Application()
        server.setup(app)
        app.router.add_get("/ws", server.handler(upgrade_with_data("room")))
        http = await aiohttp_server(app)
        url = str(http.make_url("/ws")).replace("http://", "ws://", 1)
        return server, url

    yield run


async def receive(ws: aiohttp.ClientWebSocketResponse) -> Any:
    msg = await asyncio.wait_for(ws.receive(), TIMEOUT)
    return msg.data


# -- the subscription hook ----------------------------------------------------------


async def test_subscription_hook_reports_local_counts(
    start: Start, connect_ws: ConnectWs
) -> None:
    """subscribe, unsubscribe and a second subscriber each call the hook with
    the counts after and before."""
    handler = Events()
    server, url = await start(handler)
    first = await connect_ws(url)
    second = await connect_ws(url)
    await second.send_str("unsub")
    await second.send_str("sub-again")
    await second.send_str("ping")  # published to first: all three were handled
    assert await receive(first) == "ping"
    assert handler.events == [
        ("subscription", "room", 1, 0),
        ("subscription", "room", 2, 1),
        ("subscription", "room", 1, 2),
        ("subscription", "room", 2, 1),
    ]
    assert server.subscriber_count("room") == 2


async def test_subscription_hook_runs_before_close_when_a_socket_leaves(
    start: Start, connect_ws: ConnectWs
) -> None:
    """A closing socket leaves its topics first: subscription(..., 0, 1), then close."""
    handler = Events()
    _, url = await start(handler)
    ws = await connect_ws(url)
    await ws.close()
    await asyncio.wait_for(handler.closed.wait(), TIMEOUT)
    assert handler.events[-2:] == [("subscription", "room", 0, 1), ("close",)]


def test_subscription_hook_not_overridden_costs_nothing() -> None:
    """A handler without a subscription hook registers none."""
    assert hook_table(WebSocketHandler[Any]())[Kind.SUBSCRIPTION] is None
    assert hook_table(Events())[Kind.SUBSCRIPTION] is not None


async def test_subscription_hook_raising_closes_only_that_socket(
    start: Start, connect_ws: ConnectWs
) -> None:
    """A raising subscription hook closes the subscribing socket with 1011; others live."""

    class Raising(Events):
        def subscription(
            self, ws: ServerWebSocket[str], topic: str, new: int, old: int
        ) -> None:
            super().subscription(ws, topic, new, old)
            if new == 2:
                raise RuntimeError("boom")

    handler = Raising()
    _, url = await start(handler)
    first = await connect_ws(url)
    second = await connect_ws(url)
    msg = await asyncio.wait_for(second.receive(), TIMEOUT)
    assert msg.type is aiohttp.WSMsgType.CLOSE
    assert msg.data == 1011
    await first.send_str("still open")
    await first.send_str("unsub")
    await first.send_str("sub-again")
    third = await connect_ws(url)  # count 2 again: closed too
    assert (await asyncio.wait_for(third.receive(), TIMEOUT)).data == 1011
    assert not first.closed


async def test_async_subscription_hook_runs(
    start: Start, connect_ws: ConnectWs
) -> None:
    """An async subscription hook is run to its end."""
    seen: asyncio.Queue[tuple[str, int, int]] = asyncio.Queue()

    class Async(WebSocketHandler[str]):
        def open(self, ws: ServerWebSocket[str]) -> None:
            ws.subscribe(ws.data)

        async def subscription(
            self, ws: ServerWebSocket[str], topic: str, new: int, old: int
        ) -> None:
            await asyncio.sleep(0)
            seen.put_nowait((topic, new, old))

    _, url = await start(Async())
    ws = await connect_ws(url)
    assert not ws.closed
    assert await asyncio.wait_for(seen.get(), TIMEOUT) == ("room", 1, 0)


# -- the server and its broker ------------------------------------------------------


async def test_server_drives_the_broker(
    start: Start,
    connect_ws: ConnectWs,
    client_session: aiohttp.ClientSession,
) -> None:
    """Startup starts the broker; subscriptions, publishes (socket and server) reach
    it with raw opcode and payload; cleanup closes it."""
    broker = RecordingBroker()
    server, url = await start(Events(), broker)
    assert broker.calls == [("start",)]
    assert broker.host is server
    ws = await connect_ws(url)
    await ws.send_bytes(b"\x00bin")
    await ws.send_str("unsub")
    await ws.send_str("sub-again")
    await ws.send_str("text")
    for expected in [("room", 2, b"\x00bin", False), ("room", 1, b"text", False)]:
        assert await asyncio.wait_for(broker.published.get(), TIMEOUT) == expected
    server.publish("room", "hello", compress=True)
    assert await receive(ws) == "hello"
    assert broker.published.get_nowait() == ("room", 1, b"hello", True)
    assert broker.of("subscription") == [
        ("room", 1, 0),
        ("room", 0, 1),
        ("room", 1, 0),
    ]
    assert await server.cluster_subscriber_count("room") == 100
    await ws.close()
    await client_session.close()
    await server.shutdown()


async def test_delivered_messages_reach_every_local_subscriber_and_are_not_relayed(
    start: Start, connect_ws: ConnectWs
) -> None:
    """A message from another process goes to all local subscribers, frame intact,
    and is not published back to the broker."""
    broker = RecordingBroker()
    handler = Events()
    server, url = await start(handler, broker)
    sockets = [await connect_ws(url) for _ in range(3)]
    await handler.wait_count(3)
    assert server.deliver("room", 2, b"\xff\x00remote", False) == 8
    assert server.deliver("room", 1, "ünï".encode(), True) == 5
    for ws in sockets:
        assert await receive(ws) == b"\xff\x00remote"
        assert await receive(ws) == "ünï"
    assert broker.of("publish") == []
    assert server.deliver("nobody", 1, b"x", False) == 0


async def test_without_a_broker_the_cluster_count_is_local(
    start: Start, connect_ws: ConnectWs
) -> None:
    """No broker: cluster_subscriber_count equals subscriber_count."""
    handler = Events()
    server, url = await start(handler)
    assert isinstance(server.broker, LocalBroker)
    sockets = [await connect_ws(url) for _ in range(2)]
    await handler.wait_count(len(sockets))
    assert await server.cluster_subscriber_count("room") == 2


def test_server_refuses_a_broker_that_is_not_one() -> None:
    """Server(broker=...) needs a Broker instance."""
    with pytest.raises(TypeError, match="broker must be a Broker"):
        Server(Events(), broker="redis://localhost")  # type: ignore[arg-type]


def test_broker_unavailable_is_a_connection_error() -> None:
    """BrokerUnavailableError can be caught as WebSocketError or ConnectionError."""
    assert issubclass(BrokerUnavailableError, ConnectionError)


# -- the optional redis dependency ---------------------------------------------------


def test_base_install_imports_without_redis() -> None:
    """With redis unimportable, the package and its star import work, and only
    touching RedisBroker raises ImportError."""
    code = (
        "import sys\n"
        "sys.modules['redis'] = None\n"
        "import aiohttp_upgrade\n"
        "from aiohttp_upgrade import *\n"
        "Server(WebSocketHandler())\n"
        "try:\n"
        "    aiohttp_upgrade.RedisBroker\n"
        "except ImportError:\n"
        "    print('ImportError')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ImportError"


# Run before the script by run_without_redis: redis is not installed, as far as
# imports go (ModuleNotFoundError with name="redis", as for a missing package).
BLOCK_REDIS = """
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "redis" or name.startswith("redis."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Block())
"""


def run_without_redis(script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a new Python where the redis package is not installed."""
    return subprocess.run(
        [sys.executable, "-c", BLOCK_REDIS + script],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    "access",
    [
        "import aiohttp_upgrade; aiohttp_upgrade.RedisBroker",
        "from aiohttp_upgrade import RedisBroker",
        "from aiohttp_upgrade._redis_broker import RedisBroker",
    ],
    ids=["attribute", "from-package", "from-module"],
)
def test_redis_broker_without_the_extra_names_it(access: str) -> None:
    """Without redis installed, reaching RedisBroker raises an ImportError whose
    message says which extra to install."""
    result = run_without_redis(f"""
try:
    {access}
except ImportError as exc:
    print(type(exc).__name__, "|", exc)
""")
    assert result.returncode == 0, result.stderr
    kind, _, message = result.stdout.strip().partition(" | ")
    assert kind == "ModuleNotFoundError"
    assert "pip install 'aiohttp-upgrade[redis]'" in message


def test_redis_broker_is_importable_lazily() -> None:
    """aiohttp_upgrade.RedisBroker is the class from aiohttp_upgrade._redis_broker."""
    import aiohttp_upgrade
    from aiohttp_upgrade._redis_broker import RedisBroker

    assert aiohttp_upgrade.RedisBroker is RedisBroker
    with pytest.raises(AttributeError):
        aiohttp_upgrade.NoSuchThing  # noqa: B018


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_queue", 0),
        ("max_queue", 1.5),
        ("heartbeat_interval", 0),
        ("heartbeat_interval", float("nan")),
        ("backoff_base", -1),
        ("backoff_cap", True),
        ("max_batch_bytes", 0),
        ("max_queue_bytes", 0),
        ("max_queue_bytes", 2.5),
        ("stall_timeout", 0),
        ("stall_timeout", float("inf")),
    ],
    ids=[
        "queue-0",
        "queue-float",
        "heartbeat-0",
        "heartbeat-nan",
        "backoff",
        "cap-bool",
        "batch-0",
        "queue-bytes-0",
        "queue-bytes-float",
        "stall-0",
        "stall-inf",
    ],
)
def test_redis_broker_validates_options(option: str, value: object) -> None:
    """An out-of-range option raises InvalidOptionError naming it."""
    from aiohttp_upgrade import RedisBroker

    with pytest.raises(InvalidOptionError, match=option):
        options: dict[str, Any] = {option: value}
        RedisBroker("redis://127.0.0.1:1", **options)


def test_redis_broker_refuses_a_decoding_client() -> None:
    """A client that decodes responses would corrupt binary payloads: refused."""
    from redis.asyncio import Redis

    from aiohttp_upgrade import RedisBroker

    with pytest.raises(InvalidOptionError, match="decode"):
        RedisBroker(Redis(decode_responses=True))
    with pytest.raises(TypeError):
        RedisBroker(6379)  # type: ignore[arg-type]


def test_redis_broker_drops_and_counts_while_not_connected() -> None:
    """Publishing through a broker with no Redis connection drops and counts."""
    from aiohttp_upgrade import RedisBroker

    broker = RedisBroker("redis://127.0.0.1:1")
    for _ in range(3):
        broker.publish("room", 1, b"x", False)
    assert broker.dropped == 3
    assert broker.published == 0


@pytest.mark.parametrize(
    "path",
    [path for path in REDIS_MODULES if path.name != "_compat.py"],
    ids=lambda path: path.name,
)
def test_redis_broker_picks_no_attribute_by_name(path: Path) -> None:
    """None of RedisBroker's modules picks an attribute by name with
    getattr/setattr outside _compat (its connections are objects, not strings).
    Sizes and private access are checked package-wide in test_structure."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Name):
            assert node.id not in {"getattr", "setattr"}, node.lineno
