"""Cluster counts: this process's registration in Redis, the heartbeat and count
updates the writer sends, and the query that sums the other processes' counts.

Each process keeps a hash ``{prefix}proc:{id}`` (topic -> local count) that
expires ``EXPIRY_HEARTBEATS`` heartbeats after its last one, and its id in the
set ``{prefix}procs``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from .._errors import BrokerUnavailableError
from ._config import COUNT_TIMEOUT, EXPIRY_HEARTBEATS, Config, Session, describe
from ._link import EXPECTED

__all__ = ["PROBE_MEMBERS", "PROBE_REGISTERED", "Command", "Counts"]

logger = logging.getLogger("aiohttp_upgrade")

# The hash field that marks a process alive even when it has no subscribers
# (a topic is never empty, so it cannot clash).
_ALIVE_FIELD: Final = b""

# What the leading replies of a pipeline tell the broker (see Counts.probed).
PROBE_REGISTERED: Final = "registered"  # EXISTS of our hash, before rewriting it
PROBE_MEMBERS: Final = "members"  # SMEMBERS of the process set

Command = tuple[Any, ...]


class Counts:
    """This process's side of the cluster counts."""

    __slots__ = (
        "_config",
        "_session",
        "changed",
        "expected",
        "expected_until",
        "heartbeat_due",
        "peers",
        "registered",
        "rewrite",
        "was_registered",
    )

    def __init__(self, config: Config, session: Session) -> None:
        self._config = config
        self._session = session
        self.rewrite = True  # the whole hash, on each new writer connection
        self.changed: set[str] = set()  # topics whose local count changed
        self.heartbeat_due = False
        # Set once this connection's rewrite of our counts has been answered.
        self.registered = asyncio.Event()
        self.was_registered = False
        self.peers: set[bytes] = set()  # other processes last seen registered
        # After Redis lost the counts: the peers that must register again,
        # and until when they are waited for.
        self.expected: set[bytes] = set()
        self.expected_until = 0.0

    def bookkeeping(self) -> tuple[list[Command], tuple[str, ...]]:
        """Count updates, and the heartbeat when due, then presence's messages;
        and the probes their first replies answer."""
        commands: list[Command] = []
        probes: tuple[str, ...] = ()
        fresh = self.rewrite
        if self.rewrite:
            self.rewrite = False
            self.changed.clear()
            self.heartbeat_due = True
            commands += self._rewrite()
            probes = (PROBE_REGISTERED, PROBE_MEMBERS)
        elif self.changed:
            commands += self._updates()
        beat = self.heartbeat_due
        if self.heartbeat_due:
            self.heartbeat_due = False
            if not probes:
                commands.insert(0, ("SMEMBERS", self._config.procs_key))
                probes = (PROBE_MEMBERS,)
            key = self._session.proc_key
            ttl = round(self._config.heartbeat_interval * EXPIRY_HEARTBEATS * 1000)
            commands += [
                ("HSET", key, _ALIVE_FIELD, 1),
                ("PEXPIRE", key, ttl),
                ("SADD", self._config.procs_key, self._session.proc_id),
            ]
        commands += self._session.presence.commands(fresh, beat)
        return commands, probes

    def _rewrite(self) -> list[Command]:
        """Replace our hash with every local count (asking first whether it
        was still there, and who else is registered)."""
        host = self._session.host
        assert host is not None
        key = self._session.proc_key
        fields: list[Any] = [_ALIVE_FIELD, 1]
        for topic, count in host.local_counts().items():
            fields += (topic.encode(), count)
        return [
            ("EXISTS", key),
            ("SMEMBERS", self._config.procs_key),
            ("MULTI",),
            ("DEL", key),
            ("HSET", key, *fields),
            ("EXEC",),
        ]

    def _updates(self) -> list[Command]:
        """The counts that changed since the last pipeline."""
        host = self._session.host
        assert host is not None
        key = self._session.proc_key
        set_fields: list[Any] = []
        gone: list[bytes] = []
        for topic in self.changed:
            count = host.subscriber_count(topic)
            if count:
                set_fields += (topic.encode(), count)
            else:
                gone.append(topic.encode())
        self.changed.clear()
        commands: list[Command] = []
        if set_fields:
            commands.append(("HSET", key, *set_fields))
        if gone:
            commands.append(("HDEL", key, *gone))
        return commands

    def probed(self, probes: tuple[str, ...], answers: list[Any]) -> None:
        """What the leading replies of a bookkeeping pipeline say."""
        for probe, answer in zip(probes, answers, strict=True):
            if probe == PROBE_REGISTERED:
                if answer == 0 and self.was_registered:
                    self._lost_registration()
                self.was_registered = True
                self.registered.set()
            elif probe == PROBE_MEMBERS and isinstance(answer, list | set):
                own = self._session.proc_id
                self.peers = {
                    proc_id
                    for proc_id in answer
                    if isinstance(proc_id, bytes) and proc_id != own
                }

    def _lost_registration(self) -> None:
        """Our hash was gone when we came back: Redis lost the counts (restarted
        empty, or we were away past the expiry). The peers seen before must
        register again; until they have, or until they would count as dead,
        cluster counts raise instead of undercounting."""
        if not self.peers:
            return
        config = self._config
        window = config.heartbeat_interval * EXPIRY_HEARTBEATS + config.backoff_cap
        self.expected = set(self.peers)
        self.expected_until = asyncio.get_running_loop().time() + window
        logger.warning(
            "Redis lost the cluster counts; cluster_subscriber_count raises "
            "BrokerUnavailableError until the %d other processes seen before have "
            "registered again (at most %.1f s)",
            len(self.expected),
            window,
        )

    async def query(self, client: Redis, field: bytes) -> int:
        """The other processes' counts of ``field``, once this process is
        registered (within ``COUNT_TIMEOUT``); retries once a pooled connection
        that Redis closed.

        Raises:
            BrokerUnavailableError: Redis could not be asked, or it lost the
                counts and a process seen before has not registered again yet.
        """
        try:
            async with asyncio.timeout(COUNT_TIMEOUT):
                await self.registered.wait()
                try:
                    return await self.remote_count(client, field)
                except RedisConnectionError:
                    # Most likely a pooled connection that Redis closed when it
                    # restarted, used before the outage's end dropped the idle
                    # ones (Outage.recovered): the retry connects anew.
                    return await self.remote_count(client, field)
        except BrokerUnavailableError:
            raise
        except TimeoutError as exc:
            raise BrokerUnavailableError(
                f"Redis did not answer within {COUNT_TIMEOUT:g} s"
            ) from exc
        except EXPECTED as exc:
            raise BrokerUnavailableError(f"Redis unreachable: {describe(exc)}") from exc

    async def remote_count(self, client: Redis, field: bytes) -> int:
        """The other processes' counts of ``field``; forgets processes that died.

        Raises:
            BrokerUnavailableError: Redis lost the counts (restarted empty) and a
                process seen before has not registered again yet.
        """
        procs_key = self._config.procs_key
        own = self._session.proc_id
        members = await client.smembers(procs_key)
        ids = [p for p in members if isinstance(p, bytes) and p != own]
        replies: list[Any] = []
        if ids:
            pipe = client.pipeline(transaction=False)
            for proc_id in ids:
                key = self._config.control_key(b"proc:" + proc_id)
                pipe.hget(key, field)
                pipe.exists(key)
            replies = await pipe.execute()
        alive = {
            proc_id
            for proc_id, exists in zip(ids, replies[1::2], strict=True)
            if exists
        }
        dead = [proc_id for proc_id in ids if proc_id not in alive]
        if dead:
            await client.srem(procs_key, *dead)
            self.peers.difference_update(dead)
        self.peers |= alive
        self._check_expected(alive)
        return sum(int(count) for count in replies[0::2] if count)

    def _check_expected(self, alive: set[bytes]) -> None:
        """Raise while a peer that must register again has not (see above)."""
        if not self.expected:
            return
        missing = self.expected - alive
        now = asyncio.get_running_loop().time()
        if not missing or now >= self.expected_until:
            self.expected = set()  # all back, or the rest count as dead
            return
        raise BrokerUnavailableError(
            f"Redis lost the cluster counts (restarted?): {len(missing)} "
            f"of the {len(self.expected)} other processes seen before "
            "have not registered again yet"
        )

    async def unregister(self, client: Redis) -> None:
        """Remove this process from the counts (on close)."""
        await client.srem(self._config.procs_key, self._session.proc_id)
        await client.delete(self._session.proc_key)
