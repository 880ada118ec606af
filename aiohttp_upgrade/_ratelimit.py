"""Rate limits: what a client may send per second, counted per socket.

:class:`RateLimit` is the handler option (``rate_limit=``): frames and bytes per
second, each with a burst. Every frame counts (pings, pongs, empty and
continuation frames, not only complete messages), and every byte read.

The cost is per read, not per frame: the parser counts frames
(``FrameParser.frames``, one increment per frame), and :class:`ReadLimiter`,
which stands between the connection and its parser only when a limit is set,
compares that count and the bytes read with the marks at which the budget runs
dry, once after each read. Only a read that crosses a mark reads the clock
(:meth:`ReadBudget.settle`): the budget is refilled then, for the time since it
last was (so after a quiet spell a socket may send up to twice the burst at once;
over any longer run the rate holds). A read is counted whole: what it holds
beyond the budget is a debt, paid before the socket is read again.

Each read is also kept to about the budget left (:mod:`._readsize`).

Past the budget (the app's choice):

- the handler has a ``rate_limited`` hook: it is called (once until the debt is
  paid) and the socket is not read until then (TCP pushes back on the client);
- it has none: the socket is closed with 1008 (policy violation).

:class:`TokenBucket` is the same arithmetic for an app's own limits (per user,
per address), one action at a time.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from ._closecode import CloseCode
from ._counters import Counters
from ._errors import InvalidOptionError
from ._hooks import Kind
from ._pausing import RATE as _RATE
from ._readsize import fit_read

if TYPE_CHECKING:
    from ._parser import Chunk, FrameParser
    from ._websocket import SocketContext

__all__ = [
    "MAX_PAUSE",
    "RateLimit",
    "ReadBudget",
    "ReadLimiter",
    "TokenBucket",
    "limit_reads",
]

logger = logging.getLogger("aiohttp_upgrade")

MAX_PAUSE: Final = 1.0
"""Longest single pause (seconds): a longer debt is paused in steps, so that a
connection that is gone is let go of within a second."""

_OPTION: Final = "rate_limit"
_UNLIMITED: Final = math.inf
_NO_MARKS: Final = (_UNLIMITED, _UNLIMITED)
_RATE_LIMITED: Final = Kind.RATE_LIMITED
_POLICY_VIOLATION: Final = CloseCode.POLICY_VIOLATION
_OPEN: Final = 1  # ReadyState.OPEN


def _rate(name: str, value: object) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value > 0)
    ):
        raise InvalidOptionError(
            _OPTION, f"{name} must be a finite number > 0, got {value!r}"
        )
    return float(value)


def _burst(name: str, value: object, rate: float | None) -> int | None:
    if value is None:
        return None if rate is None else max(1, math.ceil(rate))
    if type(value) is not int or value < 1:
        raise InvalidOptionError(_OPTION, f"{name} must be an int >= 1, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class RateLimit:
    """What one socket may send: the ``rate_limit`` handler option.

    Args:
        frames_per_second: frames of any kind (pings, pongs, continuations and
            empty frames included) per second over time; None: not limited.
        bytes_per_second: bytes read per second over time (frame headers
            included); None: not limited.
        frame_burst: frames a socket may send at once on top of the rate (it
            starts with a full burst); default: one second's worth.
        byte_burst: the same for bytes; default: one second's worth.

    Raises:
        InvalidOptionError: neither rate is given, a rate is not a finite number
            > 0, or a burst is not an int >= 1.
    """

    frames_per_second: float | None = None
    bytes_per_second: float | None = None
    frame_burst: int | None = None
    byte_burst: int | None = None

    def __post_init__(self) -> None:
        frames = _rate("frames_per_second", self.frames_per_second)
        nbytes = _rate("bytes_per_second", self.bytes_per_second)
        if frames is None and nbytes is None:
            raise InvalidOptionError(
                _OPTION, "give frames_per_second, bytes_per_second or both"
            )
        set_ = object.__setattr__
        set_(self, "frame_burst", _burst("frame_burst", self.frame_burst, frames))
        set_(self, "byte_burst", _burst("byte_burst", self.byte_burst, nbytes))


def check_rate_limit(name: str, value: Any) -> RateLimit | None:
    """The option's validator: None or a :class:`RateLimit`."""
    if value is not None and not isinstance(value, RateLimit):
        raise InvalidOptionError(name, f"must be None or a RateLimit, got {value!r}")
    return value


