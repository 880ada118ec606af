"""The only places that read private attributes of redis-py's asyncio connection.

redis-py has no public API for either need; each function is checked against
redis-py 8.1.0 (tests/test_redis_broker.py pins both) and falls back to doing
nothing when the attribute is not there, as its docstring says.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio.connection import AbstractConnection

__all__ = ["abort", "return_push_messages"]


def abort(connection: AbstractConnection | None) -> bool:
    """Close ``connection``'s socket at once, unsent bytes and all, so that a
    task blocked sending to it returns and one reading from it sees the end.

    redis-py's ``disconnect()`` closes the stream writer, which waits for the
    send buffer to drain: a Redis that stopped reading never lets it. Reads
    ``connection._writer.transport`` (redis-py 8.1.0). Falls back to nothing
    (returns False) when there is no such transport: the connection is then
    left to ``disconnect()``.
    """
    if connection is None:
        return False
    try:
        writer = connection._writer  # no public API
    except AttributeError:
        return False
    if writer is None:
        return False
    writer.transport.abort()
    return True


async def _identity(response: Any) -> Any:
    return response


def return_push_messages(connection: AbstractConnection) -> bool:
    """Make ``read_response(push_request=True)`` return pub/sub messages that
    arrive as RESP3 push notifications (under RESP3, and with hiredis), as
    redis-py's own ``PubSub`` does.

    Sets the push handler of ``connection._parser`` (redis-py 8.1.0, the same
    call its ``PubSub`` makes; 8.1.0 also returns them without it, which the
    broker does not rely on). Falls back to nothing (returns False) when the
    parser has no push handler: RESP2 parsers return messages as replies.
    """
    try:
        parser: Any = connection._parser  # no public API
    except AttributeError:
        return False
    setter: Callable[[Callable[[Any], Awaitable[Any]]], None] | None = getattr(
        parser, "set_pubsub_push_handler", None
    )
    if setter is None:
        return False
    setter(_identity)
    return True
