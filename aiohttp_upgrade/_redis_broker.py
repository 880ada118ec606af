"""``RedisBroker``: topics shared between processes and hosts through Redis pub/sub.

Needs the ``redis`` extra (``pip install aiohttp-upgrade[redis]``: redis-py's
asyncio client and hiredis). Each topic is the Redis channel
``channel_prefix + topic``; a process subscribes to it only while it has a local
subscriber of the topic. What crosses Redis is an envelope of raw bytes
(:mod:`aiohttp_upgrade._envelope`), never pickle.

Two dedicated connections per process, taken from the client's pool: one that
only writes (the publishes of one loop turn in one pipeline, in order, consecutive
publishes to one topic packed into one ``PUBLISH``; the subscriber counts; the
heartbeat) and one that only reads (``SUBSCRIBE``). Both reconnect on their own
with capped, jittered exponential backoff; the reader re-subscribes every topic
that has local subscribers. A watchdog, independent of both, detects a Redis that
stopped answering without closing the connection (a pipeline, a handshake or a
heartbeat PING unanswered for ``stall_timeout``), even while the writer is
blocked sending to it. Plain topics are delivered at most once: publishes are
dropped (counted in :attr:`RedisBroker.dropped`), never retried, while Redis is
unreachable or past ``max_queue``/``max_queue_bytes``; history topics: docs/history.rst.

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

On a Redis Cluster (``cluster=True``) each primary gets its own pair of
connections (a shard) and each topic goes through the primary of its hash slot
with sharded pub/sub; the slot map is followed through failovers and slot
migrations (``aiohttp_upgrade._redis._cluster``).

``RedisBroker`` composes the parts in the private package
``aiohttp_upgrade._redis``, one concern per module (see its docstring).
"""

from __future__ import annotations

from typing import Any, Final

try:
    from redis.asyncio import Redis
except ModuleNotFoundError as exc:  # the extra is not installed
    if exc.name != "redis" and not (exc.name or "").startswith("redis."):
        raise
    raise ModuleNotFoundError(
        f"RedisBroker needs the redis extra ({exc}): "
        "pip install 'aiohttp-upgrade[redis]'",
        name=exc.name,
    ) from exc

from ._broker import Broker, BrokerHost
from ._errors import InvalidOptionError, InvalidStateError
from ._redis._cluster import Cluster
from ._redis._config import (
    DEFAULT_BACKOFF_BASE,
    DEFAULT_BACKOFF_CAP,
    DEFAULT_CHANNEL_PREFIX,
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_QUEUE,
    DEFAULT_MAX_QUEUE_BYTES,
    DEFAULT_STALL_TIMEOUT,
    Config,
    Counters,
)
from ._redis._link import new_client
from ._redis._shard import Shard

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

