"""Topic registry for pub/sub: who is subscribed to what. Pure, no I/O.

Subscribers are kept in insertion-ordered dicts (used as ordered sets), so a
publish visits them in subscription order and a snapshot is cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable
from typing import Generic, TypeVar

__all__ = ["TopicRegistry", "Transition", "check_topic"]

S = TypeVar("S", bound=Hashable)

Transition = Callable[[S, str, int, int], None]
"""``on_change(subscriber, topic, new_count, old_count)``, after the change."""


def check_topic(topic: object) -> str:
    """Return ``topic`` if it is a valid topic name: a non-empty str that can be
    encoded as UTF-8 (a broker sends it as bytes).

    Raises:
        TypeError: ``topic`` is not a str.
        ValueError: ``topic`` is empty, or not valid UTF-8 (a lone surrogate).
    """
    if type(topic) is not str:
        if isinstance(topic, str):
            return check_topic(str(topic))
        raise TypeError(f"topic must be a str, got {type(topic).__name__}")
    if not topic:
        raise ValueError("topic must not be empty")
    # isascii() is O(1) in CPython: only other topics pay for the encode.
    if not topic.isascii():
        try:
            topic.encode()
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"topic is not valid UTF-8: lone surrogate {topic[exc.start]!r} "
                f"at index {exc.start}"
            ) from None
    return topic


class TopicRegistry(Generic[S]):
    """Maps topics to subscribers and subscribers to topics.

    Args:
        on_change: called after every subscription that is added or removed
            (``unsubscribe_all`` calls it once per topic left), with the topic's
            subscriber count after and before: a broker learns from it when a
            topic gains its first subscriber or loses its last.
    """

    __slots__ = ("_by_subscriber", "_by_topic", "on_change")

    def __init__(self, on_change: Transition[S] | None = None) -> None:
        self._by_topic: dict[str, dict[S, None]] = {}
        self._by_subscriber: dict[S, dict[str, None]] = {}
        self.on_change = on_change

    def subscribe(self, subscriber: S, topic: str) -> bool:
        """Add a subscription; False if it already existed."""
        members = self._by_topic.get(topic)
        if members is None:
            members = self._by_topic[topic] = {}
        elif subscriber in members:
            return False
        members[subscriber] = None
        topics = self._by_subscriber.get(subscriber)
        if topics is None:
            topics = self._by_subscriber[subscriber] = {}
        topics[topic] = None
        if self.on_change is not None:
            self.on_change(subscriber, topic, len(members), len(members) - 1)
        return True

    def unsubscribe(self, subscriber: S, topic: str) -> bool:
        """Remove a subscription; False if there was none."""
        members = self._by_topic.get(topic)
        if members is None or subscriber not in members:
            return False
        del members[subscriber]
        count = len(members)
        if not members:
            del self._by_topic[topic]
        topics = self._by_subscriber[subscriber]
        del topics[topic]
        if not topics:
            del self._by_subscriber[subscriber]
        if self.on_change is not None:
            self.on_change(subscriber, topic, count, count + 1)
        return True

    def unsubscribe_all(self, subscriber: S) -> list[str]:
        """Remove every subscription of ``subscriber``; return the topics it left."""
        topics = self._by_subscriber.pop(subscriber, None)
        if topics is None:
            return []
        # Every membership goes first: a callback that raises cannot leave the
        # subscriber in a topic.
        left = []
        for topic in topics:
            members = self._by_topic[topic]
            del members[subscriber]
            count = len(members)
            if not members:
                del self._by_topic[topic]
            left.append((topic, count))
        on_change = self.on_change
        if on_change is not None:
            for topic, count in left:
                on_change(subscriber, topic, count, count + 1)
        return list(topics)

    def is_subscribed(self, subscriber: S, topic: str) -> bool:
        members = self._by_topic.get(topic)
        return members is not None and subscriber in members

    def topics_of(self, subscriber: S) -> list[str]:
        """A snapshot of the topics ``subscriber`` is subscribed to."""
        topics = self._by_subscriber.get(subscriber)
        return list(topics) if topics else []

    def subscribers(self, topic: str) -> Collection[S]:
        """The live subscriber collection of ``topic`` (do not mutate while iterating)."""
        return self._by_topic.get(topic, ())

    def count(self, topic: str) -> int:
        members = self._by_topic.get(topic)
        return len(members) if members else 0

    def counts(self) -> dict[str, int]:
        """A snapshot: each topic that has subscribers, with how many."""
        return {topic: len(members) for topic, members in self._by_topic.items()}

    def __len__(self) -> int:
        return len(self._by_topic)
