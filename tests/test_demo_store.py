"""The demo's SQLite store, on a real database file in tmp_path."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from demo.models import User
from demo.store import Store, StoreClosedError

NOW = 1_700_000_000.0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store(tmp_path / "data" / "chat.sqlite3") as store:
        yield store


async def test_open_creates_directory_and_file(tmp_path: Path) -> None:
    """Opening a store in a missing directory creates it and the database."""
    path = tmp_path / "new" / "dir" / "chat.sqlite3"
    async with Store(path):
        pass
    assert path.is_file()


async def test_user_for_name_is_stable(store: Store) -> None:
    """The same name, in any case, always maps to the same user."""
    first = await store.user_for_name("Ada")
    second = await store.user_for_name("ada")
    other = await store.user_for_name("bob")
    assert first == second
    assert first.name == "Ada"
    assert other.id != first.id


async def test_session_resolves_to_its_user(store: Store) -> None:
    """A recorded session resolves to its user until it expires."""
    ada = await store.user_for_name("ada")
    await store.create_session("s1", ada.id, int(NOW) + 10, NOW)
    assert await store.user_for_session("s1", NOW) == ada
    assert await store.user_for_session("s1", NOW + 10) is None


async def test_unknown_session_resolves_to_nobody(store: Store) -> None:
    """A session id that was never recorded resolves to nobody."""
    assert await store.user_for_session("nope", NOW) is None


async def test_deleted_session_resolves_to_nobody(store: Store) -> None:
    """Signing out deletes the session so its token stops working."""
    ada = await store.user_for_name("ada")
    await store.create_session("s1", ada.id, int(NOW) + 10, NOW)
    await store.delete_session("s1")
    assert await store.user_for_session("s1", NOW) is None


async def test_recent_messages_oldest_first_and_limited(store: Store) -> None:
    """History returns the last N messages of one room, oldest first."""
    ada = await store.user_for_name("ada")
    for i in range(5):
        await store.save_message("r", ada.id, f"m{i}", NOW + i)
    await store.save_message("other", ada.id, "elsewhere", NOW)
    history = await store.recent_messages("r", limit=3)
    assert [m.text for m in history] == ["m2", "m3", "m4"]
    assert all(m.user == ada for m in history)


async def test_save_message_rejects_unknown_user(store: Store) -> None:
    """A message can only be saved for a user that exists."""
    with pytest.raises(sqlite3.IntegrityError):
        await store.save_message("r", 12345, "ghost", NOW)


async def test_messages_survive_reopen(tmp_path: Path) -> None:
    """Messages written by one store are read by the next one on the same file."""
    path = tmp_path / "chat.sqlite3"
    async with Store(path) as first:
        ada = await first.user_for_name("ada")
        saved = await first.save_message("r", ada.id, "persist me", NOW)
    async with Store(path) as second:
        assert await second.recent_messages("r") == [saved]


async def test_queries_run_off_the_loop_thread(store: Store) -> None:
    """Database work runs on the store's own thread, never the event loop's."""
    seen: list[str] = []

    def probe(conn: sqlite3.Connection) -> None:
        seen.append(threading.current_thread().name)

    await store._run(probe)
    assert seen[0].startswith("demo-store")
    assert seen[0] != threading.current_thread().name


async def test_unopened_store_refuses_work(tmp_path: Path) -> None:
    """Querying a store before open raises StoreClosedError."""
    store = Store(tmp_path / "chat.sqlite3")
    with pytest.raises(StoreClosedError):
        await store.user_for_name("ada")


async def test_closed_store_refuses_work(tmp_path: Path) -> None:
    """Using a store after close raises StoreClosedError; closing twice is fine."""
    store = Store(tmp_path / "chat.sqlite3")
    await store.open()
    await store.close()
    await store.close()
    with pytest.raises(StoreClosedError):
        await store.user_for_name("ada")


async def test_history_is_kept_per_room_up_to_its_bound(tmp_path: Path) -> None:
    """Saving beyond history_per_room deletes that room's oldest, not others'."""
    async with Store(tmp_path / "chat.sqlite3", history_per_room=3) as store:
        user = await store.user_for_name("ada")
        await store.save_message("quiet", user.id, "kept", NOW)
        for n in range(10):
            await store.save_message("busy", user.id, f"m{n}", NOW)
        busy = await store.recent_messages("busy", 100)
        quiet = await store.recent_messages("quiet", 100)
    assert [m.text for m in busy] == ["m7", "m8", "m9"]
    assert [m.text for m in quiet] == ["kept"]


async def test_stored_messages_are_bounded_in_all(tmp_path: Path) -> None:
    """Messages spread over many rooms are bounded by max_stored_messages."""
    path = tmp_path / "chat.sqlite3"
    async with Store(path, max_stored_messages=5) as store:
        user = await store.user_for_name("ada")
        for n in range(12):
            await store.save_message(f"room{n}", user.id, f"m{n}", NOW)
    with sqlite3.connect(path) as conn:
        texts = [
            row[0] for row in conn.execute("SELECT text FROM messages ORDER BY id")
        ]
    conn.close()
    assert texts == ["m7", "m8", "m9", "m10", "m11"]


async def test_lookalike_names_find_one_user(store: Store) -> None:
    """A fullwidth or upper-case spelling finds the user, and creates no other."""
    ada = await store.user_for_name("ada")
    assert await store.user_for_name("\uff21\uff24\uff21") == ada
    assert await store.find_user("ADA") == ada
    assert await store.find_user("bob") is None


async def test_database_of_an_earlier_demo_is_migrated(tmp_path: Path) -> None:
    """An old users table gains name keys; of two old lookalikes the first keeps the name."""
    path = tmp_path / "chat.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript(
            "CREATE TABLE users (id INTEGER PRIMARY KEY,"
            " name TEXT NOT NULL UNIQUE COLLATE NOCASE);"
            "INSERT INTO users (name) VALUES ('ada'), ('\uff21\uff24\uff21'), ('bob');"
        )
    conn.close()
    async with Store(path) as store:
        assert await store.user_for_name("Ada") == User(1, "ada")
        assert await store.find_user("bob") == User(3, "bob")
        assert (await store.user_for_name("carol")).id == 4
    async with Store(path) as store:  # a second open leaves it as it is
        assert await store.find_user("ada") == User(1, "ada")


async def test_create_session_revokes_beyond_the_caps(tmp_path: Path) -> None:
    """Recording a session deletes the replaced one and the oldest beyond the
    per-user and total caps, and returns their ids."""
    path = tmp_path / "chat.sqlite3"
    expiry = int(NOW) + 60
    async with Store(path, sessions_per_user=2, max_sessions=3) as store:
        ada = await store.user_for_name("ada")
        bob = await store.user_for_name("bob")
        assert await store.create_session("a1", ada.id, expiry, NOW) == []
        assert await store.create_session("a2", ada.id, expiry, NOW) == []
        assert await store.create_session("a3", ada.id, expiry, NOW) == ["a1"]
        assert await store.create_session("a4", ada.id, expiry, NOW, "a3") == ["a3"]
        assert await store.create_session("b1", bob.id, expiry, NOW) == []
        assert await store.create_session("b2", bob.id, expiry, NOW) == ["a2"]
        live = await store.live_sessions(["a1", "a2", "a3", "a4", "b1", "b2"], NOW)
    assert live == {"a4", "b1", "b2"}


def stored_text_bytes(path: Path) -> tuple[int, list[str]]:
    """The UTF-8 bytes of all stored message texts, and the texts, oldest first."""
    with sqlite3.connect(path) as conn:
        texts = [
            str(row[0]) for row in conn.execute("SELECT text FROM messages ORDER BY id")
        ]
    conn.close()
    return sum(len(text.encode()) for text in texts), texts


async def test_stored_messages_are_bounded_in_bytes(tmp_path: Path) -> None:
    """Messages of 4-byte characters are trimmed, oldest first, to max_stored_bytes."""
    path = tmp_path / "chat.sqlite3"
    async with Store(path, max_stored_bytes=1000) as store:
        user = await store.user_for_name("ada")
        for n in range(30):  # 30 x 201 bytes
            await store.save_message(
                f"room{n % 3}", user.id, f"{n % 10}" + "\U0001f600" * 50, NOW
            )
    size, texts = stored_text_bytes(path)
    assert size <= 1000
    assert [text[0] for text in texts] == ["5", "6", "7", "8", "9"][-len(texts) :]
    assert len(texts) == 4


async def test_message_larger_than_the_byte_bound_is_kept_alone(
    tmp_path: Path,
) -> None:
    """A message alone over max_stored_bytes is still saved, and the only one kept."""
    path = tmp_path / "chat.sqlite3"
    async with Store(path, max_stored_bytes=100) as store:
        user = await store.user_for_name("ada")
        await store.save_message("r", user.id, "small", NOW)
        saved = await store.save_message("r", user.id, "\U0001f600" * 50, NOW)
        assert await store.recent_messages("r") == [saved]


async def test_byte_bound_counts_messages_of_an_earlier_demo(tmp_path: Path) -> None:
    """Messages stored before the byte bound existed count against it."""
    path = tmp_path / "chat.sqlite3"
    async with Store(path) as store:
        user = await store.user_for_name("ada")
        for n in range(10):
            await store.save_message("r", user.id, f"{n}" + "\U0001f600" * 50, NOW)
    with sqlite3.connect(path) as conn:  # as the demo before the bound left it
        conn.executescript(
            "DROP TABLE IF EXISTS message_bytes;"
            "DROP TRIGGER IF EXISTS message_bytes_insert;"
            "DROP TRIGGER IF EXISTS message_bytes_delete;"
            "PRAGMA user_version = 1;"
        )
    conn.close()
    async with Store(path, max_stored_bytes=1000) as store:
        await store.save_message("r", user.id, "new", NOW)
    size, texts = stored_text_bytes(path)
    assert size <= 1000
    assert texts[-1] == "new"
