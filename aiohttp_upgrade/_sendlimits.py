"""How much a socket may hold in its pending output (``_outbox``): pure.

The limit (``backpressure_limit``) measures the client, not the sender: the
bytes waiting in the transport's write buffer when this socket's first send of
the current loop turn came, which the client had at least one turn to take
(everything sent earlier was written by then). What this turn sends is not
counted against it, so one burst larger than the limit reaches a client that
reads, and from the next turn on, a client that took too little of it misses
messages (or is closed). Within a turn, :func:`hard_limit` bounds the burst: a
send is dropped while the socket holds more than ``max(4 x limit, 64 MiB)``
bytes, so memory per client is bounded by that plus one frame however many sends
one turn makes.
"""

from __future__ import annotations

from typing import Final

__all__ = ["FLUSH_THRESHOLD", "HARD_LIMIT_FACTOR", "HARD_LIMIT_FLOOR", "hard_limit"]

FLUSH_THRESHOLD: Final = 64 * 1024
"""Pending bytes at which a send writes at once instead of at the end of the turn."""

# The bound on one turn's burst. A turn can send without end (one read of ~10,000
# tiny frames, each answered with a large send, to a client that never reads), so
# what the transport holds must be capped within the turn too. 4 x the limit lets a
# burst three times the limit onto a client already at it, and the 64 MiB floor
# keeps a small limit (256 KiB, for slow clients) from cutting an ordinary burst
# (a history replay, 32 MiB in tests/test_backpressure_burst.py) to a reader. With
# the default 16 MiB limit both give 64 MiB.
HARD_LIMIT_FACTOR: Final = 4
HARD_LIMIT_FLOOR: Final = 64 * 1024 * 1024


def hard_limit(limit: int) -> int:
    """The most a socket may hold buffered before a send is dropped even within the
    turn that queued it: ``max(HARD_LIMIT_FACTOR x limit, HARD_LIMIT_FLOOR)``."""
    return max(HARD_LIMIT_FACTOR * limit, HARD_LIMIT_FLOOR)
