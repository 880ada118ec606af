"""A real Redis Cluster for the tests: 6 ``redis-server --cluster-enabled yes`` on
free loopback ports (3 primaries, 3 replicas), created with ``redis-cli --cluster
create``, plus what the cluster tests do to it: kill and restart a node, wait for a
failover, migrate a slot by hand, read a node's INFO.

Use it in a test module with::

    from .redis_cluster_support import (
        RedisClusterProcess,
        module_redis_cluster,  # noqa: F401 - the redis_cluster fixture
        requires_redis_cluster,
    )

    pytestmark = [pytest.mark.redis, requires_redis_cluster]

    async def test_x(redis_cluster: RedisClusterProcess) -> None: ...

The fixture is module-scoped: a module that kills nodes gets its own cluster.
Nodes run without persistence; each has its own ``--dir`` and
``--cluster-config-file`` in one temporary directory, so a restarted node keeps its
node id and rejoins. Setup and the quick queries are synchronous (a few ms of
blocking I/O); what waits for the cluster (``wait_ok``, ``wait_failover``,
``restart``, ``migrate_slot``) is async and keeps the event loop running, so a
broker under test goes on working meanwhile. Every wait polls with a deadline.
"""

from __future__ import annotations

import inspect
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Literal

import pytest
import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

from .redis_support import REDIS_SERVER, free_port, poll_until, wait_until

__all__ = [
    "REDIS_CLI",
    "SLOTS",
    "ClusterNode",
    "MigrationHook",
    "RedisClusterProcess",
    "cluster_skip_reason",
    "module_redis_cluster",
    "requires_redis_cluster",
    "running_cluster",
]

REDIS_CLI: Final = shutil.which("redis-cli") or "/usr/bin/redis-cli"
SLOTS: Final = 16384
HOST: Final = "127.0.0.1"
DEFAULT_NODE_TIMEOUT_MS: Final = 1000
DEFAULT_WAIT: Final = 20.0
START_ATTEMPTS: Final = 5
MIGRATE_BATCH: Final = 100
VERSION: Final = re.compile(r"(?:v=|redis-cli )(\d+)\.(\d+)")
BUSY: Final = "Address already in use"
READY: Final = "Ready to accept connections"

Role = Literal["primary", "replica"]
# Called with the step just done ("importing", "migrating", "keys", "target",
# "source"), before the next one; may be async.
MigrationHook = Callable[[str], Awaitable[None] | None]


def _version(binary: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = VERSION.search(out)
    return (int(match.group(1)), int(match.group(2))) if match else None


def cluster_skip_reason(server: str = REDIS_SERVER, cli: str = REDIS_CLI) -> str | None:
    """Why the cluster tests cannot run here, or None when they can: sharded
    pub/sub needs redis-server and redis-cli 7.0 or newer."""
    for binary in (server, cli):
        version = _version(binary)
        if version is None:
            return f"needs {binary} (make test installs Debian's redis-server as root)"
        if version < (7, 0):
            found = ".".join(map(str, version))
            return f"needs {binary} 7.0+ for sharded pub/sub, found {found}"
    return None


_SKIP_REASON: Final = cluster_skip_reason()
requires_redis_cluster = pytest.mark.skipif(
    _SKIP_REASON is not None, reason=_SKIP_REASON or ""
)


@dataclass(frozen=True)
class ClusterNode:
    """One node as the cluster sees it: a line of CLUSTER NODES."""

    port: int
    role: Role
    node_id: str
    primary_id: str | None  # a replica's primary; None for a primary
    slots: tuple[tuple[int, int], ...]  # inclusive ranges; empty for a replica
    failed: bool  # flagged ``fail``: the cluster agreed that it is down
    pid: int | None = None  # this helper's process for it, None if not running

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}"

    def owns(self, slot: int) -> bool:
        """Whether ``slot`` is in this node's slot ranges."""
        return any(first <= slot <= last for first, last in self.slots)


