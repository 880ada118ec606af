"""Cluster fan-out: N subscribers on one process vs. the same N spread over two
processes with Redis in the path, in one run; plus one process pushing messages
through Redis to another as fast as it can.

Setups (N subscribers in total, one publisher connected to the first process):

- single: one server process, no broker (what the fanout benchmark measures);
- redis: two server processes with a ``RedisBroker`` on a local redis-server,
  N/2 subscribers each; a publish crosses Redis once to reach the second.

The server processes are pinned to CPU 0 (both of them in the redis setup); this
process (the load generator, as in benchmarks/fanout.py: recvmsg() readers and
kernel receive timestamps) and redis-server share CPU 1. Modes: burst (the
messages back to back) and paced (one message every 1/rate s, 100/s at N=1000).

Printed per (setup, mode): deliveries/s, p50/p99 delivery latency (publisher's
send time to the kernel's receive timestamp at the subscriber), server CPU µs
per delivery summed over the server processes, Redis CPU µs per published
message (CPU time from /proc/<pid>/task/*/schedstat, in ns: redis-server's
share of a few hundred messages is below /proc/<pid>/stat's 10 ms ticks), and the ratios of CPU per
delivery and p99 against single in the same round.

Then the push test: process A publishes ``--push`` sequence-numbered messages
(1000 per loop turn) to a topic whose only subscriber is on process B; printed
are the messages/s delivered, whether all arrived in order, and the broker's
dropped counter.

Usage: python benchmarks/cluster.py [--n 1000] [--repeat 3] [--push 200000]
(``CLUSTER_BENCH_VERBOSE=1`` also prints each server process's CPU seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Final, Protocol

from aiohttp import web

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (
    CLIENT_CPU,
    RawClient,
    ServerProcess,
    client_frame,
    close_clients,
    connect_clients,
    parse_server_frames,
    percentile,
    pin,
    print_table,
    raise_nofile,
    serve_app,
    spread,
)
from fanout import (
    COUNT_QUERY,
    TOPIC,
    Publisher,
    Run,
    Subscriber,
    batches,
    connect_subscribers,
    new_run,
    publish_and_wait,
    upgrade_with_path,
)

SCRIPT: Final = os.path.abspath(__file__)
SETUPS: Final = ("single", "redis")
MODES: Final = ("burst", "paced")
PUSH_TOPIC: Final = "push"
PUSH_CHUNK: Final = 1000
STATS_QUERY: Final = "!stats"
PUSH_COMMAND: Final = "!push "
REDIS_SERVER: Final = shutil.which("redis-server") or "/usr/bin/redis-server"


# -- the server (run in the child processes) -------------------------------------


def cluster_app(redis_url: str | None, cluster: bool = False) -> web.Application:
    from aiohttp_upgrade import (
        Broker,
        RedisBroker,
        Server,
        ServerWebSocket,
        WebSocketHandler,
    )

    pushes: set[asyncio.Task[None]] = set()

    class Room(WebSocketHandler[str]):
        idle_timeout = 0

        def open(self, ws: ServerWebSocket[str]) -> None:
            if ws.data in ("sub", PUSH_TOPIC):
                ws.subscribe(TOPIC if ws.data == "sub" else PUSH_TOPIC)

        def message(self, ws: ServerWebSocket[str], message: str | bytes) -> None:
            if message == COUNT_QUERY:
                ws.send(str(server.subscriber_count(TOPIC)))
            elif message == STATS_QUERY:
                broker = server.broker
                names = ("published", "received", "dropped")
                ws.send(json.dumps({k: getattr(broker, k, 0) for k in names}))
            elif isinstance(message, str) and message.startswith(PUSH_COMMAND):
                task = asyncio.create_task(push(int(message[len(PUSH_COMMAND) :])))
                pushes.add(task)
                task.add_done_callback(pushes.discard)
            else:
                server.publish(TOPIC, message)

    async def push(count: int) -> None:
        """Publish ``count`` numbered messages, PUSH_CHUNK per loop turn."""
        for start in range(0, count, PUSH_CHUNK):
            for i in range(start, min(count, start + PUSH_CHUNK)):
                server.publish(PUSH_TOPIC, b"%d" % i)
            await asyncio.sleep(0)

    broker: Broker | None = (
        RedisBroker(redis_url, cluster=cluster) if redis_url else None
    )
    server: Server[str] = Server(Room(), broker=broker)

    app = web.Application()
    server.setup(app)
    for path in ("/sub", "/pub", f"/{PUSH_TOPIC}"):
        app.router.add_get(path, server.handler(upgrade_with_path))
    return app


async def serve(redis_url: str | None, cluster: bool = False) -> None:
    await serve_app(cluster_app(redis_url, cluster), backlog=4096)


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of ``pid`` from /proc/<pid>/task/*/schedstat
    (nanoseconds: /proc/<pid>/stat's 10 ms ticks are too coarse for Redis's
    share of a few hundred messages)."""
    total = 0
    task_dir = f"/proc/{pid}/task"
    for task in os.listdir(task_dir):
        try:
            with open(f"{task_dir}/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:
            pass  # a thread that just ended
    return total / 1e9


def server_cpu(server: ServerProcess) -> float:
    return cpu_seconds(server.pid)


# -- redis-server ---------------------------------------------------------------------


class RedisServer:
    """A redis-server on a free port, pinned with the load generator."""

    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.dir = tempfile.mkdtemp(prefix="bench-redis-")
        self.process = subprocess.Popen(
            [
                *(REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", self.dir),
            ],
            stdout=subprocess.DEVNULL,
            preexec_fn=lambda: pin(CLIENT_CPU) and None,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)  # a benchmark's startup, not a test

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def server_flags(self) -> list[str]:
        """The server processes' options that give them a broker on this Redis."""
        return ["--redis", self.url]

    def channel(self, topic: str) -> str:
        """The Redis channel of ``topic`` (the default channel prefix)."""
        return "aiohttp_upgrade:" + topic

    def numsub(self, channel: str) -> int:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            data = channel.encode()
            s.sendall(
                b"*3\r\n$6\r\nPUBSUB\r\n$6\r\nNUMSUB\r\n$%d\r\n%s\r\n"
                % (len(data), data)
            )
            reply = s.recv(4096)
        return int(reply.rsplit(b":", 1)[1].split(b"\r\n")[0])

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Backend(Protocol):
    """What the Redis setups need of their Redis: :class:`RedisServer` here, a
    Redis Cluster in benchmarks/redis_cluster.py."""

    def server_flags(self) -> list[str]: ...

    def channel(self, topic: str) -> str: ...

    def numsub(self, channel: str) -> int: ...

    def cpu_seconds(self) -> float: ...


# -- load generator -----------------------------------------------------------------


@dataclass
class Result:
    round: int
    setup: str
    mode: str
    messages: int
    deliveries: int
    seconds: float
    server_cpu: float
    redis_cpu: float
    p50: float
    p99: float

    @property
    def server_us(self) -> float:
        return self.server_cpu / self.deliveries * 1e6

    @property
    def redis_us(self) -> float:
        return self.redis_cpu / self.messages * 1e6


class Control(Publisher):
    """A publisher connection that can also ask for broker stats."""

    async def stats(self) -> dict[str, int]:
        self.send(client_frame(STATS_QUERY.encode()))
        result: dict[str, int] = json.loads(await self.replies.get())
        return result


async def wait_for(check: object, what: str) -> None:
    """Poll ``check()`` (an async callable) until true; a benchmark's setup."""
    for _ in range(2000):
        if await check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.01)
    raise RuntimeError(f"timed out waiting for {what}")


async def measure(
    servers: list[ServerProcess],
    redis: Backend,
    subscribers: list[Subscriber],
    publisher: Publisher,
    messages: int,
    rate: float | None,
) -> tuple[Run, float, float, float]:
    run = new_run(subscribers, messages)
    cpu0 = sum(server_cpu(server) for server in servers)
    redis0 = redis.cpu_seconds()
    elapsed = await publish_and_wait(run, publisher, messages, rate)
    if os.environ.get("CLUSTER_BENCH_VERBOSE"):
        print("  per-process CPU s:", [round(server_cpu(s), 2) for s in servers])
    cpu = sum(server_cpu(server) for server in servers) - cpu0
    return run, elapsed, cpu, redis.cpu_seconds() - redis0


async def bench_setup(
    setup: str, round_: int, redis: Backend, args: argparse.Namespace
) -> list[Result]:
    """Measure ``setup``: "single" (one process, no broker), or any other name
    for two processes with a broker on ``redis``."""
    count = 1 if setup == "single" else 2
    flags = ["--serve"] + (redis.server_flags() if setup != "single" else [])
    servers = [ServerProcess.start(SCRIPT, flags) for _ in range(count)]
    results = []
    try:
        size, n = args.size, args.n
        share = [n // count + (1 if i < n % count else 0) for i in range(count)]
        subs: list[Subscriber] = []
        for server, k in zip(servers, share, strict=True):
            subs += await connect_subscribers(server.port, size, k)
        controls = []
        for server in servers:
            control = Control(server.port, size)
            await connect_clients(lambda control=control: control, 1, server.port)  # type: ignore[misc]
            controls.append(control)
        for control, k in zip(controls, share, strict=True):

            async def counted(control: Control = control, k: int = k) -> bool:
                return await control.subscribers() >= k

            await wait_for(counted, "subscribers")
        if setup != "single":

            async def subscribed() -> bool:
                return redis.numsub(redis.channel(TOPIC)) == count

            await wait_for(subscribed, "Redis subscriptions")
        publisher = controls[0]
        await measure(servers, redis, subs, publisher, 20, None)  # warm-up
        for mode, messages, rate_or_none in batches(args, n):
            run, seconds, server_cpu, redis_cpu = await measure(
                servers, redis, subs, publisher, messages, rate_or_none
            )
            results.append(
                Result(
                    round_,
                    setup,
                    mode,
                    messages,
                    run.received,
                    seconds,
                    server_cpu,
                    redis_cpu,
                    percentile(run.latencies, 50) * 1e3,
                    percentile(run.latencies, 99) * 1e3,
                )
            )
        if setup != "single":
            stats = await controls[0].stats()
            if stats["dropped"]:
                print(f"  the broker dropped {stats['dropped']} messages")
        for subscriber in subs:
            subscriber.close()
        await close_clients(controls)
    finally:
        for server in servers:
            server.stop()
    return results


class PushReader(RawClient):
    """The single subscriber of the push test: checks every sequence number."""

    def __init__(self, port: int, count: int) -> None:
        super().__init__("127.0.0.1", port, f"/{PUSH_TOPIC}")
        self.count = count
        self.expected = 0
        self.received_count = 0
        self.out_of_order = 0
        self.missing = 0
        self.buffer = bytearray()
        self.done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.on_data = self.received

    def received(self, data: bytes) -> None:
        self.buffer += data
        for _, payload in parse_server_frames(self.buffer):
            number = int(payload)
            if number < self.expected:
                self.out_of_order += 1
            else:
                self.missing += number - self.expected
                self.expected = number + 1
            self.received_count += 1
        if self.expected >= self.count and not self.done.done():
            self.done.set_result(time.monotonic())


async def bench_push(redis: RedisServer, args: argparse.Namespace) -> None:
    flags = ["--serve", "--redis", redis.url]
    a, b = (ServerProcess.start(SCRIPT, flags) for _ in range(2))
    try:
        count = args.push
        [reader] = await connect_clients(lambda: PushReader(b.port, count), 1, b.port)
        assert isinstance(reader, PushReader)

        async def subscribed() -> bool:
            return redis.numsub("aiohttp_upgrade:" + PUSH_TOPIC) == 1

        await wait_for(subscribed, "the push subscription")
        [control] = await connect_clients(lambda: Control(a.port, 16), 1, a.port)
        assert isinstance(control, Control)
        cpu0 = server_cpu(a), server_cpu(b), redis.cpu_seconds()
        t0 = time.monotonic()
        control.send(client_frame(f"{PUSH_COMMAND}{count}".encode()))
        try:
            t1 = await asyncio.wait_for(reader.done, 120)
        except TimeoutError:
            t1 = time.monotonic()
        cpu1 = server_cpu(a), server_cpu(b), redis.cpu_seconds()
        stats = await control.stats()
        seconds = t1 - t0
        print(
            f"push: {count} messages A -> Redis -> B in {seconds:.2f} s ="
            f" {reader.received_count / seconds:,.0f} messages/s;"
            f" received {reader.received_count}, missing {reader.missing},"
            f" out of order {reader.out_of_order},"
            f" dropped by the broker {stats['dropped']};"
            f" CPU µs/message: A {(cpu1[0] - cpu0[0]) / count * 1e6:.1f},"
            f" B {(cpu1[1] - cpu0[1]) / count * 1e6:.1f},"
            f" Redis {(cpu1[2] - cpu0[2]) / count * 1e6:.2f}"
        )
        await close_clients([control, reader])
    finally:
        a.stop()
        b.stop()


def report(
    results: list[Result],
    setups: tuple[str, ...] = SETUPS,
    reference: str = "single",
) -> None:
    """Print medians per (setup, mode); ratios against ``reference``, per round."""
    single = {(r.round, r.mode): r for r in results if r.setup == reference}
    rows = [
        [
            "setup",
            "mode",
            "msgs",
            "deliveries/s",
            "p50 ms",
            "p99 ms",
            "server µs/delivery",
            "Redis µs/msg",
            "CPU ratio",
            "p99 ratio",
            f"p99 - {reference} ms",
        ]
    ]
    for setup in setups:
        for mode in MODES:
            runs = [r for r in results if r.setup == setup and r.mode == mode]
            if not runs:
                continue
            pairs = [
                (r, single[r.round, mode]) for r in runs if (r.round, mode) in single
            ]
            rows.append(
                [
                    setup,
                    mode,
                    str(runs[0].messages),
                    spread([r.deliveries / r.seconds for r in runs], 0),
                    spread([r.p50 for r in runs]),
                    spread([r.p99 for r in runs]),
                    spread([r.server_us for r in runs]),
                    spread([r.redis_us for r in runs]),
                    spread([r.server_us / ref.server_us for r, ref in pairs]),
                    spread([r.p99 / ref.p99 for r, ref in pairs]),
                    spread([r.p99 - ref.p99 for r, ref in pairs]),
                ]
            )
    print_table(rows)


async def main(args: argparse.Namespace) -> None:
    redis = RedisServer()
    try:
        results: list[Result] = []
        for round_ in range(args.repeat):
            setups = SETUPS if round_ % 2 == 0 else SETUPS[::-1]
            for setup in setups:
                results += await bench_setup(setup, round_, redis, args)
        report(results)
        if args.push:
            await bench_push(redis, args)
    finally:
        redis.stop()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="subscribers in all")
    parser.add_argument("--size", type=int, default=100, help="payload bytes")
    parser.add_argument("--burst-deliveries", type=int, default=300_000)
    parser.add_argument("--rate", type=float, help="paced messages/s")
    parser.add_argument("--paced-seconds", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--push", type=int, default=200_000, help="0 to skip")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--redis", help=argparse.SUPPRESS)
    parser.add_argument("--cluster", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def run() -> None:
    args = parse_args()
    raise_nofile(args.n * 2 + 100)
    if args.serve:
        asyncio.run(serve(args.redis, args.cluster))
        return
    cpus = pin(CLIENT_CPU)
    print(
        f"cluster: {args.n} subscribers, {args.size}-byte text messages; servers on"
        f" CPU 0 (asyncio), load generator pid {os.getpid()} and redis-server on"
        f" CPUs {sorted(cpus)}; CPU time from /proc/<pid>/task/*/schedstat (ns)"
    )
    asyncio.run(main(args))


if __name__ == "__main__":
    run()
