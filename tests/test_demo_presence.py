"""The demo's presence registry: members are people, not sockets."""

from __future__ import annotations

from demo.models import User
from demo.presence import Presence

ADA = User(1, "ada")
BOB = User(2, "Bob")


def test_first_socket_makes_a_member() -> None:
    """Adding a user's first socket to a room reports a new member."""
    presence = Presence()
    assert presence.add("r", ADA) is True
    assert presence.members("r") == [ADA]


def test_second_socket_is_not_a_new_member() -> None:
    """A second tab of the same user is not announced again."""
    presence = Presence()
    presence.add("r", ADA)
    assert presence.add("r", ADA) is False
    assert presence.members("r") == [ADA]


def test_member_stays_until_last_socket_leaves() -> None:
    """A user stays a member until their last socket in the room is removed."""
    presence = Presence()
    presence.add("r", ADA)
    presence.add("r", ADA)
    assert presence.remove("r", ADA) is False
    assert presence.remove("r", ADA) is True
    assert presence.members("r") == []
    assert presence.rooms() == []


def test_removing_unknown_socket_is_harmless() -> None:
    """Removing a socket that was never added changes nothing."""
    presence = Presence()
    presence.add("r", ADA)
    assert presence.remove("r", BOB) is False
    assert presence.remove("elsewhere", ADA) is False
    assert presence.members("r") == [ADA]


def test_rooms_are_independent() -> None:
    """Membership of one room says nothing about another."""
    presence = Presence()
    presence.add("a", ADA)
    presence.add("b", BOB)
    assert presence.members("a") == [ADA]
    assert presence.rooms() == ["a", "b"]


def test_members_sorted_by_name() -> None:
    """Members are listed by name, ignoring case."""
    presence = Presence()
    presence.add("r", BOB)
    presence.add("r", ADA)
    assert presence.members("r") == [ADA, BOB]
