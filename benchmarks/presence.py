"""Presence: convergence across processes, the kill bound, listing and the cost
of a delta, printed as figures.

1. Convergence: a redis-server and 4 app processes (``tests/presence_app.py``
   with a ``RedisBroker``). ``--changes`` changes in all: ``--changes / 8``
   sockets per process are each tracked under a new key, then each untracked
   (one socket after another on each process, the four processes at once,
   each command waiting for its answer). Each process has a watcher
   socket its ``presence`` hook sends every diff to. A change's latency is
   from sending its command to the moment the last of the 3 other processes'
   watchers got a diff with it: it includes the hook's 50 ms batching.
   Printed: p50, p99, max.
2. Kill bound: 3 processes with the default heartbeat (5 s; a process is gone
   after 3 silent intervals, 15 s); a member tracked on the third, which is
   SIGKILLed; printed is the time until both others' watchers saw it leave.
3. Listing: ``server.presence.list(topic)`` with 10,000 members (from other
   processes, applied as deltas) in this process; median ms over 50 calls.
4. A delta's cost: one join then one leave received on the presence channel
   (JSON parsed, applied to the view, batched for the hook) with 100 and with
   10,000 members in the topic already; µs per applied delta (median of 5
   rounds of 2,000).

Usage: python benchmarks/presence.py [--changes 1000] [--kills 1] [--skip-kill]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from typing import Any

import aiohttp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import percentile  # noqa: E402

from aiohttp_upgrade import Server, WebSocketHandler  # noqa: E402
from aiohttp_upgrade._redis._config import Config, Counters, Session, Wakeup  # noqa: E402
from aiohttp_upgrade._redis._link import Link  # noqa: E402
from aiohttp_upgrade._redis._presence import RedisPresence  # noqa: E402
from tests.redis_support import AppProcess, RedisProcess  # noqa: E402

APP = "tests.presence_app:init_app"
HOSTS = ["127.0.0.1", "127.0.0.2", "127.0.0.1", "127.0.0.2"]


class Watch:
    """Reads one process's diffs; records when each (kind, key) was first seen."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.seen: dict[tuple[str, str], float] = {}
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self.read())

    async def until(self, event: tuple[str, str]) -> None:
        """Wait until ``event`` has been seen."""
        while event not in self.seen:
            self.changed.clear()
            await self.changed.wait()

    async def read(self) -> None:
        async for message in self.ws:
            now = time.perf_counter()
            diff = json.loads(message.data)
            for kind in ("joins", "leaves"):
                for key in diff[kind]:
                    self.seen.setdefault((kind, key), now)
            self.changed.set()


Sent = list[tuple[tuple[str, str], float]]


async def actor(
    sockets: list[aiohttp.ClientWebSocketResponse], name: str, leave: bool
) -> Sent:
    """Track each socket under a new key (or untrack them all), one at a time;
    the send time of each change."""
    sent = []
    for index, ws in enumerate(sockets):
        key = f"{name}-{index}"
        if leave:
            sent.append((("leaves", key), time.perf_counter()))
            await ws.send_str("!untrack")
        else:
            sent.append((("joins", key), time.perf_counter()))
            await ws.send_str(f"!track {key} {index}")
        await ws.receive()
    return sent


async def seen_everywhere(watches: list[Watch], sent: list[Sent]) -> list[float]:
    """Wait until every change is seen by the other processes' watchers; the
    latency of each."""
    latencies: list[float] = []
    async with asyncio.timeout(30):
        for origin, events in enumerate(sent):
            others = [w for i, w in enumerate(watches) if i != origin]
            for event, at in events:
                await asyncio.gather(*(w.until(event) for w in others))
                latencies.append(max(w.seen[event] for w in others) - at)
    return latencies


async def convergence(redis: RedisProcess, changes: int) -> list[float]:
    apps = [AppProcess(host, redis.url, 5.0, app=APP) for host in HOSTS]
    try:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            watch_urls = [
                app.ws_url().replace("?sub=", "?watch=1&sub=") for app in apps
            ]
            watches = [Watch(await session.ws_connect(url)) for url in watch_urls]
            per_app = changes // 2 // len(apps)
            actors = [
                [await session.ws_connect(app.ws_url()) for _ in range(per_app)]
                for app in apps
            ]
            await asyncio.sleep(1.0)  # every broker's hello answered
            latencies: list[float] = []
            for leave in (False, True):
                # The leaves only once the joins are seen everywhere: a join and
                # a leave within one batch would cancel out.
                sent = await asyncio.gather(
                    *(actor(s, f"p{i}", leave) for i, s in enumerate(actors))
                )
                latencies += await seen_everywhere(watches, sent)
            for ws in (*(ws for s in actors for ws in s), *(w.ws for w in watches)):
                await ws.close()
            return latencies
    finally:
        for app in apps:
            out = app.stop()
            if os.environ.get("PRESENCE_BENCH_VERBOSE"):
                print(out[-2000:])


