"""Rate limits and caps of the chat: token buckets and their settings (pure, no I/O).

Time is passed in as ``now`` (seconds, any origin), so every decision here is a
plain function of its inputs and is tested without sockets or sleeps.

- :class:`~aiohttp_upgrade.TokenBucket` (the library's): ``burst`` tokens,
  refilled at ``rate`` per second; an action is allowed when a whole token is
  there to take.
- :meth:`Limits.rate_limit`: what one socket may send, frames of every kind
  (pings, continuations) and bytes, enforced by the library (``rate_limit``).
- :class:`FloodGuard`: a bucket for the frames of one user, with the demo's
  answer to a client that goes on sending while it is empty (one error frame,
  then drop silently, then close 1008).
- :class:`KeyedLimiter`: one bucket per key (a client address), in a map whose
  size is bounded however many keys an attacker invents.
- :func:`address_key`: the key of a client address: an IPv4 address, also when
  it arrives IPv4-mapped in IPv6, and the /64 network of an IPv6 address.
- :class:`Limits`: every limit and cap of the demo, with the defaults below.
"""

from __future__ import annotations

import enum
import ipaddress
from collections import OrderedDict
from dataclasses import dataclass

from aiohttp_upgrade import RateLimit, TokenBucket

__all__ = [
    "DEFAULT_BACKPRESSURE_LIMIT",
    "DEFAULT_BYTE_BURST",
    "DEFAULT_BYTE_RATE",
    "DEFAULT_FRAME_BURST",
    "DEFAULT_FRAME_RATE",
    "DEFAULT_HISTORY_PER_ROOM",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_SESSIONS",
    "DEFAULT_MAX_STORED_BYTES",
    "DEFAULT_MAX_STORED_MESSAGES",
    "DEFAULT_MESSAGE_BURST",
    "DEFAULT_MESSAGE_RATE",
    "DEFAULT_SESSIONS_PER_USER",
    "DEFAULT_SIGN_IN_BURST",
    "DEFAULT_SIGN_IN_RATE",
    "DEFAULT_SOCKETS_PER_SESSION",
    "DEFAULT_SOCKETS_PER_USER",
    "DEFAULT_STRIKES",
    "FloodGuard",
    "KeyedLimiter",
    "Limits",
    "TokenBucket",
    "Verdict",
    "address_key",
]

# Frames per second a user (all sessions and sockets) may send over time, and
# how many at once.
DEFAULT_MESSAGE_RATE = 5.0
DEFAULT_MESSAGE_BURST = 20
# Frames of any kind (pings, continuations: not only messages) and bytes one
# socket may send per second, and at once; past them the library stops reading
# the socket until its budget is back (ChatHandler.rate_limited says so).
DEFAULT_FRAME_RATE = 100.0
DEFAULT_FRAME_BURST = 500
DEFAULT_BYTE_RATE = 256 * 1024.0
DEFAULT_BYTE_BURST = 1024 * 1024
# Frames refused in a row (after the error frame) before the socket is closed.
DEFAULT_STRIKES = 20
# Sign-ins per client address: 10 at once, then one every 5 seconds.
DEFAULT_SIGN_IN_RATE = 0.2
DEFAULT_SIGN_IN_BURST = 10
# Open sockets (tabs) one session, and one user over all sessions, may hold.
DEFAULT_SOCKETS_PER_SESSION = 5
DEFAULT_SOCKETS_PER_USER = 10
# Signed-in sessions kept per user and in all; beyond either, the oldest are
# signed out.
DEFAULT_SESSIONS_PER_USER = 5
DEFAULT_MAX_SESSIONS = 100_000
# Stored history: the newest messages kept per room, and in the whole database.
DEFAULT_HISTORY_PER_ROOM = 500
DEFAULT_MAX_STORED_MESSAGES = 100_000
# ... and at most this many bytes of message text (UTF-8) in the database: 100,000
# messages of 2,000 four-byte characters would be 800 MB.
DEFAULT_MAX_STORED_BYTES = 64 * 1024 * 1024
# Bytes a socket may have waiting to be sent (beyond the frame being queued)
# before it is cut: a client that stops reading pins at most this much.
DEFAULT_BACKPRESSURE_LIMIT = 1024 * 1024
# Seconds of silence from a client before it is pinged and then closed.
DEFAULT_IDLE_TIMEOUT = 60.0
# Addresses whose sign-in buckets are remembered at once.
DEFAULT_MAX_KEYS = 10_000
# The IPv6 prefix limited as one client: a /64 is the smallest network an ISP
# routes to one subscriber, who may use any of its 2**64 addresses.
IPV6_CLIENT_PREFIX = 64


