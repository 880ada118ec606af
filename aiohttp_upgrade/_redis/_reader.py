"""The reader: the connection that only SUBSCRIBEs, and the messages it receives."""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any, Final

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError

from .._envelope import MalformedEnvelope, decode_envelope
from . import _compat
from ._config import SUBSCRIBE_CHUNK, Config, Counters, Session, Wakeup
from ._history import MAGIC as HISTORY_MAGIC
from ._history import RedisHistory
from ._link import EXPECTED, Link, Outage

__all__ = ["Reader"]

logger = logging.getLogger("aiohttp_upgrade")

_SUNSUBSCRIBE: Final = b"sunsubscribe"


class Reader:
    """Subscribes the channels of the topics with local subscribers and hands
    what other processes publish to the host."""

    def __init__(
        self,
        config: Config,
        counters: Counters,
        session: Session,
        link: Link,
        outage: Outage,
        wakeup: Wakeup,
    ) -> None:
        self.config = config
        self.counters = counters
        self.session = session
        self.link = link
        self.outage = outage
        self.wakeup = wakeup
        self.interest: dict[str, bytes] = {}  # topics with local subscribers
        self.topic_of: dict[bytes, str] = {}  # ... by channel
        self.interest_changed: set[str] = set()  # for the writer to sync
        self.subscribed: set[bytes] = set()  # channels sent on the connection
        self.ping_since: float | None = None  # oldest PING maybe unanswered
        self.history = RedisHistory(config, counters, session, self)

    def track(self, topic: str, new_count: int, old_count: int) -> None:
        """Note that ``topic`` gained its first or lost its last local subscriber."""
        # Without a connection, nothing to sync: a new connection subscribes
        # every live topic.
        if old_count == 0:
            channel = self.config.channel(topic)
            self.interest[topic] = channel
            self.topic_of[channel] = topic
            if self.link.connection is not None:
                self.interest_changed.add(topic)
        elif new_count == 0:
            channel = self.interest.pop(topic, b"")
            self.topic_of.pop(channel, None)
            if self.link.connection is not None:
                self.interest_changed.add(topic)

    async def sync(self) -> None:
        """Send the SUBSCRIBE/UNSUBSCRIBE that interest changes since the last
        turn call for (coalesced: subscribe then unsubscribe sends nothing)."""
        changed = self.interest_changed
        connection = self.link.connection
        if not changed or not self.link.up or connection is None:
            return  # kept for when the reader is connected again
        self.interest_changed = set()
        if not connection.is_connected:
            return  # the reader subscribes to every live topic when it reconnects
        subscribe: list[bytes] = []
        unsubscribe: list[bytes] = []
        for topic in changed:
            channel = self.interest.get(topic)
            if channel is not None:
                if channel not in self.subscribed:
                    subscribe.append(channel)
                    self.subscribed.add(channel)
            else:
                channel = self.config.channel(topic)
                if channel in self.subscribed:
                    unsubscribe.append(channel)
                    self.subscribed.discard(channel)
        config = self.config
        commands = self._commands(config.subscribe_command, subscribe)
        commands += self._commands(config.unsubscribe_command, unsubscribe)
        if commands:
            await self._write(connection, commands)

    def _commands(self, command: str, channels: list[bytes]) -> list[tuple[Any, ...]]:
        """``command`` for ``channels``: at most ``SUBSCRIBE_CHUNK`` per command,
        and on a cluster one per channel (their slots may differ)."""
        if self.config.sharded:
            return [(command, channel) for channel in channels]
        return [
            (command, *channels[start : start + SUBSCRIBE_CHUNK])
            for start in range(0, len(channels), SUBSCRIBE_CHUNK)
        ]

    async def _write(
        self, connection: AbstractConnection, commands: list[tuple[Any, ...]]
    ) -> None:
        """Write on the reader's connection; a failure is the read loop's to handle."""
        try:
            await connection.send_packed_command(
                connection.pack_commands(commands), check_health=False
            )
        except EXPECTED:
            await connection.disconnect(nowait=True)

    async def connect(self) -> None:
        """A new connection, subscribed to the channel of every live topic."""
        link = self.link
        await link.drop(self.session.client)
        assert self.session.client is not None
        connection = await link.open(self.session.client, self.config.stall_timeout)
        _compat.return_push_messages(connection)
        # From this snapshot on, interest changes wait for the writer.
        channels = [*self.interest.values()]
        if self.session.presence.channel:
            channels.append(self.session.presence.channel)
        self.subscribed = set(channels)
        self.interest_changed = set()
        commands = self._commands(self.config.subscribe_command, channels)
        for start in range(0, len(commands), SUBSCRIBE_CHUNK):
            await connection.send_packed_command(
                connection.pack_commands(commands[start : start + SUBSCRIBE_CHUNK]),
                check_health=False,
            )
        link.seen = link.ok = asyncio.get_running_loop().time()
        self.ping_since = None
        link.up = True
        await self.outage.recovered()
        if self.interest_changed:
            self.wakeup.wake()

    async def run(self) -> None:
        """Connect (again, after a failure, with backoff) and read messages."""
        failures = 0
        link = self.link
        loop = asyncio.get_running_loop()
        while True:
            try:
                if not link.up:
                    await self.connect()
                    failures = 0
                connection = link.connection
                if connection is None:
                    raise ConnectionError("no connection")
                while True:
                    try:
                        reply = await connection.read_response(
                            timeout=math.inf,
                            disconnect_on_error=True,
                            push_request=True,
                        )
                    except ResponseError as exc:
                        # The connection still works: a refused (S)SUBSCRIBE.
                        self.refused(exc)
                        continue
                    link.seen = loop.time()
                    self.on_reply(reply)
            except EXPECTED as exc:
                link.up = False
                self.subscribed = set()
                self.outage.failed(exc)
                await link.drop(self.session.client)
                await asyncio.sleep(self.config.backoff(failures))
                failures += 1

    def on_reply(self, reply: Any) -> None:
        """Deliver a message from another process to the host."""
        if (
            not isinstance(reply, list)
            or len(reply) != 3
            or reply[0] != self.config.message_kind
        ):
            if isinstance(reply, list) and reply and reply[0] == _SUNSUBSCRIBE:
                self.unsubscribed(reply[1])
            self.session.presence.confirmed(reply)  # subscribe confirmations, pongs
            self.history.other_reply(reply)
            return
        topic = self.topic_of.get(reply[1])
        data = reply[2]
        if topic is None or type(data) is not bytes:
            self.session.presence.received(reply[1], data)  # or unsubscribed meanwhile
            return
        if data.startswith(HISTORY_MAGIC):
            self.history.received(topic, data)
            return
        try:
            origin, records = decode_envelope(data)
        except MalformedEnvelope as exc:
            self.counters.malformed += 1
            if self.counters.malformed == 1:
                logger.warning(
                    "ignoring a malformed message on Redis channel %r (%s); "
                    "counted in RedisBroker.malformed from now on",
                    reply[1],
                    exc,
                )
            return
        if origin == self.session.origin:
            return  # our own publish, delivered locally already
        host = self.session.host
        assert host is not None
        deliver = host.deliver
        for opcode, payload, compress in records:
            try:
                deliver(topic, opcode, payload, compress)
            except Exception:
                logger.exception("delivering a message from Redis failed")
        self.counters.received += len(records)

    def refused(self, exc: ResponseError) -> None:
        """Redis refused a (S)SUBSCRIBE: on a cluster, a slot that moved."""
        suspect = self.session.suspect
        if suspect is not None:
            suspect(exc)
        else:
            logger.error("Redis refused a broker subscription: %s", exc)

    def unsubscribed(self, channel: Any) -> None:
        """An SUNSUBSCRIBE that we did not ask for (we ask for none that we
        want): the channel's slot moved to another shard of the cluster."""
        if channel in self.subscribed and channel in self.topic_of:
            self.subscribed.discard(channel)
            suspect = self.session.suspect
            if suspect is not None:
                suspect(ConnectionError(f"the slot of {channel!r} moved"))

    async def reset(self) -> None:
        """After an unexpected failure: drop the connection; ``run`` reconnects."""
        self.link.up = False
        self.subscribed = set()
        await self.link.drop(self.session.client)

    async def ping(self) -> None:
        """PING the connection (the watchdog checks that Redis answers)."""
        connection = self.link.connection
        if not self.link.up or connection is None or not connection.is_connected:
            return
        since = self.ping_since
        if since is None or self.link.seen >= since:  # the last one was answered
            self.ping_since = asyncio.get_running_loop().time()
        await self._write(connection, [("PING",)])

    def check_stall(self, now: float, limit: float) -> None:
        """Declare the connection dead when a PING has waited ``limit`` s."""
        since = self.ping_since
        link = self.link
        if link.up and since is not None and link.seen < since and now - since > limit:
            link.up = False
            self.outage.failed(TimeoutError(f"no reply to a PING within {limit:g} s"))
            link.abort()  # the reader sees the end and reconnects
