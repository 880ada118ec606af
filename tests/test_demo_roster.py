"""The shared presence table: two Roster objects on one real SQLite file are two
workers; their wall clock is a fake one moved by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from demo.models import User
from demo.roster import Change, Roster
from demo.store import Store

from .demo_support import FakeClock

HEARTBEAT = 5.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[tuple[Store, Store]]:
    path = tmp_path / "chat.sqlite3"
    async with Store(path) as first, Store(path) as second:
        yield first, second


@pytest.fixture
async def users(stores: tuple[Store, Store], clock: FakeClock) -> tuple[User, User]:
    """Ada and Bob, each signed in (a heartbeat deletes users without a session)."""
    ada = await stores[0].user_for_name("ada")
    bob = await stores[0].user_for_name("bob")
    for user in (ada, bob):
        await stores[0].create_session(
            f"{user.name}-session", user.id, int(clock()) + 10**6, clock()
        )
    return ada, bob


@pytest.fixture
async def workers(
    stores: tuple[Store, Store], clock: FakeClock
) -> tuple[Roster, Roster]:
    a = Roster(stores[0], HEARTBEAT, clock)
    b = Roster(stores[1], HEARTBEAT, clock)
    await a.start()
    await b.start()
    return a, b


async def test_first_socket_on_any_worker_makes_the_member(
    workers: tuple[Roster, Roster], users: tuple[User, User]
) -> None:
    """A person's second socket, on another worker, is not a new member."""
    a, b = workers
    ada = users[0]
    assert await a.connect(1, "s1", ada.id, 5, 10)
    assert await b.connect(1, "s2", ada.id, 5, 10)
    assert await a.join(1, "general", ada) is True
    assert await b.join(1, "general", ada) is False
    assert await a.join(1, "general", ada) is False  # joining twice counts once
    assert await b.members("general") == [ada]


async def test_member_leaves_with_last_socket_on_any_worker(
    workers: tuple[Roster, Roster], users: tuple[User, User]
) -> None:
    """Leaving, or closing, reports the leave only for the person's last socket."""
    a, b = workers
    ada = users[0]
    for roster in workers:
        await roster.connect(1, "s1", ada.id, 5, 10)
        await roster.join(1, "general", ada)
    assert await a.leave(1, "general", ada) is False
    assert await a.leave(1, "general", ada) is False  # not in the room any more
    assert await b.disconnect(1) == [Change("general", ada, joined=False)]
    assert await a.members("general") == []


async def test_caps_count_sockets_of_every_worker(
    workers: tuple[Roster, Roster], users: tuple[User, User]
) -> None:
    """A session over its cap on all workers together is refused and not recorded."""
    a, b = workers
    ada = users[0]
    assert await a.connect(1, "s1", ada.id, 2, 10)
    assert await b.connect(1, "s1", ada.id, 2, 10)
    assert await a.connect(2, "s1", ada.id, 2, 10) is False
    assert await b.socket_counts("s1", ada.id) == (2, 2)
    assert await b.connect(2, "s2", ada.id, 2, 2) is False  # the user's cap


async def test_connected_elsewhere_sees_other_workers(
    workers: tuple[Roster, Roster], users: tuple[User, User]
) -> None:
    """A socket of another session on another worker holds the name."""
    a, b = workers
    ada = users[0]
    await a.connect(1, "s1", ada.id, 5, 10)
    assert await b.connected_elsewhere(ada.id, "s2") is True
    assert await b.connected_elsewhere(ada.id, "s1") is False
    assert await b.connected_elsewhere(ada.id, None) is True
    await a.disconnect(1)
    assert await b.connected_elsewhere(ada.id, None) is False


async def test_dead_worker_is_reaped_after_the_expiry(
    workers: tuple[Roster, Roster], users: tuple[User, User], clock: FakeClock
) -> None:
    """A worker without a heartbeat for 3 beats loses its rows, and the people
    who were only there are reported once, by the worker that reaped them."""
    a, b = workers
    ada, bob = users
    await a.connect(1, "s1", ada.id, 5, 10)
    await a.join(1, "general", ada)
    await b.connect(1, "s2", bob.id, 5, 10)
    await b.join(1, "general", bob)
    await b.connect(2, "s3", ada.id, 5, 10)
    await b.join(2, "general", ada)
    clock.advance(b.expiry)
    assert await a.beat() == []  # b was seen exactly expiry ago: still alive
    clock.advance(0.1)
    assert await a.beat() == [Change("general", bob, joined=False)]
    assert await a.members("general") == [ada]
    assert await a.beat() == []
    assert await a.connected_elsewhere(bob.id, None) is False


async def test_worker_reaped_while_alive_registers_again(
    workers: tuple[Roster, Roster], users: tuple[User, User], clock: FakeClock
) -> None:
    """A worker that stalled past the expiry writes its sockets back at its next
    beat and reports the people who are members again."""
    a, b = workers
    bob = users[1]
    await b.connect(1, "s2", bob.id, 5, 10)
    await b.join(1, "general", bob)
    clock.advance(b.expiry + 1)
    await a.beat()
    assert await a.members("general") == []
    assert await b.beat() == [Change("general", bob, joined=True)]
    assert await a.members("general") == [bob]
    assert await a.socket_counts("s2", bob.id) == (1, 1)


async def test_exclusive_start_clears_rows_left_by_a_crash(
    stores: tuple[Store, Store], users: tuple[User, User], clock: FakeClock
) -> None:
    """A single worker (no broker) starting drops every earlier worker's rows."""
    ada = users[0]
    crashed = Roster(stores[0], HEARTBEAT, clock)
    await crashed.start()
    await crashed.connect(1, "s1", ada.id, 5, 10)
    await crashed.join(1, "general", ada)
    fresh = Roster(stores[1], HEARTBEAT, clock)
    await fresh.start(exclusive=True)
    assert await fresh.members("general") == []
    assert await fresh.socket_counts("s1", ada.id) == (0, 0)


async def test_stop_removes_the_worker(
    workers: tuple[Roster, Roster], users: tuple[User, User]
) -> None:
    """A worker that stops cleanly leaves no rows behind."""
    a, b = workers
    ada = users[0]
    await a.connect(1, "s1", ada.id, 5, 10)
    await a.join(1, "general", ada)
    await a.stop()
    assert await b.members("general") == []
    assert await b.socket_counts("s1", ada.id) == (0, 0)


def test_heartbeat_must_be_positive(tmp_path: Path) -> None:
    """A zero or negative heartbeat is refused when the roster is made."""
    with pytest.raises(ValueError, match="heartbeat"):
        Roster(Store(tmp_path / "x.sqlite3"), heartbeat=0)


async def test_beat_deletes_only_users_nothing_refers_to(
    stores: tuple[Store, Store], workers: tuple[Roster, Roster], clock: FakeClock
) -> None:
    """A heartbeat deletes a user without session, message or socket, and keeps
    a user who has any one of them."""
    store, (a, _b) = stores[0], workers
    await store.user_for_name("carol")
    signed_in, author, connected = [
        await store.user_for_name(name) for name in ("dan", "eve", "fay")
    ]
    await store.create_session("dan-session", signed_in.id, int(clock()) + 60, clock())
    await store.save_message("general", author.id, "still here", clock())
    assert await a.connect(1, "revoked-session", connected.id, 5, 10)
    await a.beat()
    assert await store.find_user("carol") is None
    for user in (signed_in, author, connected):
        assert await store.find_user(user.name) == user
