"""A Redis Cluster's slot map: which primary serves each slot, read with
``CLUSTER SLOTS`` from any node that answers, and clients for those primaries."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis

from ._link import EXPECTED
from ._slots import SLOTS

__all__ = ["Address", "SlotMap", "node_client", "read_slot_map"]

Address = tuple[str, int]
"""A node's host and port."""


class SlotMap:
    """The primary of every slot (``None`` for a slot no node serves)."""

    __slots__ = ("owners",)

    def __init__(self, owners: list[Address | None]) -> None:
        self.owners = owners

    @classmethod
    def parse(cls, reply: Any, asked: Address) -> SlotMap:
        """From a ``CLUSTER SLOTS`` reply, given by the node at ``asked``.

        Raises:
            ValueError: the reply is not a slot map.
        """
        owners: list[Address | None] = [None] * SLOTS
        for entry in reply:
            start, end, primary = int(entry[0]), int(entry[1]), entry[2]
            host = primary[0].decode() if isinstance(primary[0], bytes) else primary[0]
            if host in ("", "?"):  # "the node you asked", in Redis's words
                host = asked[0]
            if not 0 <= start <= end < SLOTS:
                raise ValueError(f"slot range {start}-{end}")
            address = (str(host), int(primary[1]))
            owners[start : end + 1] = [address] * (end - start + 1)
        return cls(owners)

    @property
    def primaries(self) -> set[Address]:
        return {owner for owner in self.owners if owner is not None}

    def slots_of(self, address: Address) -> set[int]:
        return {slot for slot, owner in enumerate(self.owners) if owner == address}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SlotMap) and self.owners == other.owners

    __hash__ = None  # type: ignore[assignment]


def address_of(client: Redis) -> Address:
    """The host and port ``client`` connects to."""
    kwargs = client.connection_pool.connection_kwargs
    return (str(kwargs.get("host", "localhost")), int(kwargs.get("port", 6379)))


async def read_slot_map(clients: Iterable[Redis], wait: float) -> SlotMap:
    """The slot map as the first of ``clients`` that answers (within
    ``wait`` s each) sees it.

    Raises:
        ConnectionError: none answered (the last failure is its cause).
    """
    last: BaseException | None = None
    for client in clients:
        try:
            async with asyncio.timeout(wait):
                reply = await client.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
            return SlotMap.parse(reply, address_of(client))
        except (*EXPECTED, TimeoutError, ValueError, TypeError, IndexError) as exc:
            last = exc
    raise ConnectionError(f"no cluster node answered CLUSTER SLOTS: {last}") from last


def node_client(seed: Redis, address: Address) -> Redis:
    """A client for the node at ``address``, with the seed's options (password,
    TLS, timeouts); closing it closes its pool."""
    pool = seed.connection_pool
    kwargs = dict(pool.connection_kwargs)
    kwargs["host"], kwargs["port"] = address
    new_pool = type(pool)(connection_class=pool.connection_class, **kwargs)
    return Redis.from_pool(new_pool)
