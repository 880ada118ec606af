"""Rolling drain: a shutdown that spreads its closes over a window.

Closing every socket in the same millisecond sends every client back at once (to
the next instance of a deploy, or to this one once it restarts). With a drain the
sockets are closed in batches :data:`DRAIN_STEP` apart, oldest first, over
``drain`` seconds; a cancelled drain closes the rest at once, so that the bound
of a shutdown (``drain + shutdown_timeout``) holds even under a supervisor's
deadline.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Final, TypeVar

__all__ = ["DRAIN_STEP", "close_spread", "drain_plan"]

logger = logging.getLogger("aiohttp_upgrade")

DRAIN_STEP: Final = 0.01
"""Seconds between two batches of a drain at most: 100 wake-ups a second."""

P = TypeVar("P")


def drain_plan(
    count: int, seconds: float, step: float = DRAIN_STEP
) -> list[tuple[float, int, int]]:
    """Batches ``(offset, start, stop)``: sockets ``[start, stop)`` close ``offset``
    seconds into the drain. As many batches as fit ``step`` apart in ``seconds``
    (at most one per socket), evenly sized, the first at 0, the last before
    ``seconds``; without a drain, one batch at 0."""
    if count <= 0:
        return []
    if seconds <= 0:
        return [(0.0, 0, count)]
    batches = max(1, min(count, round(seconds / step)))
    return [
        (
            seconds * index / batches,
            count * index // batches,
            count * (index + 1) // batches,
        )
        for index in range(batches)
    ]


async def close_spread(
    items: Sequence[P], seconds: float, close: Callable[[P], None]
) -> None:
    """Call ``close(item)`` for every item, spread over ``seconds`` by
    :func:`drain_plan`. One that raises is logged and the others still close; if
    the drain is cancelled, every item not closed yet is closed before the
    cancellation propagates."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    done = 0
    try:
        for offset, first, stop in drain_plan(len(items), seconds):
            delay = start + offset - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            _close_each(items[first:stop], close)
            done = stop
    finally:
        _close_each(items[done:], close)


def _close_each(items: Sequence[P], close: Callable[[P], None]) -> None:
    for item in items:
        try:
            close(item)
        except Exception:
            logger.exception("shutting %r down failed", item)
