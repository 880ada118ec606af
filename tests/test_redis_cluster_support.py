"""The real Redis Cluster the cluster tests run on (tests/redis_cluster_support.py),
and the Redis 7 behaviours the cluster broker builds on, seen on real nodes:
sharded pub/sub on the owning primary, SPUBLISH from a script, the ``sunsubscribe``
a subscriber gets when its channel's slot moves away, a failover and a restart.

The last tests kill nodes; the module has its own cluster (the fixture is
module-scoped).
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
import redis.exceptions
from redis.crc import key_slot

from . import redis_cluster_support
from .redis_cluster_support import (
    SLOTS,
    ClusterNode,
    RedisClusterProcess,
    _Node,
    _wait_started,
    cluster_skip_reason,
    module_redis_cluster,  # noqa: F401 - the redis_cluster fixture
    requires_redis_cluster,
)

pytestmark = [pytest.mark.redis, requires_redis_cluster]

SPUBLISH_SCRIPT = "return redis.call('SPUBLISH', ARGV[1], ARGV[2])"


def resp(*args: str | bytes) -> bytes:
    """One command in RESP, as a client sends it."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def reply(*items: str | int, push: bool = False) -> bytes:
    """A RESP2 array (or a RESP3 push) of bulk strings and integers."""
    parts = [b"%s%d\r\n" % (b">" if push else b"*", len(items))]
    for item in items:
        if isinstance(item, int):
            parts.append(b":%d\r\n" % item)
        else:
            parts.append(b"$%d\r\n%s\r\n" % (len(item), item.encode()))
    return b"".join(parts)


class RawSubscriber:
    """A bare connection to one node, to see exactly what Redis sends."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, protocol: int = 2) -> RawSubscriber:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        raw = cls(reader, writer)
        if protocol == 3:
            writer.write(resp("HELLO", "3"))
            await raw.expect(b"$7\r\nmodules\r\n*0\r\n", until=True)
        return raw

    async def send(self, *args: str) -> None:
        self.writer.write(resp(*args))
        await self.writer.drain()

    async def expect(self, data: bytes, until: bool = False) -> None:
        """Read exactly ``data`` next (or anything up to and including it)."""
        async with asyncio.timeout(10):
            if until:
                await self.reader.readuntil(data)
            else:
                assert await self.reader.readexactly(len(data)) == data

    def close(self) -> None:
        self.writer.close()


async def command(node: redis.asyncio.Redis, *args: str) -> Any:
    """One command on one node; the raw reply."""
    return await node.execute_command(*args)  # type: ignore[no-untyped-call]


def live_primary(cluster: RedisClusterProcess) -> ClusterNode:
    """A primary with a replica running, so that it can fail over."""
    replicas = {n.primary_id for n in cluster.replicas() if not n.failed}
    return next(n for n in cluster.primaries() if n.node_id in replicas)


def other_primary(cluster: RedisClusterProcess, port: int) -> int:
    return next(n.port for n in cluster.primaries() if n.port != port)


def key_on(cluster: RedisClusterProcess, port: int, *, not_slot: int = -1) -> str:
    """A key whose slot the primary on ``port`` owns (other than ``not_slot``)."""
    for i in range(100_000):
        key = f"k{i}"
        slot = key_slot(key.encode())
        if slot != not_slot and cluster.primary_for_slot(slot).port == port:
            return key
    raise AssertionError(f"no key found on {port}")


def test_cluster_has_three_primaries_three_replicas_and_every_slot(
    redis_cluster: RedisClusterProcess,
) -> None:
    """The cluster comes up whole: 3 primaries covering the 16384 slots, each
    with one replica, every node running."""
    nodes = redis_cluster.nodes()
    primaries = redis_cluster.primaries()
    assert len(primaries) == 3
    assert sum(last - first + 1 for n in primaries for first, last in n.slots) == SLOTS
    replicas = [n for n in nodes if n.role == "replica"]
    assert sorted(n.primary_id or "" for n in replicas) == sorted(
        n.node_id for n in primaries
    )
    assert all(n.pid is not None and not n.failed for n in nodes)
    for n in nodes:
        os.kill(n.pid or 0, 0)  # the process is there
    assert redis_cluster.seed_url in {n.url for n in primaries}


async def test_key_written_through_the_cluster_client_is_on_its_primary(
    redis_cluster: RedisClusterProcess,
) -> None:
    """cluster_client() routes a write to the primary that primary_for_key names."""
    async with redis_cluster.cluster_client() as cluster:
        await cluster.set(b"route:{a}", b"1")
    owner = redis_cluster.primary_for_key(b"route:{a}")
    async with redis_cluster.client(owner.port) as node:
        assert await node.get(b"route:{a}") == b"1"


async def test_ssubscribe_on_the_owner_receives_spublish(
    redis_cluster: RedisClusterProcess,
) -> None:
    """A sharded subscriber on the channel's primary gets an SPUBLISH made there."""
    owner = redis_cluster.primary_for_key(b"ss:{a}")
    sub = await RawSubscriber.open(owner.port)
    try:
        await sub.send("SSUBSCRIBE", "ss:{a}")
        await sub.expect(reply("ssubscribe", "ss:{a}", 1))
        async with redis_cluster.client(owner.port) as node:
            assert await command(node, "SPUBLISH", "ss:{a}", "hi") == 1
        await sub.expect(reply("smessage", "ss:{a}", "hi"))
    finally:
        sub.close()


