"""The records the chat stores and sends: plain frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ChatMessage", "User"]


@dataclass(frozen=True)
class User:
    """A signed-in person; ``id`` is the database's, never the client's."""

    id: int
    name: str


@dataclass(frozen=True)
class ChatMessage:
    """A message as saved: ``id`` grows with every message in the database."""

    id: int
    room: str
    user: User
    text: str
    created_at: float
