"""Who is connected, and who is in which room, shared by every worker through SQLite.

Each worker (process) registers under a random id and records one row per open
socket (its session and user) and one row per socket and joined room. The chat's
questions are then counts over all workers in one transaction:

- "is this the person's first socket in the room, on any worker?" (announce the
  join) and "was it their last?" (announce the leave): so each person is
  announced once, however many tabs and workers they use;
- "does this session, or this user, hold its cap of sockets?";
- "is this name in use by a live session in another browser?".

Write transactions start with ``BEGIN IMMEDIATE``: SQLite lets one writer at a
time into the file, so two workers can never both decide that a person is new.

Dead workers: each worker renews its ``seen_at`` every ``heartbeat`` seconds
(:meth:`Roster.beat`), and in the same transaction deletes the rows of every
worker not seen for ``3 * heartbeat`` seconds, returning the people who thereby
left a room, for the caller to announce. So the sockets of a worker killed with
SIGKILL leave "Here now" at most ``4 * heartbeat`` seconds after its last
heartbeat (expiry plus the next beat of a surviving worker), 20 s with the
default. A worker stalled for longer than the expiry finds its row gone at its
next beat and registers its sockets again.

Timestamps are wall-clock (``time.time``), shared by the processes of one host;
the SQLite file must be on one host anyway.
"""

from __future__ import annotations

import itertools
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from .models import User
from .store import Store

__all__ = [
    "DEFAULT_HEARTBEAT",
    "EXPIRY_HEARTBEATS",
    "SWEEP_USERS",
    "Change",
    "Roster",
]

