"""Metrics: plain integer counters, updated where the work happens. Pure.

One :class:`Counters` per server, shared by its parts through
``SocketContext.counters``: each count is an increment (or one addition) in code
that runs anyway, never a per-subscriber cost on a publish. Where each is kept:

=================== =================================================================
``messages_in``     ``Dispatcher.message``, per message
``bytes_in``        ``Connection.data_received``, per read (frames as sent)
``messages_sent``   ``ServerWebSocket.send*``, per send (``messages_out`` adds
                    the deliveries)
``bytes_sent``      the same: payload bytes of those sends
``publishes``       ``Hub.publish`` / ``Hub.deliver``, per publish
``deliveries``      the same: one addition of the subscribers handed it per publish
``bytes_delivered`` the same: their payload bytes (one addition per publish)
``dropped``         ``Connection.dropped``, per message dropped at the limit
``backpressure``    ``Connection.resume_writing``, per episode, as it ends
``closes``          ``Dispatcher.closed``, once per socket, by code
``refused``         ``HttpAdapter``, per refused handshake, by reason
``hook_failures``   ``Dispatcher.hook_failed``, per hook that raised
``rate_limited``    ``ReadLimiter``, per episode over the ``rate_limit``
``history_replays`` ``History.resume``, per message a resume replayed
=================== =================================================================

:func:`snapshot` reads them, with the gauges that are read only then
(open sockets, topics, the broker's own counters, presence members), into a
:class:`Metrics`: what ``server.metrics()`` returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from ._counters import Counters

__all__ = ["COUNTERS", "GAUGES", "REFUSAL_REASONS", "Counters", "Metrics", "snapshot"]

REFUSAL_REASONS: Final = ("origin", "version", "handshake", "shutting_down")
"""Why a handshake was refused: a disallowed ``Origin`` (403), an unsupported
``Sec-WebSocket-Version`` (426), an invalid handshake (not GET, no upgrade
headers, a bad key, a body ...), and a server shutting down."""


COUNTERS = (
    ("messages_received", "messages_in", "Messages received (complete)."),
    ("messages_sent", "messages_out", "Messages queued: sends and publish deliveries."),
    ("bytes_received", "bytes_in", "Bytes read from WebSocket connections."),
    ("bytes_sent", "bytes_out", "Payload bytes of the messages sent."),
    ("publishes", "publishes", "Publishes fanned out on this process."),
    ("deliveries", "deliveries", "Subscribers reached by those publishes."),
    ("dropped", "dropped", "Messages dropped at a socket's backpressure limit."),
    ("backpressure", "backpressure", "Backpressure episodes that ended (drained)."),
    ("hook_failures", "hook_failures", "Handler hooks that raised (closed 1011)."),
    ("rate_limited", "rate_limited", "Times a socket went over its rate limit."),
    ("broker_published", "broker_published", "Messages the broker sent out."),
    ("broker_received", "broker_received", "Messages the broker brought in."),
    ("broker_dropped", "broker_dropped", "Messages the broker could not send."),
    ("broker_outages", "broker_outages", "Broker outages recovered from."),
    ("history_replays", "history_replays", "Messages replayed from history."),
)
"""(Prometheus name without ``_total``, Metrics field, help) of each counter."""

GAUGES = (
    ("open_sockets", "open_sockets", "WebSocket connections open now."),
    ("topics", "topics", "Topics with subscribers on this process."),
    ("broker_up", "broker_up", "1 while the broker reaches its backend."),
    ("presence_members", "presence_members", "Members tracked by presence."),
)
"""(name, Metrics field, help) of each gauge."""


@dataclass(frozen=True, slots=True)
class Metrics:
    """A snapshot of a server's metrics (``server.metrics()``): ints that only
    grow (totals since the server was created) and gauges (now).

    Attributes:
        open_sockets: gauge: sockets open now (``pending_websockets``).
        topics: gauge: topics with subscribers on this process now.
        messages_in: messages received (complete, after reassembly).
        messages_out: messages sent: each send to an open socket, and one per
            subscriber a publish reached (local or from another process); those
            then dropped at a ``backpressure_limit`` included (see ``dropped``).
        bytes_in: bytes read from upgraded sockets, frame headers included.
        bytes_out: payload bytes of ``messages_out`` (before compression).
        publishes: publishes fanned out here (``publish``, and those from other
            processes).
        deliveries: subscribers those publishes were handed to (0 for a
            publish nobody here is subscribed to), counted before the fan-out:
            those that dropped it are included (at their ``backpressure_limit``,
            see ``dropped``, or closed by an earlier subscriber's hook during
            the same fan-out, which takes nothing).
        dropped: messages dropped at a socket's ``backpressure_limit`` (send or
            publish returned 0, or the socket was closed for it).
        backpressure: episodes in which a socket's output backed up (the kernel
            did not take all of it: sends answered -1), counted as each ends
            (everything written; the ``drain`` hook's moment).
        closes: sockets closed, by close code (what ``close`` saw).
        upgrades_refused: handshakes refused, by reason (``origin``,
            ``version``, ``handshake``, ``shutting_down``).
        hook_failures: hooks that raised (each closed its socket with 1011).
        rate_limited: times a socket went over its ``rate_limit``.
        broker_published, broker_received, broker_dropped, broker_outages:
            the broker's own counters (``RedisBroker``: ``published``,
            ``received``, ``dropped``, ``reconnects``); 0 without such a broker.
        broker_up: gauge: 1 while the broker reaches its backend (always 1
            for one without a ``connected`` attribute, such as the default).
        history_replays: messages replayed from history (0 until history is on).
        presence_members: gauge: members tracked by presence (0 until it is on).
    """

    open_sockets: int
    topics: int
    messages_in: int
    messages_out: int
    bytes_in: int
    bytes_out: int
    publishes: int
    deliveries: int
    dropped: int
    backpressure: int
    closes: Mapping[int, int]
    upgrades_refused: Mapping[str, int]
    hook_failures: int
    rate_limited: int
    broker_published: int
    broker_received: int
    broker_dropped: int
    broker_outages: int
    broker_up: int
    history_replays: int
    presence_members: int


def snapshot(
    counters: Counters,
    open_sockets: int,
    topics: int,
    broker: object,
    presence_members: int = 0,
) -> Metrics:
    """``counters`` now, with the gauges given and ``broker``'s counters
    (read by name, 0 for a broker without them)."""

    def of_broker(name: str) -> int:
        value = getattr(broker, name, 0)
        return value if type(value) is int else 0

    return Metrics(
        open_sockets=open_sockets,
        topics=topics,
        messages_in=counters.messages_in,
        messages_out=counters.messages_sent + counters.deliveries,
        bytes_in=counters.bytes_in,
        bytes_out=counters.bytes_sent + counters.bytes_delivered,
        publishes=counters.publishes,
        deliveries=counters.deliveries,
        dropped=counters.dropped,
        backpressure=counters.backpressure,
        closes=dict(counters.closes),
        upgrades_refused=dict(counters.refused),
        hook_failures=counters.hook_failures,
        rate_limited=counters.rate_limited,
        broker_published=of_broker("published"),
        broker_received=of_broker("received"),
        broker_dropped=of_broker("dropped"),
        broker_outages=of_broker("reconnects"),
        broker_up=int(getattr(broker, "connected", True) is not False),
        history_replays=counters.history_replays,
        presence_members=presence_members,
    )
