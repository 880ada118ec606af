"""Exceptions raised by aiohttp-upgrade.

::

    WebSocketError                  base class of everything raised here
    ├── InvalidOptionError          a handler option failed validation (also a ValueError)
    ├── InvalidStateError           an API call that the socket's state does not allow
    ├── BrokerUnavailableError      the broker cannot reach its backend (Redis down)
    └── ProtocolError               the peer broke RFC 6455 / RFC 7692 (carries a close code)

Caller misuse (``InvalidOptionError``, ``InvalidStateError``, ``TypeError``,
``ValueError``) is kept apart from peer misbehaviour (``ProtocolError``), which
never reaches user code: it closes the offending socket with ``ProtocolError.code``.
"""

from __future__ import annotations

__all__ = [
    "BrokerUnavailableError",
    "InvalidOptionError",
    "InvalidStateError",
    "ProtocolError",
    "WebSocketError",
]


class WebSocketError(Exception):
    """Base class of the exceptions raised by aiohttp-upgrade."""


class InvalidOptionError(WebSocketError, ValueError):
    """A handler or server option has a value outside what it accepts."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option


class InvalidStateError(WebSocketError):
    """An API call was made in a state that does not allow it."""


class BrokerUnavailableError(WebSocketError, ConnectionError):
    """The broker cannot reach its backend now (``cluster_subscriber_count``)."""


class ProtocolError(WebSocketError):
    """The peer violated the protocol; ``code`` is the close code to answer with."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
