"""One Redis server's share of a broker: the writer and the reader connected
to it, their supervised tasks, and (on the server that keeps them) the
cluster counts and presence.

A :class:`~aiohttp_upgrade.RedisBroker` on one Redis is one shard; on a Redis
Cluster, one shard per primary (:mod:`._cluster` routes each topic to its own).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Final

from redis.asyncio import Redis

from .._broker import BrokerHost
from .._errors import BrokerUnavailableError
from ._config import (
    CLOSE_TIMEOUT,
    STARTUP_TIMEOUT,
    Config,
    Counters,
    Session,
    Wakeup,
    describe,
)
from ._counts import PROBE_REGISTERED, Command, Counts
from ._history import RedisHistory
from ._link import EXPECTED, Link, Outage
from ._presence import RedisPresence
from ._reader import Reader
from ._supervisor import Heartbeat, Supervisor, Watchdog
from ._writer import Writer

__all__ = ["NoPresence", "Shard"]

# The names of a shard's supervised tasks (in logs and task names).
_WRITER: Final = "writer"
_READER: Final = "reader"
_HEARTBEAT: Final = "heartbeat"
_WATCHDOG: Final = "watchdog"


class NoPresence:
    """Presence on a shard that does not carry it (on a cluster, every shard
    but the one that keeps the counts): nothing to send or hear."""

    channel = b""
    due = False

    def commands(self, fresh: bool, beat: bool) -> list[Command]:
        return []

    def confirmed(self, reply: Any) -> None:
        pass

    def received(self, channel: Any, data: Any) -> None:
        pass


class _NoCounts(Counts):
    """Counts on a shard that does not keep them: a new connection counts as
    registered once a PING has been answered on it, and nothing else is sent."""

    __slots__ = ()

    def bookkeeping(self) -> tuple[list[Command], tuple[str, ...]]:
        self.changed.clear()
        self.heartbeat_due = False
        if self.rewrite:  # a new connection: one round trip proves it works
            self.rewrite = False
            return [("PING",)], (PROBE_REGISTERED,)
        return [], ()


class Shard:
    """The parts of a broker connected to one Redis server."""

    def __init__(
        self,
        config: Config,
        counters: Counters,
        host: BrokerHost | None,
        client: Redis | None,
        *,
        home: bool = True,
        origin: bytes | None = None,
        label: str = "",
    ) -> None:
        """``home``: this shard keeps the counts and presence."""
        self.config = config
        self.counters = counters
        self.home = home
        self.tasks: dict[str, asyncio.Task[None]] = {}
        session = self.session = Session(config, host, client, origin)
        session.label = label
        pub, sub, wakeup = Link(), Link(), Wakeup()
        if home:
            session.presence = RedisPresence(
                config, counters, session, (pub, sub), wakeup
            )
            counts = Counts(config, session)
        else:
            session.presence = NoPresence()  # type: ignore[assignment]
            counts = _NoCounts(config, session)
        self.counts = counts
        self.outage = Outage(counters, session, pub, sub, counts, wakeup)
        reader = self.reader = Reader(
            config, counters, session, sub, self.outage, wakeup
        )
        self.writer = Writer(
            config, counters, session, pub, self.outage, counts, reader, wakeup
        )
        self.wakeup = wakeup
        self.publish = self.writer.publish
        self.supervisor = Supervisor(config, counters)
        self.heartbeat = Heartbeat(config, counts, reader, wakeup)
        self.watchdog = Watchdog(config, self.writer, reader)

    @property
    def history(self) -> RedisHistory:
        return self.reader.history

    @property
    def queued_bytes(self) -> int:
        return self.writer.pending_bytes

    @property
    def connected(self) -> bool:
        """Both connections up, and (home shard) the counts registered."""
        return (
            self.writer.link.up
            and self.reader.link.up
            and self.counts.registered.is_set()
        )

    async def connect(self) -> None:
        """Connect both connections, then wait for the counts' registration
        (at most ``STARTUP_TIMEOUT`` s each); an unreachable Redis is logged
        and left to the tasks' retries."""
        try:
            async with asyncio.timeout(STARTUP_TIMEOUT):
                await self.writer.connect()
                await self.reader.connect()
        except EXPECTED as exc:
            self.outage.failed(exc)
        else:
            # Connected: a slow answer is the watchdog's to judge, not an outage.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.counts.registered.wait(), STARTUP_TIMEOUT)

    def spawn(self) -> None:
        """Run the shard's supervised tasks."""
        spawn = self.supervisor.spawn
        writer, reader, label = self.writer, self.reader, self.session.label
        self.tasks = {
            _WRITER: spawn(_WRITER + label, writer.run, writer.reset),
            _READER: spawn(_READER + label, reader.run, reader.reset),
            _HEARTBEAT: spawn(_HEARTBEAT + label, self.heartbeat.run, None),
            _WATCHDOG: spawn(_WATCHDOG + label, self.watchdog.run, None),
        }

    async def stop(self) -> None:
        """Cancel the shard's tasks (what is queued stays queued)."""
        tasks = self.tasks
        self.tasks = {}
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)

    async def close(self, unregister: bool) -> None:
        """Send what is queued (for at most ``CLOSE_TIMEOUT`` s), remove this
        process from the counts (home shard, if ``unregister``), close the
        connections (not the client)."""
        session = self.session
        session.closing = True
        writer, tasks = self.writer, self.tasks
        if _HEARTBEAT in tasks:
            tasks[_HEARTBEAT].cancel()
        self.wakeup.wake()
        if _WRITER in tasks:
            await asyncio.wait([tasks[_WRITER]], timeout=CLOSE_TIMEOUT)
        if writer.link.up:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(writer.replies_done.wait(), CLOSE_TIMEOUT)
        await self.stop()
        client = session.client
        if writer.link.up and self.home and unregister and client is not None:
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await self.counts.unregister(client)
            except EXPECTED:
                pass  # the key expires anyway
        await writer.drop()
        await self.reader.link.drop(client)
        writer.link.up = self.reader.link.up = False

    async def retarget(self, client: Redis) -> Redis | None:
        """Connect the shard to another server (a replica promoted in place of
        its primary): what is queued or unanswered is dropped (counted), the
        reader subscribes again there. Returns the old client (to close)."""
        await self.stop()
        old = self.session.client
        self.writer.down()
        await self.writer.drop()
        self.reader.link.up = False
        self.reader.subscribed = set()
        await self.reader.link.drop(old)
        self.session.client = client
        self.spawn()
        return old

    def track(self, topic: str, new_count: int, old_count: int) -> None:
        """Subscribe or unsubscribe ``topic``'s channel on this server (at the
        next loop turn)."""
        self.reader.track(topic, new_count, old_count)
        if self.reader.interest_changed:
            self.wakeup.wake()

    def count_changed(self, topic: str) -> None:
        """Report ``topic``'s local count at the next loop turn (home shard)."""
        # Without a connection, nothing to report: a new connection rewrites
        # every count.
        if self.writer.link.connection is not None:
            self.counts.changed.add(topic)
            self.wakeup.wake()

    async def cluster_count(self, topic: str) -> int:
        """The other processes' counts of ``topic`` (home shard).

        Raises:
            BrokerUnavailableError: see RedisBroker.cluster_count.
        """
        client = self.session.client
        assert client is not None
        if not self.writer.link.up:
            # Whatever Redis holds now may lack this process or others.
            raise BrokerUnavailableError(
                f"Redis unreachable{self.session.label}: "
                f"{describe(self.outage.last_error)}"
            )
        return await self.counts.query(client, topic.encode())
