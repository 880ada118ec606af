"""The hand-over from replay to live, driven step by step: the hub and
``History`` as they are, a stream of our own standing in for Redis (so that the
live messages can arrive exactly when the test says), and sockets seen through
the hub's port, as in tests/test_hub.py."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from aiohttp_upgrade import LocalBroker, Position, ReadyState
from aiohttp_upgrade._history import History
from aiohttp_upgrade._history_local import IDLE_KEEP, Item, Slice
from aiohttp_upgrade._hub import Hub
from aiohttp_upgrade._positions import Policy

TOPIC = "t"
EPOCH = "e"


class Outbox:
    """Records the offsets it is given (each payload is its offset)."""

    compressor = None

    def __init__(self) -> None:
        self.offsets: list[int] = []

    def enqueue(self, frame: bytes, length: int, message: object = None) -> int:
        self.offsets.append(int(message))  # type: ignore[call-overload]
        return length

    def send(self, opcode: int, payload: bytes, compress: bool, *args: Any) -> int:
        self.offsets.append(int(payload))
        return len(payload)


class Port:
    def __init__(self, ws: Socket) -> None:
        self.outbox = Outbox()
        self.ws = ws

    def subscription(self, topic: str, new_count: int, old_count: int) -> None:
        pass


class Socket:
    """What ``History.resume`` uses of a ServerWebSocket."""

    ready_state = ReadyState.OPEN

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.port = Port(self)

    def is_subscribed(self, topic: str) -> bool:
        return self.hub.is_subscribed(self.port, topic)  # type: ignore[arg-type]

    def subscribe(self, topic: str) -> bool:
        return self.hub.subscribe(self.port, topic)  # type: ignore[arg-type]

    def get_buffered_amount(self) -> int:
        return 0

    def cork(self, callback: Any) -> Any:
        return callback(self)


class Stream:
    """Redis's stream of the topic; ``on_fetch`` runs once, inside the next read
    (live messages arriving while a replay waits for Redis)."""

    remote = True

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.on_fetch: Any = None

    def extend(self, last: int) -> None:
        start = self.items[-1][0] + 1 if self.items else 1
        self.items += [(o, 2, str(o).encode(), False) for o in range(start, last + 1)]

    async def fetch(
        self, topic: str, policy: Policy, after: int, limit: int, tail: bool = False
    ) -> Slice:
        hook, self.on_fetch = self.on_fetch, None
        if hook is not None:
            hook()
        chosen = [item for item in self.items if item[0] > after][:limit]
        return Slice(EPOCH, self.items[-1][0] if self.items else 0, chosen, True)


class Remote(LocalBroker):
    remote = True

    def __init__(self, stream: Stream) -> None:
        super().__init__()
        self.stream = stream

    def history_backend(self) -> Any:
        return self.stream


def live(history: History, first: int, last: int) -> None:
    """Messages ``first``..``last`` reach this process from Redis."""
    records = [(o, 2, str(o).encode(), False, None) for o in range(first, last + 1)]
    history.accept(TOPIC, EPOCH, records)


async def settle(history: History) -> None:
    """Wait for the history's reads of the stream (gap repairs) to end."""
    # Until every read has ended: awaiting tasks that are all done does not yield
    # on Python 3.12+, so the set (emptied by done callbacks) is not what to test.
    while pending := [task for task in history._tasks if not task.done()]:
        await asyncio.gather(*pending)


async def test_a_resume_after_an_ended_hold_replays_without_a_hole() -> None:
    """A resume that starts after another socket's hold ended gets every offset
    after its position once: the live messages kept for the earlier hand-over
    are not mistaken for a complete record of what came live since."""
    hub, stream = Hub(), Stream()
    history = History(hub, Remote(stream), 1 << 20)
    history.enable(TOPIC)
    bystander = Socket(hub)
    bystander.subscribe(TOPIC)
    stream.extend(11)
    live(history, 1, 5)  # this process is behind Redis
    first = Socket(hub)
    resumed = await history.resume(first, TOPIC, Position(EPOCH, 0))  # type: ignore[arg-type]
    assert resumed.recovered and first.port.outbox.offsets == list(range(1, 12))
    await settle(history)
    assert bystander.port.outbox.offsets == list(range(1, 12))
    live(history, 12, 12)  # the first socket's hold ends here
    stream.extend(400)
    live(history, 13, 299)
    second = Socket(hub)
    stream.on_fetch = lambda: live(history, 300, 310)
    resumed = await history.resume(second, TOPIC, Position(EPOCH, 5))  # type: ignore[arg-type]
    await settle(history)
    assert resumed.recovered
    assert second.port.outbox.offsets == list(range(6, 311))


