"""permessage-deflate (RFC 7692): options, negotiation, compression. No I/O.

Bun's modes (:mod:`._deflate_modes`), for each direction:

shared (the default)
    The server answers with ``server_no_context_takeover`` and
    ``client_no_context_takeover`` (RFC 7692 7.1.1 lets it add both unasked). One
    compressor per thread (so per event loop, as uWebSockets' per-loop stream)
    serves every socket: each message is compressed and full-flushed
    (``Z_FULL_FLUSH`` resets the history), so it inflates on its own and one
    publish is compressed once for every subscriber. Every compressed message a
    client sends is inflated from an empty window, whatever the client agreed to:
    a back-reference into an earlier message, its own or another client's, is
    invalid data (1007), never another socket's bytes.
dedicated, or a size
    One zlib stream per socket and direction, with context takeover, created at
    the first compressed message that way (never at the upgrade).
disable
    Never compress (sending); a client's compressed messages are still accepted
    once the extension is negotiated, as RFC 7692 requires (receiving).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ._deflate_modes import DEDICATED, DISABLED, Mode, parse_mode
from ._errors import InvalidOptionError
from ._zstreams import Compressor, Inflater, shared_streams

__all__ = [
    "Compressor",
    "DeflateParams",
    "Inflater",
    "PerMessageDeflate",
    "negotiate_deflate",
]

EXTENSION: Final = "permessage-deflate"


@dataclass(frozen=True, slots=True)
class PerMessageDeflate:
    """Options for permessage-deflate, passed as ``per_message_deflate=``.

    Args:
        compress: how outgoing messages sent with ``compress=True`` are
            compressed, as Bun's ``perMessageDeflate.compress``: ``"shared"``
            (or True, the default: one compressor for every socket, each message
            on its own, no memory per socket), ``"dedicated"`` (a compressor per
            socket keeping the context of earlier messages: better ratio, about
            300 KB per socket that sent a compressed message), ``"3KB"`` ...
            ``"256KB"`` (dedicated, with the zlib window and memory level
            uWebSockets uses for that size) or ``"disable"`` (or False).
        decompress: how compressed messages from clients are inflated, with the
            same values: ``"shared"`` asks clients for
            ``client_no_context_takeover`` and inflates each message from an
            empty window; ``"dedicated"`` and the sizes keep the client's context
            (a window per socket, made at its first compressed message). The
            extension covers both directions (RFC 7692), so once it is negotiated
            compressed messages are accepted even with ``"disable"``; with both
            disabled an offer is declined, as if ``per_message_deflate`` were off.
        server_no_context_takeover: the option before Bun's modes: False means
            ``compress="dedicated"``; None (default) leaves it to ``compress``.
        client_no_context_takeover: likewise, False means
            ``decompress="dedicated"``.
        server_max_window_bits: largest LZ77 window the server compresses with, 9-15.
        level: zlib compression level, 0-9.

    Raises:
        InvalidOptionError: a value out of range, an unknown mode, or a mode and a
            context-takeover flag that contradict each other.
    """

    compress: bool | str = True
    decompress: bool | str = True
    server_no_context_takeover: bool | None = None
    client_no_context_takeover: bool | None = None
    server_max_window_bits: int = 15
    level: int = 6

    def __post_init__(self) -> None:
        if type(self.server_max_window_bits) is not int or not (
            9 <= self.server_max_window_bits <= 15
        ):
            raise InvalidOptionError(
                "per_message_deflate.server_max_window_bits", "must be 9..15"
            )
        if type(self.level) is not int or not 0 <= self.level <= 9:
            raise InvalidOptionError("per_message_deflate.level", "must be 0..9")
        _modes(self)


def _modes(options: PerMessageDeflate) -> tuple[Mode, Mode]:
    """The (sending, receiving) modes that ``options`` ask for."""
    send = _with_flag(
        "server",
        parse_mode("compress", options.compress),
        options.compress,
        options.server_no_context_takeover,
    )
    receive = _with_flag(
        "client",
        parse_mode("decompress", options.decompress),
        options.decompress,
        options.client_no_context_takeover,
    )
    return send, receive


def _with_flag(side: str, mode: Mode, value: object, no_takeover: bool | None) -> Mode:
    """Apply an old ``<side>_no_context_takeover`` flag to a direction's mode."""
    if no_takeover is None or mode is DISABLED:
        return mode
    if not isinstance(no_takeover, bool):
        raise InvalidOptionError(
            f"per_message_deflate.{side}_no_context_takeover",
            f"must be a bool or None, got {no_takeover!r}",
        )
    if not no_takeover and value is True:
        return DEDICATED  # the flag as it was: context takeover, a full window
    if no_takeover == mode.dedicated:
        raise InvalidOptionError(
            f"per_message_deflate.{side}_no_context_takeover",
            f"{no_takeover} contradicts {value!r}",
        )
    return mode


