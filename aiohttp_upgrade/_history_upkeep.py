"""What :class:`~aiohttp_upgrade._history.History` does besides delivering:
filling a gap from the history (:func:`repair`), freeing memory on a timer
(:func:`arm`), and the skip slot of a record for ``exclude``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Final

from ._errors import InvalidStateError
from ._history_local import HistoryUnavailable, Slice

if TYPE_CHECKING:
    from ._history import History, Track
    from ._hub import SocketPort

__all__ = ["SWEEP_INTERVAL", "arm", "log_failure", "repair", "skipped"]

logger = logging.getLogger("aiohttp_upgrade")

SWEEP_INTERVAL: Final = 5.0  # seconds between sweeps, while history is in use


async def repair(
    history: History,
    topic: str,
    track: Track,
    read: Callable[[str, int], Awaitable[Slice]],
) -> None:
    """Read what this process missed of ``topic`` after ``track.last`` and
    deliver it in order (a read again when ``check`` ran meanwhile)."""
    try:
        while track.last is not None:
            last, epoch = track.last, track.epoch
            chunk = await read(topic, last)
            if chunk.epoch != epoch or track.last != last:
                if chunk.epoch != epoch:
                    break  # a new history: accept() starts over with it
                continue
            if not chunk.complete:
                skip(history, topic, track, chunk)
            history.accept(topic, chunk.epoch, [(*item, None) for item in chunk.items])
            if track.last is None or chunk.last <= track.last:
                if not track.again:
                    break  # caught up with the history as read
                track.again = False
    except (HistoryUnavailable, InvalidStateError) as exc:
        logger.warning("reading the history of %r failed: %s", topic, exc)
        skip(history, topic, track, None)
    finally:
        track.repair = None
        track.again = False
    if track.held:
        history.accept(topic, track.epoch or "", [])


def skip(history: History, topic: str, track: Track, chunk: Slice | None) -> None:
    """Messages are gone from the history before this process got them:
    deliver on from the oldest one kept (counted in ``history.gaps``)."""
    first = chunk.items[0][0] if chunk and chunk.items else None
    if first is None and track.held:
        first = min(track.held)
    if first is None and chunk is not None:
        first = chunk.last + 1  # nothing after track.last is kept
    if first is None or track.last is None or first <= track.last + 1:
        return
    history.gaps += first - track.last - 1
    logger.warning("%d messages of %r lost here", first - track.last - 1, topic)
    track.last = first - 1


def log_failure(task: asyncio.Task[None]) -> None:
    """A repair's done callback: an unexpected exception is logged, not lost."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.error("repairing a history topic failed", exc_info=exc)


def arm(tick: Callable[[], None]) -> asyncio.TimerHandle | None:
    """Call ``tick`` (a sweep) in ``SWEEP_INTERVAL`` seconds (None outside a
    loop: armed by the next delivery)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return loop.call_later(SWEEP_INTERVAL, tick)


def skipped(sender: SocketPort | None, exclude: Iterable[object]) -> frozenset[object]:
    """The sockets a publish skips, as a record carries them: the ``exclude``
    sockets and the sender's (a record's skip is a port, this set, or None)."""
    excluded = set(exclude)
    if sender is not None:
        excluded.add(sender.ws)
    return frozenset(excluded)
