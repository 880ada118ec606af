"""One dedicated connection to Redis (:class:`Link`), and the outage both of a
broker's links take part in (:class:`Outage`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from . import _compat
from ._config import STARTUP_TIMEOUT, Counters, Session, Wakeup, describe

if TYPE_CHECKING:
    from ._counts import Counts

__all__ = ["EXPECTED", "Link", "Outage", "new_client"]

logger = logging.getLogger("aiohttp_upgrade")

# Connection failures are expected (logged once per outage); anything else that
# a task raises is a bug, for its supervisor.
EXPECTED = (RedisError, OSError)


def new_client(url: str) -> Redis:
    """A client for ``url`` as the broker needs it (the broker closes it)."""
    # No hidden retries: a retried pipeline could deliver twice, and the
    # broker has its own backoff. No socket timeout either: it costs a
    # timer per read and a task per write, and the heartbeats detect a
    # Redis that stopped answering.
    return Redis.from_url(
        url,
        retry=Retry(NoBackoff(), 0),
        socket_connect_timeout=STARTUP_TIMEOUT,
        socket_timeout=None,
    )


class Link:
    """One connection of the broker (the writer's or the reader's) and whether
    it is in use, with when Redis last sent on it and last proved it works."""

    __slots__ = ("connection", "ok", "seen", "up")

    def __init__(self) -> None:
        self.connection: AbstractConnection | None = None
        self.up = False
        self.seen = 0.0  # when Redis last sent anything on it
        self.ok = 0.0  # when it last proved to work (for the end of an outage)

    async def open(self, client: Redis, stall_timeout: float) -> AbstractConnection:
        """Take a dedicated connection from ``client``'s pool, on a new socket
        (a pooled one may be stale after a Redis restart).

        Raises:
            TimeoutError: Redis did not complete the handshake within
                ``stall_timeout``; or what connecting raised.
        """
        pool = client.connection_pool
        connection: AbstractConnection = pool.get_available_connection()  # type: ignore[no-untyped-call]
        try:
            await connection.disconnect(nowait=True)
            async with asyncio.timeout(stall_timeout):
                await connection.connect()  # type: ignore[no-untyped-call]
        except BaseException:
            # Never back to the pool half-connected: a handshake reply that
            # arrives later would answer someone else's command.
            _compat.abort(connection)
            with contextlib.suppress(Exception):
                await connection.disconnect(nowait=True)
            await pool.release(connection)
            raise
        self.connection = connection
        return connection

    async def drop(self, client: Redis | None) -> None:
        """Disconnect the connection and give it back to the pool."""
        connection = self.connection
        self.connection = None
        if connection is None or client is None:
            return
        try:
            await connection.disconnect(nowait=True)
        finally:
            await client.connection_pool.release(connection)

    def abort(self) -> None:
        """Close the socket at once: a task blocked on it returns."""
        _compat.abort(self.connection)


class Outage:
    """Redis unreachable: from the first failure of either link until both
    have worked again; logged once at each end."""

    __slots__ = (
        "_counters",
        "_counts",
        "_session",
        "_wakeup",
        "dropped_before",
        "last_error",
        "pub",
        "since",
        "sub",
    )

    def __init__(
        self,
        counters: Counters,
        session: Session,
        pub: Link,
        sub: Link,
        counts: Counts,
        wakeup: Wakeup,
    ) -> None:
        self._counters = counters
        self._counts = counts
        self._wakeup = wakeup
        self._session = session
        self.pub = pub
        self.sub = sub
        self.since: float | None = None
        self.last_error: BaseException | None = None
        self.dropped_before = 0  # the dropped counter when the outage began

    def failed(self, exc: BaseException) -> None:
        """A link failed: the outage starts (logged once) and the other link is
        checked at once (a heartbeat), since it is likely dead too."""
        self.last_error = exc
        if self._session.closing:
            return
        if self.since is None:
            self.since = asyncio.get_running_loop().time()
            self.dropped_before = self._counters.dropped
            logger.warning(
                "Redis%s unreachable (%s): publishes stay on this process until "
                "it is back; retrying",
                self._session.label,
                describe(exc),
            )
        self._counts.heartbeat_due = True
        self._wakeup.wake()
        suspect = self._session.suspect
        if suspect is not None:  # on a cluster: a failover, maybe
            suspect(exc)

    async def recovered(self) -> None:
        """The outage ends once the reader has connected or received something,
        and the writer has had a round trip, both since the outage started (one
        of them may not have noticed it yet).

        Idle pooled connections (of cluster counts, unregistering) predate the
        outage: after a Redis restart they are dead, and a command on one would
        fail. They are dropped here, before the outage counts as over; the pool
        opens new ones.
        """
        since = self.since
        pub, sub = self.pub, self.sub
        if (
            since is not None
            and pub.up
            and sub.up
            and pub.ok >= since
            and max(sub.ok, sub.seen) >= since
        ):
            self.since = None  # only once, though both links may call this
            try:
                await self._drop_idle_connections()
            finally:
                down = asyncio.get_running_loop().time() - since
                self._counters.reconnects += 1
                dropped = self._counters.dropped
                logger.warning(
                    "Redis%s reachable again after %.1f s; %d messages dropped "
                    "meanwhile, %d so far",
                    self._session.label,
                    down,
                    dropped - self.dropped_before,
                    dropped,
                )

    async def _drop_idle_connections(self) -> None:
        client = self._session.client
        if client is None:
            return
        try:
            await client.connection_pool.disconnect(inuse_connections=False)
        except EXPECTED as exc:
            logger.debug("Dropping idle Redis connections failed: %s", describe(exc))