def parse_cluster_nodes(text: str) -> list[ClusterNode]:
    """CLUSTER NODES' reply, one :class:`ClusterNode` a line, sorted by node id
    (so that two nodes' views compare equal); the migration markers of a slot
    being moved (``[slot->-id]``) are left out."""
    nodes = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        node_id, address, flags, primary = fields[:4]
        flag_set = set(flags.split(","))
        ranges = []
        for item in fields[8:]:
            if not item.startswith("["):
                first, _, last = item.partition("-")
                ranges.append((int(first), int(last or first)))
        nodes.append(
            ClusterNode(
                port=int(address.split("@")[0].rsplit(":", 1)[1]),
                role="primary" if "master" in flag_set else "replica",
                node_id=node_id,
                primary_id=None if primary == "-" else primary,
                slots=tuple(sorted(ranges)),
                failed="fail" in flag_set,
            )
        )
    return sorted(nodes, key=lambda node: node.node_id)


def _two_ports() -> tuple[int, int]:
    """Two different free ports: a node's client port and its cluster bus port
    (set apart with ``--cluster-port``: port + 10000 may be out of range)."""
    while (ports := (free_port(HOST), free_port(HOST)))[0] == ports[1]:
        pass
    return ports


class _Node:
    """One ``redis-server`` process of the cluster, its ports and files."""

    def __init__(self, directory: Path, node_timeout_ms: int) -> None:
        self.directory = directory
        self.node_timeout_ms = node_timeout_ms
        self.port, self.bus_port = _two_ports()
        self.log_start = 0  # where this run's lines start in the log
        self.process: subprocess.Popen[bytes] | None = None
        self.client: redis.Redis | None = None

    @property
    def log(self) -> Path:
        return self.directory / "redis.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def spawn(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.log_start = self.log.stat().st_size if self.log.exists() else 0
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port", str(self.port),
                "--cluster-port", str(self.bus_port),
                "--bind", HOST,
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(self.directory / "nodes.conf"),
                "--cluster-node-timeout", str(self.node_timeout_ms),
                # A replica that lost its primary long ago may still take over.
                "--cluster-replica-validity-factor", "0",
                "--dir", str(self.directory),
                "--save", "",
                "--appendonly", "no",
                "--repl-diskless-sync", "yes",
                "--repl-diskless-sync-delay", "0",
                "--daemonize", "no",
                "--logfile", str(self.log),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )  # fmt: skip

    def _log_text(self) -> str:
        """This run's log (a restarted node appends to the same file)."""
        try:
            with self.log.open("rb") as log:
                log.seek(self.log_start)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self._log_text().splitlines()[-lines:]) or "(no log)"

    def _state(self) -> bool | None:
        """True once the node accepts connections, False if it exited, else None."""
        if READY in self._log_text():
            return True
        return None if self.running else False

    def wait_ready(self) -> bool:
        """Wait until the node accepts connections (True) or exits (False)."""
        try:
            poll_until(lambda: self._state() is not None, timeout=DEFAULT_WAIT)
        except AssertionError:
            self.kill()
            raise AssertionError(
                f"redis-server on port {self.port} did not start within "
                f"{DEFAULT_WAIT} s:\n{self.log_tail()}"
            ) from None
        return bool(self._state())

    def sync(self) -> redis.Redis:
        """A synchronous client that fails at once (no retries) if the node is down."""
        if self.client is None:
            self.client = redis.Redis(
                host=HOST,
                port=self.port,
                socket_timeout=5,
                socket_connect_timeout=5,
                retry=Retry(NoBackoff(), 0),
            )
        return self.client

    def command(self, *args: Any) -> Any:
        """One command, the raw reply (bytes)."""
        return self.sync().execute_command(*args)  # type: ignore[no-untyped-call]

    def kill(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        if self.client is not None:
            self.client.close()
            self.client = None


def _wait_started(nodes: list[_Node], retry_busy: bool) -> None:
    """Wait until every node accepts connections. A node whose port turned out
    busy starts again on new ports if ``retry_busy``; any other failure raises
    with the node's log tail."""
    for node in nodes:
        for attempt in range(START_ATTEMPTS):
            if node.wait_ready():
                break
            tail = node.log_tail()
            if not (retry_busy and BUSY in tail) or attempt == START_ATTEMPTS - 1:
                raise AssertionError(
                    f"redis-server on port {node.port} did not start:\n{tail}"
                )
            node.port, node.bus_port = _two_ports()
            node.spawn()


class RedisClusterProcess:
    """Six ``redis-server --cluster-enabled yes`` on free loopback ports, made a
    cluster of 3 primaries with one replica each by ``redis-cli --cluster create``.

    Args:
        node_timeout_ms: ``cluster-node-timeout``: how long a node may not answer
            before it is suspected down; a failover takes about twice that.
        primaries: how many primaries, 3 or more (each gets one replica).
    """

    def __init__(
        self, node_timeout_ms: int = DEFAULT_NODE_TIMEOUT_MS, primaries: int = 3
    ) -> None:
        self.node_timeout_ms = node_timeout_ms
        self.primary_count = primaries
        self._tmp: Path | None = None
        self._nodes: list[_Node] = []
        self._killed_slots: dict[int, tuple[tuple[int, int], ...]] = {}
        #: How long start() took, from the first process to a settled cluster.
        self.startup_seconds = 0.0

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Start the nodes, create the cluster and wait until every node reports
        ``cluster_state:ok``, agrees on the slot map, and every replica is in sync.
        Raises AssertionError (with the failing node's log tail or redis-cli's
        output) if that does not happen; nothing is left running then."""
        began = time.monotonic()
        self._tmp = Path(tempfile.mkdtemp(prefix="redis-cluster-"))
        try:
            self._nodes = [
                _Node(self._tmp / f"node{i}", self.node_timeout_ms)
                for i in range(self.primary_count * 2)
            ]
            for node in self._nodes:
                node.spawn()
            _wait_started(self._nodes, retry_busy=True)
            self._create()
            poll_until(self._settled, timeout=DEFAULT_WAIT, what="the cluster")
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began

    def _create(self) -> None:
        addresses = [f"{HOST}:{node.port}" for node in self._nodes]
        command = [REDIS_CLI, "--cluster", "create", *addresses]
        command += ["--cluster-replicas", "1", "--cluster-yes"]
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0 or "All 16384 slots covered" not in result.stdout:
            raise AssertionError(
                f"redis-cli --cluster create failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )

    def stop(self) -> None:
        """Kill every node (those a test killed already too) and remove the
        temporary directory. Idempotent."""
        for node in self._nodes:
            node.kill()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    # -- what the cluster looks like -----------------------------------------

    @property
    def urls(self) -> list[str]:
        """Every node's URL, in creation order (a killed node's too)."""
        return [f"redis://{HOST}:{node.port}" for node in self._nodes]

    @property
    def ports(self) -> list[int]:
        """Every node's port, in creation order (a killed node's too)."""
        return [node.port for node in self._nodes]

    @property
    def seed_url(self) -> str:
        """The URL of one live primary: what a client starts from."""
        return self.primaries()[0].url

    def _node(self, port: int) -> _Node:
        for node in self._nodes:
            if node.port == port:
                return node
        raise ValueError(f"no node of this cluster on port {port}")

    def _view(self, node: _Node) -> list[ClusterNode] | None:
        """``node``'s CLUSTER NODES, or None if it does not answer."""
        try:
            reply = node.command("CLUSTER", "NODES")
        except redis.RedisError:
            return None
        return parse_cluster_nodes(reply.decode())

    def nodes(self) -> list[ClusterNode]:
        """Every node as the first live node sees it now, primaries first, then
        by port; ``pid`` is set for the nodes that run."""
        pids = {n.port: n.process.pid for n in self._nodes if n.running and n.process}
        for node in self._nodes:
            view = None if not node.running else self._view(node)
            if view is not None:
                nodes = [replace(n, pid=pids.get(n.port)) for n in view]
                return sorted(nodes, key=lambda n: (n.role != "primary", n.port))
        raise AssertionError("no node of the cluster answers")

    def primaries(self) -> list[ClusterNode]:
        """The running primaries that serve slots (a killed one is left out
        even before the cluster flags it failed)."""
        return [
            n
            for n in self.nodes()
            if n.role == "primary" and n.slots and n.pid is not None
        ]

    def replicas(self) -> list[ClusterNode]:
        """The replicas, running or not (see ``pid`` and ``failed``)."""
        return [n for n in self.nodes() if n.role == "replica"]

    def primary_for_slot(self, slot: int) -> ClusterNode:
        """The primary that owns ``slot`` now."""
        for node in self.primaries():
            if node.owns(slot):
                return node
        raise AssertionError(f"no live primary owns slot {slot}")

    def primary_for_key(self, key: bytes | str) -> ClusterNode:
        """The primary that owns ``key``'s slot (a channel's, for sharded pub/sub)."""
        return self.primary_for_slot(
            key_slot(key.encode() if isinstance(key, str) else key)
        )

    def info(self, port: int, section: str = "default") -> dict[str, Any]:
        """``INFO section`` of one node, parsed by redis-py (``commandstats``
        gives ``{"cmdstat_spublish": {"calls": ..., "usec": ...}, ...}``)."""
        info: dict[str, Any] = self._node(port).sync().info(section)
        return info

    def command(self, port: int, *args: Any) -> Any:
        """One command on one node, synchronously; the raw reply."""
        return self._node(port).command(*args)

    def client(self, port: int) -> redis.asyncio.Redis:
        """An async client of one node (bytes replies). The caller closes it:
        ``async with cluster.client(port) as r: ...``."""
        return redis.asyncio.Redis(host=HOST, port=port)

    def cluster_client(self) -> redis.asyncio.RedisCluster:
        """An async cluster client (bytes replies) seeded with one primary. The
        caller closes it: ``async with cluster.cluster_client() as rc: ...``."""
        return redis.asyncio.RedisCluster(host=HOST, port=self.primaries()[0].port)

    # -- waiting for the cluster -----------------------------------------------

    def _settled(self) -> list[ClusterNode] | None:
        """The cluster's view if it is whole again, else None: every running node
        says ``cluster_state:ok``, all give the same CLUSTER NODES (ids, roles,
        primaries, slots, failed flags), exactly the nodes not running are flagged
        failed, the live primaries cover all slots, and every running replica is
        in sync with its primary."""
        running = [node for node in self._nodes if node.running]
        views = []
        try:
            for node in running:
                if b"cluster_state:ok" not in node.command("CLUSTER", "INFO"):
                    return None
                views.append(self._view(node))
        except redis.RedisError:
            return None
        first = views[0]
        if first is None or any(view != first for view in views):
            return None
        up = {node.port for node in running}
        if {n.port for n in first if not n.failed} != up:
            return None
        covered = sum(
            last - start + 1
            for n in first
            if n.role == "primary" and not n.failed
            for start, last in n.slots
        )
        if covered != SLOTS:
            return None
        for n in first:
            if n.role == "replica" and not n.failed:
                status = self.info(n.port, "replication").get("master_link_status")
                if status != "up":
                    return None
        return first

    async def wait_ok(self, within: float = DEFAULT_WAIT) -> list[ClusterNode]:
        """Wait until the cluster is whole (see :meth:`_settled`); its nodes."""
        view: list[ClusterNode] = await wait_until(
            self._settled, within=within, what="the cluster to settle"
        )
        return view

    # -- faults ----------------------------------------------------------------

    def kill(self, port: int) -> None:
        """SIGKILL one node: no goodbye, as in a crash. Remembers its slots for
        :meth:`wait_failover`."""
        node = self._node(port)
        view = self._view(node)
        me = [n for n in view or () if n.port == port]
        self._killed_slots[port] = me[0].slots if me else ()
        node.kill()

    async def wait_failover(self, dead_port: int, within: float = DEFAULT_WAIT) -> int:
        """Wait until a replica took over the slots of the primary killed on
        ``dead_port`` and the cluster is whole again without it; its port."""
        slots = self._killed_slots.get(dead_port)
        if not slots:
            raise ValueError(
                f"port {dead_port}: no primary with slots was killed there"
            )
        slot = slots[0][0]

        def promoted() -> int | None:
            view = self._settled()
            for n in view or ():
                if n.role == "primary" and n.owns(slot) and n.port != dead_port:
                    return n.port
            return None

        port: int = await wait_until(
            promoted, within=within, what=f"a failover of {dead_port}"
        )
        return port

    async def manual_failover(
        self, replica_port: int, within: float = DEFAULT_WAIT
    ) -> None:
        """``CLUSTER FAILOVER`` on a replica: it and its primary swap roles with
        no write lost (the old primary's shard subscribers get ``sunsubscribe``).
        Returns once the cluster agrees that the replica is the primary."""
        self.command(replica_port, "CLUSTER", "FAILOVER")
        await wait_until(
            lambda: any(
                n.port == replica_port and n.role == "primary"
                for n in self._settled() or ()
            ),
            within=within,
            what=f"a manual failover to {replica_port}",
        )

    async def restart(self, port: int, within: float = DEFAULT_WAIT) -> ClusterNode:
        """Start a killed node again with its config file (its node id): it
        rejoins, as a replica of whichever node took its slots. Returns it once
        the cluster is whole again with it in sync."""
        node = self._node(port)
        if node.running:
            raise ValueError(f"the node on port {port} is running")
        node.spawn()
        _wait_started([node], retry_busy=False)
        await self.wait_ok(within)
        return next(n for n in self.nodes() if n.port == port)

    async def migrate_slot(
        self, slot: int, to_port: int, hook: MigrationHook | None = None
    ) -> None:
        """Move ``slot`` and its keys to the primary on ``to_port`` as a manual
        resharding does: IMPORTING on the target, MIGRATING on the source, the
        keys moved in batches (CLUSTER GETKEYSINSLOT, MIGRATE), then SETSLOT NODE
        on the target, the source and the other primaries. ``hook`` runs after
        each step with its name (``importing``, ``migrating``, ``keys``,
        ``target``, ``source``), so that a test can act mid-migration. Returns
        once the cluster agrees on the new owner."""
        source = self.primary_for_slot(slot)
        target = next((n for n in self.primaries() if n.port == to_port), None)
        if target is None or target.port == source.port:
            raise ValueError(
                f"port {to_port} is not another primary than {source.port}"
            )

        async def step(name: str) -> None:
            if hook is not None:
                result = hook(name)
                if inspect.isawaitable(result):
                    await result

        src, dst = self._node(source.port), self._node(target.port)
        dst.command("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
        await step("importing")
        src.command("CLUSTER", "SETSLOT", slot, "MIGRATING", target.node_id)
        await step("migrating")
        while keys := src.command("CLUSTER", "GETKEYSINSLOT", slot, MIGRATE_BATCH):
            src.command("MIGRATE", HOST, target.port, "", 0, 5000, "KEYS", *keys)
        await step("keys")
        dst.command("CLUSTER", "SETSLOT", slot, "NODE", target.node_id)
        await step("target")
        src.command("CLUSTER", "SETSLOT", slot, "NODE", target.node_id)
        await step("source")
        for other in self.primaries():
            if other.port not in (source.port, target.port):
                self.command(
                    other.port, "CLUSTER", "SETSLOT", slot, "NODE", target.node_id
                )
        await wait_until(
            lambda: (
                self.primary_for_slot(slot).port == target.port
                and self._settled() is not None
            ),
            what=f"slot {slot} on {target.port}",
        )


def running_cluster(**options: Any) -> Iterator[RedisClusterProcess]:
    """A started cluster, stopped afterwards (the body of fixtures)."""
    cluster = RedisClusterProcess(**options)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module", name="redis_cluster")
def module_redis_cluster() -> Iterator[RedisClusterProcess]:
    """The ``redis_cluster`` fixture: a cluster shared by one test module's tests.
    Import it into a module (``noqa: F401``) to use it there."""
    yield from running_cluster()