async def kill_bound(redis: RedisProcess) -> float:
    apps = [AppProcess(host, redis.url, 5.0, app=APP) for host in HOSTS[:3]]
    try:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            watch_urls = [
                app.ws_url().replace("?sub=", "?watch=1&sub=") for app in apps
            ]
            watches = [Watch(await session.ws_connect(url)) for url in watch_urls[:2]]
            victim = await session.ws_connect(apps[2].ws_url())
            await asyncio.sleep(1.0)
            await victim.send_str("!track doomed 1")
            await asyncio.gather(*(w.until(("joins", "doomed")) for w in watches))
            killed = time.perf_counter()
            apps[2].kill()
            await asyncio.gather(*(w.until(("leaves", "doomed")) for w in watches))
            gone = max(w.seen["leaves", "doomed"] for w in watches) - killed
            for ws in (victim, *(w.ws for w in watches)):
                await ws.close()
            return gone
    finally:
        for app in apps:
            app.stop()


def local_presence() -> tuple[Server[Any], RedisPresence]:
    """A Server and the Redis side of its presence, fed by hand (no Redis)."""
    server: Server[Any] = Server(WebSocketHandler())
    config = Config(
        channel_prefix="bench:",
        max_queue=10,
        heartbeat_interval=5.0,
        backoff_base=0.1,
        backoff_cap=1.0,
        max_batch_bytes=1024,
        max_queue_bytes=1024,
        stall_timeout=5.0,
    )
    session = Session(config, server, None)
    links = (Link(), Link())
    return server, RedisPresence(config, Counters(), session, links, Wakeup())


def fill(presence: RedisPresence, members: int) -> None:
    changes = [[n, "room", f"user{n}", {"name": f"User {n}"}] for n in range(members)]
    message = {"o": "other", "t": "s", "s": 1, "e": changes}
    presence.received(presence.channel, json.dumps(message).encode())


async def listing_ms(members: int) -> float:
    server, presence = local_presence()
    fill(presence, members)
    assert server.presence.count("room") == members
    times = []
    for _ in range(50):
        start = time.perf_counter()
        server.presence.list("room")
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


async def delta_us(members: int, rounds: int = 5, count: int = 2000) -> float:
    server, presence = local_presence()
    fill(presence, members)
    channel = presence.channel
    results = []
    seq = 1
    for _ in range(rounds):
        messages = []
        for index in range(count):
            seq += 1
            number = 1_000_000 + index // 2
            change: list[Any] = [number]
            if index % 2 == 0:
                change += ["room", f"new{index}", {"name": "New"}]
            message = {"o": "other", "t": "d", "s": seq, "c": [change]}
            messages.append(json.dumps(message).encode())
        start = time.perf_counter()
        for data in messages:
            presence.received(channel, data)
        results.append((time.perf_counter() - start) / count)
        assert server.presence.count("room") == members
    return statistics.median(results) * 1e6


async def main(args: argparse.Namespace) -> None:
    redis = RedisProcess()
    redis.start()
    try:
        latencies = await convergence(redis, args.changes)
        ms = [value * 1000 for value in latencies]
        print(
            f"convergence, 4 processes, {len(ms)} changes: p50 "
            f"{percentile(ms, 50):.1f} ms, p99 {percentile(ms, 99):.1f} ms, "
            f"max {max(ms):.1f} ms"
        )
        if not args.skip_kill:
            for _ in range(args.kills):
                gone = await kill_bound(redis)
                print(f"SIGKILLed process's member gone everywhere after {gone:.2f} s")
    finally:
        redis.kill()
    for members in (100, 10_000):
        print(f"list() of {members} members: {await listing_ms(members):.2f} ms")
    for members in (100, 1_000, 10_000, 100_000):
        print(
            f"one delta applied at {members} members: {await delta_us(members):.1f} µs"
        )


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=1)
    parser.add_argument("--skip-kill", action="store_true")
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    run()
