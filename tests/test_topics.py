"""The topic registry and topic validation, without sockets."""

from __future__ import annotations

import pytest

from aiohttp_upgrade._topics import TopicRegistry, check_topic


@pytest.fixture
def registry() -> TopicRegistry[str]:
    return TopicRegistry()


def test_subscribe_new_returns_true(registry: TopicRegistry[str]) -> None:
    """A first subscription to a topic returns True."""
    assert registry.subscribe("a", "news") is True


def test_subscribe_twice_returns_false(registry: TopicRegistry[str]) -> None:
    """Subscribing again to the same topic returns False and changes nothing."""
    registry.subscribe("a", "news")
    assert registry.subscribe("a", "news") is False
    assert registry.count("news") == 1


def test_unsubscribe_subscribed_returns_true(registry: TopicRegistry[str]) -> None:
    """Unsubscribing from a topic one is subscribed to returns True."""
    registry.subscribe("a", "news")
    assert registry.unsubscribe("a", "news") is True
    assert not registry.is_subscribed("a", "news")


@pytest.mark.parametrize(
    ("subscriber", "topic"),
    [("a", "sport"), ("b", "news")],
    ids=["unknown-topic", "other-subscriber"],
)
def test_unsubscribe_not_subscribed_returns_false(
    registry: TopicRegistry[str], subscriber: str, topic: str
) -> None:
    """Unsubscribing without a subscription returns False and leaves others alone."""
    registry.subscribe("a", "news")
    assert registry.unsubscribe(subscriber, topic) is False
    assert registry.is_subscribed("a", "news")


def test_unsubscribe_twice_returns_false(registry: TopicRegistry[str]) -> None:
    """The second unsubscribe from the same topic returns False."""
    registry.subscribe("a", "news")
    registry.unsubscribe("a", "news")
    assert registry.unsubscribe("a", "news") is False


def test_is_subscribed_per_subscriber_and_topic(registry: TopicRegistry[str]) -> None:
    """is_subscribed is true only for the exact (subscriber, topic) pair."""
    registry.subscribe("a", "news")
    assert registry.is_subscribed("a", "news")
    assert not registry.is_subscribed("b", "news")
    assert not registry.is_subscribed("a", "sport")


def test_topics_of_in_subscription_order(registry: TopicRegistry[str]) -> None:
    """topics_of lists a subscriber's topics in the order it subscribed."""
    for topic in ("c", "a", "b"):
        registry.subscribe("s", topic)
    assert registry.topics_of("s") == ["c", "a", "b"]


def test_topics_of_unknown_subscriber_is_empty(registry: TopicRegistry[str]) -> None:
    """A subscriber without subscriptions has an empty topic list."""
    assert registry.topics_of("nobody") == []


def test_topics_of_is_a_snapshot(registry: TopicRegistry[str]) -> None:
    """The list topics_of returns does not follow later changes, nor cause any."""
    registry.subscribe("s", "a")
    snapshot = registry.topics_of("s")
    registry.subscribe("s", "b")
    snapshot.append("c")
    assert snapshot == ["a", "c"]
    assert registry.topics_of("s") == ["a", "b"]


def test_subscribers_in_subscription_order(registry: TopicRegistry[str]) -> None:
    """A topic's subscribers are visited in the order they subscribed."""
    for subscriber in ("z", "x", "y"):
        registry.subscribe(subscriber, "news")
    assert list(registry.subscribers("news")) == ["z", "x", "y"]


def test_subscribers_of_unknown_topic_is_empty(registry: TopicRegistry[str]) -> None:
    """A topic nobody subscribed to has no subscribers (and is falsy)."""
    subscribers = registry.subscribers("news")
    assert not subscribers
    assert list(subscribers) == []


def test_count_follows_every_change(registry: TopicRegistry[str]) -> None:
    """count is exact after each subscribe and unsubscribe."""
    counts = [registry.count("news")]
    registry.subscribe("a", "news")
    counts.append(registry.count("news"))
    registry.subscribe("b", "news")
    counts.append(registry.count("news"))
    registry.subscribe("b", "news")
    counts.append(registry.count("news"))
    registry.unsubscribe("a", "news")
    counts.append(registry.count("news"))
    registry.unsubscribe("b", "news")
    counts.append(registry.count("news"))
    assert counts == [0, 1, 2, 2, 1, 0]


