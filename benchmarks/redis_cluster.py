"""RedisBroker on a Redis Cluster (sharded pub/sub) against one Redis, in one run:
the three measurements of issue 21.

The script starts its own Redis Cluster (tests/redis_cluster_support.py: 3
primaries and 3 replicas of ``redis-server --cluster-enabled yes`` on free
loopback ports) and, for the comparison, its own single redis-server. App
server processes run on CPU 0, this process (the load generator) on CPU 1, and
every redis-server is pinned to CPU 1 too (as in benchmarks/cluster.py).

1. share: one server process publishes ``--share-messages`` messages to each of
   ``--topics`` topics, one message per topic per loop turn (so one ``SPUBLISH``
   each); a second process subscribes to all of them. Printed per primary: its
   topics, its share of the ``SPUBLISH`` calls (``INFO commandstats``,
   ``cmdstat_spublish``) and of the primaries' CPU (``INFO cpu``:
   ``used_cpu_sys + used_cpu_user``) over the publishing, median of
   ``--share-rounds``. Target: each within 15 % of a third.
2. cpu: benchmarks/cluster.py's Redis setup (two server processes, N/2
   subscribers each, the publisher on the first; burst and paced) with the
   broker on the single redis-server ("redis") and on the cluster
   ("cluster", ``RedisBroker(seed, cluster=True)``), alternating over
   ``--repeat`` rounds; server CPU µs per delivery, medians, and the ratio
   cluster/redis within each round. Target: at most 1.2. "Redis µs/msg" is the
   single redis-server's CPU, or that of the topic's primary on the cluster.
3. failover: process A publishes sequence numbers at ``--failover-rate`` per
   second to a topic (not on the broker's home slot) whose one subscriber is on
   process B; the topic's primary is SIGKILLed. A thread polls the primary's
   replica (``ROLE``, every 5 ms) for its promotion. Printed: kill to promotion,
   promotion to the first message delivered again (target: within 5 s),
   messages lost, duplicates (must be 0), out of order, the brokers' ``dropped``
   counters, and both processes' log lines. The node comes back as a replica
   before the next round.

Usage: python benchmarks/redis_cluster.py [--parts share cpu failover]
[--repeat 5] [--failovers 5] [--n 1000] [--topics 1000] [--json PATH]
[--server /path/to/valkey-server]
(about 70 s with the defaults on 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import functools
import itertools
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import redis
from aiohttp import web
from redis.crc import key_slot

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cluster as one_redis
from _common import (
    CLIENT_CPU,
    SERVER_CPU,
    RawClient,
    ServerProcess,
    add_json_option,
    client_frame,
    close_clients,
    connect_clients,
    parse_server_frames,
    pin,
    print_table,
    raise_nofile,
    serve_app,
    spread,
    write_json,
)
from fanout import TOPIC, upgrade_with_path

import tests.redis_cluster_support as cluster_support
from tests.redis_cluster_support import ClusterNode, RedisClusterProcess

SCRIPT: Final = os.path.abspath(__file__)
PREFIX: Final = "aiohttp_upgrade:"  # RedisBroker's default channel prefix
HOME_SLOT: Final = key_slot(b"{" + PREFIX.encode() + b"}")
SHARE_TOPIC: Final = "s"  # topics s0, s1, ...
REPLY: Final = "!"  # what the server's answers start with (deliveries never do)
TARGET_SHARE: Final = 0.15
TARGET_RATIO: Final = 1.2
TARGET_BACK: Final = 5.0
ROLE_POLL: Final = 0.005
LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(message)s"


def channel(topic: str) -> bytes:
    """A topic's sharded channel, as RedisBroker(cluster=True) names it."""
    return PREFIX.encode() + b"c:{" + topic.encode() + b"}:"


# -- the server (run in the child processes) ---------------------------------------


