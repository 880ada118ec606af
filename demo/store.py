"""SQLite storage on one dedicated worker thread.

Every query is an ``async`` method that hands a short function to a
single-thread :class:`~concurrent.futures.ThreadPoolExecutor`. The connection
is opened and used only on that thread, so calls run one at a time in the order
they were made and the event loop never waits on the disk. Writes are committed
before the awaiting coroutine resumes: a message is durable by the time it is
published.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from .limits import (
    DEFAULT_HISTORY_PER_ROOM,
    DEFAULT_MAX_SESSIONS,
    DEFAULT_MAX_STORED_BYTES,
    DEFAULT_MAX_STORED_MESSAGES,
    DEFAULT_SESSIONS_PER_USER,
)
from .models import ChatMessage, User
from .names import name_key

__all__ = ["DEFAULT_HISTORY_LIMIT", "SWEEP_USERS", "Store", "StoreClosedError"]

DEFAULT_HISTORY_LIMIT = 50
# Users examined for deletion per sweep (a millisecond or two of the write
# lock); a pass over 200,000 users takes 40 sweeps.
SWEEP_USERS = 5_000

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    name_key TEXT UNIQUE
);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    room TEXT NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users(id),
    text TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_room ON messages (room, id);
CREATE INDEX IF NOT EXISTS messages_by_user ON messages (user_id);
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (user_id);
CREATE INDEX IF NOT EXISTS sessions_by_expiry ON sessions (expires_at);
-- The presence tables of earlier versions (who is here is the library's now).
DROP TABLE IF EXISTS room_members;
DROP TABLE IF EXISTS connections;
DROP TABLE IF EXISTS workers;
"""
# The UTF-8 bytes of all message texts, kept by triggers (messages are never
# updated) so that every worker on the file sees one total; counted from the
# messages already there when the table is made (a database of an earlier demo).
_MESSAGE_BYTES = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS message_bytes (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    total INTEGER NOT NULL
);
INSERT OR IGNORE INTO message_bytes (id, total)
    SELECT 1, coalesce(sum(length(CAST(text AS BLOB))), 0) FROM messages;
CREATE TRIGGER IF NOT EXISTS message_bytes_insert AFTER INSERT ON messages BEGIN
    UPDATE message_bytes SET total = total + length(CAST(NEW.text AS BLOB));
END;
CREATE TRIGGER IF NOT EXISTS message_bytes_delete AFTER DELETE ON messages BEGIN
    UPDATE message_bytes SET total = total - length(CAST(OLD.text AS BLOB));
