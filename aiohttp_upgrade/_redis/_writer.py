"""The writer: the connection that only writes, pipelined, and its reply reader.

The publishes of one loop turn go out in one pipeline, after the count updates
and the heartbeat that are due; a separate task reads the replies in order, so
the next pipeline need not wait for a round trip.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any, Final

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)

from .._envelope import Message, pack_envelopes
from ._config import Config, Counters, Session, Wakeup
from ._counts import Command, Counts
from ._link import EXPECTED, Link, Outage
from ._reader import Reader

__all__ = ["Writer"]

logger = logging.getLogger("aiohttp_upgrade")

# A pipeline sent and not answered yet: replies due, messages, payload bytes,
# when it was sent, and the probes its first replies answer.
_Pipeline = tuple[int, int, int, float, tuple[str, ...]]
_NOTHING: Final[tuple[Message, ...]] = ()
# Error replies of a Redis Cluster that say its slot map changed or is changing
# (MovedError is an AskError, MasterDownError a ClusterDownError).
_CLUSTER_REFUSALS: Final = (AskError, TryAgainError, ClusterDownError, ReadOnlyError)


class Writer:
    """Queues publishes and sends them, with the bookkeeping, to Redis."""

    def __init__(
        self,
        config: Config,
        counters: Counters,
        session: Session,
        link: Link,
        outage: Outage,
        counts: Counts,
        reader: Reader,
        wakeup: Wakeup,
    ) -> None:
        self.config = config
        self.counters = counters
        self.session = session
        self.link = link
        self.outage = outage
        self.counts = counts
        self.reader = reader
        self.wakeup = wakeup
        self.queue: list[Message] = []
        self.sending: Sequence[Message] = _NOTHING  # taken from the queue, not sent
        self.pending_bytes = 0  # payload bytes queued, sending or unanswered
        # Pipelines sent and not answered yet, oldest first. Replaced (not
        # cleared) when forgotten, so that a reply reader of a dropped
        # connection can tell.
        self.in_flight: deque[_Pipeline] = deque()
        self.replies_due = asyncio.Event()
        self.replies_done = asyncio.Event()
        self.replies_done.set()
        self.reply_task: asyncio.Task[None] | None = None
        # An unexpected exception of the reply reader, raised in the writer.
        self.crash: Exception | None = None
        self.history = reader.history  # history publishes: EVALs in _send
        self.history.writer = self

    def publish(self, topic: str, opcode: int, payload: bytes, compress: bool) -> None:
        """Queue a message, or drop it (counted): see RedisBroker.publish."""
        queue = self.queue
        size = len(payload)
        pending = self.pending_bytes + size
        config = self.config
        if (
            not self.link.up
            or len(queue) >= config.max_queue
            or (pending > config.max_queue_bytes and pending != size)
        ):
            self.counters.dropped += 1
            return
        queue.append((topic, opcode, payload, compress))
        self.pending_bytes = pending
        if self.wakeup.future is not None:
            self.wakeup.wake()

    def _idle(self) -> bool:
        """Nothing to send (interest changes wait for the reader's connection)."""
        reader = self.reader
        counts = self.counts
        return not (
            self.queue
            or counts.heartbeat_due
            or counts.changed
            or (reader.interest_changed and reader.link.up)
            or self.session.presence.due
        )

    async def run(self) -> None:
        """Connect (again, after a failure, with backoff) and send what is due,
        until the broker closes."""
        failures = 0
        while True:
            crash = self.crash
            if crash is not None:
                self.crash = None
                raise crash
            if not self.link.up:
                if self.session.closing:
                    return
                try:
                    await self.connect()
                    failures = 0
                except EXPECTED as exc:
                    self.failed(exc)
                    await self.drop()
                    await asyncio.sleep(self.config.backoff(failures))
                    failures += 1
                continue
            if self._idle():
                if self.session.closing:
                    return
                await self.wakeup.wait()
                continue
            await self.reader.sync()
            # No local name for the batch: _send lets go of it once packed.
            self.sending = self.queue
            self.queue = []
            try:
                await self._send(*self.counts.bookkeeping(), self.sending)
            except EXPECTED as exc:
                self.failed(exc)
                await self.drop()

    async def connect(self) -> None:
        """A new connection, on which our counts are rewritten at once."""
        await self.drop()
        client = self.session.client
        assert client is not None
        link = self.link
        connection = await link.open(client, self.config.stall_timeout)
        self.counts.rewrite = True
        self.counts.registered.clear()
        link.up = True
        link.seen = asyncio.get_running_loop().time()
        self.reply_task = asyncio.create_task(
            self._read_replies(connection), name="RedisBroker replies"
        )
        await self._send(*self.counts.bookkeeping(), _NOTHING)  # the counts, at once

    async def drop(self) -> None:
        """Stop the reply reader and drop the connection."""
        task = self.reply_task
        self.reply_task = None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._forget_in_flight()
        await self.link.drop(self.session.client)

    def failed(self, exc: BaseException) -> None:
        """The connection failed: the outage starts (logged once) and the
        writer reconnects."""
        if self.link.up:
            self.down()
        self.outage.failed(exc)

    def down(self) -> None:
        """Stop using the connection: what is queued or unanswered is dropped
        (counted; never resent, it might have been delivered), and publishes
        are dropped until the writer has reconnected."""
        self.link.up = False
        self.counts.registered.clear()
        self.counters.dropped += len(self.queue) + len(self.sending)
        self.queue = []
        self.sending = _NOTHING
        self._forget_in_flight()
        self.pending_bytes = 0
        self.link.abort()  # a writer blocked sending returns
        self.wakeup.wake()

    async def reset(self) -> None:
        """After an unexpected failure of the writer (or of its reply reader):
        drop what waits and the connection; ``run`` reconnects."""
        self.crash = None
        self.wakeup.future = None
        self.down()
        await self.drop()

    def _forget_in_flight(self) -> None:
        forgotten = self.in_flight
        self.in_flight = deque()
        for _, messages, nbytes, _, _ in forgotten:
            self.counters.dropped += messages
            self.pending_bytes -= nbytes
        self.replies_done.set()

    def check_stall(self, now: float, limit: float) -> None:
        """Declare the connection dead when Redis has owed a pipeline its
        replies for ``limit`` s."""
        in_flight = self.in_flight
        if self.link.up and in_flight:
            waiting_since = max(in_flight[0][3], self.link.seen)
            if now - waiting_since > limit:
                self.failed(TimeoutError(f"no reply within {limit:g} s"))

    async def _send(
        self, commands: list[Command], probes: tuple[str, ...], batch: Sequence[Message]
    ) -> None:
        """Send one pipeline: ``commands``, then ``batch`` as PUBLISHes.

        The payloads are let go of once packed into envelopes, and those once
        packed into RESP, so that while the socket drains this process holds one
        copy of the batch (the transport's), about twice ``max_queue_bytes`` at
        the peak (see RedisBroker's ``max_queue_bytes``).
        """
        nbytes = 0
        messages = len(batch)
        if batch:
            history_bytes = 0
            if self.history.queued:
                batch, history_bytes = self.history.commands(batch, commands)
            envelopes, nbytes = pack_envelopes(
                self.session.header, batch, self.config.max_batch_bytes
            )
            nbytes += history_bytes
            del batch
            publish, channel = self.config.publish_command, self.config.channel
            for topic, envelope in envelopes:
                commands.append((publish, channel(topic), envelope))
            del envelopes
        if not commands:
            return
        # Registered first: if anything below fails, the batch counts as dropped.
        loop = asyncio.get_running_loop()
        self.in_flight.append((len(commands), messages, nbytes, loop.time(), probes))
        self.sending = _NOTHING
        self.replies_done.clear()
        self.replies_due.set()
        connection = self.link.connection
        if connection is None or not self.link.up:
            raise ConnectionError("no connection")
        packed = connection.pack_commands(commands)
        commands.clear()
        await connection.send_packed_command(_handed_over(packed), check_health=False)

    async def _read_replies(self, connection: AbstractConnection) -> None:
        """Read the answers of the pipelines in order, while the writer goes on."""
        in_flight = self.in_flight
        try:
            while True:
                if not in_flight:
                    self.replies_done.set()
                    self.replies_due.clear()
                    await self.replies_due.wait()
                    continue
                await self._read_pipeline(connection, in_flight)
                if in_flight is not self.in_flight:
                    return  # forgotten meanwhile (counted as dropped)
        except EXPECTED as exc:
            if in_flight is self.in_flight:
                self.failed(exc)
        except Exception as exc:
            # A bug: the writer's supervisor logs, counts and restarts it.
            self.crash = exc
            self.down()

    async def _read_pipeline(
        self, connection: AbstractConnection, in_flight: deque[_Pipeline]
    ) -> None:
        """Read the replies of the oldest pipeline and account for it."""
        loop = asyncio.get_running_loop()
        replies, messages, nbytes, _, probes = in_flight[0]
        answers: list[Any] = []
        for index in range(replies):
            try:
                reply = await connection.read_response()
            except ResponseError as exc:  # an error reply; others follow
                self.refused(exc)
                reply = exc
            self.link.seen = loop.time()
            if index < len(probes):
                answers.append(reply)
        if in_flight is not self.in_flight:
            return  # forgotten meanwhile (counted as dropped)
        in_flight.popleft()
        self.pending_bytes -= nbytes
        self.counters.published += messages
        if probes:
            self.counts.probed(probes, answers)
        if self.outage.since is not None:
            self.link.ok = loop.time()
            await self.outage.recovered()

    def refused(self, exc: ResponseError) -> None:
        """An error reply: logged; on a cluster, a refusal that says the slot
        map changed (the message is lost, counted) has it read again."""
        suspect = self.session.suspect
        if suspect is not None and isinstance(exc, _CLUSTER_REFUSALS):
            self.counters.dropped += 1
            suspect(exc)
            return
        logger.error("Redis refused a broker command: %s", exc)


def _handed_over(parts: list[bytes]) -> Iterator[bytes]:
    """Yield ``parts`` and let go of each: once the transport has taken them,
    nothing here keeps the packed pipeline alive while the socket drains."""
    parts.reverse()
    while parts:
        yield parts.pop()
