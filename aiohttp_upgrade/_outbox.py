"""A socket's outgoing frames: the pending output, flow control, Bun's send codes.

Sending never awaits. A frame sent during one event-loop turn is appended to the
socket's pending output, and one :class:`Flusher` callback per turn writes every
dirty outbox with a single ``transport.write`` each. While an async hook runs
(``write_now``), whose turn ends at an await nobody sees, frames are written at
once instead; so is a burst that reaches :data:`FLUSH_THRESHOLD`, so that it sees
what the kernel took and gets -1, not 0, once the kernel's buffer is full (Bun
writes at once).

Codes (Bun's): the payload length when the frame went onto an idle connection;
``-1`` when bytes were already waiting in the transport (the frame is queued and
will be delivered; the ``drain`` callback follows once everything left); ``0``
when it was dropped because the client is behind by more than ``limit`` bytes.

The limit measures the client, not the sender (``_sendlimits``), by the turns
the :class:`Flusher` counts. The outbox is tested without sockets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

from ._deflate import Compressor
from ._frames import OP_TEXT, SHORT_HEADERS, build_frame
from ._payloads import message_payload
from ._sendbatch import BATCH_MIN
from ._sendlimits import FLUSH_THRESHOLD, hard_limit
from ._tcp import SocketTransport

if TYPE_CHECKING:
    from ._counters import Counters
    from ._sendbatch import SendBatch

__all__ = ["Flusher", "Outbox", "OutboxOwner", "Transport"]

logger = logging.getLogger("aiohttp_upgrade")

T = TypeVar("T")


class OutboxOwner(Protocol):
    """What an outbox reports to (the socket's connection)."""

    def drained(self) -> None:
        """All output has left after a send returned -1."""

    def dropped(self, message: object) -> None:
        """A message was dropped at the limit (``message`` None: a control frame)."""

    def write_failed(self, exc: Exception) -> None:
        """``transport.write`` raised."""


class Transport(Protocol):
    """The part of ``asyncio.Transport`` the outbox uses."""

    def write(self, data: bytes) -> None: ...
    def get_write_buffer_size(self) -> int: ...
    def is_closing(self) -> bool: ...
    def abort(self) -> None: ...


class Flusher:
    """Calls ``flush()`` on each outbox that got frames, once per event-loop turn.

    ``turn`` counts its runs: it advances at the end of every loop turn in which
    an outbox queued frames or asked for :meth:`next_turn`.
    """

    __slots__ = ("_dirty", "_scheduled", "_spare", "turn")

    def __init__(self) -> None:
        self._dirty: list[Outbox] = []
        self._spare: list[Outbox] = []
        self._scheduled = False
        self.turn = 0

    def add(self, outbox: Outbox) -> None:
        """Flush ``outbox`` at the end of this loop turn."""
        self._dirty.append(outbox)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def next_turn(self) -> None:
        """Make ``turn`` advance at the end of this loop turn."""
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        self.turn += 1
        dirty = self._dirty
        self._dirty = self._spare
        batch = dirty[0].start_batch() if len(dirty) >= BATCH_MIN else None
        try:
            for outbox in dirty:
                outbox.flush()
        finally:
            if batch is not None and batch.finish():
                self.next_turn()  # a write was not taken whole: see flush()
            dirty.clear()
            self._spare = dirty


class Outbox:
    """The pending output of one socket, written to ``transport`` once per turn
    of ``flusher``. ``limit`` is ``backpressure_limit`` (``_sendlimits``);
    ``compressor`` the socket's permessage-deflate compressor, if negotiated;
    ``owner`` is told when output drained, a message was dropped or a write
    failed (None: nothing is told; a failed write aborts the transport)."""

    __slots__ = (
        "_backlog",
        "_drain_wanted",
        "_flusher",
        "_hard_limit",
        "_limit",
        "_owner",
        "_pending",
        "_size",
        "_tcp",
        "_transport",
        "_turn",
        "compressor",
        "held",
        "sent",
        "write_now",
    )

    def __init__(
        self,
        transport: Transport,
        flusher: Flusher,
        limit: int,
        compressor: Compressor | None = None,
        owner: OutboxOwner | None = None,
    ) -> None:
        self.use_transport(transport)
        self._flusher = flusher
        self._limit = limit
        self._hard_limit = hard_limit(limit)
        self.compressor = compressor
        self._pending: list[bytes] = []
        self._size = 0
        self._drain_wanted = False
        # The transport's buffer at the first send of flusher turn ``_turn``.
        self._turn = -1
        self._backlog = 0
        self.write_now = False
        """Write each frame at once (set while an async hook runs)."""
        self.held = False
        """Leave the flush to the caller (the connection, while it handles a read)."""
        self.sent = False
        """Set by every queued frame; the idle timer clears it."""
        self._owner = owner

    def use_transport(self, transport: Transport) -> None:
        """Write to ``transport`` from now on (nothing may be buffered)."""
        self._transport = transport
        # Ours is called directly, with C calls when compiled: no method lookups.
        self._tcp = transport if type(transport) is SocketTransport else None

    # -- queueing ----------------------------------------------------------------

    def send(
        self,
        opcode: int,
        payload: bytes,
        compress: bool,
        message: object = None,
        frame: bytes | None = None,
        shared: dict[tuple[int, int], bytes] | None = None,
    ) -> int:
        """Queue a data message (compressed if asked and negotiated); return the code.

        The one compress-or-drop path of ``send`` and ``publish``: a message about
        to be dropped is not compressed. ``frame`` is the uncompressed frame when
        the caller built it already (a publish builds it once); ``shared`` caches
        compressed frames by compressor settings across the sockets of a publish,
        for compressors that keep no context. ``message`` is what the owner's
        ``dropped`` gets if the message is dropped.
        """
        compressor = self.compressor
        if compress and compressor is not None and payload:
            if compressor.shareable and shared is not None:
                frame = shared.get(compressor.key)
                if frame is None:
                    frame = shared[compressor.key] = build_frame(
                        opcode, compressor.compress(payload), rsv1=True
                    )
            elif self.over_limit():
                return self._drop(message)
            else:
                frame = build_frame(opcode, compressor.compress(payload), rsv1=True)
        elif frame is None:
            frame = build_frame(opcode, payload)
        return self.enqueue(frame, len(payload), message)

    def send_message(self, message: object, counters: Counters) -> int:
        """``ws.send(message)`` uncompressed, the hot path: frame ``message``, count
        it and queue it; return the code (TypeError as ``message_payload``)."""
        dropped: object
        if type(message) is str:  # message_payload() inlined for the commonest case
            opcode, payload, dropped = OP_TEXT, message.encode(), message
        else:
            opcode, payload = message_payload(message)
            # The hook gets the str, or the bytes made (not copied again).
            dropped = message if opcode == OP_TEXT else payload
        length = len(payload)
        counters.messages_sent += 1
        counters.bytes_sent += length
        if length < 126:
            frame = SHORT_HEADERS[opcode][length] + payload
        else:
            frame = build_frame(opcode, payload)
        return self.enqueue(frame, length, dropped)

    def over_limit(self) -> bool:
        """True when a message sent now would be dropped: the client is behind by
        more than ``limit`` bytes (see the module docstring)."""
        if self._turn != self._flusher.turn:
            self._new_turn(self._transport.get_write_buffer_size())
        return (
            self._backlog > self._limit
            or self._transport.get_write_buffer_size() + self._size > self._hard_limit
        )

    def _new_turn(self, waiting: int) -> None:
        """The first send of a flusher turn: ``waiting`` is the client's backlog."""
        flusher = self._flusher
        self._turn = flusher.turn
        self._backlog = waiting
        if waiting:  # look again next turn, when the client may have taken it
            flusher.next_turn()

    def enqueue(self, frame: bytes, length: int, message: object = None) -> int:
        """Queue a built frame; return ``length``, -1 or 0 (dropped)."""
        tcp = self._tcp
        if tcp is not None:
            waiting = tcp.get_write_buffer_size()
        else:
            waiting = self._transport.get_write_buffer_size()
        flusher = self._flusher
        if self._turn != flusher.turn:  # _new_turn(), inlined: once per turn
            self._turn = flusher.turn
            self._backlog = waiting
            if waiting:
                flusher.next_turn()
        size = self._size
        if waiting:
            if self._backlog > self._limit or waiting + size > self._hard_limit:
                return self._drop(message)
        # Nothing in the transport: what is pending is under FLUSH_THRESHOLD.
        elif self._backlog > self._limit:
            return self._drop(message)
        pending = self._pending
        write_now = self.write_now
        if not pending and not write_now and not self.held:
            flusher.add(self)
        pending.append(frame)
        size += len(frame)
        self._size = size
        self.sent = True
        if write_now or size >= FLUSH_THRESHOLD:
            self.flush()
            waiting = self._transport.get_write_buffer_size()
        if waiting:
            self._drain_wanted = True
            return -1
        return length

    def enqueue_control(self, frame: bytes) -> None:
        """Queue a control frame (pong, ping, Close) past the limit: never dropped."""
        if not self._pending and not self.write_now and not self.held:
            self._flusher.add(self)
        self._pending.append(frame)
        self._size += len(frame)

    def _drop(self, message: object) -> int:
        if self._owner is not None:
            self._owner.dropped(message)
        return 0

    # -- writing -----------------------------------------------------------------

    @property
    def pending(self) -> bool:
        """True when frames wait for a flush."""
        return bool(self._pending)

    def cork(self, run: Callable[[], T]) -> T:
        """Return ``run()``; what it queues is written in one write when it ends."""
        write_now = self.write_now
        self.write_now = False
        try:
            return run()
        finally:
            self.write_now = write_now
            self.flush()

    def flush_later(self) -> None:
        """Have the per-turn flusher write the pending frames (call while ``held``
        frames are pending: they are not on the flusher's list yet)."""
        self._flusher.add(self)

    def start_batch(self) -> SendBatch | None:
        """Start the send batch of our transport's loop (``_sendbatch``), for a flush
        of many outboxes; None if the transport is not ours or cannot batch."""
        tcp = self._tcp
        return tcp.batch if tcp is not None and tcp.batch.start() else None

    def flush(self) -> None:
        """Write the pending frames now, in one write. Never raises: a failing
        ``write`` goes to the owner's ``write_failed`` (or aborts the transport)."""
        pending = self._pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        self._size = 0
        tcp = self._tcp
        try:
            if tcp is not None:  # the same calls as below, in C when compiled
                if tcp.is_closing():
                    return
                tcp.write(data)
                waiting = tcp.get_write_buffer_size()
            else:
                transport = self._transport
                if transport.is_closing():
                    return
                transport.write(data)
                waiting = transport.get_write_buffer_size()
        except Exception as exc:  # from write(): the others do not raise
            self._write_failed(exc)
            return
        if waiting:
            # The kernel did not take it all: the limit must look at the
            # transport's buffer afresh next turn, even if nothing else runs.
            self._flusher.next_turn()
        elif self._drain_wanted:
            # All of it went to the kernel: no resume_writing() will come.
            asyncio.get_running_loop().call_soon(self.writable)

    def _write_failed(self, exc: Exception) -> None:
        if self._owner is not None:
            self._owner.write_failed(exc)
            return
        # No owner: a closed socket's last write (its Close frame), or a bare outbox.
        if isinstance(exc, OSError):  # the peer is gone: nothing left to deliver
            logger.debug("writing failed (%s); aborting the connection", exc)
        else:
            logger.error("writing failed; aborting the connection", exc_info=exc)
        try:
            self._transport.abort()
        except Exception as abort_exc:
            logger.warning("aborting a connection failed", exc_info=abort_exc)

    def writable(self) -> None:
        """Call when the transport's write buffer has emptied (``resume_writing``).

        Calls the owner's ``drained`` once per -1 episode, when nothing is
        pending any more.
        """
        if (
            not self._drain_wanted
            or self._pending
            or self._transport.get_write_buffer_size()
        ):
            return  # frames still pending: flush() looks again once written
        self._drain_wanted = False
        if self._owner is not None and not self._transport.is_closing():
            self._owner.drained()

    @property
    def buffered(self) -> int:
        """Bytes queued here or in the transport, not yet handed to the kernel."""
        return self._transport.get_write_buffer_size() + self._size

    def close(self) -> None:
        """Stop taking data messages: every later one is dropped (0), silently
        (no backlog is below a limit of -1).

        Control frames (the Close) can still be queued and flushed.
        """
        self._limit = self._hard_limit = -1
        self._drain_wanted = False
        self._owner = None

    def discard(self) -> None:
        """Forget the pending frames (the connection is being aborted)."""
        self._pending.clear()
        self._size = 0
