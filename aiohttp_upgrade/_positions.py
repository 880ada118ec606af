"""Positions in a topic's history, history policies, resume results and the
formatting of stored messages. Pure, no I/O.

A :class:`Position` is ``(epoch, offset)``: the offset grows by one per message
published to the topic, the same on every process; the epoch names one history
and changes when that history was lost (a Redis restarted without persistence,
a flush, an in-process server restarted). ``str(position)`` is
``"<epoch>:<offset>"`` and :meth:`Position.parse` reads it back, so a position
travels in an application's own wire format as a short string.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, NamedTuple

from ._errors import InvalidOptionError
from ._frames import OP_BINARY, OP_TEXT

__all__ = [
    "DEFAULT_HISTORY_SIZE",
    "DEFAULT_HISTORY_TTL",
    "MAX_OFFSET",
    "Format",
    "Policy",
    "PolicyTable",
    "Position",
    "Resumed",
    "data_of",
    "formatted",
    "parse_since",
]

logger = logging.getLogger("aiohttp_upgrade")

DEFAULT_HISTORY_SIZE: Final = 1000
DEFAULT_HISTORY_TTL: Final = 300.0
# Offsets stay exact in a Lua number (a double) and in JavaScript.
MAX_OFFSET: Final = 2**53 - 1
_TEXT: Final = re.compile(r"([0-9a-f]{1,32}):([0-9]{1,16})")
_EPOCH: Final = re.compile(r"[0-9a-f]{1,32}")


class Position(NamedTuple):
    """Where a message is in its topic's history: ``(epoch, offset)``.

    ``offset`` is 1 for the first message of an epoch; a position with offset 0
    is the start of an epoch, before any message.
    """

    epoch: str
    offset: int

    def __str__(self) -> str:
        return f"{self.epoch}:{self.offset}"

    @classmethod
    def parse(cls, text: str) -> Position:
        """Read ``"<epoch>:<offset>"`` (as ``str()`` writes it).

        Raises:
            ValueError: ``text`` is not a position (garbage, a negative or
                oversized offset, an epoch that is not 1-32 lowercase hex digits).
        """
        match = _TEXT.fullmatch(text) if isinstance(text, str) else None
        if match is None or int(match.group(2)) > MAX_OFFSET:
            raise ValueError(f"not a history position: {text!r:.80}")
        return cls(match.group(1), int(match.group(2)))


def parse_since(since: object) -> Position | None:
    """A resume position from what a client sent: a :class:`Position` or its
    string; None for anything else (garbage, a negative offset...)."""
    if isinstance(since, Position):
        epoch, offset = since
        if (
            isinstance(epoch, str)
            and _EPOCH.fullmatch(epoch)
            and type(offset) is int
            and 0 <= offset <= MAX_OFFSET
        ):
            return since
        return None
    if isinstance(since, str):
        try:
            return Position.parse(since)
        except ValueError:
            return None
    return None


Format = Callable[[Position, "str | bytes"], "str | bytes"]
"""``format(position, data)``: the message subscribers get for ``data`` published
at ``position`` (a str is sent as text, bytes as binary)."""


@dataclass(frozen=True, slots=True)
class Policy:
    """The history of one topic (or of every topic under a prefix).

    ``size`` messages at most, each kept ``ttl`` seconds at most; ``format``
    puts the position into the message, once per process per message.
    """

    size: int
    ttl: float
    format: Format | None

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise InvalidOptionError("size", f"must be an int, got {self.size!r}")
        if not 0 < self.size <= 1_000_000:
            raise InvalidOptionError("size", f"must be 1-1000000, got {self.size}")
        ttl = self.ttl
        if isinstance(ttl, bool) or not isinstance(ttl, int | float):
            raise InvalidOptionError("ttl", f"must be a number, got {ttl!r}")
        if not (math.isfinite(ttl) and 0 < ttl <= 30 * 86400):
            raise InvalidOptionError("ttl", f"must be > 0 and <= 30 days, got {ttl}")
        if self.format is not None and not callable(self.format):
            raise InvalidOptionError("format", "must be callable or None")


class PolicyTable:
    """Which topics keep history: exact names and prefixes (longest wins).

    :meth:`get` is one dict lookup for a topic seen before (the answer for
    prefixes is cached, the cache bounded).
    """

    __slots__ = ("_cache", "_exact", "_prefixes")

    CACHE_SIZE: Final = 10_000

    def __init__(self) -> None:
        self._exact: dict[str, Policy] = {}
        self._prefixes: list[tuple[str, Policy]] = []
        self._cache: dict[str, Policy | None] = {}

    def __bool__(self) -> bool:
        return bool(self._exact or self._prefixes)

    def add(self, topic: str, policy: Policy, prefix: bool) -> None:
        """Set the policy of ``topic`` (or of every topic starting with it)."""
        if prefix:
            kept = [(p, pol) for p, pol in self._prefixes if p != topic]
            kept.append((topic, policy))
            kept.sort(key=lambda item: len(item[0]), reverse=True)
            self._prefixes = kept
        else:
            self._exact[topic] = policy
        self._cache.clear()

    def get(self, topic: str) -> Policy | None:
        """The policy of ``topic``, or None if it keeps no history."""
        cache = self._cache
        try:
            return cache[topic]
        except KeyError:
            pass
        policy = self._exact.get(topic)
        if policy is None:
            for prefix, candidate in self._prefixes:
                if topic.startswith(prefix):
                    policy = candidate
                    break
        if len(cache) >= self.CACHE_SIZE:
            cache.clear()
        cache[topic] = policy
        return policy


@dataclass(frozen=True, slots=True)
class Resumed:
    """What :meth:`History.resume` did.

    Attributes:
        recovered: True when every message after ``since`` was delivered (or
            ``since`` was None and there was nothing to recover); False when
            the client must reload its state: ``reason`` says why.
        position: the position of the last message of the topic delivered to
            the socket by the resume, or the topic's position when nothing was
            replayed; None only when the history could not be read.
        replayed: how many missed messages were delivered.
        reason: ``""`` when recovered, else one of ``"invalid"`` (``since`` was
            not a position), ``"epoch"`` (the history it names is gone),
            ``"too_old"`` (messages after it were trimmed), ``"future"`` (an
            offset past the last message), ``"unavailable"`` (the history
            could not be read: Redis unreachable), ``"dropped"`` (the socket
            fell over its backpressure limit or closed during the replay),
            ``"subscribed"`` (the socket was subscribed already: nothing done)
            or ``"closed"`` (the socket is closed: nothing done).
    """

    recovered: bool
    position: Position | None
    replayed: int = 0
    reason: str = ""


def data_of(opcode: int, payload: bytes) -> str | bytes:
    """A stored payload as it was published (text decoded)."""
    return payload.decode(errors="replace") if opcode == OP_TEXT else payload


def formatted(
    policy: Policy | None, epoch: str, offset: int, opcode: int, payload: bytes
) -> tuple[int, bytes, object]:
    """(opcode, payload, message) subscribers get for a stored message: what the
    policy's ``format`` returns, or the message as published. A ``format`` that
    raises or returns something else is logged and the message goes as
    published (a client then sees it without a position, never not at all)."""
    data = data_of(opcode, payload)
    if policy is None or policy.format is None:
        return opcode, payload, data
    try:
        result = policy.format(Position(epoch, offset), data)
    except Exception:
        logger.exception("history format() failed; the message is sent as published")
        return opcode, payload, data
    if type(result) is str:
        return OP_TEXT, result.encode(), result
    if isinstance(result, bytes | bytearray | memoryview):
        result = bytes(result)
        return OP_BINARY, result, result
    logger.error("history format() returned %s, not str or bytes", type(result))
    return opcode, payload, data