# Seconds between a worker's heartbeats; a worker is dead after EXPIRY_HEARTBEATS
# of them without one.
DEFAULT_HEARTBEAT = 5.0
EXPIRY_HEARTBEATS = 3
# Users examined for deletion per heartbeat (a millisecond or two of the write
# lock); a pass over 200,000 users takes 40 heartbeats.
SWEEP_USERS = 5_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    seen_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS connections (
    worker_id TEXT NOT NULL,
    socket_id INTEGER NOT NULL,
    session_id TEXT NOT NULL,
    user_id INTEGER NOT NULL,
    PRIMARY KEY (worker_id, socket_id)
);
CREATE INDEX IF NOT EXISTS connections_by_user ON connections (user_id);
CREATE INDEX IF NOT EXISTS connections_by_session ON connections (session_id);
CREATE TABLE IF NOT EXISTS room_members (
    worker_id TEXT NOT NULL,
    socket_id INTEGER NOT NULL,
    room TEXT NOT NULL,
    user_id INTEGER NOT NULL,
    PRIMARY KEY (worker_id, socket_id, room)
);
CREATE INDEX IF NOT EXISTS room_members_by_room ON room_members (room, user_id);
"""


@dataclass(frozen=True)
class Change:
    """A person who became (``joined``) or stopped being a member of ``room``."""

    room: str
    user: User
    joined: bool


@dataclass
class _Socket:
    session_id: str
    user_id: int
    rooms: set[str] = field(default_factory=set)


@contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction that holds SQLite's write lock from its first statement,
    so that what it reads stays true until it commits."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


def _user(conn: sqlite3.Connection, user_id: int) -> User:
    row = conn.execute("SELECT name FROM users WHERE id = ?", (user_id,)).fetchone()
    return User(user_id, str(row[0]) if row else "?")


def _sockets_in_room(conn: sqlite3.Connection, room: str, user_id: int) -> int:
    (count,) = conn.execute(
        "SELECT count(*) FROM room_members WHERE room = ? AND user_id = ?",
        (room, user_id),
    ).fetchone()
    return int(count)


class Roster:
    """This worker's view of, and share in, the presence table of the database.

    Every method runs on the store's thread (:meth:`Store.run`), so calls run in
    the order they were made. ``start`` before use, ``stop`` at shutdown.
    """

    def __init__(
        self,
        store: Store,
        heartbeat: float = DEFAULT_HEARTBEAT,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not heartbeat > 0:
            raise ValueError(f"heartbeat must be positive, got {heartbeat!r}")
        self.store = store
        self.heartbeat = heartbeat
        self.wall_clock = wall_clock
        self.worker_id = secrets.token_hex(8)
        self._ids = itertools.count(1)
        # What this worker has written, to write it again if it was reaped.
        self._mine: dict[int, _Socket] = {}
        # The users sweep of beat() goes on after this user id.
        self._swept_to = 0

    @property
    def expiry(self) -> float:
        """Seconds without a heartbeat after which a worker counts as dead."""
        return EXPIRY_HEARTBEATS * self.heartbeat

    @property
    def bound(self) -> float:
        """At most this many seconds after a worker's last heartbeat, its sockets
        have left the others' presence (while another worker is beating)."""
        return self.expiry + self.heartbeat

    def new_socket_id(self) -> int:
        """A socket id unique within this worker."""
        return next(self._ids)

    async def start(self, exclusive: bool = False) -> None:
        """Create the tables and register this worker. ``exclusive``: this is the
        only worker of the database, so every other worker's rows are stale
        (left by a crash) and are deleted at once."""
        worker, now = self.worker_id, self.wall_clock()

        def query(conn: sqlite3.Connection) -> None:
            conn.executescript(_SCHEMA)
            with _immediate(conn):
                if exclusive:
                    for table in ("room_members", "connections", "workers"):
                        conn.execute(f"DELETE FROM {table}")
                conn.execute(
                    "INSERT OR REPLACE INTO workers (id, seen_at) VALUES (?, ?)",
                    (worker, now),
                )

        await self.store.run(query)

    async def stop(self) -> None:
        """Delete this worker's rows (its sockets should have left already)."""
        worker = self.worker_id
        self._mine.clear()

        def query(conn: sqlite3.Connection) -> None:
            with _immediate(conn):
                for table in ("room_members", "connections"):
                    conn.execute(
                        f"DELETE FROM {table} WHERE worker_id = ?",
                        (worker,),
                    )
                conn.execute("DELETE FROM workers WHERE id = ?", (worker,))

        await self.store.run(query)

    async def connect(
        self,
        socket_id: int,
        session_id: str,
        user_id: int,
        per_session: int,
        per_user: int,
    ) -> bool:
        """Record an open socket, unless that puts its session over
        ``per_session`` or its user over ``per_user`` sockets on all workers.

        Returns:
            ``True`` when recorded; ``False`` when refused (nothing recorded).
        """
        worker = self.worker_id

        def query(conn: sqlite3.Connection) -> bool:
            with _immediate(conn):
                conn.execute(
                    "INSERT INTO connections (worker_id, socket_id, session_id,"
                    " user_id) VALUES (?, ?, ?, ?)",
                    (worker, socket_id, session_id, user_id),
                )
                (in_session,) = conn.execute(
                    "SELECT count(*) FROM connections WHERE session_id = ?",
                    (session_id,),
                ).fetchone()
                (of_user,) = conn.execute(
                    "SELECT count(*) FROM connections WHERE user_id = ?", (user_id,)
                ).fetchone()
                if in_session > per_session or of_user > per_user:
                    conn.execute(
                        "DELETE FROM connections WHERE worker_id = ? AND socket_id = ?",
                        (worker, socket_id),
                    )
                    return False
            return True

        accepted = await self.store.run(query)
        if accepted:
            self._mine[socket_id] = _Socket(session_id, user_id)
        return accepted

    async def disconnect(self, socket_id: int) -> list[Change]:
        """Forget a closed socket; return the rooms its person left with it."""
        worker = self.worker_id
        self._mine.pop(socket_id, None)

        def query(conn: sqlite3.Connection) -> list[Change]:
            with _immediate(conn):
                rows = conn.execute(
                    "SELECT room, user_id FROM room_members"
                    " WHERE worker_id = ? AND socket_id = ? ORDER BY room",
                    (worker, socket_id),
                ).fetchall()
                for table in ("room_members", "connections"):
                    conn.execute(
                        f"DELETE FROM {table} WHERE worker_id = ? AND socket_id = ?",
                        (worker, socket_id),
                    )
                return [
                    Change(room, _user(conn, user_id), joined=False)
                    for room, user_id in rows
                    if _sockets_in_room(conn, room, user_id) == 0
                ]

        return await self.store.run(query)

    async def join(self, socket_id: int, room: str, user: User) -> bool:
        """Put the socket in ``room``.

        Returns:
            ``True`` when this made ``user`` a member: their first socket in the
            room on any worker.
        """
        worker = self.worker_id
        mine = self._mine.get(socket_id)
        if mine is not None:
            mine.rooms.add(room)

        def query(conn: sqlite3.Connection) -> bool:
            with _immediate(conn):
                inserted = conn.execute(
                    "INSERT OR IGNORE INTO room_members (worker_id, socket_id, room,"
                    " user_id) VALUES (?, ?, ?, ?)",
                    (worker, socket_id, room, user.id),
                ).rowcount
                return inserted == 1 and _sockets_in_room(conn, room, user.id) == 1

        return await self.store.run(query)

    async def leave(self, socket_id: int, room: str, user: User) -> bool:
        """Take the socket out of ``room``.

        Returns:
            ``True`` when ``user`` stopped being a member: it was their last
            socket in the room on any worker.
        """
        worker = self.worker_id
        mine = self._mine.get(socket_id)
        if mine is not None:
            mine.rooms.discard(room)

        def query(conn: sqlite3.Connection) -> bool:
            with _immediate(conn):
                deleted = conn.execute(
                    "DELETE FROM room_members"
                    " WHERE worker_id = ? AND socket_id = ? AND room = ?",
                    (worker, socket_id, room),
                ).rowcount
                return deleted == 1 and _sockets_in_room(conn, room, user.id) == 0

        return await self.store.run(query)

    async def members(self, room: str) -> list[User]:
        """The people in ``room`` on every worker, sorted by name then id."""

        def query(conn: sqlite3.Connection) -> list[User]:
            rows = conn.execute(
                "SELECT DISTINCT users.id, users.name FROM room_members"
                " JOIN users ON users.id = room_members.user_id"
                " WHERE room_members.room = ?",
                (room,),
            ).fetchall()
            users = [User(int(row[0]), str(row[1])) for row in rows]
            return sorted(users, key=lambda u: (u.name.lower(), u.id))

        return await self.store.run(query)

    async def connected_elsewhere(self, user_id: int, session_id: str | None) -> bool:
        """True when ``user_id`` has an open socket, on any worker, of a session
        other than ``session_id``: somebody uses that name in another browser."""

        def query(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT 1 FROM connections WHERE user_id = ? AND session_id IS NOT ?"
                " LIMIT 1",
                (user_id, session_id),
            ).fetchone()
            return row is not None

        return await self.store.run(query)

    async def socket_counts(self, session_id: str, user_id: int) -> tuple[int, int]:
        """Open sockets of the session, and of the user, on every worker."""

        def query(conn: sqlite3.Connection) -> tuple[int, int]:
            (in_session,) = conn.execute(
                "SELECT count(*) FROM connections WHERE session_id = ?", (session_id,)
            ).fetchone()
            (of_user,) = conn.execute(
                "SELECT count(*) FROM connections WHERE user_id = ?", (user_id,)
            ).fetchone()
            return int(in_session), int(of_user)

        return await self.store.run(query)

    async def beat(self) -> list[Change]:
        """Renew this worker's heartbeat, delete the rows of dead workers, and
        delete the users nothing refers to any more (of the next
        :data:`SWEEP_USERS` of them: a full pass takes several beats).

        Returns:
            The people who left a room with a dead worker (no socket of theirs
            is left there), and, if this worker had itself been declared dead,
            the people who came back with its sockets: the caller announces them.
        """
        worker, now, expiry = self.worker_id, self.wall_clock(), self.expiry
        mine = {
            key: (s.session_id, s.user_id, set(s.rooms))
            for key, s in self._mine.items()
        }

        def query(conn: sqlite3.Connection) -> list[Change]:
            changes: list[Change] = []
            with _immediate(conn):
                renewed = conn.execute(
                    "UPDATE workers SET seen_at = ? WHERE id = ?", (now, worker)
                ).rowcount
                dead = [
                    row[0]
                    for row in conn.execute(
                        "SELECT id FROM workers WHERE seen_at < ?", (now - expiry,)
                    ).fetchall()
                ]
                left: set[tuple[str, int]] = set()
                for dead_id in dead:
                    left.update(
                        conn.execute(
                            "SELECT room, user_id FROM room_members WHERE worker_id = ?",
                            (dead_id,),
                        ).fetchall()
                    )
                    for table in ("room_members", "connections"):
                        conn.execute(
                            f"DELETE FROM {table} WHERE worker_id = ?",
                            (dead_id,),
                        )
                    conn.execute("DELETE FROM workers WHERE id = ?", (dead_id,))
                for room, user_id in sorted(left):
                    if _sockets_in_room(conn, room, user_id) == 0:
                        changes.append(Change(room, _user(conn, user_id), joined=False))
                if not renewed:
                    changes.extend(_register_again(conn, worker, now, mine))
                self._swept_to = _forget_unused_users(conn, self._swept_to)
            return changes

        return await self.store.run(query)