def test_unsubscribe_all_returns_topics_left(registry: TopicRegistry[str]) -> None:
    """unsubscribe_all returns the subscriber's topics in subscription order."""
    registry.subscribe("a", "x")
    registry.subscribe("a", "y")
    assert registry.unsubscribe_all("a") == ["x", "y"]


def test_unsubscribe_all_leaves_every_topic(registry: TopicRegistry[str]) -> None:
    """After unsubscribe_all the subscriber is in no topic and others stay."""
    registry.subscribe("a", "x")
    registry.subscribe("a", "y")
    registry.subscribe("b", "y")
    registry.unsubscribe_all("a")
    assert registry.topics_of("a") == []
    assert (registry.count("x"), registry.count("y")) == (0, 1)
    assert list(registry.subscribers("y")) == ["b"]


def test_unsubscribe_all_unknown_subscriber(registry: TopicRegistry[str]) -> None:
    """unsubscribe_all for a subscriber with no topics returns an empty list."""
    assert registry.unsubscribe_all("nobody") == []


def test_empty_topics_are_forgotten(registry: TopicRegistry[str]) -> None:
    """A topic whose last subscriber left no longer takes space in the registry."""
    registry.subscribe("a", "x")
    registry.subscribe("a", "y")
    registry.subscribe("b", "z")
    registry.unsubscribe("a", "x")
    registry.unsubscribe_all("b")
    assert len(registry) == 1


def test_resubscribe_after_unsubscribe(registry: TopicRegistry[str]) -> None:
    """A subscriber that left a topic can join it again, at the end of the order."""
    registry.subscribe("a", "news")
    registry.subscribe("b", "news")
    registry.unsubscribe("a", "news")
    assert registry.subscribe("a", "news") is True
    assert list(registry.subscribers("news")) == ["b", "a"]


def test_check_topic_accepts_str() -> None:
    """A non-empty str is returned unchanged."""
    assert check_topic("room:1") == "room:1"


def test_check_topic_converts_str_subclass() -> None:
    """A str subclass is accepted and returned as a plain str."""

    class Name(str):
        pass

    result = check_topic(Name("room"))
    assert type(result) is str
    assert result == "room"


def test_check_topic_rejects_empty() -> None:
    """An empty topic raises ValueError."""
    with pytest.raises(ValueError, match="empty"):
        check_topic("")


@pytest.mark.parametrize(
    "topic", [None, b"news", 1, ["news"]], ids=["none", "bytes", "int", "list"]
)
def test_check_topic_rejects_non_str(topic: object) -> None:
    """A topic that is not a str raises TypeError naming the type."""
    with pytest.raises(TypeError, match=type(topic).__name__):
        check_topic(topic)


def test_on_change_reports_each_transition_with_counts() -> None:
    """on_change sees every added and removed subscription with the counts after and before."""
    seen: list[tuple[str, str, int, int]] = []
    registry: TopicRegistry[str] = TopicRegistry(
        lambda subscriber, topic, new, old: seen.append((subscriber, topic, new, old))
    )
    registry.subscribe("a", "t")
    registry.subscribe("b", "t")
    registry.subscribe("a", "t")  # already subscribed: no transition
    registry.unsubscribe("b", "t")
    registry.subscribe("a", "u")
    registry.unsubscribe_all("a")
    assert seen == [
        ("a", "t", 1, 0),
        ("b", "t", 2, 1),
        ("b", "t", 1, 2),
        ("a", "u", 1, 0),
        ("a", "t", 0, 1),
        ("a", "u", 0, 1),
    ]


@pytest.mark.parametrize(
    "topic",
    ["room\ud800", "\udc80", "a\udfffb", "\udc00\ud800"],
    ids=["trailing-high", "alone-low", "inside", "reversed-pair"],
)
def test_check_topic_rejects_lone_surrogates(topic: str) -> None:
    """A topic that cannot be encoded as UTF-8 (a lone surrogate) raises a plain
    ValueError that says so, not the UnicodeEncodeError a broker would hit later."""
    with pytest.raises(ValueError, match="not valid UTF-8") as caught:
        check_topic(topic)
    assert type(caught.value) is ValueError


@pytest.mark.parametrize(
    "topic",
    ["café", "\u623f\u95f4", "\U0001f600 party", "x" * 1000 + "\u00e9"],
    ids=["latin-1", "cjk", "astral", "long"],
)
def test_check_topic_accepts_non_ascii_utf8(topic: str) -> None:
    """Any non-empty str without lone surrogates is a valid topic."""
    assert check_topic(topic) == topic
