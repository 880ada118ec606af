"""Positions, history policies and the in-process ring, without sockets."""

from __future__ import annotations

import pytest

from aiohttp_upgrade import InvalidOptionError, Position
from aiohttp_upgrade._frames import OP_TEXT
from aiohttp_upgrade._history_local import LocalHistory
from aiohttp_upgrade._positions import MAX_OFFSET, Policy, PolicyTable, parse_since


def test_position_round_trips_through_its_string() -> None:
    """str(position) is "<epoch>:<offset>" and Position.parse reads it back."""
    position = Position("0a1b", 42)
    assert str(position) == "0a1b:42"
    assert Position.parse(str(position)) == position


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        "abc:",
        ":1",
        "abc:-1",
        "ABC:1",
        "abc:1.5",
        "abc:1:2",
        "x" * 40 + ":1",
        f"abc:{MAX_OFFSET + 1}",
        " abc:1",
    ],
    ids=[
        "empty",
        "no-offset",
        "colon-only",
        "no-epoch",
        "negative",
        "upper-case",
        "fraction",
        "three-parts",
        "long-epoch",
        "too-big",
        "space",
    ],
)
def test_position_parse_refuses_what_is_not_a_position(text: str) -> None:
    """Garbage, negative or oversized offsets and odd epochs raise ValueError."""
    with pytest.raises(ValueError, match="not a history position"):
        Position.parse(text)


@pytest.mark.parametrize(
    "since",
    [None, 5, b"abc:1", "junk", Position("abc", -1), Position("ABC", 1), ("abc", 1)],
    ids=["none", "int", "bytes", "junk", "negative", "bad-epoch", "tuple"],
)
def test_parse_since_answers_none_for_anything_else(since: object) -> None:
    """What a client sent that is not a usable position reads as None (no
    exception): the resume then answers 'invalid'."""
    assert parse_since(since) is None


def test_policy_table_prefers_exact_names_then_longer_prefixes() -> None:
    """An exact topic wins over prefixes, a longer prefix over a shorter one."""
    table = PolicyTable()
    short, long, exact = (Policy(n, 1.0, None) for n in (1, 2, 3))
    table.add("room:", short, prefix=True)
    table.add("room:vip:", long, prefix=True)
    table.add("room:vip:lobby", exact, prefix=False)
    assert table.get("room:a") is short
    assert table.get("room:vip:b") is long
    assert table.get("room:vip:lobby") is exact
    assert table.get("other") is None


@pytest.mark.parametrize(
    ("size", "ttl"),
    [(0, 1.0), (True, 1.0), (10, 0), (10, float("inf")), (10, "5")],
    ids=["zero-size", "bool-size", "zero-ttl", "infinite-ttl", "str-ttl"],
)
def test_policy_refuses_bad_bounds(size: object, ttl: object) -> None:
    """size and ttl out of range raise InvalidOptionError."""
    with pytest.raises(InvalidOptionError):
        Policy(size, ttl, None)  # type: ignore[arg-type]


def test_local_ring_forgets_messages_older_than_ttl(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A message older than ttl is not replayed: a read after it is incomplete."""
    now = [1000.0]
    monkeypatch.setattr("aiohttp_upgrade._history_local.time.monotonic", lambda: now[0])
    history = LocalHistory()
    policy = Policy(100, 10.0, None)
    history.append("t", policy, OP_TEXT, b"old", False)
    now[0] += 11
    history.append("t", policy, OP_TEXT, b"new", False)
    old = history.read("t", policy, 0, 10)
    assert (old.complete, [item[2] for item in old.items]) == (False, [b"new"])
    recent = history.read("t", policy, 1, 10)
    assert (recent.complete, recent.last) == (True, 2)


def test_local_ring_keeps_size_messages() -> None:
    """The ring keeps the last ``size`` messages; offsets keep counting."""
    history = LocalHistory()
    policy = Policy(3, 60.0, None)
    for index in range(5):
        history.append("t", policy, OP_TEXT, str(index).encode(), False)
    tail = history.read("t", policy, 0, 10, tail=True)
    assert [item[0] for item in tail.items] == [3, 4, 5] and tail.last == 5
    assert not history.read("t", policy, 1, 10).complete