def _forget_unused_users(conn: sqlite3.Connection, after: int) -> int:
    """Of the next :data:`SWEEP_USERS` users with an id above ``after``, delete
    those no session, stored message or open socket refers to (signed out or
    expired, and their messages trimmed): so the users table is bounded by the
    sessions and messages tables, which are bounded.

    Returns:
        The id to sweep after at the next beat (0: start again).
    """
    (last,) = conn.execute(
        "SELECT max(id) FROM (SELECT id FROM users WHERE id > ? ORDER BY id LIMIT ?)",
        (after, SWEEP_USERS),
    ).fetchone()
    if last is None:
        return 0
    conn.execute(
        "DELETE FROM users WHERE id > ? AND id <= ?"
        " AND NOT EXISTS (SELECT 1 FROM sessions WHERE user_id = users.id)"
        " AND NOT EXISTS (SELECT 1 FROM messages WHERE user_id = users.id)"
        " AND NOT EXISTS (SELECT 1 FROM connections WHERE user_id = users.id)",
        (after, last),
    )
    return int(last)


def _register_again(
    conn: sqlite3.Connection,
    worker: str,
    now: float,
    mine: dict[int, tuple[str, int, set[str]]],
) -> list[Change]:
    """Write back a worker that was declared dead while alive (it stalled past the
    expiry); return the people who are members again because of it."""
    conn.execute("INSERT INTO workers (id, seen_at) VALUES (?, ?)", (worker, now))
    changes: list[Change] = []
    for socket_id, (session_id, user_id, rooms) in mine.items():
        conn.execute(
            "INSERT OR IGNORE INTO connections (worker_id, socket_id, session_id,"
            " user_id) VALUES (?, ?, ?, ?)",
            (worker, socket_id, session_id, user_id),
        )
        for room in sorted(rooms):
            conn.execute(
                "INSERT OR IGNORE INTO room_members (worker_id, socket_id, room,"
                " user_id) VALUES (?, ?, ?, ?)",
                (worker, socket_id, room, user_id),
            )
            if _sockets_in_room(conn, room, user_id) == 1:
                changes.append(Change(room, _user(conn, user_id), joined=True))
    return changes