@dataclass(frozen=True, slots=True)
class DeflateParams:
    """What was agreed with one client.

    ``compress_bits``: the window the server compresses with (None: it never
    compresses; zlib cannot honour an 8-bit window). ``decompress_bits``: the
    window of the socket's dedicated decompressor, 0 for the shared one.
    """

    response: str
    compress_bits: int | None
    compress_shared: bool
    mem_level: int
    decompress_bits: int
    level: int

    def new_compressor(self) -> Compressor | None:
        """This socket's compressor (the thread's shared one in shared mode), or
        None if it never compresses. A dedicated one makes its zlib stream lazily."""
        bits = self.compress_bits
        if bits is None:
            return None
        if self.compress_shared:
            return shared_streams().compressor(bits, self.level)
        return Compressor(bits, self.level, False, self.mem_level)

    def new_inflater(self, max_size: int) -> Inflater:
        """This socket's inflater (the thread's shared one in shared mode)."""
        if not self.decompress_bits:
            return shared_streams().inflater(max_size)
        return Inflater(max_size, False, self.decompress_bits)


def _parse_offer(offer: str) -> dict[str, str | None] | None:
    """Parse one offer's parameters; None if it is not permessage-deflate or malformed."""
    name, *raw_params = (part.strip() for part in offer.split(";"))
    if name.lower() != EXTENSION:
        return None
    params: dict[str, str | None] = {}
    for raw in raw_params:
        key, sep, value = raw.partition("=")
        key = key.strip().lower()
        if key in params:  # RFC 7692 7: duplicate parameter -> decline this offer
            return None
        params[key] = value.strip().strip('"') if sep else None
    return params


def _window_bits(value: str | None, *, optional: bool) -> int:
    """A window-bits value (RFC 7692 7.1.2): 8-15; a missing one is 15 where the
    parameter may come without a value (client_max_window_bits), else malformed."""
    if value is None:
        if optional:
            return 15
        raise ValueError("a value is required")
    if not value.isdigit() or not 8 <= int(value) <= 15:
        raise ValueError(value)
    return int(value)


def negotiate_deflate(
    header: str | None, options: PerMessageDeflate
) -> DeflateParams | None:
    """Pick the first acceptable offer of a ``Sec-WebSocket-Extensions`` header."""
    send, receive = _modes(options)
    if not header or send is receive is DISABLED:
        return None
    for offer in header.split(","):
        params = _parse_offer(offer)
        if params is None:
            continue
        try:
            accepted = _accept(params, options, send, receive)
        except ValueError:
            continue  # malformed offer: RFC 7692 5 says decline it, try the next
        if accepted is not None:
            return accepted
    return None


_KNOWN: Final = frozenset(
    (
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
    )
)


def _accept(
    params: dict[str, str | None],
    options: PerMessageDeflate,
    send: Mode,
    receive_mode: Mode,
) -> DeflateParams | None:
    if not params.keys() <= _KNOWN:
        return None
    for flag in ("server_no_context_takeover", "client_no_context_takeover"):
        if flag in params and params[flag] is not None:
            return None
    client_bits = (
        _window_bits(params["client_max_window_bits"], optional=True)
        if "client_max_window_bits" in params
        else None
    )
    limit = options.server_max_window_bits
    if "server_max_window_bits" in params:
        limit = min(
            limit, _window_bits(params["server_max_window_bits"], optional=False)
        )
    parts = [EXTENSION]
    # RFC 7692 7.1.1.1: the server may always promise no context takeover.
    shared = not send.dedicated or "server_no_context_takeover" in params
    if shared:
        parts.append("server_no_context_takeover")
        bits, mem_level = limit, 8
    else:
        bits = min(send.window_bits, limit)
        mem_level = send.mem_level if bits == send.window_bits else max(1, bits - 7)
    receive = _receive_bits(receive_mode, params, client_bits)
    if not receive:
        parts.append("client_no_context_takeover")  # RFC 7692 7.1.1.2
    if bits < 15:
        parts.append(f"server_max_window_bits={bits}")
    if 0 < receive < 15:
        parts.append(f"client_max_window_bits={receive}")  # RFC 7692 7.1.2.2
    return DeflateParams(
        response="; ".join(parts),
        compress_bits=bits if bits >= 9 and send is not DISABLED else None,
        compress_shared=shared,
        mem_level=mem_level,
        decompress_bits=receive,
        level=options.level,
    )


def _receive_bits(
    mode: Mode, params: dict[str, str | None], client_bits: int | None
) -> int:
    """The dedicated decompressor's window for this offer, or 0 for the shared one:
    a window under 15 needs the client's consent (client_max_window_bits offered),
    else the shared decompressor is used, as uWebSockets does."""
    if not mode.dedicated or "client_no_context_takeover" in params:
        return 0
    if mode.window_bits == 15:
        return 15
    if client_bits is None:
        return 0
    return min(mode.window_bits, client_bits)