class ReadBudget:
    """The frame and byte budget of one socket, in counts since it opened. Pure.

    ``frame_mark`` and ``byte_mark`` are the counts at which the budget runs dry:
    a reader compares its running counts with them after each read and calls
    :meth:`settle` only when one is crossed.
    """

    __slots__ = (
        "_byte_burst",
        "_byte_rate",
        "_frame_burst",
        "_frame_rate",
        "_stamp",
        "byte_mark",
        "frame_mark",
    )

    def __init__(self, limit: RateLimit, now: float) -> None:
        self._frame_rate = limit.frames_per_second
        self._byte_rate = limit.bytes_per_second
        self._frame_burst = limit.frame_burst
        self._byte_burst = limit.byte_burst
        self._stamp = now
        self.frame_mark: float = limit.frame_burst or _UNLIMITED
        self.byte_mark: float = limit.byte_burst or _UNLIMITED

    def settle(self, now: float, frames: int, nbytes: int) -> float:
        """Refill for the time since the last settle (a clock stepping back
        refills nothing) and move the marks; return 0.0 when ``frames`` and
        ``nbytes`` are within the budget, else the seconds until the debt is paid.
        """
        elapsed = now - self._stamp
        if elapsed > 0:
            self._stamp = now
        else:
            elapsed = 0.0
        wait = 0.0
        rate, burst = self._frame_rate, self._frame_burst
        if rate is not None and burst is not None:
            left = min(float(burst), self.frame_mark - frames + elapsed * rate)
            self.frame_mark = frames + left
            wait = max(wait, -left / rate)
        rate, burst = self._byte_rate, self._byte_burst
        if rate is not None and burst is not None:
            left = min(float(burst), self.byte_mark - nbytes + elapsed * rate)
            self.byte_mark = nbytes + left
            wait = max(wait, -left / rate)
        return wait


class LimitedConnection(Protocol):
    """What a :class:`ReadLimiter` needs of its connection."""

    @property
    def id(self) -> int:
        """The connection's number in log lines."""

    @property
    def ws(self) -> Any:
        """The socket's facade (its ``ready_state`` and ``close``)."""

    @property
    def dispatcher(self) -> Any:
        """The socket's dispatcher (``dispatch``)."""

    @property
    def transport(self) -> asyncio.Transport:
        """The socket's transport (``is_closing``)."""

    def pause_reading(self, reason: int) -> None:
        """Stop reading from the client for ``reason`` (``_pausing.RATE``)."""

    def resume_reading(self, reason: int) -> None:
        """Let go of ``reason``: read again unless another reason holds."""

    def read_into(self, buffer: memoryview) -> None:
        """Read into ``buffer`` from now on (a view of the server's buffer)."""