class LateStream(Stream):
    """A stream whose ``on_fetch`` runs after the read is answered (live
    messages arriving while the reply is on its way)."""

    async def fetch(
        self, topic: str, policy: Policy, after: int, limit: int, tail: bool = False
    ) -> Slice:
        chosen = [item for item in self.items if item[0] > after][:limit]
        answer = Slice(EPOCH, self.items[-1][0] if self.items else 0, chosen, True)
        hook, self.on_fetch = self.on_fetch, None
        if hook is not None:
            hook()
        return answer


async def test_a_message_held_during_a_repair_is_not_stuck() -> None:
    """A message that arrives after a gap while a repair's read is on its way
    is delivered (with the missing one) when that repair ends, not only at the
    next publish."""
    hub, stream = Hub(), LateStream()
    history = History(hub, Remote(stream), 1 << 20)
    history.enable(TOPIC)
    bystander = Socket(hub)
    bystander.subscribe(TOPIC)
    stream.extend(5)
    live(history, 1, 5)

    def missed_six() -> None:
        stream.extend(7)
        live(history, 7, 7)  # 6 never came live; 7 waits behind it

    stream.on_fetch = missed_six
    history.check(TOPIC)  # e.g. Redis confirmed the SUBSCRIBE again
    await settle(history)
    assert bystander.port.outbox.offsets == list(range(1, 8))


async def test_a_second_resume_on_one_socket_delivers_each_offset_once() -> None:
    """A socket that unsubscribes during its replay and resumes again gets no
    more of the first replay: each offset reaches it once."""
    hub, stream = Hub(), Stream()
    history = History(hub, Remote(stream), 1 << 20)
    history.enable(TOPIC)
    stream.extend(300)
    live(history, 1, 300)
    sock = Socket(hub)
    second: list[asyncio.Task[Any]] = []

    def again() -> None:  # during the first replay's second read
        hub.unsubscribe(sock.port, TOPIC)  # type: ignore[arg-type]
        resume = history.resume(sock, TOPIC, Position(EPOCH, 290))  # type: ignore[arg-type]
        second.append(asyncio.create_task(resume))

    stream.on_fetch = lambda: setattr(stream, "on_fetch", again)
    first = await history.resume(sock, TOPIC, Position(EPOCH, 0))  # type: ignore[arg-type]
    resumed = await second[0]
    await settle(history)
    stream.extend(306)
    live(history, 301, 306)
    assert (first.reason, resumed.recovered) == ("dropped", True)
    assert sock.port.outbox.offsets == [*range(1, 101), *range(291, 307)]


async def test_the_sweep_frees_expired_history_and_unused_tracks() -> None:
    """The periodic sweep (armed by the first delivery) drops messages past
    their ttl, the track of a topic nobody here subscribes to any more, and a
    topic's empty history once idle for IDLE_KEEP."""
    hub = Hub()
    history = History(hub, LocalBroker(), 1 << 20)
    history.enable(TOPIC, ttl=1)
    sock = Socket(hub)
    await history.resume(sock, TOPIC)  # type: ignore[arg-type]
    hub.publish(TOPIC, 2, b"1", False, 1)
    assert sock.port.outbox.offsets == [1] and history._sweeper is not None
    hub.unsubscribe(sock.port, TOPIC)  # type: ignore[arg-type]
    local, now = history._local, time.monotonic()
    assert local is not None
    history.sweep(now + 2)
    assert not local._rings[TOPIC].items and not history._tracks
    history.sweep(now + IDLE_KEEP + 2)
    assert not local._rings


async def test_an_unexpected_repair_failure_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A repair that fails unexpectedly is logged when it ends, not lost."""
    hub, stream = Hub(), Stream()
    history = History(hub, Remote(stream), 1 << 20)
    history.enable(TOPIC)
    Socket(hub).subscribe(TOPIC)
    stream.extend(5)
    live(history, 1, 5)

    def boom() -> None:
        raise RuntimeError("boom")

    stream.on_fetch = boom
    history.check(TOPIC)
    await asyncio.wait(list(history._tasks))
    assert "repairing a history topic failed" in caplog.text
    assert "boom" in caplog.text
