"""The counters of one server, as plain integers (see :mod:`._metrics`).

A module of its own so that the compiled twin makes them a C class: the socket
layer adds to them on every read and send with C arithmetic on a C struct.
"""

from __future__ import annotations

__all__ = ["Counters"]


class Counters:
    """The counters of one server: attributes that the code doing the work adds
    to (which, and where: :mod:`._metrics`)."""

    __slots__ = (
        "backpressure",
        "bytes_delivered",
        "bytes_in",
        "bytes_sent",
        "closes",
        "deliveries",
        "dropped",
        "history_replays",
        "hook_failures",
        "messages_in",
        "messages_sent",
        "publishes",
        "rate_limited",
        "refused",
    )

    def __init__(self) -> None:
        self.messages_in = 0
        self.messages_sent = 0  # by sends; messages_out adds the deliveries
        self.bytes_in = 0
        self.bytes_sent = 0
        self.publishes = 0
        self.deliveries = 0
        self.bytes_delivered = 0
        self.dropped = 0
        self.backpressure = 0
        self.hook_failures = 0
        self.rate_limited = 0
        self.history_replays = 0  # one per message a resume replayed
        self.closes: dict[int, int] = {}
        self.refused: dict[str, int] = {}

    def closed(self, code: int) -> None:
        """A socket closed with ``code``."""
        self.closes[code] = self.closes.get(code, 0) + 1

    def refuse(self, reason: str) -> None:
        """A handshake was refused for ``reason`` (one of :data:`REFUSAL_REASONS`)."""
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def sent(self, payload_length: int) -> None:
        """A message was sent (queued) to one socket."""
        self.messages_sent += 1
        self.bytes_sent += payload_length