class ReadLimiter:
    """Feeds a socket's parser and keeps the socket within its :class:`RateLimit`
    (see the module docstring). It takes the parser's place in the connection,
    only when a limit is set.

    ``received`` is the bytes read so far; ``buffer`` is the server's read
    buffer, of which the connection is given views sized to the budget.
    """

    __slots__ = (
        "_budget",
        "_buffer",
        "_byte_mark",
        "_clock",
        "_conn",
        "_counters",
        "_feed",
        "_fit_bytes",
        "_fit_frames",
        "_frame_mark",
        "_hooked",
        "_limited",
        "_parser",
        "_size",
        "_timer",
        "received",
    )

    def __init__(
        self,
        connection: LimitedConnection,
        parser: FrameParser,
        limit: RateLimit,
        hooked: bool,
        counters: Counters,
        buffer: memoryview,
        clock: Any = time.monotonic,
    ) -> None:
        self._conn = connection
        self._counters = counters
        self._parser = parser
        self._feed = parser.feed
        self._hooked = hooked
        self._clock = clock
        self._budget = budget = ReadBudget(limit, clock())
        self._frame_mark = budget.frame_mark  # the budget's, copied: one hop less
        self._byte_mark = budget.byte_mark
        self._limited = False
        self._timer: asyncio.TimerHandle | None = None
        self.received = 0
        self._buffer = buffer
        self._size = len(buffer)
        self._fit(True)

    def feed(self, data: Chunk) -> None:
        """Parse ``data``, check the budget (two comparisons when within it) and
        size the next read to it."""
        self._feed(data)
        received = self.received = self.received + len(data)
        frames = self._parser.frames
        if received > self._byte_mark or frames > self._frame_mark:
            self._over()
        if received > self._fit_bytes or frames > self._fit_frames:
            self._fit(self._conn.ws.ready_state == _OPEN)

    def _fit(self, limited: bool) -> None:
        """Size the next read to the budget left; in full once not ``limited``."""
        parser, full = self._parser, len(self._buffer)
        marks = (self._frame_mark, self._byte_mark) if limited else _NO_MARKS
        size, self._fit_frames, self._fit_bytes = fit_read(
            parser.frames, marks[0], self.received, marks[1], parser.needed, full
        )
        if size != self._size:
            self._size = size
            self._conn.read_into(self._buffer[:size])

    def _settle(self) -> float:
        budget = self._budget
        wait = budget.settle(self._clock(), self._parser.frames, self.received)
        self._frame_mark = budget.frame_mark
        self._byte_mark = budget.byte_mark
        return wait

    def _over(self) -> None:
        """A mark is crossed: settle the budget; past it, act."""
        wait = self._settle()
        conn = self._conn
        if not wait or conn.ws.ready_state != _OPEN:
            return
        if not self._hooked:
            self._counters.rate_limited += 1
            logger.info("conn %d: closing: rate limit exceeded", conn.id)
            conn.ws.close(_POLICY_VIOLATION, "rate limit exceeded")
            return
        conn.pause_reading(_RATE)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(
                min(wait, MAX_PAUSE), self._resume
            )
        if not self._limited:
            self._limited = True
            self._counters.rate_limited += 1
            conn.dispatcher.dispatch(_RATE_LIMITED)

    def _resume(self) -> None:
        """The pause is over: read again once the debt is paid (else pause on)."""
        self._timer = None
        conn = self._conn
        if conn.transport.is_closing():
            return
        wait = self._settle()
        if wait:
            self._timer = asyncio.get_running_loop().call_later(
                min(wait, MAX_PAUSE), self._resume
            )
            return
        self._limited = False
        self._fit(True)
        conn.resume_reading(_RATE)


def limit_reads(
    connection: LimitedConnection, parser: FrameParser, context: SocketContext
) -> FrameParser | ReadLimiter:
    """What a connection feeds its reads to: ``parser`` itself when the handler
    sets no ``rate_limit`` (no cost), else a :class:`ReadLimiter` in front of it."""
    limit = context.options.rate_limit
    if limit is None:
        return parser
    hooked = context.hooks[_RATE_LIMITED] is not None
    return ReadLimiter(
        connection, parser, limit, hooked, context.counters, context.read_buffer
    )


class TokenBucket:
    """``burst`` tokens, refilled continuously at ``rate`` tokens per second, for
    an app's own limits (per user, per address). Pure: time is passed in as
    ``now`` (seconds, any origin).

    Starts full. A clock that steps backwards refills nothing.

    Raises:
        ValueError: ``rate`` or ``burst`` is not positive.
    """

    __slots__ = ("_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int) -> None:
        if not rate > 0 or not burst > 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp: float | None = None

    def _refill(self, now: float) -> None:
        stamp = self._stamp
        if stamp is not None and now > stamp:
            self._tokens = min(
                float(self.burst), self._tokens + (now - stamp) * self.rate
            )
        if stamp is None or now > stamp:
            self._stamp = now

    def take(self, now: float, amount: float = 1.0) -> bool:
        """Take ``amount`` tokens at ``now``; False (and nothing taken) if fewer
        are there."""
        self._refill(now)
        if self._tokens >= amount:
            self._tokens -= amount
            return True
        return False

    def retry_after(self, now: float, amount: float = 1.0) -> float:
        """Seconds from ``now`` until ``amount`` tokens are there (0 when they are)."""
        self._refill(now)
        return max(0.0, (amount - self._tokens) / self.rate)

    def is_full(self, now: float) -> bool:
        """True when the bucket is as a fresh one: forgetting it changes nothing."""
        self._refill(now)
        return self._tokens >= self.burst