async def test_spublish_on_another_primary_is_moved(
    redis_cluster: RedisClusterProcess,
) -> None:
    """SPUBLISH sent to a primary that does not own the channel's slot gets MOVED."""
    owner = redis_cluster.primary_for_key(b"ss:{b}")
    async with redis_cluster.client(other_primary(redis_cluster, owner.port)) as node:
        with pytest.raises(redis.exceptions.MovedError) as moved:
            await command(node, "SPUBLISH", "ss:{b}", "hi")
    assert str(moved.value) == f"{key_slot(b'ss:{b}')} 127.0.0.1:{owner.port}"


async def test_script_spublish_to_its_keys_hash_tag_delivers(
    redis_cluster: RedisClusterProcess,
) -> None:
    """EVAL with KEYS[1] in hash tag {t} may SPUBLISH to a channel tagged {t}."""
    owner = redis_cluster.primary_for_key(b"p:c:{t}")
    sub = await RawSubscriber.open(owner.port)
    try:
        await sub.send("SSUBSCRIBE", "p:c:{t}")
        await sub.expect(reply("ssubscribe", "p:c:{t}", 1))
        async with redis_cluster.client(owner.port) as node:
            sent = await node.eval(SPUBLISH_SCRIPT, 1, "p:h:{t}:m", "p:c:{t}", "m")
        assert sent == 1
        await sub.expect(reply("smessage", "p:c:{t}", "m"))
    finally:
        sub.close()


async def test_script_spublish_to_a_slot_of_another_node_is_an_error(
    redis_cluster: RedisClusterProcess,
) -> None:
    """A script's SPUBLISH to a channel another primary owns fails the script."""
    owner = redis_cluster.primary_for_key(b"p:c:{t}")
    remote = key_on(redis_cluster, other_primary(redis_cluster, owner.port))
    async with redis_cluster.client(owner.port) as node:
        with pytest.raises(redis.exceptions.ResponseError) as error:
            await node.eval(SPUBLISH_SCRIPT, 1, "p:h:{t}:m", remote, "m")
    assert "Script attempted to access a non local key in a cluster node" in str(
        error.value
    )


async def test_script_spublish_to_another_slot_of_the_same_node_runs(
    redis_cluster: RedisClusterProcess,
) -> None:
    """Redis 7.0 lets a script SPUBLISH to another slot its node owns (no
    cross-slot error): the broker must not rely on Redis to refuse it."""
    owner = redis_cluster.primary_for_key(b"p:c:{t}")
    local = key_on(redis_cluster, owner.port, not_slot=key_slot(b"p:c:{t}"))
    async with redis_cluster.client(owner.port) as node:
        assert await node.eval(SPUBLISH_SCRIPT, 1, "p:h:{t}:m", local, "m") == 0


async def test_migrate_slot_moves_the_slot_and_its_keys(
    redis_cluster: RedisClusterProcess,
) -> None:
    """migrate_slot moves a slot and its keys (more than one MIGRATE batch) to
    another primary; the cluster client still finds them (it follows MOVED)."""
    slot = key_slot(b"mig:{k}")
    source = redis_cluster.primary_for_slot(slot)
    target = other_primary(redis_cluster, source.port)
    async with redis_cluster.cluster_client() as cluster:
        await cluster.mset({f"mig:{{k}}:{i}": b"w" for i in range(250)})
        await cluster.set(b"mig:{k}", b"v")
        await redis_cluster.migrate_slot(slot, target)
        assert redis_cluster.primary_for_slot(slot).port == target
        assert await cluster.cluster_keyslot("mig:{k}") == slot
        assert await cluster.get(b"mig:{k}") == b"v"
    async with redis_cluster.client(target) as node:
        assert await node.get(b"mig:{k}") == b"v"
        assert await command(node, "CLUSTER", "COUNTKEYSINSLOT", str(slot)) == 251