def address_key(address: str | None) -> str:
    """The key under which a client address is rate limited.

    An IPv4 address is its own key, whether it arrives as ``203.0.113.7`` or
    IPv4-mapped in IPv6 (``::ffff:203.0.113.7``, from a dual-stack socket); an
    IPv6 address is keyed on its /64 (``2001:db8:1:2::/64``), since one
    subscriber holds a whole /64. Anything else (``None``, a Unix socket) is
    returned as is, ``None`` as ``""``.
    """
    if not address:
        return ""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        shift = 128 - IPV6_CLIENT_PREFIX
        return str(
            ipaddress.IPv6Network((int(ip) >> shift << shift, IPV6_CLIENT_PREFIX))
        )
    return str(ip)


@dataclass(frozen=True)
class Limits:
    """Every limit and cap of the chat (the defaults are the module's constants).

    Raises:
        ValueError: a rate, burst, cap or size is not positive.
    """

    message_rate: float = DEFAULT_MESSAGE_RATE
    message_burst: int = DEFAULT_MESSAGE_BURST
    strikes: int = DEFAULT_STRIKES
    sign_in_rate: float = DEFAULT_SIGN_IN_RATE
    sign_in_burst: int = DEFAULT_SIGN_IN_BURST
    sockets_per_session: int = DEFAULT_SOCKETS_PER_SESSION
    sockets_per_user: int = DEFAULT_SOCKETS_PER_USER
    sessions_per_user: int = DEFAULT_SESSIONS_PER_USER
    max_sessions: int = DEFAULT_MAX_SESSIONS
    history_per_room: int = DEFAULT_HISTORY_PER_ROOM
    max_stored_messages: int = DEFAULT_MAX_STORED_MESSAGES
    max_stored_bytes: int = DEFAULT_MAX_STORED_BYTES
    backpressure_limit: int = DEFAULT_BACKPRESSURE_LIMIT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    frame_rate: float = DEFAULT_FRAME_RATE
    frame_burst: int = DEFAULT_FRAME_BURST
    byte_rate: float = DEFAULT_BYTE_RATE
    byte_burst: int = DEFAULT_BYTE_BURST

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")

    def rate_limit(self) -> RateLimit:
        """The library's per-socket limit: ``frame_rate`` and ``byte_rate``."""
        return RateLimit(
            frames_per_second=self.frame_rate,
            bytes_per_second=self.byte_rate,
            frame_burst=self.frame_burst,
            byte_burst=self.byte_burst,
        )


class Verdict(enum.Enum):
    """What to do with one frame, as decided by :meth:`FloodGuard.check`."""

    ALLOW = "allow"  # handle it
    WARN = "warn"  # drop it and send one error frame
    DROP = "drop"  # drop it silently
    CLOSE = "close"  # drop it and close the socket with 1008


class FloodGuard:
    """The frame budget of one user, shared by all their sessions' sockets.

    The first frame over budget is answered with an error frame; the next ones
    are dropped without an answer (answering each would send the flooder as much
    as it sends), and once ``strikes`` frames in a row were refused the socket is
    closed. A frame allowed again ends the streak.
    """

    __slots__ = ("_refused", "bucket", "strikes")

    def __init__(self, rate: float, burst: int, strikes: int) -> None:
        self.bucket = TokenBucket(rate, burst)
        self.strikes = strikes
        self._refused = 0

    def check(self, now: float) -> Verdict:
        """Decide about one frame arriving at ``now``."""
        if self.bucket.take(now):
            self._refused = 0
            return Verdict.ALLOW
        self._refused += 1
        if self._refused == 1:
            return Verdict.WARN
        if self._refused > self.strikes:
            return Verdict.CLOSE
        return Verdict.DROP


class KeyedLimiter:
    """One :class:`TokenBucket` per key, at most ``max_keys`` of them.

    When a new key would exceed ``max_keys``, the least recently used key is
    forgotten (it starts again with a full bucket): an attacker with more
    addresses than that gains nothing a single one would not.
    """

    def __init__(
        self, rate: float, burst: int, max_keys: int = DEFAULT_MAX_KEYS
    ) -> None:
        if max_keys <= 0:
            raise ValueError("max_keys must be positive")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: float) -> float:
        """Take a token of ``key``'s bucket at ``now``.

        Returns:
            ``0.0`` when allowed, else the seconds until the key may try again.
        """
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self.rate, self.burst)
            self._buckets[key] = bucket
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        if bucket.take(now):
            return 0.0
        return max(bucket.retry_after(now), 1e-3)
