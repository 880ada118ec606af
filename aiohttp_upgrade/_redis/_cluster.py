"""A broker on a Redis Cluster: one shard (writer and reader) per primary,
each topic on the shard that serves its channel's slot, and the slot map kept
up to date through failovers and slot migrations.

Topics use sharded pub/sub (``SPUBLISH``/``SSUBSCRIBE``): a message goes to the
primary of its channel's slot (and its replicas) only, so the cluster's pub/sub
capacity grows with its primaries. A topic's channel carries the topic as its
hash tag, as its history keys do, so both live on one shard. The broker's own
keys and channel (counts, presence) are tagged with the channel prefix: they
live on one shard, the *home* shard.

The slot map is read again (``CLUSTER SLOTS`` from any node that answers) every
``REFRESH_INTERVAL`` s, and at once when something says it changed: a ``MOVED``
or ``ASK`` reply, Redis unsubscribing a channel whose slot moved away, a shard
unreachable (then every ``REFRESH_FAST`` s until it is back). A primary
replaced by its replica is the same shard connected elsewhere: it keeps its
queue of interest and its identity. Plain topics stay at most once: what a
moved slot or a failed primary refuses is dropped and counted, never resent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from .._broker import BrokerHost
from .._errors import BrokerUnavailableError
from .._history_local import HistoryUnavailable, Skip, Slice
from .._positions import Policy
from ._config import STARTUP_TIMEOUT, Config, Counters, Session, describe
from ._shard import Shard
from ._slots import key_slot
from ._supervisor import Supervisor
from ._topology import Address, SlotMap, node_client, read_slot_map

__all__ = ["REFRESH_FAST", "REFRESH_INTERVAL", "Cluster"]

logger = logging.getLogger("aiohttp_upgrade")

# Seconds between two reads of the slot map; while a shard is unreachable.
REFRESH_INTERVAL: Final = 5.0
REFRESH_FAST: Final = 0.25
# After a sign of change (MOVED, a slot unsubscribed), read it that often this long.
SUSPECT_FOR: Final = 5.0
REFUSALS_LOGGED_EVERY: Final = 10.0
# Topics whose shard is remembered for publishing, at most.
MAX_ROUTES: Final = 65_536


class Cluster:
    """The shards of one start of a RedisBroker on a Redis Cluster."""

    def __init__(
        self,
        config: Config,
        counters: Counters,
        host: BrokerHost | None,
        seed: Redis | None,
    ) -> None:
        self.config = config
        self.counters = counters
        self.seed = seed
        # The identity every shard shares; its client is the seed.
        self.session = Session(config, host, seed)
        self.shards: dict[Address, Shard] = {}
        self.slot_map: SlotMap | None = None
        self.owners: list[Shard | None] = []  # by slot
        self.home: Shard | None = None
        self.home_slot = key_slot(config.control_key(b""))
        self.interest: dict[str, int] = {}  # topics with local subscribers
        self.placed: dict[str, Shard] = {}  # ... and the shard subscribed to
        self.routes: dict[str, Shard] = {}  # topic -> shard, for publishing
        self.wanted: asyncio.Event | None = None  # read the slot map again
        self.task: asyncio.Task[None] | None = None
        self.history = ClusterHistory(self)
        self.unreachable_since: float | None = None
        self.last_error: BaseException | None = None
        self.suspect_until = 0.0  # read the map often until then
        self.refusals = 0  # MOVED, CLUSTERDOWN ... since last logged
        self.refusals_logged = -REFUSALS_LOGGED_EVERY

    # -- the Broker side ----------------------------------------------------------

    @property
    def connected(self) -> bool:
        shards = self.shards
        return bool(shards) and all(shard.connected for shard in shards.values())

    @property
    def queued_bytes(self) -> int:
        return sum(shard.writer.pending_bytes for shard in self.shards.values())

    def shard_of(self, topic: str) -> Shard | None:
        """The shard serving ``topic`` (None before the slot map is known)."""
        shard = self.routes.get(topic)
        if shard is None and self.owners:
            shard = self.owners[key_slot(self.config.channel(topic))]
            if shard is not None:
                if len(self.routes) >= MAX_ROUTES:
                    self.routes.clear()
                self.routes[topic] = shard
        return shard

    def publish(self, topic: str, opcode: int, payload: bytes, compress: bool) -> None:
        shard = self.routes.get(topic) or self.shard_of(topic)
        if shard is None:
            self.counters.dropped += 1
            return
        shard.writer.publish(topic, opcode, payload, compress)

    def track(self, topic: str, new_count: int, old_count: int) -> None:
        if old_count == 0:
            self.interest[topic] = new_count
            shard = self.shard_of(topic)
            if shard is not None:
                self.placed[topic] = shard
                shard.track(topic, new_count, 0)
        elif new_count == 0:
            self.interest.pop(topic, None)
            shard = self.placed.pop(topic, None)
            if shard is not None:
                shard.track(topic, 0, old_count)
        else:
            self.interest[topic] = new_count

    def count_changed(self, topic: str) -> None:
        if self.home is not None:
            self.home.count_changed(topic)

    async def cluster_count(self, topic: str) -> int:
        if self.home is None:
            raise BrokerUnavailableError(
                f"Redis Cluster unreachable: {describe(self.last_error)}"
            )
        return await self.home.cluster_count(topic)

    # -- start and stop -----------------------------------------------------------

    async def connect(self) -> None:
        """Read the slot map from the seed and connect to every primary; if
        the cluster is unreachable, log it: the refresh task keeps trying."""
        self.wanted = asyncio.Event()
        assert self.seed is not None
        try:
            slot_map = await read_slot_map([self.seed], STARTUP_TIMEOUT)
        except ConnectionError as exc:
            self._unreachable(exc)
            return
        await self._apply(slot_map)
        await asyncio.gather(*(shard.connect() for shard in self.shards.values()))

    def spawn(self) -> None:
        for shard in self.shards.values():
            shard.spawn()
        supervisor = Supervisor(self.config, self.counters)
        self.task = supervisor.spawn("slot map", self.run, None)

    async def close(self, unregister: bool) -> None:
        self.session.closing = True
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        shards = list(self.shards.values())
        await asyncio.gather(*(shard.close(unregister) for shard in shards))
        for shard in shards:
            if shard.session.client is not None:
                await shard.session.client.aclose()
                shard.session.client = None
        self.shards = {}

    # -- the slot map -------------------------------------------------------------

    def suspect(self, exc: BaseException) -> None:
        """Something says the slot map changed: read it again now. Refusals
        are logged at most every ``REFUSALS_LOGGED_EVERY`` s, with a count."""
        if isinstance(exc, ResponseError):
            self.refusals += 1
            now = asyncio.get_running_loop().time()
            if now - self.refusals_logged >= REFUSALS_LOGGED_EVERY:
                logger.warning(
                    "Redis Cluster refused %d messages (the last: %s: %s); "
                    "dropped, counted in RedisBroker.dropped",
                    self.refusals,
                    type(exc).__name__,
                    exc,
                )
                self.refusals = 0
                self.refusals_logged = now
        if self.wanted is not None:
            self.suspect_until = asyncio.get_running_loop().time() + SUSPECT_FOR
            self.wanted.set()

    async def run(self) -> None:
        """Read the slot map now and then, and follow its changes: at most
        every ``REFRESH_FAST`` s however often something asks, and that often
        while a shard is unreachable or a change was announced and not seen
        yet (for ``SUSPECT_FOR`` s)."""
        wanted = self.wanted
        assert wanted is not None
        loop = asyncio.get_running_loop()
        while True:
            hurry = loop.time() < self.suspect_until or any(
                shard.outage.since is not None for shard in self.shards.values()
            )
            delay = REFRESH_FAST if hurry or not self.shards else REFRESH_INTERVAL
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wanted.wait(), delay)
            wanted.clear()
            await self.refresh()
            await asyncio.sleep(REFRESH_FAST)

    async def refresh(self) -> None:
        """Read the slot map from the nodes known (primaries first, then the
        seed) and apply it if it changed."""
        clients = [s.session.client for s in self.shards.values() if s.session.client]
        assert self.seed is not None
        clients.append(self.seed)
        try:
            slot_map = await read_slot_map(clients, self.config.stall_timeout / 4)
        except ConnectionError as exc:
            self._unreachable(exc)
            return
        if self.unreachable_since is not None:
            self.unreachable_since = None
            logger.warning("Redis Cluster: the slot map could be read again")
        if slot_map != self.slot_map:
            self.suspect_until = 0.0
            await self._apply(slot_map)

    def _unreachable(self, exc: BaseException) -> None:
        self.last_error = exc
        if self.unreachable_since is None:
            self.unreachable_since = asyncio.get_running_loop().time()
            logger.warning(
                "Redis Cluster unreachable (%s): publishes stay on this process "
                "until it is back; retrying",
                describe(exc),
            )

    async def _apply(self, slot_map: SlotMap) -> None:
        """Make the shards match ``slot_map``: a replica promoted in place of a
        primary takes over its shard; new primaries get new shards, primaries
        gone have theirs closed; topics whose slot moved move with it."""
        old_map, self.slot_map = self.slot_map, slot_map
        primaries = slot_map.primaries
        gone = [address for address in self.shards if address not in primaries]
        fresh: list[Shard] = []
        for address in sorted(primaries - self.shards.keys()):
            successor = _predecessor(gone, address, old_map, slot_map)
            if successor is not None:
                gone.remove(successor)
                await self._retarget(successor, address)
            else:
                fresh.append(self._new_shard(address))
        for address in gone:
            await self._drop_shard(address)
        self.owners = [
            None if owner is None else self.shards[owner] for owner in slot_map.owners
        ]
        self.routes = {}
        self._replace_topics()
        if self.task is not None:  # running: new shards start at once
            for shard in fresh:
                await shard.connect()
                shard.spawn()
        if old_map is not None:
            logger.warning(
                "Redis Cluster: slot map changed, %d primaries: %s",
                len(primaries),
                ", ".join(f"{h}:{p}" for h, p in sorted(primaries)),
            )

    def _new_shard(self, address: Address) -> Shard:
        assert self.seed is not None
        home_address = self.slot_map.owners[self.home_slot] if self.slot_map else None
        home = self.home is None and address == home_address
        shard = Shard(
            self.config,
            self.counters,
            self.session.host,
            node_client(self.seed, address),
            home=home,
            origin=self.session.origin,
            label=f" {address[0]}:{address[1]}",
        )
        shard.session.suspect = self.suspect
        self.shards[address] = shard
        if home:
            self.home = shard
        return shard

    async def _retarget(self, old: Address, address: Address) -> None:
        assert self.seed is not None
        shard = self.shards.pop(old)
        self.shards[address] = shard
        shard.session.label = f" {address[0]}:{address[1]}"
        logger.warning(
            "Redis Cluster: %s:%d replaced by %s:%d; reconnecting", *old, *address
        )
        previous = await shard.retarget(node_client(self.seed, address))
        if previous is not None:
            await previous.aclose()

    async def _drop_shard(self, address: Address) -> None:
        shard = self.shards.pop(address)
        if shard is self.home:
            logger.error(
                "Redis Cluster: the broker's own slot left %s:%d; cluster counts "
                "and presence stop until the next start",
                *address,
            )
            self.home = None
        await shard.close(unregister=False)
        if shard.session.client is not None:
            await shard.session.client.aclose()

    def _replace_topics(self) -> None:
        """Move each topic with local subscribers to the shard of its slot."""
        placed = self.placed
        for topic, count in self.interest.items():
            shard = self.shard_of(topic)
            before = placed.get(topic)
            if shard is before:
                continue
            if before is not None and before in self.shards.values():
                before.track(topic, 0, count)
            if shard is None:
                placed.pop(topic, None)
            else:
                placed[topic] = shard
                shard.track(topic, count, 0)


def _predecessor(
    gone: list[Address], address: Address, old: SlotMap | None, new: SlotMap
) -> Address | None:
    """The primary gone whose slots ``address`` now serves (a failover)."""
    if old is None or not gone:
        return None
    slots = new.slots_of(address)
    best, shared = None, 0
    for candidate in gone:
        common = len(slots & old.slots_of(candidate))
        if common > shared:
            best, shared = candidate, common
    return best


class ClusterHistory:
    """Topic history on a cluster: each topic's on the shard of its slot."""

    remote = True

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def publish(
        self,
        topic: str,
        policy: Policy,
        opcode: int,
        payload: bytes,
        compress: bool,
        sender: Skip,
    ) -> int:
        shard = self.cluster.shard_of(topic)
        if shard is None:
            self.cluster.counters.dropped += 1
            return 0
        return shard.history.publish(topic, policy, opcode, payload, compress, sender)

    async def fetch(
        self, topic: str, policy: Policy, after: int, limit: int, tail: bool = False
    ) -> Slice:
        shard = self.cluster.shard_of(topic)
        if shard is None:
            raise HistoryUnavailable("Redis Cluster unreachable")
        return await shard.history.fetch(topic, policy, after, limit, tail)
