"""RedisBroker's options (validated), counters, per-start identity and backoff."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from .._envelope import envelope_header, new_origin
from .._errors import InvalidOptionError
from ._slots import topic_tag

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .._broker import BrokerHost
    from ._presence import RedisPresence

__all__ = [
    "CLOSE_TIMEOUT",
    "COUNT_TIMEOUT",
    "DEFAULT_BACKOFF_BASE",
    "DEFAULT_BACKOFF_CAP",
    "DEFAULT_CHANNEL_PREFIX",
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_MAX_BATCH_BYTES",
    "DEFAULT_MAX_QUEUE",
    "DEFAULT_MAX_QUEUE_BYTES",
    "DEFAULT_STALL_TIMEOUT",
    "EXPIRY_HEARTBEATS",
    "STARTUP_TIMEOUT",
    "SUBSCRIBE_CHUNK",
    "WATCHDOG_TICKS",
    "Config",
    "Counters",
    "Session",
    "Wakeup",
    "describe",
]

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


def describe(exc: BaseException | None) -> str:
    """``Type: message`` of a failure, for logs and BrokerUnavailableError."""
    if exc is None:
        return "not connected yet"
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _positive(name: str, value: object, *, integer: bool = False) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int if integer else int | float)
        or not (math.isfinite(value) and value > 0)
    ):
        kind = "an int" if integer else "a number"
        raise InvalidOptionError(name, f"must be {kind} > 0, got {value!r}")


class Config:
    """The options of one RedisBroker, validated; read-only by convention."""

    __slots__ = (
        "backoff_base",
        "backoff_cap",
        "channel_prefix",
        "control_prefix",
        "heartbeat_interval",
        "max_batch_bytes",
        "max_queue",
        "max_queue_bytes",
        "message_kind",
        "prefix",
        "procs_key",
        "publish_command",
        "sharded",
        "stall_timeout",
        "subscribe_command",
        "subscribed_kind",
        "unsubscribe_command",
    )

    def __init__(
        self,
        *,
        channel_prefix: str,
        max_queue: int,
        heartbeat_interval: float,
        backoff_base: float,
        backoff_cap: float,
        max_batch_bytes: int,
        max_queue_bytes: int,
        stall_timeout: float,
        sharded: bool = False,
    ) -> None:
        """Raises InvalidOptionError (a value out of range) or TypeError."""
        if not isinstance(channel_prefix, str):
            raise TypeError("channel_prefix must be a str")
        if sharded and (not channel_prefix or {"{", "}"} & set(channel_prefix)):
            raise InvalidOptionError(
                "channel_prefix",
                "on a Redis Cluster it must be non-empty, without { or }: "
                f"it is the hash tag of the broker's own keys, got {channel_prefix!r}",
            )
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
        self.prefix = channel_prefix.encode()
        # On a cluster, sharded pub/sub, and the keys and the channel that are
        # no topic's (counts, presence) hash-tagged together on one slot.
        self.sharded = sharded
        self.control_prefix = b"{" + self.prefix + b"}" if sharded else self.prefix
        self.procs_key = self.control_key(b"procs")  # the set of live process ids
        self.publish_command = "SPUBLISH" if sharded else "PUBLISH"
        self.subscribe_command = "SSUBSCRIBE" if sharded else "SUBSCRIBE"
        self.unsubscribe_command = "SUNSUBSCRIBE" if sharded else "UNSUBSCRIBE"
        self.message_kind = b"smessage" if sharded else b"message"
        self.subscribed_kind = b"ssubscribe" if sharded else b"subscribe"

    def channel(self, topic: str) -> bytes:
        """The Redis channel of ``topic``: on a cluster, hash-tagged as its
        history keys are, so both live on the topic's shard."""
        if self.sharded:
            return self.prefix + b"c" + topic_tag(topic.encode())
        return self.prefix + topic.encode()

    def control_key(self, name: bytes) -> bytes:
        """A key (or channel) of the broker's own that is no topic's."""
        return self.control_prefix + name

    def backoff(self, failures: int) -> float:
        """Seconds to wait after ``failures`` consecutive failures: from
        ``backoff_base`` doubling to ``backoff_cap``, drawn in its upper half."""
        delay: float = min(
            self.backoff_cap, self.backoff_base * 2.0 ** min(failures, 30)
        )
        return delay * random.uniform(0.5, 1.0)


class Counters:
    """RedisBroker's monotonic counters (see its docstring)."""

    __slots__ = (
        "dropped",
        "malformed",
        "published",
        "received",
        "reconnects",
        "task_failures",
    )

    def __init__(self) -> None:
        self.published = 0
        self.received = 0
        self.dropped = 0
        self.reconnects = 0
        self.malformed = 0
        self.task_failures = 0


class Session:
    """One start of a broker: its host, client and a new identity."""

    __slots__ = (
        "client",
        "closing",
        "header",
        "host",
        "label",
        "origin",
        "presence",
        "proc_id",
        "proc_key",
        "suspect",
    )

    presence: RedisPresence  # set by the broker once its links exist

    def __init__(
        self,
        config: Config,
        host: BrokerHost | None,
        client: Redis | None,
        origin: bytes | None = None,
    ) -> None:
        self.host = host
        self.client = client
        self.closing = False
        # The origin tells our own messages apart when Redis sends them back
        # (one for every shard of a cluster).
        if origin is None:
            origin = new_origin() if host is not None else b""
        self.origin = origin
        # On a cluster: which node, in logs; what to call on a MOVED reply.
        self.label = ""
        self.suspect: Callable[[BaseException], None] | None = None
        self.header = envelope_header(self.origin) if self.origin else b""
        self.proc_id = self.origin.hex().encode()
        self.proc_key = config.control_key(b"proc:" + self.proc_id)


class Wakeup:
    """Wakes the writer (from the reader, the watchdog, publishes ...)."""

    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: asyncio.Future[None] | None = None

    def wake(self) -> None:
        """Wake a waiting writer; nothing if it is not waiting."""
        future = self.future
        if future is not None:
            self.future = None
            if not future.done():
                future.set_result(None)

    async def wait(self) -> None:
        """Wait until :meth:`wake` is called."""
        self.future = asyncio.get_running_loop().create_future()
        await self.future
