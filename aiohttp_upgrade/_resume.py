"""One resume: the replay of a socket's missed messages, then the hand-over to live.

The socket is subscribed and *held* (live messages of the topic skip it) while
:class:`Replay` reads the history after the client's position and sends it, a
chunk per loop turn and never past the socket's backpressure. When the replay
has caught up with what this process delivered live, the rest comes from the
track's ``recent`` ring in the same turn and the hold is lifted: no gap, no
duplicate. When this process is behind the history (messages replayed from
Redis not yet received live), the socket stays held up to the last one replayed
and takes live messages from the next offset on.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from ._history_local import HistoryUnavailable, Item, Slice
from ._positions import Policy, Position, Resumed, formatted
from ._protocol import ReadyState

if TYPE_CHECKING:
    from ._history import History, Track
    from ._hub import SocketPort
    from ._websocket import ServerWebSocket

__all__ = ["CHUNK", "READ_CHUNK", "Replay"]

CHUNK: Final = 32  # replayed messages per loop turn (one write) at most
READ_CHUNK: Final = 100  # messages per read of the history (0.5 ms to decode)
# A replay waits while more than this is buffered for the socket (and at most a
# quarter of its backpressure limit), so it never makes the socket drop.
MAX_BUFFERED: Final = 256 * 1024
_OPEN: Final = ReadyState.OPEN


class Replay:
    """The replay of ``topic`` to one held socket (``port`` is its connection)."""

    def __init__(
        self,
        history: History,
        ws: ServerWebSocket[Any],
        port: SocketPort,
        topic: str,
        policy: Policy,
        track: Track,
        token: int,
    ) -> None:
        self.history = history
        self.ws = ws
        self.port = port
        self.topic = topic
        self.policy = policy
        self.track = track
        self.token = token  # this resume's hold value (track.hold[port])
        self.buffered = min(MAX_BUFFERED, max(history.backpressure_limit // 4, 1))

    async def run(self, wanted: Position | None, given: bool) -> Resumed:
        """Replay from ``wanted`` (None: nothing, or invalid when ``given``)."""
        fetch = self.history.fetcher()
        topic, policy = self.topic, self.policy
        try:
            after = wanted.offset if wanted is not None else 0
            chunk = await fetch(topic, policy, after, READ_CHUNK if wanted else 0)
        except HistoryUnavailable:
            return Resumed(False, None, 0, "unavailable")
        reason = _verdict(wanted, given, chunk)
        epoch = chunk.epoch
        if reason or wanted is None:  # nothing to replay: live from the newest
            live = self.track.last if self.track.epoch == epoch else None
            after = max(chunk.last, live or 0)
        replayed = 0
        while True:
            sent, after, ok = await self._send(chunk.items, after, epoch)
            replayed += sent
            if not ok or not self._current():
                return self._finish(epoch, after, replayed, "dropped")
            track = self.track
            live = track.last if track.epoch == epoch else None
            if live is not None and live > after and self._covered(after):
                after = self._send_recent(after)
            elif chunk.last > after or (live is not None and live > after):
                try:
                    chunk = await fetch(topic, policy, after, READ_CHUNK)
                except HistoryUnavailable:
                    return self._finish(epoch, after, replayed, "unavailable")
                if chunk.epoch != epoch or not chunk.complete:
                    reason = "epoch" if chunk.epoch != epoch else "too_old"
                    epoch, after = chunk.epoch, chunk.last
                continue
            return self._finish(epoch, after, replayed, reason)

    async def _send(
        self, items: list[Item], after: int, epoch: str
    ) -> tuple[int, int, bool]:
        """Send the items after ``after``, a corked chunk (one write) per loop
        turn; return (sent, last sent, socket ok)."""
        total = 0
        for start in range(0, len(items), CHUNK):
            if not self._current():
                return total, after, False
            chunk = partial(self._chunk, items[start : start + CHUNK], after, epoch)
            sent, after, ok = self.ws.cork(chunk)
            total += sent
            if not ok:
                return total, after, False
            if sent:
                await self._breathe()
        return total, after, True

    def _chunk(
        self, items: list[Item], after: int, epoch: str, ws: Any
    ) -> tuple[int, int, bool]:
        outbox, policy = self.port.outbox, self.policy
        sent = 0
        for offset, opcode, payload, compress in items:
            if offset <= after:
                continue
            opcode, data, message = formatted(policy, epoch, offset, opcode, payload)
            code = outbox.send(opcode, data, compress, message)
            if code == 0 and (data or ws.ready_state is not _OPEN):
                return sent, after, False
            after = offset
            sent += 1
        return sent, after, True

    async def _breathe(self) -> None:
        """Let other sockets run, and the socket's buffer drain."""
        await asyncio.sleep(0)
        ws = self.ws
        # No event tells a coroutine that a socket's buffer drained (the drain
        # hook is the handler's): look again every few milliseconds.
        while ws.get_buffered_amount() > self.buffered and ws.ready_state is _OPEN:  # noqa: ASYNC110
            await asyncio.sleep(0.002)

    def _current(self) -> bool:
        """The socket is still subscribed and held by this resume (not
        unsubscribed, closed, or resumed again since)."""
        held = self.track.hold.get(self.port) == self.token
        return held and self.ws.is_subscribed(self.topic)

    def _covered(self, after: int) -> bool:
        """The ring holds every live message after ``after`` (without a hole:
        it is only filled while a resume runs)."""
        recent = self.track.recent
        return (
            bool(recent)
            and recent[0][0] <= after + 1
            and recent[-1][0] - recent[0][0] == len(recent) - 1
        )

    def _send_recent(self, after: int) -> int:
        """Send, in this turn and one write, what was delivered live after
        ``after``."""
        return self.ws.cork(partial(self._recent, after))

    def _recent(self, after: int, ws: Any) -> int:
        outbox = self.port.outbox
        for offset, opcode, payload, compress, message in self.track.recent:
            if offset > after:
                outbox.send(opcode, payload, compress, message)
                after = offset
        return after

    def _finish(self, epoch: str, after: int, replayed: int, reason: str) -> Resumed:
        """Hand the socket over to live delivery (synchronously)."""
        track, port, history = self.track, self.port, self.history
        if not self._current():  # the hold is not this resume's to hand over
            return Resumed(False, Position(epoch, after), replayed, "dropped")
        if track.epoch != epoch or track.last is None:
            # This process delivers nothing of the topic yet: live starts after.
            track.epoch, track.last = epoch, after
            track.recent.clear()
            track.hold.pop(port, None)
            history.check(self.topic, track)
        elif track.last < after:
            track.hold[port] = after  # replayed ahead of the live messages here
            history.check(self.topic, track)
        else:
            track.hold.pop(port, None)
        if not track.hold:
            track.recent.clear()  # only filled, without a hole, while held
        return Resumed(not reason, Position(epoch, after), replayed, reason)


def _verdict(wanted: Position | None, given: bool, chunk: Slice) -> str:
    """Why the messages after ``wanted`` cannot be replayed, or ``""``."""
    if wanted is None:
        return "invalid" if given else ""
    if wanted.epoch != chunk.epoch:
        return "epoch"
    if wanted.offset > chunk.last:
        return "future"
    if not chunk.complete:
        return "too_old"
    return ""
