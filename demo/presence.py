"""Who is in which room: a pure registry, no I/O.

A person may have several sockets (tabs) in one room; they become a member
with the first and stop being one with the last, so the chat announces each
person once however many tabs they open.
"""

from __future__ import annotations

from collections import Counter

from .models import User

__all__ = ["Presence"]


class Presence:
    """Counts each user's sockets per room."""

    def __init__(self) -> None:
        self._rooms: dict[str, Counter[User]] = {}

    def add(self, room: str, user: User) -> bool:
        """Count one more socket of ``user`` in ``room``.

        Returns:
            ``True`` when this made ``user`` a member (their first socket there).
        """
        sockets = self._rooms.setdefault(room, Counter())
        sockets[user] += 1
        return sockets[user] == 1

    def remove(self, room: str, user: User) -> bool:
        """Count one socket fewer of ``user`` in ``room``.

        Returns:
            ``True`` when ``user`` stopped being a member (their last socket
            left). Removing a socket that was never added returns ``False``.
        """
        sockets = self._rooms.get(room)
        if sockets is None or sockets[user] == 0:
            return False
        sockets[user] -= 1
        if sockets[user] > 0:
            return False
        del sockets[user]
        if not sockets:
            del self._rooms[room]
        return True

    def members(self, room: str) -> list[User]:
        """The members of ``room``, sorted by name then id."""
        return sorted(self._rooms.get(room, ()), key=lambda u: (u.name.lower(), u.id))

    def rooms(self) -> list[str]:
        """The rooms with at least one member, sorted."""
        return sorted(self._rooms)
