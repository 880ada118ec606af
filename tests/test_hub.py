"""The pub/sub hub (``aiohttp_upgrade._hub``): topics, fan-out, relay, without sockets.

The hub is pure: these tests drive it through fake ports (the
``SocketPort`` seam) that record what the hub did to them. The real socket side
is covered by tests/test_pubsub.py and tests/test_broker.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aiohttp_upgrade._frames import OP_BINARY, OP_TEXT, build_frame
from aiohttp_upgrade._hub import Hub, Relayed

PACKAGE = Path(__file__).resolve().parent.parent / "aiohttp_upgrade"


class FakeOutbox:
    """Records what is queued and answers with a preset code."""

    compressor: object | None = None

    def __init__(self, code: int | None = None) -> None:
        self.code = code
        self.queued: list[tuple[bytes, int, object]] = []

    def enqueue(self, frame: bytes, length: int, message: object = None) -> int:
        self.queued.append((frame, length, message))
        return length if self.code is None else self.code

    def send(
        self,
        opcode: int,
        payload: bytes,
        compress: bool,
        message: object = None,
        frame: bytes | None = None,
        shared: dict[tuple[int, int], bytes] | None = None,
    ) -> int:
        raise AssertionError("no compressor: the hub must not ask to compress")

    def enqueue_control(self, frame: bytes) -> None:
        raise AssertionError("the hub never queues a control frame")


class FakePort:
    """A socket as the hub sees it."""

    def __init__(self, code: int | None = None) -> None:
        self.outbox = FakeOutbox(code)
        self.ws = object()  # what publish(exclude=...) names
        self.transitions: list[tuple[str, int, int]] = []

    def subscription(self, topic: str, new_count: int, old_count: int) -> None:
        self.transitions.append((topic, new_count, old_count))

    def close(self, code: int, reason: str) -> None:
        raise AssertionError("the hub never closes a socket")

    def shutdown(self, code: int, reason: str, frame: bytes) -> None:
        raise AssertionError("the hub never shuts a socket down")

    def idle_tick(self, ticks_to_ping: int, ticks_to_close: int) -> None:
        raise AssertionError("the hub never ticks a socket")


class Relay:
    """Records the broker calls."""

    def __init__(self) -> None:
        self.published: list[tuple[str, int, bytes, bool]] = []
        self.interest: list[tuple[str, int, int]] = []

    def publish(self, topic: str, opcode: int, payload: bytes, compress: bool) -> None:
        self.published.append((topic, opcode, payload, compress))

    def subscription(self, topic: str, new: int, old: int) -> None:
        self.interest.append((topic, new, old))


def subscribed(hub: Hub, *ports: FakePort, topic: str = "room") -> None:
    for port in ports:
        assert hub.subscribe(port, topic)


def test_publish_queues_one_frame_object_on_every_subscriber() -> None:
    """A publish builds the frame once: every subscriber queues the same bytes object."""
    hub = Hub()
    ports = [FakePort() for _ in range(3)]
    subscribed(hub, *ports)
    assert hub.publish("room", OP_TEXT, b"hi", False, "hi") == 2
    frames = [port.outbox.queued[0][0] for port in ports]
    assert frames[0] == build_frame(OP_TEXT, b"hi")
    assert all(frame is frames[0] for frame in frames)


@pytest.mark.parametrize(
    ("to_self", "expected"), [(False, 1), (True, 2)], ids=["default", "publish_to_self"]
)
def test_publish_skips_the_sender_unless_publish_to_self(
    to_self: bool, expected: int
) -> None:
    """The sending port gets its own publish only with publish_to_self."""
    hub = Hub(publish_to_self=to_self)
    sender, other = FakePort(), FakePort()
    subscribed(hub, sender, other)
    hub.publish("room", OP_TEXT, b"x", False, "x", sender)
    assert len(sender.outbox.queued) + len(other.outbox.queued) == expected


@pytest.mark.parametrize(
    ("codes", "expected"),
    [((None, None), 3), ((None, -1), -1), ((-1, 0), 0), ((0, None), 0)],
    ids=["all-took-it", "one-queued", "queued-and-dropped", "one-dropped"],
)
def test_publish_returns_the_worst_code(
    codes: tuple[int | None, ...], expected: int
) -> None:
    """The publish code is the length, -1 if any queued, 0 if any dropped."""
    hub = Hub()
    subscribed(hub, *(FakePort(code) for code in codes))
    assert hub.publish("room", OP_BINARY, b"abc", False, b"abc") == expected


def test_publish_without_subscribers_returns_zero_and_still_relays() -> None:
    """Nobody here: code 0, and the broker still gets the message for the others."""
    relay = Relay()
    hub = Hub(relay=relay.publish)
    assert hub.publish("room", OP_TEXT, b"x", True, "x") == 0
    assert relay.published == [("room", OP_TEXT, b"x", True)]


def test_deliver_is_not_relayed() -> None:
    """A message from another process goes to the local subscribers only."""
    relay = Relay()
    hub = Hub(relay=relay.publish)
    port = FakePort()
    subscribed(hub, port)
    assert hub.deliver("room", OP_BINARY, b"\xff", False) == 1
    assert relay.published == []
    assert port.outbox.queued == [(build_frame(OP_BINARY, b"\xff"), 1, b"\xff")]


def test_deliver_does_not_decode_a_relayed_text_payload() -> None:
    """A relayed text message is queued with a Relayed (decoded only on a drop)."""
    hub = Hub()
    port = FakePort()
    subscribed(hub, port)
    hub.deliver("room", OP_TEXT, "ünï".encode(), False)
    message = port.outbox.queued[0][2]
    assert isinstance(message, Relayed)
    assert message.decode() == "ünï"


def test_relayed_decodes_invalid_utf8_with_replacement() -> None:
    """A relayed payload that is not UTF-8 decodes with U+FFFD, never raising."""
    assert Relayed(b"a\xffb").decode() == "a\ufffdb"


def test_transitions_reach_the_broker_then_the_port() -> None:
    """Subscribe, unsubscribe and leave_all each tell the broker and the port, with
    the counts after and before."""
    relay = Relay()
    hub = Hub(interest=relay.subscription, subscription_hook=True)
    one, two = FakePort(), FakePort()
    hub.subscribe(one, "a")
    hub.subscribe(two, "a")
    hub.subscribe(one, "b")
    hub.unsubscribe(two, "a")
    assert hub.leave_all(one) == ["a", "b"]
    added = [("a", 1, 0), ("a", 2, 1), ("b", 1, 0)]
    removed = [("a", 1, 2), ("a", 0, 1), ("b", 0, 1)]
    assert relay.interest == [*added, *removed]
    assert one.transitions == [("a", 1, 0), ("b", 1, 0), ("a", 0, 1), ("b", 0, 1)]
    assert two.transitions == [("a", 2, 1), ("a", 1, 2)]


def test_without_a_hook_the_port_hears_of_no_transition() -> None:
    """subscription_hook=False: the hub never dispatches to the port."""
    hub = Hub()
    port = FakePort()
    hub.subscribe(port, "a")
    hub.leave_all(port)
    assert port.transitions == []


def test_counts_and_queries_follow_subscriptions() -> None:
    """count, counts, is_subscribed and topics_of read the hub's registry."""
    hub = Hub()
    one, two = FakePort(), FakePort()
    subscribed(hub, one, two, topic="a")
    subscribed(hub, one, topic="b")
    assert (hub.count("a"), hub.count("b"), hub.count("c")) == (2, 1, 0)
    assert hub.counts() == {"a": 2, "b": 1}
    assert hub.is_subscribed(two, "a") and not hub.is_subscribed(two, "b")
    assert hub.topics_of(one) == ["a", "b"]
