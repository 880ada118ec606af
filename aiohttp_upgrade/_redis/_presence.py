"""Presence across processes: deltas, resyncs and expiry on one Redis channel.

Nothing is stored in Redis: each process owns its entries and tells the others
on the channel ``{prefix}\\xffpresence`` (``\\xff`` never occurs in a topic's
UTF-8, so no topic's channel can clash), in JSON messages sent by the writer
with its bookkeeping::

    {"o": id, "t": "d", "s": seq, "c": [[n, topic, key, meta] | [n], ...]}
                         a delta: entries joined or changed, or left ([n])
    {"o": id, "t": "s", "s": seq, "e": [[n, topic, key, meta], ...]}
                         a state: all of the sender's entries (a resync)
    {"o": id, "t": "p", "s": seq, "e": [...]}
                         a part of the state of the same seq that follows
    {"o": id, "t": "b", "s": seq}      a heartbeat, with the last seq sent
    {"o": id, "t": "h", "to": id|null} a hello: send me your state (null: all)

A receiver applies a delta in O(1) per change and a state as a replacement
(only differences count as changes: nobody sees anyone leave and rejoin). Each
sender numbers its deltas and states; a message longer than ``max_batch_bytes``
is split (a subscriber sent more than Redis's pubsub output-buffer limit at once
is disconnected): a delta into several deltas, a state into parts and a last
message that applies the whole; a receiver that sees a gap (a message
lost, a process it has not heard the state of) asks that process for its state.
A process asks everyone when its reader has subscribed (at start and after
every reconnect, as after a Redis restart), and sends its state whenever its
writer has a new connection. A process not heard from for ``EXPIRY_HEARTBEATS``
heartbeat intervals is gone: its entries leave. That clock stops while this
process's own reader is down (it could hear nobody) and restarts when the
reader is back.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any, Final

from ._config import EXPIRY_HEARTBEATS, Config, Counters, Session, Wakeup

if TYPE_CHECKING:
    from .._presence import Entry
    from .._presence_api import Presence
    from ._counts import Command
    from ._link import Link

__all__ = ["CHANNEL_SUFFIX", "MAX_DELTA", "RedisPresence"]

logger = logging.getLogger("aiohttp_upgrade")

CHANNEL_SUFFIX: Final = b"\xffpresence"
# Past this many changes waiting for one turn, a state replaces the deltas.
MAX_DELTA: Final = 10_000


class RedisPresence:
    """This process's side of presence through Redis (see the module)."""

    __slots__ = (
        "_counters",
        "_pub",
        "_publish",
        "_session",
        "_sub",
        "_subscribed_kind",
        "_timer",
        "_wakeup",
        "asked",
        "channel",
        "expected",
        "heard",
        "hello_all",
        "limit",
        "node",
        "outgoing",
        "parts",
        "seq",
        "state_due",
        "timeout",
        "view",
    )

    def __init__(
        self,
        config: Config,
        counters: Counters,
        session: Session,
        links: tuple[Link, Link],
        wakeup: Wakeup,
    ) -> None:
        self._counters = counters
        self._session = session
        self._pub, self._sub = links
        self._wakeup = wakeup
        self._timer: asyncio.TimerHandle | None = None
        self.channel = config.control_key(CHANNEL_SUFFIX)
        self._subscribed_kind = config.subscribed_kind
        self._publish = config.publish_command
        self.timeout = config.heartbeat_interval * EXPIRY_HEARTBEATS
        self.node = session.proc_id.decode()
        self.seq = 0  # of our last delta or state
        self.limit = config.max_batch_bytes  # the longest message we send
        self.parts: dict[str, tuple[int, list[Any]]] = {}  # node -> seq, entries
        self.outgoing: list[list[Any]] = []  # our changes not sent yet
        self.state_due = False
        self.hello_all = False
        self.asked: set[str] = set()  # processes to ask for their state
        self.heard: dict[str, float] = {}  # other processes -> last heard
        self.expected: dict[str, int] = {}  # ... -> seq of their last message
        host = session.host
        self.view: Presence | None = None if host is None else host.presence
        if self.view is not None:
            self.view.attach(self.changed)

    @property
    def due(self) -> bool:
        """Something to send (the writer is not idle)."""
        return bool(self.outgoing or self.state_due or self.hello_all or self.asked)

    # -- our own entries ------------------------------------------------------------

    def changed(self, number: int, entry: Entry | None) -> None:
        """One of our entries joined, changed or left (the view's relay)."""
        if self._session.closing:
            return
        if not self._pub.up or len(self.outgoing) >= MAX_DELTA:
            # Lost or too many: the others get our whole state instead.
            self.outgoing = []
            self.state_due = True
        elif entry is None:
            self.outgoing.append([number])
        else:
            self.outgoing.append([number, *entry])
        self._wakeup.wake()

    def commands(self, fresh: bool, beat: bool) -> list[Command]:
        """The PUBLISHes due in the writer's next pipeline: ``fresh`` on a new
        writer connection (what we sent may be lost: our state goes again),
        ``beat`` when a heartbeat is due."""
        view = self.view
        if view is None:
            return []
        messages: list[dict[str, Any]] = []
        if self.hello_all or self.asked:
            to: list[str | None] = [None]
            if not self.hello_all:
                to = [*sorted(self.asked)]
            messages += [{"t": "h", "to": one} for one in to]
            self.hello_all = False
            self.asked.clear()
        entries = view.own_entries() if fresh or self.state_due else None
        channel, node = self.channel, self.node
        encoded = [json.dumps({"o": node, **message}).encode() for message in messages]
        if entries is not None and (entries or self.seq):
            self.seq += 1
            state = [[number, *entry] for number, entry in entries.items()]
            *parts, last = self._split(state)
            encoded += [self._encode("p", part) for part in parts]
            encoded.append(self._encode("s", last))
        elif self.outgoing:
            for part in self._split(self.outgoing):
                self.seq += 1
                encoded.append(self._encode("d", part))
        elif beat and self.seq:
            encoded.append(self._encode("b", None))
        self.outgoing = []
        self.state_due = False
        publish = self._publish
        return [(publish, channel, data) for data in encoded]

    def _encode(self, kind: str, items: list[Any] | None) -> bytes:
        message: dict[str, Any] = {"o": self.node, "t": kind, "s": self.seq}
        if items is not None:
            message["c" if kind == "d" else "e"] = items
        return json.dumps(message).encode()

    def _split(self, items: list[Any]) -> list[list[Any]]:
        """``items`` in parts whose message is at most ``limit`` bytes (an
        item longer than that alone); one part when all fit (the usual case)."""
        room = self.limit - 100  # the message's other fields
        if len(json.dumps(items)) <= room:
            return [items]
        parts: list[list[Any]] = [[]]
        size = 0
        for item in items:
            length = len(json.dumps(item)) + 2
            if parts[-1] and size + length > room:
                parts.append([])
                size = 0
            parts[-1].append(item)
            size += length
        return parts

    # -- the others' -------------------------------------------------------------------

    def confirmed(self, reply: Any) -> None:
        """A reply on the reader's connection that is not a message: when it
        confirms our channel's SUBSCRIBE, we hear again: ask everyone."""
        if (
            isinstance(reply, list)
            and len(reply) == 3
            and reply[0] == self._subscribed_kind
            and reply[1] == self.channel
            and self.view is not None
        ):
            now = asyncio.get_running_loop().time()
            for node in self.heard:
                self.heard[node] = now  # a new start of their clocks
            self.hello_all = True
            self._wakeup.wake()

    def received(self, channel: Any, data: Any) -> None:
        """A message on a channel that is no topic's: ours, or stale."""
        if channel != self.channel or type(data) is not bytes or self.view is None:
            return
        try:
            message = json.loads(data)
            node = message["o"]
            if node == self.node:
                return
            self._hear(node, message)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            self._counters.malformed += 1
            logger.warning("ignoring a malformed presence message: %r", exc)

    def _hear(self, node: str, message: dict[str, Any]) -> None:
        view = self.view
        assert view is not None
        if type(node) is not str:
            raise TypeError("node")
        self.heard[node] = asyncio.get_running_loop().time()
        self._arm()
        kind = message["t"]
        if kind == "h":
            if message.get("to") in (None, self.node) and (
                self.seq or view.own_entries()
            ):
                self.state_due = True
                self._wakeup.wake()
            return
        seq = message["s"]
        if kind == "p":  # a part of the state that follows
            known = self.parts.get(node)
            if known is None or known[0] != seq:
                known = self.parts[node] = (seq, [])
            known[1].extend(message["e"])
        elif kind == "s":
            known = self.parts.pop(node, None)
            items = known[1] if known is not None and known[0] == seq else []
            entries: dict[int, Entry] = {
                int(n): (str(topic), str(key), meta)
                for n, topic, key, meta in items + message["e"]
            }
            view.replace(node, entries)
        elif kind == "d":
            # A process heard of for the first time starts at 1.
            if self.expected.get(node, 0) != seq - 1:
                self._ask(node)
            for change in message["c"]:
                entry = None if len(change) == 1 else (change[1], change[2], change[3])
                view.apply(node, int(change[0]), entry)
        elif kind == "b" and self.expected.get(node, 0) != seq:
            self._ask(node)
        self.expected[node] = seq

    def _ask(self, node: str) -> None:
        self.asked.add(node)
        self._wakeup.wake()

    # -- expiry --------------------------------------------------------------------------

    def _arm(self) -> None:
        if self._timer is None and self.heard:
            deadline = min(self.heard.values()) + self.timeout
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        """Forget the processes not heard from for ``timeout`` (not while our
        own reader is down: then we hear nobody)."""
        self._timer = None
        view = self.view
        if self._session.closing:
            return
        now = asyncio.get_running_loop().time()
        if not self._sub.up:
            for node in self.heard:
                self.heard[node] = now
        for node, last in list(self.heard.items()):
            if now - last >= self.timeout:
                del self.heard[node]
                self.expected.pop(node, None)
                self.parts.pop(node, None)
                try:
                    if view is not None:
                        view.forget(node)
                except Exception:  # the others still expire, the timer re-arms
                    logger.exception("forgetting presence process %s failed", node)
        self._arm()
