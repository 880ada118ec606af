"""``RedisBroker``: topics shared between processes and hosts through Redis pub/sub.

Needs the ``redis`` extra (``pip install aiohttp-upgrade[redis]``: redis-py's
asyncio client and hiredis). Each topic is the Redis channel
``channel_prefix + topic``; a process subscribes to it only while it has a local
subscriber of the topic. What crosses Redis is an envelope of raw bytes
(:mod:`aiohttp_upgrade.envelope`), never pickle.

Two dedicated connections per process, taken from the client's pool: one that
only writes (the publishes of one loop turn in one pipeline, in order, consecutive
publishes to one topic packed into one ``PUBLISH``; the subscriber counts; the
heartbeat) and one that only reads (``SUBSCRIBE``). Both reconnect on their own
with capped, jittered exponential backoff; the reader re-subscribes every topic
that has local subscribers. A watchdog, independent of both, detects a Redis that
stopped answering without closing the connection (a pipeline, a handshake or a
heartbeat PING unanswered for ``stall_timeout``), even while the writer is
blocked sending to it. Delivery between processes is at most once: while Redis
is unreachable, and past ``max_queue`` messages or ``max_queue_bytes`` of payload
waiting for Redis, publishes are dropped (counted in
:attr:`RedisBroker.dropped`), never retried (a retried pipeline could deliver
twice).

Every background task (writer, reader, heartbeat, watchdog) is supervised: an
exception it does not expect is logged with its traceback, counted in
:attr:`RedisBroker.task_failures`, and the task restarts after a backoff.

Cluster counts: each process keeps a hash ``{prefix}proc:{id}`` (topic ->
local count, updated with its publishes) that expires ``3 * heartbeat_interval``
after its last heartbeat, and its id in the set ``{prefix}procs``. A process
killed without cleanup stops counting at most ``3 * heartbeat_interval`` (15 s
by default) after its last heartbeat. When Redis loses the counts (restarted
empty), the processes seen before must register again: until they have (or
until they count as dead), ``cluster_count`` raises rather than undercount.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

try:
    from redis.asyncio import Redis
    from redis.asyncio.connection import AbstractConnection
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisError, ResponseError
except ModuleNotFoundError as exc:  # the extra is not installed
    if exc.name != "redis" and not (exc.name or "").startswith("redis."):
        raise
    raise ModuleNotFoundError(
        f"RedisBroker needs the redis extra ({exc}): "
        "pip install 'aiohttp-upgrade[redis]'",
        name=exc.name,
    ) from exc

from .broker import Broker, BrokerHost
from .envelope import (
    HEADER_SIZE,
    RECORD_HEADER_SIZE,
    MalformedEnvelope,
    decode_envelope,
    envelope_header,
    new_origin,
    record_header,
)
from .errors import BrokerUnavailableError, InvalidOptionError, InvalidStateError

__all__ = [
    "DEFAULT_BACKOFF_BASE",
    "DEFAULT_BACKOFF_CAP",
    "DEFAULT_CHANNEL_PREFIX",
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_MAX_BATCH_BYTES",
    "DEFAULT_MAX_QUEUE",
    "DEFAULT_MAX_QUEUE_BYTES",
    "DEFAULT_STALL_TIMEOUT",
    "RedisBroker",
]

logger = logging.getLogger("aiohttp_upgrade")

DEFAULT_CHANNEL_PREFIX: Final = "aiohttp_upgrade:"
DEFAULT_MAX_QUEUE: Final = 10_000
# Payload bytes waiting for Redis (queued, or sent and not answered) at most.
DEFAULT_MAX_QUEUE_BYTES: Final = 64 * 1024 * 1024
# Redis must answer a pipeline, a PING or a handshake within this many seconds.
DEFAULT_STALL_TIMEOUT: Final = 10.0
DEFAULT_HEARTBEAT_INTERVAL: Final = 5.0
DEFAULT_BACKOFF_BASE: Final = 0.1
DEFAULT_BACKOFF_CAP: Final = 5.0
# Consecutive publishes to one topic go out as one PUBLISH up to this size.
DEFAULT_MAX_BATCH_BYTES: Final = 256 * 1024
# A heartbeat key lives this many heartbeat intervals.
EXPIRY_HEARTBEATS: Final = 3
# How long start() and close() wait for Redis before moving on.
STARTUP_TIMEOUT: Final = 2.0
CLOSE_TIMEOUT: Final = 1.0
# How long cluster_count() waits for Redis before it gives up.
COUNT_TIMEOUT: Final = 5.0
# Channels per SUBSCRIBE command when re-subscribing many topics.
SUBSCRIBE_CHUNK: Final = 1000
# The watchdog checks this many times per stall_timeout.
WATCHDOG_TICKS: Final = 4

_MESSAGE: Final = b"message"
# The hash field that marks a process alive even when it has no subscribers
# (a topic is never empty, so it cannot clash).
_ALIVE_FIELD: Final = b""

# What the leading replies of a pipeline tell the broker (see _probed).
_PROBE_REGISTERED: Final = "registered"  # EXISTS of our hash, before rewriting it
_PROBE_MEMBERS: Final = "members"  # SMEMBERS of the process set

_Queued = tuple[str, int, bytes, bool]  # topic, opcode, payload, compress
# A pipeline sent and not answered yet: replies due, messages, payload bytes,
# when it was sent, and the probes its first replies answer.
_Pipeline = tuple[int, int, int, float, tuple[str, ...]]
_Run = Callable[[], Awaitable[None]]
_NOTHING: Final[tuple[_Queued, ...]] = ()

# Connection failures are expected (logged once per outage); anything else that
# a task raises is a bug, for its supervisor.
_EXPECTED = (RedisError, OSError)


def _describe(exc: BaseException | None) -> str:
    """``Type: message`` of a failure, for logs and BrokerUnavailableError."""
    if exc is None:
        return "not connected yet"
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _abort(connection: AbstractConnection | None) -> None:
    """Close ``connection``'s socket at once, unsent bytes and all: a task
    blocked sending to it returns, one reading from it sees the end. (redis-py's
    disconnect waits for the send buffer to drain, which a stopped Redis never
    does.)"""
    writer = getattr(connection, "_writer", None)
    transport = getattr(writer, "transport", None)
    if transport is not None:
        transport.abort()


async def _identity(response: Any) -> Any:
    return response


def _positive(name: str, value: object, *, integer: bool = False) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int if integer else int | float)
        or not (math.isfinite(value) and value > 0)
    ):
        kind = "an int" if integer else "a number"
        raise InvalidOptionError(name, f"must be {kind} > 0, got {value!r}")


class RedisBroker(Broker):
    """Shares a :class:`~aiohttp_upgrade.Server`'s topics with every process using
    the same Redis and ``channel_prefix``.

    Args:
        url_or_client: a Redis URL (``redis://host:6379/0``, ``rediss://``,
            ``unix://``), for a client the broker owns and closes, or an existing
            ``redis.asyncio.Redis`` client (not closed by the broker). It must
            not decode responses: payloads are bytes.
        channel_prefix: prefix of every channel and key the broker uses, so that
            several apps can share one Redis.
        max_queue: messages queued for Redis at most; past it, publishes are
            dropped for other processes and counted in ``dropped``.
        max_queue_bytes: payload bytes waiting for Redis (queued, or sent and
            not answered yet) at most; past it, publishes are dropped and
            counted like past ``max_queue``. A single larger message is still
            sent when nothing else waits. ``queued_bytes`` is the figure now.
        heartbeat_interval: seconds between heartbeats; a process that stops
            beating drops out of cluster counts after 3 intervals.
        stall_timeout: seconds Redis has to answer a pipeline, a heartbeat PING
            or a connection handshake; past it the connection is declared
            dead (``connected`` turns False, the outage is logged, what waits
            is dropped) and replaced, even while the writer is blocked sending.
        backoff_base, backoff_cap: reconnect delays grow from ``backoff_base``
            seconds, doubling per failed attempt, to at most ``backoff_cap``,
            each drawn at random between half and all of it.
        max_batch_bytes: largest envelope packing consecutive publishes to one
            topic (a single larger message is still sent, alone).

    Counters (monotonic, for metrics): ``published`` messages sent to
    Redis, ``received`` messages from other processes delivered here,
    ``dropped`` messages not sent (Redis unreachable, queue full, or a
    pipeline that failed), ``reconnects`` outages recovered from,
    ``malformed`` messages on our channels that were not valid envelopes
    (ignored), ``task_failures`` unexpected exceptions in the broker's own
    tasks (each logged with its traceback; the task restarted).

    Raises:
        InvalidOptionError: an option is out of range, or the client decodes
            responses.
        TypeError: ``url_or_client`` is neither a str nor a Redis client.
    """

    def __init__(
        self,
        url_or_client: str | Redis,
        *,
        channel_prefix: str = DEFAULT_CHANNEL_PREFIX,
        max_queue: int = DEFAULT_MAX_QUEUE,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        backoff_base: float = DEFAULT_BACKOFF_BASE,
        backoff_cap: float = DEFAULT_BACKOFF_CAP,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
    ) -> None:
        if isinstance(url_or_client, str):
            self._url: str | None = url_or_client
            self._given_client: Redis | None = None
        elif isinstance(url_or_client, Redis):
            kwargs = url_or_client.connection_pool.connection_kwargs
            if kwargs.get("decode_responses"):
                raise InvalidOptionError(
                    "url_or_client", "the client must not decode responses"
                )
            self._url = None
            self._given_client = url_or_client
        else:
            raise TypeError(
                "RedisBroker needs a Redis URL or a redis.asyncio.Redis client, "
                f"got {type(url_or_client).__name__}"
            )
        if not isinstance(channel_prefix, str):
            raise TypeError("channel_prefix must be a str")
        _positive("max_queue", max_queue, integer=True)
        _positive("heartbeat_interval", heartbeat_interval)
        _positive("backoff_base", backoff_base)
        _positive("backoff_cap", backoff_cap)
        _positive("max_batch_bytes", max_batch_bytes, integer=True)
        _positive("max_queue_bytes", max_queue_bytes, integer=True)
        _positive("stall_timeout", stall_timeout)
        self.channel_prefix = channel_prefix
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        self.stall_timeout = float(stall_timeout)
        self.heartbeat_interval = float(heartbeat_interval)
        self.backoff_base = float(backoff_base)
        self.backoff_cap = max(float(backoff_cap), self.backoff_base)
        self.max_batch_bytes = max_batch_bytes
        self._prefix = channel_prefix.encode()
        self._procs_key = self._prefix + b"procs"

        self.published = 0
        self.received = 0
        self.dropped = 0
        self.reconnects = 0
        self.malformed = 0
        self.task_failures = 0

        self._host: BrokerHost | None = None
        self._client: Redis | None = None
        self._origin = b""
        self._header = b""
        self._proc_id = b""
        self._proc_key = b""
        self._queue: list[_Queued] = []
        self._sending: Sequence[_Queued] = _NOTHING  # taken from the queue, not sent
        self._pending_bytes = 0  # payload bytes queued, sending or unanswered
        self._interest: dict[str, bytes] = {}  # topics with local subscribers
        self._topic_of: dict[bytes, str] = {}  # ... by channel
        self._interest_changed: set[str] = set()
        self._counts_changed: set[str] = set()
        self._subscribed: set[bytes] = set()  # channels sent on the reader's connection
        self._pub: AbstractConnection | None = None
        self._sub: AbstractConnection | None = None
        self._pub_up = False
        self._sub_up = False
        self._sub_seen = 0.0  # when the reader's connection last sent anything
        self._sub_ping_since: float | None = None  # oldest PING maybe unanswered
        self._pub_seen = 0.0  # when the writer's connection last answered
        # When each connection last proved to work (for the end of an outage).
        self._pub_ok = 0.0
        self._sub_ok = 0.0
        self._rewrite_counts = True
        self._heartbeat_due = False
        self._closing = False
        self._outage_since: float | None = None
        self._last_error: BaseException | None = None
        self._wakeup: asyncio.Future[None] | None = None
        # Pipelines sent and not answered yet, oldest first. Replaced (not
        # cleared) when forgotten, so that a reply reader of a dropped
        # connection can tell.
        self._in_flight: deque[_Pipeline] = deque()
        self._replies_due = asyncio.Event()
        self._replies_done = asyncio.Event()
        self._reply_task: asyncio.Task[None] | None = None
        # An unexpected exception of the reply reader, raised in the writer.
        self._crash: Exception | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # Cluster-count registration: set once this connection's rewrite of
        # our counts has been answered.
        self._registered = asyncio.Event()
        self._was_registered = False
        self._peers: set[bytes] = set()  # other processes last seen registered
        # After Redis lost the counts: the peers that must register again,
        # and until when they are waited for.
        self._expected: set[bytes] = set()
        self._expected_until = 0.0

    # -- Broker interface ---------------------------------------------------------

    def channel(self, topic: str) -> bytes:
        """The Redis channel of ``topic``."""
        return self._prefix + topic.encode()

    @property
    def process_id(self) -> str:
        """This process's id in the cluster-count keys (new at each start)."""
        return self._proc_id.decode()

    @property
    def connected(self) -> bool:
        """True while both connections to Redis are up and this process's
        counts are registered on the current one."""
        return self._pub_up and self._sub_up and self._registered.is_set()

    @property
    def queued_bytes(self) -> int:
        """Payload bytes waiting for Redis now: queued, being sent, or sent and
        not answered yet (bounded by ``max_queue_bytes``)."""
        return self._pending_bytes

    async def start(self, host: BrokerHost) -> None:
        """Connect both connections, then register this process's counts
        (waiting at most ``STARTUP_TIMEOUT`` s for each), then run the broker's
        tasks. If Redis is unreachable, log it and keep retrying in the
        background: local delivery works meanwhile."""
        if self._host is not None:
            raise InvalidStateError("this RedisBroker is already started")
        self._host = host
        self._closing = False
        self._origin = new_origin()
        self._header = envelope_header(self._origin)
        self._proc_id = self._origin.hex().encode()
        self._proc_key = self._prefix + b"proc:" + self._proc_id
        self._queue = []
        self._sending = _NOTHING
        self._pending_bytes = 0
        self._interest = {}
        self._topic_of = {}
        self._interest_changed = set()
        self._counts_changed = set()
        self._subscribed = set()
        self._rewrite_counts = True
        self._outage_since = None
        self._last_error = None
        self._crash = None
        self._in_flight = deque()
        self._replies_due = asyncio.Event()
        self._replies_done = asyncio.Event()
        self._replies_done.set()
        self._registered = asyncio.Event()
        self._was_registered = False
        self._peers = set()
        self._expected = set()
        for topic, count in host.local_counts().items():
            self.subscription(topic, count, 0)
        if self._given_client is not None:
            self._client = self._given_client
        else:
            assert self._url is not None
            # No hidden retries: a retried pipeline could deliver twice, and the
            # broker has its own backoff. No socket timeout either: it costs a
            # timer per read and a task per write, and the heartbeats detect a
            # Redis that stopped answering.
            self._client = Redis.from_url(
                self._url,
                retry=Retry(NoBackoff(), 0),
                socket_connect_timeout=STARTUP_TIMEOUT,
                socket_timeout=None,
            )
        try:
            async with asyncio.timeout(STARTUP_TIMEOUT):
                await self._connect_pub()
                await self._connect_sub()
        except _EXPECTED as exc:
            self._failed(exc)
        else:
            # Connected: a slow answer is the watchdog's to judge, not an outage.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._registered.wait(), STARTUP_TIMEOUT)
        self._tasks = {
            "writer": self._spawn("writer", self._write_loop, self._reset_writer),
            "reader": self._spawn("reader", self._read_loop, self._reset_reader),
            "heartbeat": self._spawn("heartbeat", self._heartbeat_loop, None),
            "watchdog": self._spawn("watchdog", self._watchdog_loop, None),
        }

    async def close(self) -> None:
        """Send what is queued (for at most ``CLOSE_TIMEOUT`` s), remove this
        process from cluster counts, close the connections; idempotent."""
        if self._host is None:
            return
        self._closing = True
        tasks = self._tasks
        if "heartbeat" in tasks:
            tasks["heartbeat"].cancel()
        self._wake()
        if "writer" in tasks:
            await asyncio.wait([tasks["writer"]], timeout=CLOSE_TIMEOUT)
        if self._pub_up:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._replies_done.wait(), CLOSE_TIMEOUT)
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        self._tasks = {}
        client = self._client
        assert client is not None
        if self._pub_up:
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await client.srem(self._procs_key, self._proc_id)
                    await client.delete(self._proc_key)
            except _EXPECTED:
                pass  # the key expires anyway
        await self._drop_pub()
        await self._drop_connection("_sub")
        if self._given_client is None:
            await client.aclose()
        self._client = None
        self._host = None
        self._pub_up = self._sub_up = False

    def subscription(self, topic: str, new_count: int, old_count: int) -> None:
        """Track interest: 0 -> n subscribes ``topic``'s channel, n -> 0
        unsubscribes it (at the next loop turn); counts are reported too."""
        # Without a connection, nothing to track: a new connection subscribes
        # every live topic and rewrites every count.
        if old_count == 0:
            channel = self._prefix + topic.encode()
            self._interest[topic] = channel
            self._topic_of[channel] = topic
            if self._sub is not None:
                self._interest_changed.add(topic)
        elif new_count == 0:
            channel = self._interest.pop(topic, b"")
            self._topic_of.pop(channel, None)
            if self._sub is not None:
                self._interest_changed.add(topic)
        if self._pub is not None:
            self._counts_changed.add(topic)
            self._wake()

    def publish(self, topic: str, opcode: int, payload: bytes, compress: bool) -> None:
        """Queue the message for one pipeline at the end of this loop turn; drop it
        (counted) while Redis is unreachable, or when ``max_queue`` messages or
        ``max_queue_bytes`` of payload already wait."""
        queue = self._queue
        size = len(payload)
        pending = self._pending_bytes + size
        if (
            not self._pub_up
            or len(queue) >= self.max_queue
            or (pending > self.max_queue_bytes and pending != size)
        ):
            self.dropped += 1
            return
        queue.append((topic, opcode, payload, compress))
        self._pending_bytes = pending
        if self._wakeup is not None:
            self._wake()

    async def cluster_count(self, topic: str) -> int:
        """This process's count now plus the others' as last reported.

        Waits (within ``COUNT_TIMEOUT``) for this process's registration after
        a reconnect, and retries once a pooled connection that Redis closed.

        Raises:
            BrokerUnavailableError: Redis could not be asked (the message says
                why, with the underlying error), or it lost the counts and a
                process seen before has not registered again yet.
        """
        host = self._host
        client = self._client
        if host is None or client is None:
            raise InvalidStateError("the broker is not started")
        if not self._pub_up:
            # Whatever Redis holds now may lack this process or others.
            raise BrokerUnavailableError(
                f"Redis unreachable: {_describe(self._last_error)}"
            )
        field = topic.encode()
        try:
            async with asyncio.timeout(COUNT_TIMEOUT):
                await self._registered.wait()
                try:
                    remote = await self._remote_count(client, field)
                except RedisConnectionError:
                    # Most likely a pooled connection that Redis closed when it
                    # restarted: redis-py drops it, and the retry connects anew.
                    remote = await self._remote_count(client, field)
        except BrokerUnavailableError:
            raise
        except TimeoutError as exc:
            raise BrokerUnavailableError(
                f"Redis did not answer within {COUNT_TIMEOUT:g} s"
            ) from exc
        except _EXPECTED as exc:
            raise BrokerUnavailableError(
                f"Redis unreachable: {_describe(exc)}"
            ) from exc
        return host.subscriber_count(topic) + remote

    async def _remote_count(self, client: Redis, field: bytes) -> int:
        """The other processes' counts of ``field``; forgets processes that died.

        Raises:
            BrokerUnavailableError: Redis lost the counts (restarted empty) and a
                process seen before has not registered again yet.
        """
        members = await client.smembers(self._procs_key)
        ids = [
            proc_id
            for proc_id in members
            if isinstance(proc_id, bytes) and proc_id != self._proc_id
        ]
        replies: list[Any] = []
        if ids:
            pipe = client.pipeline(transaction=False)
            for proc_id in ids:
                key = self._prefix + b"proc:" + proc_id
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
            await client.srem(self._procs_key, *dead)
            self._peers.difference_update(dead)
        self._peers |= alive
        if self._expected:
            missing = self._expected - alive
            now = asyncio.get_running_loop().time()
            if not missing or now >= self._expected_until:
                self._expected = set()  # all back, or the rest count as dead
            else:
                raise BrokerUnavailableError(
                    f"Redis lost the cluster counts (restarted?): {len(missing)} "
                    f"of the {len(self._expected)} other processes seen before "
                    "have not registered again yet"
                )
        return sum(int(count) for count in replies[0::2] if count)

    # -- outage bookkeeping ---------------------------------------------------------

    def _failed(self, exc: BaseException) -> None:
        """A connection failed: the outage starts (logged once) and the other
        connection is checked at once (a heartbeat), since it is likely dead too."""
        self._last_error = exc
        if self._closing:
            return
        if self._outage_since is None:
            self._outage_since = asyncio.get_running_loop().time()
            logger.warning(
                "Redis unreachable (%s): publishes stay on this process until it "
                "is back; retrying",
                _describe(exc),
            )
        self._heartbeat_due = True
        self._wake()

    def _recovered(self) -> None:
        """The outage ends once the reader has connected or received something,
        and the writer has had a round trip, both since the outage started (one
        of them may not have noticed it yet)."""
        since = self._outage_since
        if (
            since is not None
            and self._pub_up
            and self._sub_up
            and self._pub_ok >= since
            and max(self._sub_ok, self._sub_seen) >= since
        ):
            down = asyncio.get_running_loop().time() - since
            self._outage_since = None
            self.reconnects += 1
            logger.warning(
                "Redis reachable again after %.1f s; %d messages dropped so far",
                down,
                self.dropped,
            )

    def _lost_registration(self) -> None:
        """Our hash was gone when we came back: Redis lost the counts (restarted
        empty, or we were away past the expiry). The peers seen before must
        register again; until they have, or until they would count as dead,
        cluster counts raise instead of undercounting."""
        if not self._peers:
            return
        window = self.heartbeat_interval * EXPIRY_HEARTBEATS + self.backoff_cap
        self._expected = set(self._peers)
        self._expected_until = asyncio.get_running_loop().time() + window
        logger.warning(
            "Redis lost the cluster counts; cluster_subscriber_count raises "
            "BrokerUnavailableError until the %d other processes seen before have "
            "registered again (at most %.1f s)",
            len(self._expected),
            window,
        )

    def _backoff(self, failures: int) -> float:
        delay: float = min(
            self.backoff_cap, self.backoff_base * 2.0 ** min(failures, 30)
        )
        return delay * random.uniform(0.5, 1.0)

    async def _new_connection(self) -> AbstractConnection:
        """A dedicated connection from the client's pool, on a new socket (a
        pooled one may be stale after a Redis restart); TimeoutError if Redis
        does not complete the handshake within ``stall_timeout``."""
        assert self._client is not None
        pool = self._client.connection_pool
        connection: AbstractConnection = pool.get_available_connection()  # type: ignore[no-untyped-call]
        try:
            await connection.disconnect(nowait=True)
            async with asyncio.timeout(self.stall_timeout):
                await connection.connect()  # type: ignore[no-untyped-call]
        except BaseException:
            # Never back to the pool half-connected: a handshake reply that
            # arrives later would answer someone else's command.
            _abort(connection)
            with contextlib.suppress(Exception):
                await connection.disconnect(nowait=True)
            await pool.release(connection)
            raise
        return connection

    async def _drop_connection(self, which: str) -> None:
        connection: AbstractConnection | None = getattr(self, which)
        setattr(self, which, None)
        if connection is None or self._client is None:
            return
        try:
            await connection.disconnect(nowait=True)
        finally:
            await self._client.connection_pool.release(connection)

    # -- supervision ------------------------------------------------------------------

    def _spawn(self, name: str, run: _Run, reset: _Run | None) -> asyncio.Task[None]:
        return asyncio.create_task(
            self._supervise(name, run, reset), name=f"RedisBroker {name}"
        )

    async def _supervise(self, name: str, run: _Run, reset: _Run | None) -> None:
        """Run ``run`` until it returns. An exception it does not handle is a
        bug: log it with its traceback, count it, ``reset`` the task's state
        and run it again after a backoff (growing while it keeps failing)."""
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            started = loop.time()
            try:
                await run()
                return
            except Exception as exc:
                self.task_failures += 1
                logger.error(
                    "RedisBroker %s task failed; restarting it (counted in "
                    "RedisBroker.task_failures)",
                    name,
                    exc_info=exc,
                )
            if reset is not None:
                try:
                    await reset()
                except Exception:
                    logger.exception("RedisBroker: resetting the %s task failed", name)
            if loop.time() - started > self.backoff_cap:
                failures = 0  # it ran a while: a new fault, not the same one
            await asyncio.sleep(self._backoff(failures))
            failures += 1

    async def _reset_writer(self) -> None:
        """After an unexpected failure of the writer (or of its reply reader):
        drop what waits and the connection; the writer reconnects."""
        self._crash = None
        self._wakeup = None
        self._pub_down()
        await self._drop_pub()

    async def _reset_reader(self) -> None:
        self._sub_up = False
        self._subscribed = set()
        await self._drop_connection("_sub")

    # -- heartbeat and watchdog ---------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        """Every ``heartbeat_interval``: have the writer refresh our registration,
        and PING the reader's connection (the watchdog checks the answer)."""
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            self._heartbeat_due = True
            self._wake()
            await self._ping_reader()

    async def _ping_reader(self) -> None:
        connection = self._sub
        if not self._sub_up or connection is None or not connection.is_connected:
            return
        since = self._sub_ping_since
        if since is None or self._sub_seen >= since:  # the last one was answered
            self._sub_ping_since = asyncio.get_running_loop().time()
        await self._write_sub(connection, [("PING",)])

    async def _watchdog_loop(self) -> None:
        """Check for a stalled Redis ``WATCHDOG_TICKS`` times per
        ``stall_timeout``, whatever the writer and the reader are blocked on."""
        while True:
            await asyncio.sleep(self.stall_timeout / WATCHDOG_TICKS)
            self._check_stalls()

    def _check_stalls(self) -> None:
        """Declare a connection dead when Redis has owed it an answer for
        ``stall_timeout``: a pipeline of the writer, or a PING of the reader."""
        now = asyncio.get_running_loop().time()
        limit = self.stall_timeout
        in_flight = self._in_flight
        if self._pub_up and in_flight:
            waiting_since = max(in_flight[0][3], self._pub_seen)
            if now - waiting_since > limit:
                self._pub_failed(TimeoutError(f"no reply within {limit:g} s"))
        since = self._sub_ping_since
        if (
            self._sub_up
            and since is not None
            and self._sub_seen < since
            and now - since > limit
        ):
            self._sub_up = False
            self._failed(TimeoutError(f"no reply to a PING within {limit:g} s"))
            _abort(self._sub)  # the reader sees the end and reconnects

    # -- the writer -------------------------------------------------------------------

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            if not wakeup.done():
                wakeup.set_result(None)

    async def _connect_pub(self) -> None:
        await self._drop_pub()
        connection = self._pub = await self._new_connection()
        self._rewrite_counts = True
        self._registered.clear()
        self._pub_up = True
        self._pub_seen = asyncio.get_running_loop().time()
        self._reply_task = asyncio.create_task(
            self._read_replies(connection), name="RedisBroker replies"
        )
        await self._send(*self._bookkeeping(), _NOTHING)  # the counts, at once

    async def _drop_pub(self) -> None:
        task = self._reply_task
        self._reply_task = None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._forget_in_flight()
        await self._drop_connection("_pub")

    def _pub_failed(self, exc: BaseException) -> None:
        """The writer's connection failed: the outage starts (logged once) and
        the writer reconnects."""
        if self._pub_up:
            self._pub_down()
        self._failed(exc)

    def _pub_down(self) -> None:
        """Stop using the writer's connection: what is queued or unanswered is
        dropped (counted; never resent, it might have been delivered), and
        publishes are dropped until the writer has reconnected."""
        self._pub_up = False
        self._registered.clear()
        self.dropped += len(self._queue) + len(self._sending)
        self._queue = []
        self._sending = _NOTHING
        self._forget_in_flight()
        self._pending_bytes = 0
        _abort(self._pub)  # a writer blocked sending returns
        self._wake()

    def _forget_in_flight(self) -> None:
        forgotten = self._in_flight
        self._in_flight = deque()
        for _, messages, nbytes, _, _ in forgotten:
            self.dropped += messages
            self._pending_bytes -= nbytes
        self._replies_done.set()

    async def _read_replies(self, connection: AbstractConnection) -> None:
        """Read the answers of the pipelines in order, while the writer goes on."""
        in_flight = self._in_flight
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not in_flight:
                    self._replies_done.set()
                    self._replies_due.clear()
                    await self._replies_due.wait()
                    continue
                replies, messages, nbytes, _, probes = in_flight[0]
                answers: list[Any] = []
                for index in range(replies):
                    try:
                        reply = await connection.read_response()
                    except ResponseError as exc:  # an error reply; others follow
                        logger.error("Redis refused a broker command: %s", exc)
                        reply = exc
                    self._pub_seen = loop.time()
                    if index < len(probes):
                        answers.append(reply)
                if in_flight is not self._in_flight:
                    return  # forgotten meanwhile (counted as dropped)
                in_flight.popleft()
                self._pending_bytes -= nbytes
                self.published += messages
                if probes:
                    self._probed(probes, answers)
                if self._outage_since is not None:
                    self._pub_ok = loop.time()
                    self._recovered()
        except _EXPECTED as exc:
            if in_flight is self._in_flight:
                self._pub_failed(exc)
        except Exception as exc:
            # A bug: the writer's supervisor logs, counts and restarts it.
            self._crash = exc
            self._pub_down()

    def _probed(self, probes: tuple[str, ...], answers: list[Any]) -> None:
        """What the leading replies of a bookkeeping pipeline say."""
        for probe, answer in zip(probes, answers, strict=True):
            if probe == _PROBE_REGISTERED:
                if answer == 0 and self._was_registered:
                    self._lost_registration()
                self._was_registered = True
                self._registered.set()
            elif probe == _PROBE_MEMBERS and isinstance(answer, list | set):
                self._peers = {
                    proc_id
                    for proc_id in answer
                    if isinstance(proc_id, bytes) and proc_id != self._proc_id
                }

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            crash = self._crash
            if crash is not None:
                self._crash = None
                raise crash
            if not self._pub_up:
                if self._closing:
                    return
                try:
                    await self._connect_pub()
                    failures = 0
                except _EXPECTED as exc:
                    self._pub_failed(exc)
                    await self._drop_pub()
                    await asyncio.sleep(self._backoff(failures))
                    failures += 1
                continue
            if not (
                self._queue
                or self._heartbeat_due
                or self._counts_changed
                or (self._interest_changed and self._sub_up)
            ):
                if self._closing:
                    return
                self._wakeup = loop.create_future()
                await self._wakeup
                continue
            await self._sync_subscriptions()
            batch = self._sending = self._queue
            self._queue = []
            try:
                await self._send(*self._bookkeeping(), batch)
            except _EXPECTED as exc:
                self._pub_failed(exc)
                await self._drop_pub()

    def _bookkeeping(self) -> tuple[list[tuple[Any, ...]], tuple[str, ...]]:
        """Count updates, and the heartbeat when due; and the probes their
        first replies answer."""
        commands: list[tuple[Any, ...]] = []
        probes: tuple[str, ...] = ()
        key = self._proc_key
        host = self._host
        assert host is not None
        if self._rewrite_counts:
            self._rewrite_counts = False
            self._counts_changed.clear()
            self._heartbeat_due = True
            fields: list[Any] = [_ALIVE_FIELD, 1]
            for topic, count in host.local_counts().items():
                fields += (topic.encode(), count)
            commands += [
                ("EXISTS", key),
                ("SMEMBERS", self._procs_key),
                ("MULTI",),
                ("DEL", key),
                ("HSET", key, *fields),
                ("EXEC",),
            ]
            probes = (_PROBE_REGISTERED, _PROBE_MEMBERS)
        elif self._counts_changed:
            set_fields: list[Any] = []
            gone: list[bytes] = []
            for topic in self._counts_changed:
                count = host.subscriber_count(topic)
                if count:
                    set_fields += (topic.encode(), count)
                else:
                    gone.append(topic.encode())
            self._counts_changed.clear()
            if set_fields:
                commands.append(("HSET", key, *set_fields))
            if gone:
                commands.append(("HDEL", key, *gone))
        if self._heartbeat_due:
            self._heartbeat_due = False
            if not probes:
                commands.insert(0, ("SMEMBERS", self._procs_key))
                probes = (_PROBE_MEMBERS,)
            ttl = round(self.heartbeat_interval * EXPIRY_HEARTBEATS * 1000)
            commands += [
                ("HSET", key, _ALIVE_FIELD, 1),
                ("PEXPIRE", key, ttl),
                ("SADD", self._procs_key, self._proc_id),
            ]
        return commands, probes

    def _envelopes(
        self, commands: list[tuple[Any, ...]], batch: Sequence[_Queued]
    ) -> int:
        """Append one PUBLISH per run of consecutive messages to one topic;
        return the payload bytes of ``batch``."""
        header = self._header
        limit = self.max_batch_bytes
        topic = ""
        parts: list[bytes] = []
        size = 0
        total = 0
        for next_topic, opcode, payload, compress in batch:
            length = len(payload)
            total += length
            if next_topic != topic or (size + length > limit and len(parts) > 1):
                if parts:
                    channel = self._prefix + topic.encode()
                    commands.append(("PUBLISH", channel, b"".join(parts)))
                topic = next_topic
                parts = [header]
                size = HEADER_SIZE
            parts.append(record_header(opcode, length, compress))
            parts.append(payload)
            size += RECORD_HEADER_SIZE + length
        if parts:
            commands.append(("PUBLISH", self._prefix + topic.encode(), b"".join(parts)))
        return total

    async def _send(
        self,
        commands: list[tuple[Any, ...]],
        probes: tuple[str, ...],
        batch: Sequence[_Queued],
    ) -> None:
        """Send one pipeline: ``commands``, then ``batch`` as PUBLISHes. The
        replies are read by ``_read_replies``, so the next pipeline need not wait
        for a round trip."""
        nbytes = self._envelopes(commands, batch) if batch else 0
        if not commands:
            return
        # Registered first: if anything below fails, the batch counts as dropped.
        self._in_flight.append(
            (
                len(commands),
                len(batch),
                nbytes,
                asyncio.get_running_loop().time(),
                probes,
            )
        )
        self._sending = _NOTHING
        self._replies_done.clear()
        self._replies_due.set()
        connection = self._pub
        if connection is None or not self._pub_up:
            raise ConnectionError("no connection")
        packed = connection.pack_commands(commands)
        await connection.send_packed_command(packed, check_health=False)

    # -- the reader -------------------------------------------------------------------

    async def _sync_subscriptions(self) -> None:
        """Send the SUBSCRIBE/UNSUBSCRIBE that interest changes since the last
        turn call for (coalesced: subscribe then unsubscribe sends nothing)."""
        changed = self._interest_changed
        connection = self._sub
        if not changed or not self._sub_up or connection is None:
            return  # kept for when the reader is connected again
        self._interest_changed = set()
        if not connection.is_connected:
            return  # the reader subscribes to every live topic when it reconnects
        subscribe: list[bytes] = []
        unsubscribe: list[bytes] = []
        for topic in changed:
            channel = self._interest.get(topic)
            if channel is not None:
                if channel not in self._subscribed:
                    subscribe.append(channel)
                    self._subscribed.add(channel)
            else:
                channel = self._prefix + topic.encode()
                if channel in self._subscribed:
                    unsubscribe.append(channel)
                    self._subscribed.discard(channel)
        commands: list[tuple[Any, ...]] = []
        if subscribe:
            commands.append(("SUBSCRIBE", *subscribe))
        if unsubscribe:
            commands.append(("UNSUBSCRIBE", *unsubscribe))
        if commands:
            await self._write_sub(connection, commands)

    async def _write_sub(
        self, connection: AbstractConnection, commands: list[tuple[Any, ...]]
    ) -> None:
        """Write to the reader's connection; a failure is the reader's to handle."""
        try:
            await connection.send_packed_command(
                connection.pack_commands(commands), check_health=False
            )
        except _EXPECTED:
            await connection.disconnect(nowait=True)

    async def _connect_sub(self) -> None:
        await self._drop_connection("_sub")
        connection = self._sub = await self._new_connection()
        # Under RESP3 (and with hiredis) messages are push notifications, which
        # redis-py hands to this handler; returning them makes read_response()
        # return them (push_request=True), as redis-py's own PubSub does.
        parser: Any = getattr(connection, "_parser", None)
        if hasattr(parser, "set_pubsub_push_handler"):
            parser.set_pubsub_push_handler(_identity)
        # From this snapshot on, interest changes wait for the writer.
        channels = list(self._interest.values())
        self._subscribed = set(channels)
        self._interest_changed = set()
        for start in range(0, len(channels), SUBSCRIBE_CHUNK):
            chunk = channels[start : start + SUBSCRIBE_CHUNK]
            await connection.send_command("SUBSCRIBE", *chunk, check_health=False)
        self._sub_seen = self._sub_ok = asyncio.get_running_loop().time()
        self._sub_ping_since = None
        self._sub_up = True
        self._recovered()
        if self._interest_changed:
            self._wake()

    async def _read_loop(self) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        while True:
            try:
                if not self._sub_up:
                    await self._connect_sub()
                    failures = 0
                connection = self._sub
                if connection is None:
                    raise ConnectionError("no connection")
                while True:
                    reply = await connection.read_response(
                        timeout=math.inf, disconnect_on_error=True, push_request=True
                    )
                    self._sub_seen = loop.time()
                    self._on_reply(reply)
            except _EXPECTED as exc:
                self._sub_up = False
                self._subscribed = set()
                self._failed(exc)
                await self._drop_connection("_sub")
                await asyncio.sleep(self._backoff(failures))
                failures += 1

    def _on_reply(self, reply: Any) -> None:
        if not isinstance(reply, list) or len(reply) != 3 or reply[0] != _MESSAGE:
            return  # subscribe confirmations, pongs
        topic = self._topic_of.get(reply[1])
        data = reply[2]
        if topic is None or type(data) is not bytes:
            return  # unsubscribed meanwhile
        try:
            origin, records = decode_envelope(data)
        except MalformedEnvelope as exc:
            self.malformed += 1
            if self.malformed == 1:
                logger.warning(
                    "ignoring a malformed message on Redis channel %r (%s); "
                    "counted in RedisBroker.malformed from now on",
                    reply[1],
                    exc,
                )
            return
        if origin == self._origin:
            return  # our own publish, delivered locally already
        host = self._host
        assert host is not None
        deliver = host.deliver
        for opcode, payload, compress in records:
            try:
                deliver(topic, opcode, payload, compress)
            except Exception:
                logger.exception("delivering a message from Redis failed")
        self.received += len(records)
