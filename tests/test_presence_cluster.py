"""Presence across real server processes (``tests/presence_app.py`` under
``python -m aiohttp.web``) sharing a real redis-server: four processes agree on
who is here, and a SIGKILLed process's members leave the others' views.

Each process has a watcher socket that its ``presence`` hook sends every diff
to; a test waits for the diffs it expects on the watchers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from .conftest import ConnectWs
from .redis_support import AppProcess, RedisProcess, requires_redis

pytestmark = [pytest.mark.redis, requires_redis]

TIMEOUT = 15.0
HEARTBEAT = 0.2  # a silent process is gone after 3 of them
APP = "tests.presence_app:init_app"


@pytest.fixture
def processes() -> Iterator[list[AppProcess]]:
    """Redis and four presence app processes (two on 127.0.0.2)."""
    redis = RedisProcess()
    redis.start()
    hosts = ["127.0.0.1", "127.0.0.2", "127.0.0.1", "127.0.0.2"]
    apps: list[AppProcess] = []
    try:
        for host in hosts:
            apps.append(AppProcess(host, redis.url, HEARTBEAT, app=APP))
        yield apps
    finally:
        for app in apps:
            app.stop()
        redis.kill()


class Watcher:
    """A watcher socket on one process: folds the diffs it gets into members."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.members: dict[str, list[Any]] = {}

    async def until(self, expected: dict[str, list[Any]]) -> None:
        """Read diffs until the members seen equal ``expected``."""
        while self.members != expected:
            message = await asyncio.wait_for(self.ws.receive(), TIMEOUT)
            diff = json.loads(message.data)
            for key, metas in diff["leaves"].items():
                for meta in metas:
                    self.members[key].remove(meta)
                if not self.members[key]:
                    del self.members[key]
            for key, metas in diff["joins"].items():
                self.members.setdefault(key, []).extend(metas)
            for metas in self.members.values():
                metas.sort()


async def watch(connect_ws: ConnectWs, app: AppProcess) -> Watcher:
    return Watcher(await connect_ws(app.ws_url().replace("?sub=", "?watch=1&sub=")))


async def command(ws: aiohttp.ClientWebSocketResponse, text: str) -> str:
    await ws.send_str(text)
    reply = (await asyncio.wait_for(ws.receive(), TIMEOUT)).data
    assert isinstance(reply, str)
    return reply


async def test_four_processes_agree_on_who_is_here(
    processes: list[AppProcess], connect_ws: ConnectWs
) -> None:
    """Members tracked and untracked on four processes: every process's view ends
    the same, as its hook's diffs and its listing show."""
    watchers = [await watch(connect_ws, app) for app in processes]
    clients = [await connect_ws(app.ws_url()) for app in processes]
    for index, client in enumerate(clients):
        assert await command(client, f"!track user{index} {index}") == (
            f"tracked user{index}"
        )
    everyone = {f"user{index}": [index] for index in range(4)}
    for watcher in watchers:
        await watcher.until(everyone)
    assert await command(clients[1], "!untrack") == "untracked True"
    await clients[2].close()
    rest = {"user0": [0], "user3": [3]}
    for watcher in watchers:
        await watcher.until(rest)
    # Each process lists in the order it saw the joins, which may differ.
    for client in (clients[0], clients[3]):
        listing = await command(client, "!list")
        assert json.loads(listing.removeprefix("list ")) == rest


async def test_a_killed_process_members_leave_the_others_views(
    processes: list[AppProcess], connect_ws: ConnectWs
) -> None:
    """SIGKILL a process: its members leave every other process's view once it
    has been silent for 3 heartbeat intervals."""
    doomed = processes[3]
    watchers = [await watch(connect_ws, app) for app in processes[:3]]
    survivor = await connect_ws(processes[0].ws_url())
    victim = await connect_ws(doomed.ws_url())
    await command(survivor, "!track stays 1")
    await command(victim, '!track doomed "tab"')
    for watcher in watchers:
        await watcher.until({"stays": [1], "doomed": ["tab"]})
    doomed.kill()
    for watcher in watchers:
        await watcher.until({"stays": [1]})
