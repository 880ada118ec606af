"""The demo's rate limits as pure decisions: token buckets and flood verdicts."""

from __future__ import annotations

import pytest

from demo.limits import (
    FloodGuard,
    KeyedLimiter,
    Limits,
    TokenBucket,
    Verdict,
    address_key,
)


def test_bucket_allows_a_burst_then_refuses() -> None:
    """A fresh bucket allows exactly ``burst`` actions at one instant."""
    bucket = TokenBucket(rate=1.0, burst=3)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]


def test_bucket_refills_at_its_rate() -> None:
    """An empty bucket allows one action per ``1 / rate`` seconds."""
    bucket = TokenBucket(rate=2.0, burst=1)
    assert bucket.take(10.0)
    assert not bucket.take(10.4)
    assert bucket.take(10.5)
    assert not bucket.take(10.5)


def test_bucket_never_holds_more_than_burst() -> None:
    """However long a bucket rests, it refills to ``burst`` and no further."""
    bucket = TokenBucket(rate=100.0, burst=2)
    bucket.take(0.0)
    assert [bucket.take(1000.0) for _ in range(3)] == [True, True, False]


def test_bucket_ignores_a_clock_stepping_back() -> None:
    """A clock that steps backwards neither refills nor drains the bucket."""
    bucket = TokenBucket(rate=1.0, burst=1)
    assert bucket.take(100.0)
    assert not bucket.take(50.0)
    assert not bucket.take(100.5)
    assert bucket.take(101.0)


def test_retry_after_says_when_a_token_is_back() -> None:
    """retry_after is the time until the next whole token, 0 when there is one."""
    bucket = TokenBucket(rate=4.0, burst=1)
    assert bucket.retry_after(0.0) == 0.0
    bucket.take(0.0)
    assert bucket.retry_after(0.0) == pytest.approx(0.25)
    assert bucket.retry_after(0.125) == pytest.approx(0.125)


def test_bucket_is_full_again_after_resting() -> None:
    """is_full tells a bucket that may be forgotten from one still in use."""
    bucket = TokenBucket(rate=1.0, burst=2)
    bucket.take(0.0)
    assert not bucket.is_full(0.5)
    assert bucket.is_full(1.0)


@pytest.mark.parametrize(
    ("rate", "burst"), [(0.0, 1), (1.0, 0), (-1.0, 1)], ids=["rate0", "burst0", "neg"]
)
def test_bucket_refuses_non_positive_settings(rate: float, burst: int) -> None:
    """A bucket that could never allow anything is a ValueError."""
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(rate, burst)


def test_guard_warns_once_then_drops_then_closes() -> None:
    """Over budget: one WARN, then DROP until ``strikes`` refusals, then CLOSE."""
    guard = FloodGuard(rate=1.0, burst=2, strikes=3)
    verdicts = [guard.check(0.0) for _ in range(7)]
    assert verdicts == [
        Verdict.ALLOW,
        Verdict.ALLOW,
        Verdict.WARN,
        Verdict.DROP,
        Verdict.DROP,
        Verdict.CLOSE,
        Verdict.CLOSE,
    ]


def test_guard_forgives_a_client_that_slows_down() -> None:
    """A frame allowed again ends the streak: the next excess warns afresh."""
    guard = FloodGuard(rate=1.0, burst=1, strikes=2)
    assert guard.check(0.0) is Verdict.ALLOW
    assert guard.check(0.0) is Verdict.WARN
    assert guard.check(0.0) is Verdict.DROP
    assert guard.check(1.0) is Verdict.ALLOW
    assert guard.check(1.0) is Verdict.WARN


def test_keyed_limiter_limits_each_key_alone() -> None:
    """One key's empty bucket does not limit another key."""
    limiter = KeyedLimiter(rate=0.5, burst=2)
    assert [limiter.take("10.0.0.1", 0.0) for _ in range(3)] == [0.0, 0.0, 2.0]
    assert limiter.take("10.0.0.2", 0.0) == 0.0


def test_keyed_limiter_stays_bounded() -> None:
    """However many keys arrive, at most max_keys buckets are kept."""
    limiter = KeyedLimiter(rate=1.0, burst=1, max_keys=100)
    for n in range(10_000):
        limiter.take(f"key-{n}", 0.0)
    assert len(limiter) == 100


def test_keyed_limiter_forgets_the_least_recently_used() -> None:
    """At the bound, a key used recently keeps its (empty) bucket."""
    limiter = KeyedLimiter(rate=1.0, burst=1, max_keys=2)
    limiter.take("busy", 0.0)
    limiter.take("other", 0.0)
    limiter.take("busy", 0.0)
    limiter.take("third", 0.0)
    assert limiter.take("busy", 0.0) > 0.0
    assert limiter.take("other", 0.0) == 0.0


@pytest.mark.parametrize(
    "field", ["message_rate", "sockets_per_session", "backpressure_limit"]
)
def test_limits_refuse_zero(field: str) -> None:
    """A limit of zero is refused with a ValueError naming it."""
    with pytest.raises(ValueError, match=field):
        Limits(**{field: 0})


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("::ffff:cb00:7107", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2::9", "2001:db8:1:2::/64"),
        ("::1", "::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("", ""),
        ("not an address", "not an address"),
    ],
    ids=[
        "ipv4",
        "mapped",
        "mapped-hex",
        "ipv6",
        "ipv6-upper",
        "loopback6",
        "scoped",
        "empty",
        "not-ip",
    ],
)
def test_address_key(address: str, key: str) -> None:
    """IPv4 is keyed on the address (also when mapped into IPv6), IPv6 on its /64."""
    assert address_key(address) == key


def test_addresses_of_one_64_share_a_key() -> None:
    """Every address of one IPv6 /64 is one key; the next /64 is another."""
    keys = {address_key(f"2001:db8:0:7:{n:x}::{n:x}") for n in range(1, 200)}
    assert keys == {"2001:db8:0:7::/64"}
    assert address_key("2001:db8:0:8::1") != address_key("2001:db8:0:7::1")


def test_address_key_of_no_address() -> None:
    """A request without a peer address (None) has the empty key."""
    assert address_key(None) == ""