def bench_app(seed_url: str) -> web.Application:
    """A server with a cluster RedisBroker, driven by text commands:

    ``!sub T...`` subscribes the socket to the topics (answers ``!ok``);
    ``!spread P N K SIZE`` publishes K messages of SIZE bytes to each of the
    topics P0..P(N-1), one to each per loop turn (answers ``!done``);
    ``!steady T RATE`` publishes 0, 1, 2 ... to T at RATE/s until ``!stop``
    (answers ``!stopped <count>``); ``!stats`` answers the broker's counters.
    """
    from aiohttp_upgrade import RedisBroker, Server, ServerWebSocket, WebSocketHandler

    tasks: set[asyncio.Task[None]] = set()
    stopping = asyncio.Event()

    def start(coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def publish_spread(
        ws: ServerWebSocket[str], prefix: str, n: int, rounds: int, size: int
    ) -> None:
        topics = [f"{prefix}{i}" for i in range(n)]
        payload = "x" * size
        for _ in range(rounds):
            for topic in topics:
                server.publish(topic, payload)
            await asyncio.sleep(0)
        ws.send(REPLY + "done")

    async def publish_steady(ws: ServerWebSocket[str], topic: str, rate: float) -> None:
        loop = asyncio.get_running_loop()
        stopping.clear()
        t0 = loop.time()
        sent = 0
        while not stopping.is_set():
            due = int((loop.time() - t0) * rate)
            while sent < due:
                server.publish(topic, str(sent))
                sent += 1
            await asyncio.sleep(0.001)
        ws.send(f"{REPLY}stopped {sent}")

    class Bench(WebSocketHandler[str]):
        idle_timeout = 0

        def message(self, ws: ServerWebSocket[str], message: str | bytes) -> None:
            assert isinstance(message, str) and message.startswith(REPLY)
            command, *words = message[1:].split()
            if command == "sub":
                for topic in words:
                    ws.subscribe(topic)
                ws.send(REPLY + "ok")
            elif command == "spread":
                prefix, n, rounds, size = words
                start(publish_spread(ws, prefix, int(n), int(rounds), int(size)))
            elif command == "steady":
                start(publish_steady(ws, words[0], float(words[1])))
            elif command == "stop":
                stopping.set()
            elif command == "stats":
                names = ("published", "received", "dropped", "reconnects")
                values = {name: getattr(broker, name) for name in names}
                ws.send(REPLY + json.dumps(values))

    broker = RedisBroker(seed_url, cluster=True)
    server: Server[str] = Server(Bench(), broker=broker)
    app = web.Application()
    server.setup(app)
    app.router.add_get("/peer", server.handler(upgrade_with_path))
    return app


async def serve(seed_url: str, log: str | None) -> None:
    if log:
        logging.basicConfig(filename=log, level=logging.WARNING, format=LOG_FORMAT)
    await serve_app(bench_app(seed_url), backlog=128)


# -- the Redis side --------------------------------------------------------------


class ClusterBackend:
    """The cluster as benchmarks/cluster.py's Redis setup sees it."""

    def __init__(self, cluster: RedisClusterProcess) -> None:
        self.cluster = cluster

    def server_flags(self) -> list[str]:
        return ["--redis", self.cluster.seed_url, "--cluster"]

    def channel(self, topic: str) -> str:
        return channel(topic).decode()

    def numsub(self, channel: str) -> int:
        port = self.cluster.primary_for_key(channel).port
        reply = self.cluster.command(port, "PUBSUB", "SHARDNUMSUB", channel)
        return int(reply[1])

    def cpu_seconds(self) -> float:
        """CPU of the primary of benchmarks/cluster.py's topic."""
        pid = self.cluster.primary_for_key(channel(TOPIC)).pid
        assert pid is not None
        return one_redis.cpu_seconds(pid)


def pin_nodes(cluster: RedisClusterProcess) -> None:
    """Pin every running node to the load generator's CPU."""
    for node in cluster.nodes():
        if node.pid is not None and (os.cpu_count() or 1) > CLIENT_CPU:
            os.sched_setaffinity(node.pid, {CLIENT_CPU})


def spublish_stats(cluster: RedisClusterProcess, port: int) -> tuple[int, int]:
    """``SPUBLISH`` calls and the µs spent in them (``INFO commandstats``)."""
    stats = cluster.info(port, "commandstats").get("cmdstat_spublish", {})
    return int(stats.get("calls", 0)), int(stats.get("usec", 0))


def node_cpu(cluster: RedisClusterProcess, port: int) -> float:
    info = cluster.info(port, "cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


# -- the load generator's client --------------------------------------------------


class Peer(RawClient):
    """One socket on a bench_app server: commands and their answers, and the
    messages delivered to it (counted; with ``track``, their numbers and
    arrival times)."""

    def __init__(self, port: int) -> None:
        super().__init__("127.0.0.1", port, "/peer")
        self.buffer = bytearray()
        self.replies: asyncio.Queue[str] = asyncio.Queue()
        self.deliveries = 0
        self.track = False
        self.arrivals: list[tuple[int, float]] = []
        self.on_data = self.received

    def received(self, data: bytes) -> None:
        now = time.monotonic()
        self.buffer += data
        for _, payload in parse_server_frames(self.buffer):
            if payload.startswith(REPLY.encode()):
                self.replies.put_nowait(payload[1:].decode())
                continue
            self.deliveries += 1
            if self.track:
                self.arrivals.append((int(payload), now))

    def command(self, text: str) -> None:
        self.send(client_frame((REPLY + text).encode()))

    async def ask(self, text: str) -> str:
        """Send a command and return its answer (within a minute)."""
        self.command(text)
        return await asyncio.wait_for(self.replies.get(), 60)

    async def stats(self) -> dict[str, int]:
        result: dict[str, int] = json.loads(await self.ask("stats"))
        return result


async def connect_peer(port: int) -> Peer:
    [peer] = await connect_clients(lambda: Peer(port), 1, port)
    assert isinstance(peer, Peer)
    return peer


async def wait_for(
    check: Callable[[], object], what: str, within: float = 30.0
) -> None:
    """Poll ``check()`` until it returns something true; a benchmark's setup."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def delivered(peer: Peer, count: int) -> bool:
    return peer.deliveries >= count


def start_servers(
    cluster: RedisClusterProcess, count: int, logs: list[str | None]
) -> list[ServerProcess]:
    servers = []
    for log in logs[:count]:
        flags = ["--serve", "--redis", cluster.seed_url]
        servers.append(
            ServerProcess.start(SCRIPT, flags + (["--log", log] if log else []))
        )
    return servers


# -- 1. the share of each primary -------------------------------------------------


@dataclass
class Share:
    round: int
    port: int
    topics: int
    spublish: int
    spublish_usec: int  # in the command itself (commandstats)
    cpu: float
    home: bool  # also keeps the broker's counts (and presence)


async def bench_share(
    cluster: RedisClusterProcess, args: argparse.Namespace
) -> list[Share]:
    topics = [f"{SHARE_TOPIC}{i}" for i in range(args.topics)]
    primaries = cluster.primaries()
    owned = {
        node.port: sum(node.owns(key_slot(channel(t))) for t in topics)
        for node in primaries
    }
    publisher, subscriber = start_servers(cluster, 2, [None, None])
    results = []
    try:
        pa, pb = await connect_peer(publisher.port), await connect_peer(subscriber.port)
        await pb.ask("sub " + " ".join(topics))

        def subscribed() -> bool:
            found = 0
            for node in primaries:
                pattern = PREFIX + "c:{" + SHARE_TOPIC + "*"
                found += len(
                    cluster.command(node.port, "PUBSUB", "SHARDCHANNELS", pattern)
                )
            return found == len(topics)

        await wait_for(subscribed, "the subscriptions")
        expected = 0
        for round_ in range(args.share_rounds):
            before = {
                n.port: (*spublish_stats(cluster, n.port), node_cpu(cluster, n.port))
                for n in primaries
            }
            expected += len(topics) * args.share_messages
            command = (
                f"spread {SHARE_TOPIC} {len(topics)} {args.share_messages} {args.size}"
            )
            await pa.ask(command)
            check = functools.partial(delivered, pb, expected)
            await wait_for(check, "the deliveries", 60)
            for node in primaries:
                calls, usec, cpu = before[node.port]
                calls_now, usec_now = spublish_stats(cluster, node.port)
                results.append(
                    Share(
                        round_,
                        node.port,
                        owned[node.port],
                        calls_now - calls,
                        usec_now - usec,
                        node_cpu(cluster, node.port) - cpu,
                        node.owns(HOME_SLOT),
                    )
                )
        if pb.deliveries != expected:
            print(f"  delivered {pb.deliveries}, expected {expected}")
        stats = await pa.stats()
        if stats["dropped"]:
            print(f"  the publisher's broker dropped {stats['dropped']}")
        await close_clients([pa, pb])
    finally:
        publisher.stop()
        subscriber.stop()
    return results


def report_share(results: list[Share], args: argparse.Namespace) -> None:
    third = 1 / 3
    ports = sorted({r.port for r in results})
    rows = [
        [
            "primary",
            "topics",
            "SPUBLISH/round",
            "SPUBLISH share",
            "CPU ms/round",
            "CPU share",
            "CPU µs/SPUBLISH",
            "in command µs",
        ]
    ]
    worst_calls = worst_cpu = 0.0
    for port in ports:
        mine = [r for r in results if r.port == port]
        calls = [
            r.spublish / sum(o.spublish for o in results if o.round == r.round)
            for r in mine
        ]
        cpus = [r.cpu / sum(o.cpu for o in results if o.round == r.round) for r in mine]
        worst_calls = max(worst_calls, abs(statistics.median(calls) / third - 1))
        worst_cpu = max(worst_cpu, abs(statistics.median(cpus) / third - 1))
        rows.append(
            [
                f"{port}{' (home)' if mine[0].home else ''}",
                str(mine[0].topics),
                spread([r.spublish for r in mine], 0),
                spread([c * 100 for c in calls], 1) + " %",
                spread([r.cpu * 1e3 for r in mine], 1),
                spread([c * 100 for c in cpus], 1) + " %",
                spread([r.cpu * 1e6 / r.spublish for r in mine]),
                spread([r.spublish_usec / r.spublish for r in mine]),
            ]
        )
    print_table(rows)
    for name, worst in (("SPUBLISH", worst_calls), ("CPU", worst_cpu)):
        verdict = "met" if worst <= TARGET_SHARE else "NOT met"
        print(
            f"  {name}: furthest primary {worst * 100:.1f} % from a third"
            f" (target 15 %: {verdict})"
        )


# -- 2. server CPU per delivery, one Redis vs the cluster -------------------------


async def bench_cpu(
    cluster: RedisClusterProcess, args: argparse.Namespace
) -> list[one_redis.Result]:
    single = one_redis.RedisServer()
    backend = ClusterBackend(cluster)
    results: list[one_redis.Result] = []
    try:
        for round_ in range(args.repeat):
            setups = ("redis", "cluster") if round_ % 2 == 0 else ("cluster", "redis")
            for setup in setups:
                redis_ = single if setup == "redis" else backend
                results += await one_redis.bench_setup(setup, round_, redis_, args)
    finally:
        single.stop()
    return results


def report_cpu(results: list[one_redis.Result]) -> None:
    one_redis.report(results, setups=("redis", "cluster"), reference="redis")
    by_round = {(r.round, r.mode, r.setup): r for r in results}
    for mode in one_redis.MODES:
        ratios = [
            r.server_us / by_round[r.round, mode, "redis"].server_us
            for r in results
            if r.setup == "cluster"
            and r.mode == mode
            and (r.round, mode, "redis") in by_round
        ]
        if ratios:
            median = statistics.median(ratios)
            verdict = "met" if median <= TARGET_RATIO else "NOT met"
            print(
                f"  {mode}: cluster/redis server CPU per delivery {spread(ratios)}"
                f" (target <= 1.2: {verdict})"
            )


# -- 3. failover ----------------------------------------------------------------------


@dataclass
class Failover:
    round: int
    topic: str
    dead: int
    promoted: int
    published: int
    received: int
    lost: int
    duplicates: int
    out_of_order: int
    gaps: int
    during_outage: int  # arrived after the kill, before the promotion (in flight)
    kill_to_promotion: float
    promotion_to_back: float
    kill_to_back: float
    dropped_a: int
    dropped_b: int
    # B's "reachable again" log line minus A's (s): while A publishes to the
    # promoted primary and B has not subscribed there yet, messages are lost
    # uncounted (the subscribe window).
    resubscribe_lag: float
    log_a: list[str] = field(default_factory=list)
    log_b: list[str] = field(default_factory=list)


class RolePoller(threading.Thread):
    """Polls a replica's ``ROLE`` until it says master; notes the time."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
        self.promoted_at: float | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    command = self.client.execute_command
                    role = command("ROLE")  # type: ignore[no-untyped-call]
                except redis.RedisError:
                    role = [b"?"]
                if role[0] == b"master":
                    self.promoted_at = time.monotonic()
                    return
                time.sleep(ROLE_POLL)
        finally:
            self.client.close()


def failover_topic(cluster: RedisClusterProcess, round_: int) -> str:
    """A topic whose primary is not the home slot's (counts stay up)."""
    home = cluster.primary_for_slot(HOME_SLOT).port
    index = 0
    while cluster.primary_for_key(channel(topic := f"f{round_}-{index}")).port == home:
        index += 1
    return topic


def replica_of(cluster: RedisClusterProcess, primary: ClusterNode) -> int:
    for node in cluster.replicas():
        if node.primary_id == primary.node_id and node.pid is not None:
            return node.port
    raise RuntimeError(f"no live replica of {primary.port}")


async def bench_failover(
    cluster: RedisClusterProcess, round_: int, args: argparse.Namespace, logs: Path
) -> Failover:
    topic = failover_topic(cluster, round_)
    log_a, log_b = (str(logs / f"{round_}-{name}.log") for name in "ab")
    a, b = start_servers(cluster, 2, [log_a, log_b])
    poller: RolePoller | None = None
    try:
        pa, pb = await connect_peer(a.port), await connect_peer(b.port)
        await pb.ask(f"sub {topic}")
        backend = ClusterBackend(cluster)
        await wait_for(
            lambda: backend.numsub(backend.channel(topic)) == 1, "B's subscription"
        )
        pb.track = True
        pa.command(f"steady {topic} {args.failover_rate}")
        warm = int(args.failover_rate * args.failover_warmup)
        await wait_for(lambda: len(pb.arrivals) >= warm, "steady delivery")
        primary = cluster.primary_for_key(channel(topic))
        poller = RolePoller(replica_of(cluster, primary))
        poller.start()
        killed_at = time.monotonic()
        cluster.kill(primary.port)
        await wait_for(lambda: poller.promoted_at is not None, "the promotion", 60)
        promoted_at = poller.promoted_at
        assert promoted_at is not None
        await wait_for(
            lambda: pb.arrivals[-1][1] > promoted_at, "delivery to come back", 60
        )
        await asyncio.sleep(args.failover_after)  # steady publishing goes on
        published = int((await pa.ask("stop")).split()[1])

        def drained() -> bool:
            return bool(pb.arrivals) and pb.arrivals[-1][0] == published - 1

        with contextlib.suppress(RuntimeError):  # the last ones lost: counted below
            await wait_for(drained, "the last message", 5)
        stats_a, stats_b = await pa.stats(), await pb.stats()
        await close_clients([pa, pb])
    finally:
        a.stop()
        b.stop()
        if poller is not None:
            poller.stop.set()
    promoted = await cluster.wait_failover(primary.port)
    numbers = [n for n, _ in pb.arrivals]
    unique = set(numbers)
    out_of_order = sum(1 for x, y in itertools.pairwise(numbers) if y < x)
    missing = sorted(set(range(published)) - unique)
    gaps = sum(1 for x, y in itertools.pairwise([-2, *missing]) if y != x + 1)
    back = next(t for _, t in pb.arrivals if t > promoted_at)
    during = sum(1 for _, t in pb.arrivals if killed_at < t <= promoted_at)
    result = Failover(
        round_,
        topic,
        primary.port,
        promoted,
        published,
        len(numbers),
        published - len(unique),
        len(numbers) - len(unique),
        out_of_order,
        gaps,
        during,
        promoted_at - killed_at,
        back - promoted_at,
        back - killed_at,
        stats_a["dropped"],
        stats_b["dropped"],
        recovered(read_lines(log_b), promoted) - recovered(read_lines(log_a), promoted),
        read_lines(log_a),
        read_lines(log_b),
    )
    await cluster.restart(primary.port)
    pin_nodes(cluster)
    return result


def recovered(lines: list[str], port: int) -> float:
    """When a log says the promoted node on ``port`` was reachable again (epoch s)."""
    for line in lines:
        if "reachable again" in line and f":{port} " in line:
            stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            return stamp.timestamp()
    return math.nan


def read_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def report_failover(results: list[Failover]) -> None:
    rows = [
        [
            "round",
            "kill->promotion s",
            "promotion->back s",
            "kill->back s",
            "published",
            "lost",
            "gaps",
            "dup",
            "out of order",
            "dropped A/B",
            "B resubscribed +ms",
        ]
    ]
    for r in results:
        rows.append(
            [
                str(r.round),
                f"{r.kill_to_promotion:.3f}",
                f"{r.promotion_to_back:.3f}",
                f"{r.kill_to_back:.3f}",
                str(r.published),
                str(r.lost),
                str(r.gaps),
                str(r.duplicates),
                str(r.out_of_order),
                f"{r.dropped_a}/{r.dropped_b}",
                f"{r.resubscribe_lag * 1e3:.0f}",
            ]
        )
    print_table(rows)
    backs = [r.promotion_to_back for r in results]
    verdict = "met" if max(backs) <= TARGET_BACK else "NOT met"
    print(
        f"  promotion -> first message again: median {statistics.median(backs):.3f} s,"
        f" max {max(backs):.3f} s (target 5 s: {verdict}); lost median"
        f" {statistics.median(r.lost for r in results)}; duplicates"
        f" {sum(r.duplicates for r in results)}"
    )
    print(
        "  lost - dropped by A (published to the promoted primary before B"
        f" subscribed there): {[r.lost - r.dropped_a for r in results]};"
        " arrived after the kill, before the promotion (in flight):"
        f" {[r.during_outage for r in results]}"
    )
    last = results[-1]
    print(
        f"  logs of round {last.round} (topic {last.topic}, primary {last.dead}"
        f" killed, {last.promoted} promoted):"
    )
    for name, lines in (("A", last.log_a), ("B", last.log_b)):
        for line in lines:
            print(f"    {name}: {line}")


# -- main ------------------------------------------------------------------------


def use_server(path: str) -> str:
    """Start every node and the single server from ``path`` (Valkey's
    ``valkey-server``, say; the cluster is still created with ``redis-cli``).
    The test helper and benchmarks/cluster.py read their binary from a module
    constant at each start. Returns the server's ``--version`` line."""
    path = os.path.abspath(path)
    reason = cluster_support.cluster_skip_reason(server=path)
    if reason is not None:
        raise SystemExit(reason)
    for module in (cluster_support, one_redis):
        vars(module)["REDIS_SERVER"] = path
    done = subprocess.run([path, "--version"], capture_output=True, text=True)
    return done.stdout.strip()


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


async def main(args: argparse.Namespace) -> None:
    cluster = RedisClusterProcess(node_timeout_ms=args.node_timeout)
    cluster.start()
    pin_nodes(cluster)
    results: list[object] = []
    try:
        print(
            f"cluster: 3 primaries + 3 replicas ({os.path.basename(args.server)},"
            " cluster-node-timeout"
            f" {args.node_timeout} ms) started in {cluster.startup_seconds:.1f} s;"
            f" load average {load()}"
        )
        if "share" in args.parts:
            print(
                f"\n1. share: {args.topics} topics x {args.share_messages} messages"
                f" of {args.size} bytes, {args.share_rounds} rounds"
            )
            shares = await bench_share(cluster, args)
            report_share(shares, args)
            results += shares
            print(f"  load average {load()}")
        if "cpu" in args.parts:
            print(
                f"\n2. cpu: {args.n} subscribers over 2 processes, {args.size}-byte"
                f" messages, {args.repeat} rounds; ratio = cluster / redis per round"
            )
            cpu = await bench_cpu(cluster, args)
            report_cpu(cpu)
            results += cpu
            print(f"  load average {load()}")
        if "failover" in args.parts:
            print(
                f"\n3. failover: {args.failover_rate:.0f} messages/s A -> B,"
                f" {args.failovers} rounds"
            )
            failovers = []
            with tempfile.TemporaryDirectory(prefix="bench-failover-") as logs:
                for round_ in range(args.failovers):
                    failovers.append(
                        await bench_failover(cluster, round_, args, Path(logs))
                    )
            report_failover(failovers)
            results += failovers
            print(f"  load average {load()}")
    finally:
        cluster.stop()
    write_json(args.json, "redis_cluster", args, results)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--parts", nargs="+", choices=("share", "cpu", "failover"),
        default=["share", "cpu", "failover"],
    )  # fmt: skip
    parser.add_argument("--size", type=int, default=100, help="payload bytes")
    parser.add_argument("--topics", type=int, default=1000)
    parser.add_argument("--share-messages", type=int, default=50, help="per topic")
    parser.add_argument("--share-rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=1000, help="cpu: subscribers in all")
    parser.add_argument("--burst-deliveries", type=int, default=300_000)
    parser.add_argument("--rate", type=float, help="cpu: paced messages/s")
    parser.add_argument("--paced-seconds", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=5, help="cpu: rounds")
    parser.add_argument("--failovers", type=int, default=5, help="failover rounds")
    parser.add_argument("--failover-rate", type=float, default=1000.0)
    parser.add_argument("--failover-warmup", type=float, default=1.0, help="s")
    parser.add_argument("--failover-after", type=float, default=1.0, help="s")
    parser.add_argument("--node-timeout", type=int, default=1000, help="ms")
    parser.add_argument(
        "--server",
        default=one_redis.REDIS_SERVER,
        help="the redis-server (or valkey-server) binary to run",
    )
    add_json_option(parser)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--redis", help=argparse.SUPPRESS)
    parser.add_argument("--log", help=argparse.SUPPRESS)
    return parser.parse_args()


def run() -> None:
    args = parse_args()
    raise_nofile(args.n * 2 + 100)
    if args.serve:
        asyncio.run(serve(args.redis, args.log))
        return
    version = use_server(args.server)
    cpus = pin(CLIENT_CPU)
    print(version)
    print(
        f"redis_cluster: app servers on CPU {SERVER_CPU} (asyncio), load generator"
        f" pid {os.getpid()} on CPUs {sorted(cpus)}, every redis-server pinned to"
        f" CPU {CLIENT_CPU}; server CPU from /proc/<pid>/task/*/schedstat,"
        " Redis CPU from INFO cpu (share) and schedstat (cpu)"
    )
    asyncio.run(main(args))


if __name__ == "__main__":
    run()
