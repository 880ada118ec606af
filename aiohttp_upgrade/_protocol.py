"""The WebSocket protocol of one server connection, sans I/O.

A :class:`ServerProtocol` holds the frame parser and the close state machine of
RFC 6455 7.1. It takes bytes (:attr:`ServerProtocol.parser`'s ``feed``) and calls
(:meth:`~ServerProtocol.close`, :meth:`~ServerProtocol.abort`, ...), hands data
messages, pings and pongs straight to its :class:`ProtocolOwner`, and records
what the closing of the connection needs as *actions* (:data:`Action`) for the
owner to carry out: it never touches a transport, a timer or asyncio.

States (:class:`ReadyState`)::

    OPEN ──close() / protocol error / hook failure──> CLOSING ──peer's Close,
      │                                                  │       EOF or timeout──> CLOSED
      └──peer's Close / shutdown / abort / connection lost──────────────────────> CLOSED

In CLOSING our Close is sent and the peer's is awaited: a transport that can
half-close has sent its EOF and input is discarded until the peer's FIN; one that
cannot (TLS) keeps parsing, for the peer's Close only, except after a protocol
error, where nothing more can be parsed: then TCP is closed once our Close is
written (OPEN -> CLOSED). Every path out of OPEN
records exactly one :class:`Closed`, whatever happens next.
"""

from __future__ import annotations

import enum
import itertools
import logging
from dataclasses import dataclass
from typing import Final, Protocol

from ._closecode import CloseCode
from ._deflate import Inflater
from ._errors import ProtocolError
from ._frames import Mask, build_close_frame, xor_mask
from ._parser import DataSink, FrameParser

__all__ = [
    "Abort",
    "Action",
    "ArmCloseTimeout",
    "CloseTransport",
    "Closed",
    "Closing",
    "HalfClose",
    "ProtocolOwner",
    "ReadOn",
    "ReadyState",
    "SendFrame",
    "ServerProtocol",
]

logger = logging.getLogger("aiohttp_upgrade")

_ABNORMAL: Final = CloseCode.ABNORMAL_CLOSURE
_NO_STATUS: Final = CloseCode.NO_STATUS_RECEIVED
_INTERNAL_ERROR: Final = CloseCode.INTERNAL_ERROR

_ids = itertools.count(1)


class ReadyState(enum.IntEnum):
    """Connection state, with the numbers Bun's ``readyState`` reports.

    A socket your hooks see is ``OPEN``, ``CLOSING`` while a closing handshake the
    server started runs (``ws.close()``, a protocol error, a hook that raised:
    until the client's Close or FIN, or ``close_timeout``), then ``CLOSED``; the
    server never reports ``CONNECTING`` (the socket exists only after the 101).
    """

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


_OPEN: Final = ReadyState.OPEN
_CLOSING: Final = ReadyState.CLOSING
_CLOSED: Final = ReadyState.CLOSED


# -- actions: what the owner carries out, in order ----------------------------------


@dataclass(frozen=True, slots=True)
class Closing:
    """The socket left OPEN: take no more data messages, leave the registry of open
    sockets and every topic; with ``drop_events``, forget the events not yet
    dispatched to hooks (the server closed it)."""

    drop_events: bool


@dataclass(frozen=True, slots=True)
class SendFrame:
    """Queue ``frame`` (a Close) after everything pending and write it all now."""

    frame: bytes


@dataclass(frozen=True, slots=True)
class HalfClose:
    """Send EOF (``write_eof``): nothing more goes out; the peer closes its side."""


@dataclass(frozen=True, slots=True)
class ReadOn:
    """Keep reading (resume if paused), so that the peer's FIN or Close is seen."""


@dataclass(frozen=True, slots=True)
class ArmCloseTimeout:
    """Abort the transport if it is still there after the close timeout."""


@dataclass(frozen=True, slots=True)
class CloseTransport:
    """Close the transport once its buffer is written (the close timeout bounds
    that)."""


