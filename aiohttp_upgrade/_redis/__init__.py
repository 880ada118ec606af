"""The parts of :class:`~aiohttp_upgrade.RedisBroker`, one concern per module.

Private: nothing here is public API. ``_redis_broker.RedisBroker`` composes them::

    _shard       the parts connected to one Redis server, composed
    _cluster     one shard per primary of a Redis Cluster, topics routed by slot
    _topology    a cluster's slot map (CLUSTER SLOTS) and clients for its nodes
    _slots       hash slots (CRC16) and the hash tag of a topic's keys
    _config      options (validated), counters, this start's identity, backoff
    _link        one dedicated connection (Link), the outage it may be part of
    _writer      the pipelined writer and the reader of its replies
    _reader      the subscriber connection: SUBSCRIBE sync, messages, PINGs
    _counts      cluster counts: registration, heartbeat bookkeeping, queries
    _presence    presence deltas, resyncs and expiry on one channel
    _supervisor  task supervision, the heartbeat and the stall watchdog
    _compat      the only code that reads redis-py's private attributes
"""

from __future__ import annotations

__all__: list[str] = []