@pytest.mark.parametrize("protocol", [2, 3], ids=["resp2", "resp3"])
async def test_a_slot_moving_away_sunsubscribes_its_channels(
    redis_cluster: RedisClusterProcess, protocol: int
) -> None:
    """When its channel's slot moves away, the subscriber gets ``sunsubscribe``
    (channel, shard channels left) and the old owner answers MOVED after."""
    channel = f"gone:{{p{protocol}}}"
    slot = key_slot(channel.encode())
    source = redis_cluster.primary_for_slot(slot)
    target = other_primary(redis_cluster, source.port)
    sub = await RawSubscriber.open(source.port, protocol)
    try:
        await sub.send("SSUBSCRIBE", channel)
        await sub.expect(reply("ssubscribe", channel, 1, push=protocol == 3))
        await redis_cluster.migrate_slot(slot, target)
        await sub.expect(reply("sunsubscribe", channel, 0, push=protocol == 3))
        await sub.send("SSUBSCRIBE", channel)
        await sub.expect(b"-MOVED %d 127.0.0.1:%d\r\n" % (slot, target))
    finally:
        sub.close()


async def test_spublish_mid_migration_reaches_the_source_subscribers(
    redis_cluster: RedisClusterProcess,
) -> None:
    """While a slot is MIGRATING, SPUBLISH on the source still delivers to the
    subscribers there (no ASK), and the target without ASKING answers MOVED."""
    channel = "mid:{m}"
    slot = key_slot(channel.encode())
    source = redis_cluster.primary_for_slot(slot)
    target = other_primary(redis_cluster, source.port)
    sub = await RawSubscriber.open(source.port)
    published: list[int] = []

    async def during(step: str) -> None:
        if step != "migrating":
            return
        async with redis_cluster.client(source.port) as node:
            published.append(await command(node, "SPUBLISH", channel, "x"))
        async with redis_cluster.client(target) as node:
            with pytest.raises(redis.exceptions.MovedError):
                await command(node, "SPUBLISH", channel, "y")

    try:
        await sub.send("SSUBSCRIBE", channel)
        await sub.expect(reply("ssubscribe", channel, 1))
        await redis_cluster.migrate_slot(slot, target, during)
        assert published == [1]
        await sub.expect(reply("smessage", channel, "x"))
        await sub.expect(reply("sunsubscribe", channel, 0))
    finally:
        sub.close()


async def test_replica_shard_subscribers_receive_the_primarys_spublish(
    redis_cluster: RedisClusterProcess,
) -> None:
    """SSUBSCRIBE on a replica works and gets what is SPUBLISHed on its primary
    (replicated), though SPUBLISH's count is the primary's subscribers only."""
    owner = redis_cluster.primary_for_key(b"rep:{r}")
    replica = next(n for n in redis_cluster.replicas() if n.primary_id == owner.node_id)
    sub = await RawSubscriber.open(replica.port)
    try:
        await sub.send("SSUBSCRIBE", "rep:{r}")
        await sub.expect(reply("ssubscribe", "rep:{r}", 1))
        async with redis_cluster.client(owner.port) as node:
            assert await command(node, "SPUBLISH", "rep:{r}", "x") == 0
        await sub.expect(reply("smessage", "rep:{r}", "x"))
    finally:
        sub.close()


async def test_a_manual_failover_sunsubscribes_the_old_primarys_subscribers(
    redis_cluster: RedisClusterProcess,
) -> None:
    """After CLUSTER FAILOVER the demoted primary's shard subscribers get
    ``sunsubscribe`` for their channels."""
    owner = redis_cluster.primary_for_key(b"man:{f}")
    replica = next(n for n in redis_cluster.replicas() if n.primary_id == owner.node_id)
    sub = await RawSubscriber.open(owner.port)
    try:
        await sub.send("SSUBSCRIBE", "man:{f}")
        await sub.expect(reply("ssubscribe", "man:{f}", 1))
        await redis_cluster.manual_failover(replica.port)
        assert redis_cluster.primary_for_key(b"man:{f}").port == replica.port
        await sub.expect(reply("sunsubscribe", "man:{f}", 0))
    finally:
        sub.close()


