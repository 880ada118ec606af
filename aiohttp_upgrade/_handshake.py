"""Validating an opening handshake (RFC 6455 section 4.2). Pure: headers in, decision out."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from multidict import CIMultiDict

from ._deflate import DeflateParams, PerMessageDeflate, negotiate_deflate

__all__ = [
    "Accept",
    "Reject",
    "accept_key",
    "check_handshake",
    "response_headers",
    "wants_websocket",
]

GUID: Final = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 1.3
SUPPORTED_VERSION: Final = "13"

# Headers the handshake owns: user-supplied values for these are ignored.
_HANDSHAKE_HEADERS: Final = frozenset(
    h.lower()
    for h in (
        "Upgrade",
        "Connection",
        "Sec-WebSocket-Accept",
        "Sec-WebSocket-Extensions",
        "Content-Length",
        "Transfer-Encoding",
    )
)


@dataclass(frozen=True, slots=True)
class Accept:
    """A valid handshake: what to answer with."""

    key: str
    subprotocol: str | None
    deflate: DeflateParams | None


@dataclass(frozen=True, slots=True)
class Reject:
    """Not an acceptable handshake; ``status`` is 426 for a wrong version, else 0."""

    reason: str
    status: int = 0


def _lines(headers: Mapping[str, str], name: str) -> list[str]:
    """The values of every ``name`` header line."""
    getall = getattr(headers, "getall", None)
    if getall is not None:
        return list(getall(name, []))
    value = headers.get(name)
    return [] if value is None else [value]


def _tokens(headers: Mapping[str, str], name: str) -> list[str]:
    """The comma-separated tokens of every ``name`` header line, lower-cased."""
    return [
        token.strip().lower()
        for line in _lines(headers, name)
        for token in line.split(",")
    ]


# Header values as aiohttp's parsers compare them: surrounding spaces and tabs
# removed, ASCII only (so that str.lower() cannot turn a lookalike into a match).
def _ascii_lower(value: str) -> str | None:
    value = value.strip(" \t")
    return value.lower() if value.isascii() else None


# aiohttp's HTTP parsers (llhttp and the pure-Python one) switch protocols on a
# first Upgrade line that is exactly "websocket" and "upgrade" among the Connection
# tokens. A request head with anything else (Upgrade: foo, websocket) is followed
# by more HTTP to them, and frames sent behind it would be lost.


def _upgrade_is_websocket(headers: Mapping[str, str]) -> bool:
    """One ``Upgrade`` line, and it is ``websocket`` in any case."""
    upgrades = _lines(headers, "Upgrade")
    return len(upgrades) == 1 and _ascii_lower(upgrades[0]) == "websocket"


def _connection_upgrade(headers: Mapping[str, str]) -> bool:
    """``upgrade`` is a token of some ``Connection`` line (RFC 9110 5.3, 7.6.1)."""
    return any(
        _ascii_lower(token) == "upgrade"
        for line in _lines(headers, "Connection")
        for token in line.split(",")
    )


_ZERO: Final = re.compile(r"0+")


def _has_body(headers: Mapping[str, str]) -> bool:
    """A ``Transfer-Encoding`` or a ``Content-Length`` other than 0: aiohttp would
    read what follows the head as that body, frames included."""
    if _lines(headers, "Transfer-Encoding"):
        return True
    return any(
        not _ZERO.fullmatch(value.strip(" \t"))
        for value in _lines(headers, "Content-Length")
    )


def accept_key(key: str) -> str:
    """Return ``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key``."""
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def wants_websocket(headers: Mapping[str, str]) -> bool:
    """True when any ``Upgrade`` line lists ``websocket``: the request asks for a
    WebSocket. :func:`check_handshake` accepts only a subset of these, so a check
    made on every request for which this is true (the Origin check) sees every
    upgrade."""
    return "websocket" in _tokens(headers, "Upgrade")


def check_handshake(
    method: str,
    headers: Mapping[str, str],
    deflate: PerMessageDeflate | None,
    version: tuple[int, int] = (1, 1),
) -> Accept | Reject:
    """Decide whether a request is a WebSocket handshake this server accepts.

    ``version`` is the request's HTTP version. Only what aiohttp then reads as a
    switch of protocol is accepted, so that frames sent right behind the handshake
    reach the socket: one ``Upgrade`` line that is ``websocket`` (any case),
    ``upgrade`` among the ``Connection`` tokens (every line counts), and no body
    (``Content-Length`` 0 or absent, no ``Transfer-Encoding``).
    """
    if method != "GET":
        return Reject("method is not GET")
    if version < (1, 1):  # RFC 6455 4.1
        return Reject("HTTP version below 1.1")
    if not wants_websocket(headers):
        return Reject("no 'Upgrade: websocket'")
    if not _upgrade_is_websocket(headers):
        return Reject("'Upgrade' is not exactly 'websocket', on one line")
    if not _connection_upgrade(headers):
        return Reject("no 'Connection: upgrade'")
    if _has_body(headers):
        return Reject("a handshake with a body")
    if len(_lines(headers, "Sec-WebSocket-Key")) > 1:  # RFC 6455 11.3.1
        return Reject("Sec-WebSocket-Key repeated")
    key = headers.get("Sec-WebSocket-Key", "").strip()
    try:
        raw_key = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raw_key = b""
    if len(raw_key) != 16:  # RFC 6455 4.1: 16 random bytes, base64-encoded
        return Reject("bad or missing Sec-WebSocket-Key")
    if headers.get("Sec-WebSocket-Version", "").strip() != SUPPORTED_VERSION:
        return Reject("unsupported Sec-WebSocket-Version", status=426)
    offered = [p.strip() for p in headers.get("Sec-WebSocket-Protocol", "").split(",")]
    offered = [p for p in offered if p]
    negotiated = (
        negotiate_deflate(headers.get("Sec-WebSocket-Extensions"), deflate)
        if deflate is not None
        else None
    )
    return Accept(
        key=key,
        subprotocol=offered[0] if offered else None,
        deflate=negotiated,
    )


def response_headers(
    accept: Accept, extra: Iterable[tuple[str, str]]
) -> tuple[CIMultiDict[str], str | None]:
    """Return the 101 response headers and the chosen subprotocol.

    ``extra`` may choose the subprotocol with ``Sec-WebSocket-Protocol``; other
    handshake headers in it are ignored.
    """
    headers: CIMultiDict[str] = CIMultiDict()
    subprotocol = accept.subprotocol
    for name, value in extra:
        lower = name.lower()
        if lower == "sec-websocket-protocol":
            subprotocol = value.strip() or None
        elif lower not in _HANDSHAKE_HEADERS:
            headers.add(name, value)
    headers["Upgrade"] = "websocket"
    headers["Connection"] = "Upgrade"
    headers["Sec-WebSocket-Accept"] = accept_key(accept.key)
    if subprotocol is not None:
        headers["Sec-WebSocket-Protocol"] = subprotocol
    if accept.deflate is not None:
        headers["Sec-WebSocket-Extensions"] = accept.deflate.response
    return headers, subprotocol