# The names of the broker's supervised tasks (in logs and task names).
_WRITER: Final = "writer"
_READER: Final = "reader"
_HEARTBEAT: Final = "heartbeat"
_WATCHDOG: Final = "watchdog"


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
        max_queue_bytes: payload bytes waiting for Redis (queued, being sent,
            or sent and not answered yet) at most; past it, publishes are
            dropped and counted like past ``max_queue``. A single larger
            message is still sent when nothing else waits. ``queued_bytes`` is
            the figure now. It counts payloads only: while a batch is packed
            for Redis its payloads and their packed copy coexist, so the
            broker's peak memory is up to about twice ``max_queue_bytes``
            (plus a few dozen bytes per message); once handed to the socket,
            one copy of what the socket has not taken.
        heartbeat_interval: seconds between heartbeats; a process that stops
            beating drops out of cluster counts and presence after 3 intervals.
        stall_timeout: seconds Redis has to answer a pipeline, a heartbeat PING
            or a connection handshake; past it the connection is declared
            dead (``connected`` turns False, the outage is logged, what waits
            is dropped) and replaced, even while the writer is blocked sending.
        backoff_base, backoff_cap: reconnect delays grow from ``backoff_base``
            seconds, doubling per failed attempt, to at most ``backoff_cap``,
            each drawn at random between half and all of it.
        max_batch_bytes: largest envelope packing consecutive publishes to one
            topic (a single larger message is still sent, alone).
        cluster: ``url_or_client`` is one node (any) of a Redis Cluster (or
            Valkey cluster): the broker reads the slot map from it, then keeps
            one writing and one reading connection per primary and uses
            sharded pub/sub (``SPUBLISH``/``SSUBSCRIBE``), each topic on the
            primary of its hash slot. It follows failovers and slot
            migrations by itself. ``channel_prefix`` must then be non-empty
            and without ``{`` or ``}``: it is the hash tag of the broker's own
            keys. ``max_queue`` and ``max_queue_bytes`` apply per primary.
            See docs/scaling.rst.

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
        cluster: bool = False,
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
        if not isinstance(cluster, bool):
            raise InvalidOptionError("cluster", f"must be a bool, got {cluster!r}")
        self._config = Config(
            channel_prefix=channel_prefix,
            max_queue=max_queue,
            heartbeat_interval=heartbeat_interval,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            max_batch_bytes=max_batch_bytes,
            max_queue_bytes=max_queue_bytes,
            stall_timeout=stall_timeout,
            sharded=cluster,
        )
        self._counters = Counters()
        self._client: Redis | None = None
        self._engine: Shard | Cluster = self._new_engine(None, None)

    def _new_engine(
        self, host: BrokerHost | None, client: Redis | None
    ) -> Shard | Cluster:
        """The broker's parts for one start (with a new identity)."""
        if self._config.sharded:
            return Cluster(self._config, self._counters, host, client)
        return Shard(self._config, self._counters, host, client)

    # -- options and counters -----------------------------------------------------

    @property
    def channel_prefix(self) -> str:
        return self._config.channel_prefix

    @property
    def max_queue(self) -> int:
        return self._config.max_queue

    @property
    def max_queue_bytes(self) -> int:
        return self._config.max_queue_bytes

    @property
    def stall_timeout(self) -> float:
        return self._config.stall_timeout

    @property
    def heartbeat_interval(self) -> float:
        return self._config.heartbeat_interval

    @property
    def backoff_base(self) -> float:
        return self._config.backoff_base

    @property
    def backoff_cap(self) -> float:
        return self._config.backoff_cap

    @property
    def max_batch_bytes(self) -> int:
        return self._config.max_batch_bytes

    @property
    def published(self) -> int:
        return self._counters.published

    @property
    def received(self) -> int:
        return self._counters.received

    @property
    def dropped(self) -> int:
        return self._counters.dropped

    @property
    def reconnects(self) -> int:
        return self._counters.reconnects

    @property
    def malformed(self) -> int:
        return self._counters.malformed

    @property
    def task_failures(self) -> int:
        return self._counters.task_failures

    # -- Broker interface ---------------------------------------------------------

    def channel(self, topic: str) -> bytes:
        """The Redis channel of ``topic``."""
        return self._config.channel(topic)

    @property
    def cluster(self) -> bool:
        """True when the broker runs on a Redis Cluster (sharded pub/sub)."""
        return self._config.sharded

    @property
    def process_id(self) -> str:
        """This process's id in the cluster-count keys (new at each start)."""
        return self._engine.session.proc_id.decode()

    @property
    def connected(self) -> bool:
        """True while both connections to Redis are up (to every primary, on a
        cluster) and this process's counts are registered."""
        return self._engine.connected

    @property
    def queued_bytes(self) -> int:
        """Payload bytes waiting for Redis now: queued, being sent, or sent and
        not answered yet (bounded by ``max_queue_bytes``, per primary on a
        cluster)."""
        return self._engine.queued_bytes

    async def start(self, host: BrokerHost) -> None:
        """Connect both connections (on a cluster: read the slot map from the
        seed, then connect to every primary), then register this process's
        counts (waiting at most ``STARTUP_TIMEOUT`` s for each), then run the
        broker's tasks. If Redis is unreachable, log it and keep retrying in
        the background: local delivery works meanwhile."""
        if self._engine.session.host is not None:
            raise InvalidStateError("this RedisBroker is already started")
        client = self._given_client
        if client is None:
            assert self._url is not None
            client = new_client(self._url)
        self._client = client
        engine = self._engine = self._new_engine(host, client)
        for topic, count in host.local_counts().items():
            self.subscription(topic, count, 0)
        await engine.connect()
        engine.spawn()

    async def close(self) -> None:
        """Send what is queued (for at most ``CLOSE_TIMEOUT`` s), remove this
        process from cluster counts, close the connections; idempotent."""
        engine, client = self._engine, self._client
        if engine.session.host is None or client is None:
            return
        await engine.close(unregister=True)
        if self._given_client is None:
            await client.aclose()
        self._client = None
        engine.session.client = None
        engine.session.host = None

    def subscription(self, topic: str, new_count: int, old_count: int) -> None:
        """Track interest: 0 -> n subscribes ``topic``'s channel, n -> 0
        unsubscribes it (at the next loop turn); counts are reported too."""
        self._engine.track(topic, new_count, old_count)
        self._engine.count_changed(topic)

    def history_backend(self) -> Any:  # see Broker.history_backend: Redis Streams
        return self._engine.history

    def publish(self, topic: str, opcode: int, payload: bytes, compress: bool) -> None:
        """Queue the message for one pipeline at the end of this loop turn; drop it
        (counted) while Redis is unreachable, or when ``max_queue`` messages or
        ``max_queue_bytes`` of payload already wait."""
        self._engine.publish(topic, opcode, payload, compress)

    async def cluster_count(self, topic: str) -> int:
        """This process's count now plus the others' as last reported.

        Waits (within ``COUNT_TIMEOUT``) for this process's registration after
        a reconnect, and retries once a pooled connection that Redis closed.

        Raises:
            BrokerUnavailableError: Redis could not be asked (the message says
                why, with the underlying error), or it lost the counts and a
                process seen before has not registered again yet.
        """
        host = self._engine.session.host
        if host is None or self._client is None:
            raise InvalidStateError("the broker is not started")
        remote = await self._engine.cluster_count(topic)
        return host.subscriber_count(topic) + remote
