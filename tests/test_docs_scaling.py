"""docs/scaling.rst on ordering across processes: what it says, and that it holds
against a real redis-server.

As in tests/test_redis_broker.py, two Servers in this process each have their own
RedisBroker (their own origin and connections), as two worker processes would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from aiohttp_upgrade import Server
from aiohttp_upgrade._redis_broker import RedisBroker

from .conftest import ConnectWs, upgrade_with_data
from .redis_support import (
    ROOM,
    RedisProcess,
    Subscribe,
    module_redis,  # noqa: F401 - the redis fixture
    requires_redis,
    wait_subscribed,
)

ROOT = Path(__file__).resolve().parent.parent
TOPIC = ROOM
PREFIX = "ordering:"


def _flat(path: Path) -> str:
    return " ".join(path.read_text(encoding="utf-8").split())


def test_scaling_page_says_order_is_per_process_and_what_to_do() -> None:
    """docs/scaling.rst has a section on ordering across workers naming the remedies."""
    text = _flat(ROOT / "docs" / "scaling.rst")
    start = text.index("Ordering across workers")
    section = text[start : start + 4000]
    for remedy in ("one worker", "over its WebSocket", "sequence number"):
        assert remedy in section, remedy


def test_readme_says_order_is_per_publishing_process() -> None:
    """The README's cluster guarantees say "in order" per publishing process."""
    text = _flat(ROOT / "README.rst")
    assert "in order per publisher and topic" not in text
    assert "in order per publishing process and topic" in text


@pytest.fixture
async def two_workers(
    redis: RedisProcess,
    aiohttp_server: Callable[[web.Application], Awaitable[TestServer]],
) -> AsyncIterator[list[tuple[Server[None], str]]]:
    """Two Servers sharing topics through Redis, each with its WebSocket URL."""
    workers = []
    for _ in range(2):
        server: Server[None] = Server(
            Subscribe(), broker=RedisBroker(redis.url, channel_prefix=PREFIX)
        )
        app = web.Application()
        server.setup(app)
        app.router.add_get("/ws", server.handler(upgrade_with_data()))
        http = await aiohttp_server(app)
        workers.append((server, str(http.make_url("/ws"))))
    yield workers


async def receive_two(ws: aiohttp.ClientWebSocketResponse) -> list[str]:
    return [await asyncio.wait_for(ws.receive_str(), 10) for _ in range(2)]


@pytest.mark.redis
@requires_redis
async def test_publishes_from_two_processes_arrive_in_each_ones_local_order_first(
    two_workers: list[tuple[Server[None], str]],
    redis: RedisProcess,
    connect_ws: ConnectWs,
) -> None:
    """ "1" published on A and then "2" on B reach A's subscriber as 1, 2 and B's
    as 2, 1: each process delivers its own publish at once, the other's through
    Redis."""
    (a, a_url), (b, b_url) = two_workers
    on_a = await connect_ws(a_url)
    on_b = await connect_ws(b_url)
    await wait_subscribed(redis, PREFIX + TOPIC, 2)
    a.publish(TOPIC, "1")
    b.publish(TOPIC, "2")
    assert await receive_two(on_a) == ["1", "2"]
    assert await receive_two(on_b) == ["2", "1"]