END;
COMMIT;
"""
# Version 1 added users.name_key (see demo.names.name_key).
_SCHEMA_VERSION = 1


# Switching to WAL needs the database to itself, and SQLite answers "database is
# locked" at once instead of calling the busy handler, so workers that start
# together (make demo-cluster) retry here.
_WAL_ATTEMPTS = 50
_WAL_RETRY_DELAY = 0.1


def _enable_wal(conn: sqlite3.Connection) -> None:
    for attempt in range(_WAL_ATTEMPTS):
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == _WAL_ATTEMPTS - 1:
                raise
            time.sleep(_WAL_RETRY_DELAY)


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a database made by an earlier demo to the current schema."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version >= _SCHEMA_VERSION:
        return
    with conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(users)")}
        if "name_key" not in columns:
            conn.execute("ALTER TABLE users ADD COLUMN name_key TEXT")
            conn.execute(
                "CREATE UNIQUE INDEX IF NOT EXISTS users_by_key ON users (name_key)"
            )
        seen: set[str] = set()
        # Of older lookalike accounts the first keeps the name; the others keep
        # their history but can no longer be signed into (their key stays NULL).
        for user_id, name in conn.execute(
            "SELECT id, name FROM users WHERE name_key IS NULL ORDER BY id"
        ).fetchall():
            key = name_key(name)
            if key not in seen:
                seen.add(key)
                conn.execute(
                    "UPDATE users SET name_key = ? WHERE id = ?", (key, user_id)
                )
        conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")


class StoreClosedError(RuntimeError):
    """The store was used after :meth:`Store.close`."""


def _user_for_name(conn: sqlite3.Connection, name: str) -> User:
    key = name_key(name)
    conn.execute(
        "INSERT OR IGNORE INTO users (name, name_key) VALUES (?, ?)", (name, key)
    )
    row = conn.execute(
        "SELECT id, name FROM users WHERE name_key = ?", (key,)
    ).fetchone()
    if row is None:  # an old lookalike holds the name (see _migrate)
        raise LookupError(f"the name {name!r} is held by an older account")
    return User(int(row[0]), str(row[1]))


def _trim_to_bytes(conn: sqlite3.Connection, max_bytes: int, newest: int) -> None:
    """Delete the oldest messages, never ``newest``, until their texts take at
    most ``max_bytes`` (UTF-8) in all."""
    (total,) = conn.execute("SELECT total FROM message_bytes").fetchone()
    excess = total - max_bytes
    if excess <= 0:
        return
    cutoff = None
    cursor = conn.execute(
        "SELECT id, length(CAST(text AS BLOB)) FROM messages WHERE id < ? ORDER BY id",
        (newest,),
    )
    try:
        for message_id, size in cursor:  # usually a row or two
            cutoff = message_id
            excess -= size
            if excess <= 0:
                break
    finally:
        cursor.close()
    if cutoff is not None:
        conn.execute("DELETE FROM messages WHERE id <= ?", (cutoff,))


def _revoked(cursor: sqlite3.Cursor) -> list[str]:
    return [str(row[0]) for row in cursor.fetchall()]


class Store:
    """The chat's users, sessions and messages in one SQLite file.

    At most ``history_per_room`` messages are kept per room,
    ``max_stored_messages`` in all, and ``max_stored_bytes`` bytes of text (UTF-8)
    in all: saving a message deletes the oldest beyond any of the bounds (never
    the message being saved), so a flood cannot grow the file without end. Likewise at most
    ``sessions_per_user`` sessions are kept per user and ``max_sessions`` in
    all: recording a session deletes (signs out) the oldest beyond either bound,
    and the expired ones. Users are deleted once nothing refers to them (see
    :meth:`forget_unused_users`).

    ``Store(path)`` only remembers the path, so an app factory can create it
    synchronously; ``await store.open()`` creates the directory, the file and
    the tables, and ``await store.close()`` ends it. ``async with store:`` does
    both.
    """

    def __init__(
        self,
        path: Path,
        history_per_room: int = DEFAULT_HISTORY_PER_ROOM,
        max_stored_messages: int = DEFAULT_MAX_STORED_MESSAGES,
        sessions_per_user: int = DEFAULT_SESSIONS_PER_USER,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        max_stored_bytes: int = DEFAULT_MAX_STORED_BYTES,
    ) -> None:
        self.path = path
        self.history_per_room = history_per_room
        self.max_stored_messages = max_stored_messages
        self.sessions_per_user = sessions_per_user
        self.max_sessions = max_sessions
        self.max_stored_bytes = max_stored_bytes
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    async def open(self) -> None:
        """Open (creating if needed) the database and its directory.

        Raises:
            StoreClosedError: the store is already open or was closed.
            sqlite3.Error, OSError: the file cannot be created or opened.
        """
        if self._executor is not None or self._closed:
            raise StoreClosedError("a store can be opened once")
        path = self.path
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="demo-store"
        )

        def connect() -> sqlite3.Connection:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path)
            try:
                _enable_wal(conn)
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA foreign_keys=ON")
                conn.executescript(_SCHEMA)
                _migrate(conn)
                conn.executescript(_MESSAGE_BYTES)
            except BaseException:
                conn.close()
                raise
            return conn

        loop = asyncio.get_running_loop()
        try:
            self._conn = await loop.run_in_executor(self._executor, connect)
        except BaseException:
            self._closed = True
            self._executor.shutdown(wait=False)
            raise

    async def close(self) -> None:
        """Close the database and stop the worker thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        executor, conn = self._executor, self._conn
        if executor is None:
            return
        try:
            if conn is not None:
                await asyncio.get_running_loop().run_in_executor(executor, conn.close)
        finally:
            executor.shutdown(wait=True)

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the store's thread, after the calls made
        before it; for modules that keep tables of their own.

        Raises:
            StoreClosedError: the store is not open.
        """
        return await self._run(fn)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        executor, conn = self._executor, self._conn
        if self._closed or executor is None or conn is None:
            raise StoreClosedError("the store is not open")
        return await asyncio.get_running_loop().run_in_executor(executor, fn, conn)

    async def user_for_name(self, name: str) -> User:
        """The user whose name has the same :func:`~demo.names.name_key` as
        ``name`` (``ADA`` finds ``ada``), created under ``name`` if new."""

        def query(conn: sqlite3.Connection) -> User:
            with conn:
                return _user_for_name(conn, name)

        return await self._run(query)

    async def find_user(self, name: str) -> User | None:
        """The user whose name has the same key as ``name``, or ``None``."""
        key = name_key(name)

        def query(conn: sqlite3.Connection) -> User | None:
            row = conn.execute(
                "SELECT id, name FROM users WHERE name_key = ?", (key,)
            ).fetchone()
            return None if row is None else User(int(row[0]), str(row[1]))

        return await self._run(query)

    async def create_session(
        self,
        session_id: str,
        user_id: int,
        expires_at: int,
        now: float,
        replaces: str | None = None,
    ) -> list[str]:
        """Record a signed-in session of ``user_id``.

        In the same transaction, sessions expired at ``now`` are purged, and the
        session ``replaces`` (the browser's previous one) and the oldest beyond
        ``sessions_per_user`` (of this user) or ``max_sessions`` (in all) are
        deleted.

        Returns:
            The ids of the live sessions deleted (``replaces`` among them if it
            existed), whose sockets the caller closes.
        """

        def query(conn: sqlite3.Connection) -> list[str]:
            with conn:
                return self._create_session(
                    conn, session_id, user_id, expires_at, now, replaces
                )

        return await self._run(query)

    async def sign_in(
        self,
        name: str,
        session_id: str,
        expires_at: int,
        now: float,
        replaces: str | None = None,
    ) -> tuple[User, list[str]]:
        """:meth:`user_for_name` and :meth:`create_session` in one transaction
        (so the user cannot be deleted as unused in between).

        Returns:
            The user, and the ids of the live sessions deleted.

        Raises:
            LookupError: an older lookalike account holds the name.
        """

        def query(conn: sqlite3.Connection) -> tuple[User, list[str]]:
            with conn:
                user = _user_for_name(conn, name)
                revoked = self._create_session(
                    conn, session_id, user.id, expires_at, now, replaces
                )
            return user, revoked

        return await self._run(query)

    def _create_session(
        self,
        conn: sqlite3.Connection,
        session_id: str,
        user_id: int,
        expires_at: int,
        now: float,
        replaces: str | None,
    ) -> list[str]:
        conn.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
        revoked = _revoked(
            conn.execute("DELETE FROM sessions WHERE id = ? RETURNING id", (replaces,))
        )
        conn.execute(
            "INSERT INTO sessions (id, user_id, expires_at) VALUES (?, ?, ?)",
            (session_id, user_id, expires_at),
        )
        # A new row's rowid is above every other's: the smallest are the oldest.
        revoked += _revoked(
            conn.execute(
                "DELETE FROM sessions WHERE user_id = ? AND rowid <= (SELECT rowid"
                " FROM sessions WHERE user_id = ? ORDER BY rowid DESC LIMIT 1"
                " OFFSET ?) RETURNING id",
                (user_id, user_id, self.sessions_per_user),
            )
        )
        revoked += _revoked(
            conn.execute(
                "DELETE FROM sessions WHERE rowid <= (SELECT rowid FROM sessions"
                " ORDER BY rowid DESC LIMIT 1 OFFSET ?) RETURNING id",
                (self.max_sessions,),
            )
        )
        return revoked

    async def user_for_session(self, session_id: str, now: float) -> User | None:
        """The user of a session that exists and has not expired at ``now``."""

        def query(conn: sqlite3.Connection) -> User | None:
            row = conn.execute(
                "SELECT users.id, users.name FROM sessions"
                " JOIN users ON users.id = sessions.user_id"
                " WHERE sessions.id = ? AND sessions.expires_at > ?",
                (session_id, now),
            ).fetchone()
            return None if row is None else User(int(row[0]), str(row[1]))

        return await self._run(query)

    async def forget_unused_users(self, after: int, connected: set[int]) -> int:
        """Of the next :data:`SWEEP_USERS` users with an id above ``after``, delete
        those no session or stored message refers to and that are not in
        ``connected`` (users with an open socket on some worker): so the users
        table is bounded by the sessions and messages tables, which are bounded.

        Returns:
            The id to sweep after next time (0: start again).
        """

        def query(conn: sqlite3.Connection) -> int:
            with conn:
                (last,) = conn.execute(
                    "SELECT max(id) FROM (SELECT id FROM users WHERE id > ?"
                    " ORDER BY id LIMIT ?)",
                    (after, SWEEP_USERS),
                ).fetchone()
                if last is None:
                    return 0
                unused = conn.execute(
                    "SELECT id FROM users WHERE id > ? AND id <= ?"
                    " AND NOT EXISTS (SELECT 1 FROM sessions WHERE user_id = users.id)"
                    " AND NOT EXISTS (SELECT 1 FROM messages WHERE user_id = users.id)",
                    (after, last),
                ).fetchall()
                # The conditions again: a sign-in on another worker may have
                # given one of them a session since.
                conn.executemany(
                    "DELETE FROM users WHERE id = ?"
                    " AND NOT EXISTS (SELECT 1 FROM sessions WHERE user_id = users.id)"
                    " AND NOT EXISTS (SELECT 1 FROM messages WHERE user_id = users.id)",
                    [row for row in unused if row[0] not in connected],
                )
                return int(last)

        return await self._run(query)

    async def live_sessions(self, session_ids: list[str], now: float) -> set[str]:
        """The ids among ``session_ids`` of sessions that exist and have not
        expired at ``now`` (the others were signed out, perhaps on another worker)."""

        def query(conn: sqlite3.Connection) -> set[str]:
            found: set[str] = set()
            for start in range(0, len(session_ids), 500):
                chunk = session_ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                found.update(
                    row[0]
                    for row in conn.execute(
                        f"SELECT id FROM sessions WHERE id IN ({marks})"
                        " AND expires_at > ?",
                        (*chunk, now),
                    )
                )
            return found

        return await self._run(query)

    async def delete_session(self, session_id: str) -> None:
        """Forget a session (sign-out). Idempotent."""

        def query(conn: sqlite3.Connection) -> None:
            with conn:
                conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

        await self._run(query)

    async def save_message(
        self, room: str, user_id: int, text: str, created_at: float
    ) -> ChatMessage:
        """Commit a message and return it with its new id; the oldest messages
        beyond ``history_per_room`` (of ``room``), ``max_stored_messages`` (of
        all rooms) and ``max_stored_bytes`` (of all rooms) are deleted in the
        same transaction.

        Raises:
            sqlite3.IntegrityError: ``user_id`` is not a known user.
        """
        per_room, in_all = self.history_per_room, self.max_stored_messages
        max_bytes = self.max_stored_bytes

        def query(conn: sqlite3.Connection) -> ChatMessage:
            with conn:
                cursor = conn.execute(
                    "INSERT INTO messages (room, user_id, text, created_at)"
                    " VALUES (?, ?, ?, ?)",
                    (room, user_id, text, created_at),
                )
                message_id = cursor.lastrowid
                # Both deletes walk an index from the newest message down.
                conn.execute(
                    "DELETE FROM messages WHERE room = ? AND id <= (SELECT id FROM"
                    " messages WHERE room = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                    (room, room, per_room),
                )
                conn.execute(
                    "DELETE FROM messages WHERE id <= (SELECT id FROM messages"
                    " ORDER BY id DESC LIMIT 1 OFFSET ?)",
                    (in_all,),
                )
                assert message_id is not None
                _trim_to_bytes(conn, max_bytes, message_id)
                row = conn.execute(
                    "SELECT name FROM users WHERE id = ?", (user_id,)
                ).fetchone()
            return ChatMessage(
                message_id, room, User(user_id, str(row[0])), text, created_at
            )

        return await self._run(query)

    async def recent_messages(
        self, room: str, limit: int = DEFAULT_HISTORY_LIMIT
    ) -> list[ChatMessage]:
        """The last ``limit`` messages of ``room``, oldest first."""

        def query(conn: sqlite3.Connection) -> list[ChatMessage]:
            rows = conn.execute(
                "SELECT messages.id, users.id, users.name, text, created_at"
                " FROM messages JOIN users ON users.id = messages.user_id"
                " WHERE room = ? ORDER BY messages.id DESC LIMIT ?",
                (room, limit),
            ).fetchall()
            return [
                ChatMessage(
                    int(row[0]),
                    room,
                    User(int(row[1]), str(row[2])),
                    str(row[3]),
                    float(row[4]),
                )
                for row in reversed(rows)
            ]

        return await self._run(query)
