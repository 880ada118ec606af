"""Topic history through Redis: replay latency, publish CPU, bystanders.

Real processes: a redis-server and workers (tests/history_app.py under
``python -m aiohttp.web`` with a RedisBroker); the clients run here.

- replay: 1,000 messages published while a client was away; the time from
  sending ``resume`` (the subscribe) to receiving the last replayed message,
  over ``--rounds`` resumes (p50, p99). Target: p99 < 50 ms.
- cpu: two workers, subscribers on both; ``--messages`` publishes through the
  first one to a history topic and to a plain topic, alternating, paced; the
  CPU time of both workers (utime + stime) per message for each, and the ratio
  history / plain per round. Target: <= 1.5.
- bystander: one worker; a client's echo round trip (p99) alone, then during
  replays of 10,000 messages to another client (a raw socket that discards
  what it reads, one replay after another), alternating ``--repeat`` times.
  Target: ratio <= 2.

Usage: python benchmarks/history.py [--rounds 100] [--messages 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import sys
import time

import aiohttp

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from _common import cpu_seconds, percentile  # noqa: E402

from tests.chaos_support import Worker  # noqa: E402
from tests.redis_support import RedisProcess  # noqa: E402

Socket = aiohttp.ClientWebSocketResponse


async def publish(
    http: aiohttp.ClientSession, worker: Worker, topic: str, n: int
) -> None:
    url = f"http://127.0.0.1:{worker.port}/publish"
    for start in range(0, n, 1000):
        query = {"topic": topic, "text": "x" * 90, "n": str(min(1000, n - start))}
        async with http.get(url, params=query) as response:
            assert response.status == 200


async def position(http: aiohttp.ClientSession, worker: Worker, topic: str) -> str:
    url = f"http://127.0.0.1:{worker.port}/history"
    async with http.get(url, params={"topic": topic, "limit": "1"}) as response:
        return str((await response.json())["position"])


async def wait_position(
    http: aiohttp.ClientSession, worker: Worker, topic: str, offset: int
) -> str:
    while True:
        found = await position(http, worker, topic)
        if int(found.split(":")[1]) >= offset:
            return found
        await asyncio.sleep(0.01)


async def replay_once(
    http: aiohttp.ClientSession, worker: Worker, since: str, n: int
) -> float:
    """Seconds from sending resume to the n-th replayed message."""
    async with http.ws_connect(
        f"ws://127.0.0.1:{worker.port}/ws", max_msg_size=0
    ) as ws:
        started = time.perf_counter()
        await ws.send_str(f"resume h:replay {since}")
        for _ in range(n):
            msg = await ws.receive()
            assert msg.type is aiohttp.WSMsgType.TEXT and "|" in msg.data, msg
        elapsed = time.perf_counter() - started
        answer = (await ws.receive()).data
        assert answer.startswith("resumed True"), answer
        return elapsed


async def bench_replay(
    http: aiohttp.ClientSession, redis: RedisProcess, rounds: int
) -> None:
    worker = pin(Worker(redis.url, 100_000))
    try:
        await publish(http, worker, "h:replay", 1000)
        epoch = (await wait_position(http, worker, "h:replay", 1000)).split(":")[0]
        for _ in range(5):
            await replay_once(http, worker, f"{epoch}:0", 1000)
        times = [
            await replay_once(http, worker, f"{epoch}:0", 1000) for _ in range(rounds)
        ]
        print(
            f"replay 1,000 missed messages through Redis ({rounds} resumes): "
            f"p50 {percentile(times, 50) * 1e3:.1f} ms, p99 {percentile(times, 99) * 1e3:.1f} ms"
            " (target p99 < 50 ms)"
        )
    finally:
        worker.stop()


async def subscriber(
    ws: Socket, count: int, done: asyncio.Event, seen: list[int]
) -> None:
    while seen[0] < count:
        msg = await ws.receive()
        if msg.type is not aiohttp.WSMsgType.TEXT:
            return
        if not msg.data.startswith(("resumed", "sub ")):
            seen[0] += 1
    done.set()


async def cpu_round(
    http: aiohttp.ClientSession,
    workers: list[Worker],
    topic: str,
    messages: int,
    rate: float,
) -> float:
    """CPU seconds of the workers per message published to ``topic``."""
    sockets = []
    for worker in workers:
        for _ in range(10):
            ws = await http.ws_connect(
                f"ws://127.0.0.1:{worker.port}/ws", max_msg_size=0
            )
            await ws.send_str(
                f"resume {topic}" if topic.startswith("h:") else f"sub {topic}"
            )
            await ws.receive()
            sockets.append(ws)
    await asyncio.sleep(0.3)  # both workers subscribed in Redis
    counters = [[0] for _ in sockets]
    events = [asyncio.Event() for _ in sockets]
    readers = [
        asyncio.create_task(subscriber(ws, messages, event, seen))
        for ws, event, seen in zip(sockets, events, counters, strict=True)
    ]
    publisher = await http.ws_connect(f"ws://127.0.0.1:{workers[0].port}/ws")
    before = sum(cpu_seconds(w.process.pid) for w in workers)
    batch = max(1, int(rate / 100))
    for start in range(0, messages, batch):
        began = time.monotonic()
        for index in range(start, min(messages, start + batch)):
            await publisher.send_str(f"spub {topic} m{index:08d}")
        await asyncio.sleep(max(0.0, batch / rate - (time.monotonic() - began)))
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), 60)
    after = sum(cpu_seconds(w.process.pid) for w in workers)
    for task in readers:
        task.cancel()
    for ws in [*sockets, publisher]:
        await ws.close()
    return (after - before) / messages


async def bench_cpu(
    http: aiohttp.ClientSession, redis: RedisProcess, messages: int, repeat: int
) -> None:
    workers = [pin(Worker(redis.url, 100_000)), pin(Worker(redis.url, 100_000))]
    try:
        ratios = []
        for round_ in range(repeat):
            plain = await cpu_round(http, workers, f"plain{round_}", messages, 5000)
            history = await cpu_round(http, workers, f"h:cpu{round_}", messages, 5000)
            ratios.append(history / plain)
            print(
                f"  round {round_ + 1}: plain {plain * 1e6:.1f} µs/msg, "
                f"history {history * 1e6:.1f} µs/msg, ratio {history / plain:.2f}"
            )
        print(
            f"history publish CPU / plain Redis publish CPU (2 workers, 20 "
            f"subscribers, {messages} msgs): median {statistics.median(ratios):.2f}"
            " (target <= 1.5)"
        )
    finally:
        for worker in workers:
            worker.stop()


async def round_trips(ws: Socket, n: int) -> list[float]:
    times = []
    for index in range(n):
        started = time.perf_counter()
        await ws.send_str(f"echo {index}")
        while (await ws.receive()).data != str(index):
            pass
        times.append(time.perf_counter() - started)
        await asyncio.sleep(0.002)
    return times


async def raw_replay(port: int, since: str) -> None:
    """Resume 10,000 messages on a raw socket that reads and discards them (so
    that the reading costs this process next to nothing), until the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await reader.readuntil(b"\r\n\r\n")
    payload, mask = f"resume h:replay {since}".encode(), os.urandom(4)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    writer.write(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    tail = b""
    while data := await reader.read(1 << 16):
        if b"resumed " in tail + data:
            break
        tail = data[-16:]
    writer.close()


async def bench_bystander(
    http: aiohttp.ClientSession, redis: RedisProcess, n: int, repeat: int
) -> None:
    worker = pin(Worker(redis.url, 100_000))
    try:
        await publish(http, worker, "h:replay", 10_000)
        epoch = (await wait_position(http, worker, "h:replay", 10_000)).split(":")[0]
        ratios = []
        async with http.ws_connect(f"ws://127.0.0.1:{worker.port}/ws") as ws:
            await round_trips(ws, 50)
            for round_ in range(repeat):
                alone = percentile(await round_trips(ws, n), 99)
                during, replays = await during_replays(ws, worker, epoch, n)
                ratios.append(during / alone)
                print(
                    f"  round {round_ + 1}: bystander echo p99 alone {alone * 1e3:.2f}"
                    f" ms, during replays of 10,000 messages ({replays} done) "
                    f"{during * 1e3:.2f} ms, ratio {during / alone:.2f}"
                )
        print(
            f"bystander round trip p99 during replays / alone: median "
            f"{statistics.median(ratios):.2f} (target <= 2)"
        )
    finally:
        worker.stop()


async def during_replays(
    ws: Socket, worker: Worker, epoch: str, n: int
) -> tuple[float, int]:
    """The bystander's p99 over ``n`` round trips, each made while a replay of
    10,000 messages runs (one after another), and how many replays that took."""
    times: list[float] = []
    replays = 0
    while len(times) < n:
        replay = asyncio.create_task(raw_replay(worker.port, f"{epoch}:0"))
        replays += 1
        await asyncio.sleep(0.005)  # the replay under way
        while not replay.done() and len(times) < n:
            times += await round_trips(ws, 1)
        await replay
    return percentile(times, 99), replays


def pin(worker: Worker) -> Worker:
    """The worker on CPU 0; this process and Redis stay on CPU 1 (as in
    benchmarks/cluster.py), so that the clients do not take the worker's CPU."""
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(worker.process.pid, {0})
    return worker


async def main(args: argparse.Namespace) -> None:
    redis = RedisProcess()
    redis.start()
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {1})
        os.sched_setaffinity(redis.pid, {1})
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0)
        ) as http:
            if "replay" in args.only:
                await bench_replay(http, redis, args.rounds)
            if "cpu" in args.only:
                await bench_cpu(http, redis, args.messages, args.repeat)
            if "bystander" in args.only:
                await bench_bystander(http, redis, args.round_trips, args.repeat)
    finally:
        redis.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--round-trips", type=int, default=300)
    parser.add_argument(
        "--only",
        nargs="+",
        default=["replay", "cpu", "bystander"],
        choices=["replay", "cpu", "bystander"],
    )
    asyncio.run(main(parser.parse_args()))