async def test_info_sections_are_parsed(redis_cluster: RedisClusterProcess) -> None:
    """info() gives INFO commandstats, cpu and replication as dicts."""
    owner = redis_cluster.primary_for_key(b"stats:{s}")
    async with redis_cluster.client(owner.port) as node:
        await command(node, "SPUBLISH", "stats:{s}", "x")
    stats = redis_cluster.info(owner.port, "commandstats")
    assert stats["cmdstat_spublish"]["calls"] >= 1
    assert redis_cluster.info(owner.port, "cpu")["used_cpu_sys"] >= 0
    assert redis_cluster.info(owner.port, "replication")["role"] == "master"


async def test_killing_a_primary_promotes_its_replica(
    redis_cluster: RedisClusterProcess,
) -> None:
    """After a primary is SIGKILLed, wait_failover returns its replica, now the
    primary of its slots, and the cluster serves every slot again."""
    dead = live_primary(redis_cluster)
    replica = next(n for n in redis_cluster.replicas() if n.primary_id == dead.node_id)
    key = key_on(redis_cluster, dead.port).encode()
    redis_cluster.kill(dead.port)
    try:
        promoted = await redis_cluster.wait_failover(dead.port)
        assert promoted == replica.port
        assert redis_cluster.primary_for_key(key).port == promoted
        assert len(redis_cluster.primaries()) == 3
        async with redis_cluster.cluster_client() as cluster:
            await cluster.set(key, b"after")
            assert await cluster.get(key) == b"after"
    finally:
        await redis_cluster.restart(dead.port)


async def test_a_restarted_primary_rejoins_as_replica_of_the_promoted_node(
    redis_cluster: RedisClusterProcess,
) -> None:
    """restart() brings a killed primary back, with its node id, as a replica of
    the replica that took its slots."""
    dead = live_primary(redis_cluster)
    slot = dead.slots[0][0]
    redis_cluster.kill(dead.port)
    promoted = await redis_cluster.wait_failover(dead.port)
    back = await redis_cluster.restart(dead.port)
    assert (back.node_id, back.role, back.pid is not None) == (
        dead.node_id,
        "replica",
        True,
    )
    new_primary = redis_cluster.primary_for_slot(slot)
    assert (new_primary.port, back.primary_id) == (promoted, new_primary.node_id)
    replication = redis_cluster.info(dead.port, "replication")
    assert replication["master_link_status"] == "up"


def test_a_busy_port_is_replaced_when_a_node_starts(tmp_path: Path) -> None:
    """A node whose port turns out busy starts on other ports."""
    node = _Node(tmp_path, 1000)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", node.port))
        busy.listen()
        taken = node.port
        node.spawn()
        try:
            _wait_started([node], retry_busy=True)
            assert node.port != taken and node.running
        finally:
            node.kill()


def test_a_node_that_does_not_start_raises_with_its_log(tmp_path: Path) -> None:
    """When a node cannot start, the error quotes its log."""
    node = _Node(tmp_path, 1000)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", node.port))
        busy.listen()
        node.spawn()
        with pytest.raises(AssertionError, match="Address already in use"):
            _wait_started([node], retry_busy=False)
    node.kill()


def test_a_failed_creation_leaves_nothing_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If redis-cli fails, start() raises with its output, kills the nodes and
    removes their directory."""
    monkeypatch.setattr(redis_cluster_support, "REDIS_CLI", "/bin/false")
    cluster = RedisClusterProcess()
    with pytest.raises(AssertionError, match="redis-cli --cluster create failed"):
        cluster.start()
    nodes = cluster._nodes
    assert len(nodes) == 6
    assert not any(node.running for node in nodes)
    assert not nodes[0].directory.parent.exists()


def test_skip_reason_names_a_missing_or_old_redis(tmp_path: Path) -> None:
    """requires_redis_cluster's reason says which binary is missing or too old."""
    old = tmp_path / "redis-server"
    old.write_text("#!/bin/sh\necho 'Redis server v=6.2.14 sha=0 malloc=libc'\n")
    old.chmod(0o755)
    cli = redis_cluster_support.REDIS_CLI
    missing = str(tmp_path / "absent")
    assert cluster_skip_reason(missing, cli) == (
        f"needs {missing} (make test installs Debian's redis-server as root)"
    )
    assert cluster_skip_reason(str(old), cli) == (
        f"needs {old} 7.0+ for sharded pub/sub, found 6.2"
    )
    assert cluster_skip_reason() is None