@dataclass(frozen=True, slots=True)
class Abort:
    """Drop the pending output and abort the transport."""


@dataclass(frozen=True, slots=True)
class Closed:
    """Report the close to the hooks: ``close(ws, code, reason)``, exactly once."""

    code: int
    reason: str


Action = (
    Closing
    | SendFrame
    | HalfClose
    | ReadOn
    | ArmCloseTimeout
    | CloseTransport
    | Abort
    | Closed
)


class ProtocolOwner(DataSink, Protocol):
    """What a protocol reports to (the connection): the parser's data events, and
    one query about the transport."""

    def can_half_close(self) -> bool:
        """True when the transport can send EOF and still read (not TLS)."""


class ServerProtocol:
    """The close state machine and frame parser of one connection (module docstring).

    Args:
        owner: gets messages, pings and pongs from the parser, and answers
            :meth:`ProtocolOwner.can_half_close`.
        max_size: ``max_payload_length``.
        inflater: permessage-deflate's, if negotiated.
        mask: the XOR used to unmask.
        peer: the client's address, for log lines.

    Every method is idempotent once the state it handles is left; the actions it
    produced are in :attr:`actions` until :meth:`take_actions`.
    """

    __slots__ = ("_id", "_owner", "_peer", "actions", "parser", "state")

    def __init__(
        self,
        owner: ProtocolOwner,
        max_size: int,
        inflater: Inflater | None = None,
        mask: Mask = xor_mask,
        peer: str = "",
    ) -> None:
        self._owner = owner
        self._id = 0
        self._peer = peer
        self.state = _OPEN
        self.actions: list[Action] | None = None
        """Actions not taken yet (None: none)."""
        self.parser = FrameParser(owner, max_size, inflater, mask, closer=self)

    def __repr__(self) -> str:
        return f"<ServerProtocol conn {self.id} {self.state.name}>"

    @property
    def id(self) -> int:
        """The connection's number in ``repr(ws)`` and log lines (``conn <id>``),
        unique in this process; given on first use, so that a socket nobody
        logs carries no number object."""
        if not self._id:
            self._id = next(_ids)
        return self._id

    def take_actions(self) -> list[Action]:
        """Return the recorded actions, oldest first, and forget them."""
        actions = self.actions
        self.actions = None
        return actions or []

    def _record(self, *actions: Action) -> None:
        if self.actions is None:
            self.actions = list(actions)
        else:
            self.actions.extend(actions)

    # -- calls from the owner ------------------------------------------------------

    def close(self, code: int, reason: str) -> None:
        """Our close (``ws.close()``): send a Close and await the peer's
        (OPEN -> CLOSING); events not yet dispatched are dropped."""
        if self.state is _OPEN:
            self._close_and_linger(code, reason, drop_events=True)

    def fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 7.1.7) with ``code``, as for a hook that
        raised (1011): like :meth:`close`, but the queued events are kept."""
        if self.state is _OPEN:
            self._close_and_linger(code, reason, drop_events=False)

    def shutdown(self, code: int, reason: str, frame: bytes) -> None:
        """Close for a server shutdown: send ``frame`` (the Close, built once for
        every socket) and close the transport without waiting for the peer
        (OPEN -> CLOSED), so that no client can hold the shutdown."""
        if self.state is _OPEN:
            self.state = _CLOSED
            self.parser.stop()
            self._record(
                Closing(drop_events=True),
                SendFrame(frame),
                CloseTransport(),
                Closed(code, reason),
            )
        elif self.state is _CLOSING:  # its close hook has run: just end it
            self.state = _CLOSED
            self.parser.stop()
            self._record(Abort())

    def abort(self, reason: str = "") -> None:
        """Abort without a Close frame (OPEN -> CLOSED, the hooks see 1006; while
        CLOSING the close hook has run: the handshake is cut short, as Bun's)."""
        if self.state is _OPEN:
            self.state = _CLOSED
            self.parser.stop()
            self._record(Closing(drop_events=True), Abort(), Closed(_ABNORMAL, reason))
        elif self.state is _CLOSING:
            self.state = _CLOSED
            self.parser.stop()
            self._record(Abort())

    def write_failed(self) -> None:
        """Writing raised: abort (the hooks see 1006 if the socket was open)."""
        if self.state is _OPEN:
            self.abort()
        else:
            self.state = _CLOSED
            self._record(Abort())

    def connection_lost(self) -> None:
        """The transport is gone (the peer's FIN or reset, or our abort)."""
        state, self.state = self.state, _CLOSED
        if state is _OPEN:
            self.parser.stop()
            self._record(Closing(drop_events=False), Closed(_ABNORMAL, ""))

    def close_timed_out(self) -> None:
        """The close timeout passed with the connection still there: abort it."""
        if self.state is not _OPEN:
            self.state = _CLOSED
            self._record(Abort())

    # -- calls from the parser (its closer) ---------------------------------------------

    def on_close(self, code: int, reason: str) -> None:
        """The peer's Close: echo its code (RFC 6455 5.5.1; an empty Close, 1005,
        gets an empty one) and close TCP at once, the server first (7.1.1).
        While CLOSING (parsing for it over TLS) it ends the handshake."""
        if self.state is not _OPEN:
            self._peer_answered()
            return
        self.state = _CLOSED
        reply = build_close_frame(None if code == _NO_STATUS else code, reason)
        self._record(
            Closing(drop_events=False),
            SendFrame(reply),
            CloseTransport(),
            Closed(code, reason),
        )

    def on_protocol_error(self, error: ProtocolError) -> None:
        """The peer broke the protocol: logged once, closed with its code
        (1002, 1007 or 1009), lingering for the peer's FIN where the transport
        can half-close, else closing TCP after our Close. While CLOSING it ends
        the handshake too."""
        if self.state is not _OPEN:
            self._peer_answered()
            return
        logger.info(
            "conn %d: closing WebSocket from %s: %s (%d)",
            self.id,
            self._peer,
            error.reason,
            error.code,
        )
        code, reason = error.code, error.reason
        if self._owner.can_half_close():
            self._close_and_linger(code, reason, drop_events=False)
            return
        # Over TLS the parser has stopped at the error (RFC 6455 7.1.7): the peer's
        # Close would never be seen, and waiting for it would only wait for the
        # close timeout. Close TCP once our Close is written.
        self.state = _CLOSED
        self._record(
            Closing(drop_events=False),
            SendFrame(build_close_frame(code, reason)),
            CloseTransport(),
            Closed(code, reason),
        )

    def hook_failed(self) -> None:
        """A hook raised: :meth:`fail` with 1011."""
        self.fail(_INTERNAL_ERROR, "")

    # -- the closing handshake ----------------------------------------------------------

    def _close_and_linger(self, code: int, reason: str, *, drop_events: bool) -> None:
        """Send our Close after everything pending and wait for the peer's.

        Half-close and discard what still comes in until the client's FIN, as
        websockets does: a socket closed with input still arriving answers with a
        TCP reset, which can destroy the Close frame unread in the client's
        buffer. A transport that cannot half-close (TLS) stays open, parsing for
        the client's Close only: closing it at once would make the client's own
        Close fail, and the client would report 1006.
        """
        self.state = _CLOSING
        half_close = self._owner.can_half_close()
        if half_close:
            self.parser.stop()
        else:
            self.parser.skip_data()
        self._record(Closing(drop_events), SendFrame(build_close_frame(code, reason)))
        if half_close:
            self._record(HalfClose())
        self._record(ReadOn(), ArmCloseTimeout(), Closed(code, reason))

    def _peer_answered(self) -> None:
        """The peer's Close (or garbage) after ours, on a transport that cannot
        half-close: the handshake is over, the server closes TCP. (The parser
        has stopped itself.)"""
        if self.state is _CLOSING:
            self.state = _CLOSED
            self._record(CloseTransport())
