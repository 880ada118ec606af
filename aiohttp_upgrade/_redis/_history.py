"""Topic history on Redis Streams: positions assigned and messages published in
one Lua script, and the history read back for resumes and gaps.

Keys of a topic, hash-tagged so that a Redis Cluster keeps them on one shard::

    {prefix}h:{<topic>}:m   hash: e = epoch, o = last offset
    {prefix}h:{<topic>}:s   stream: one entry per message, ID "<offset>-0",
                            fields r = record, t = Redis time in ms

A topic starting with ``}`` would make an empty hash tag (the whole key hashed,
the two keys on different slots): its keys are ``{prefix}h!{<hash>}<topic>:m``
and ``:s``, ``<hash>`` 16 hex digits of the topic's SHA-1.

One ``EVAL`` per run of consecutive history publishes to one topic in a writer
pipeline: it creates the epoch if the hash is missing (a Redis restarted empty,
a flush, the key expired: the stream is deleted with it), adds the run's count
to the offset, ``XADD``\\ s each message with ``MAXLEN ~ size``, sets both keys'
expiry, and ``PUBLISH``\\ es one history envelope carrying the epoch and the first
offset. Redis runs a script atomically: a message is in the stream if and only
if it was published.

History envelope (the writer builds all but the epoch and offset)::

    "AH\\x01" | origin (8 bytes) | epoch (hex) ";" first offset (decimal) ";" | record+
    record := length (4 bytes, big-endian) | flags (1: opcode | 0x80 compress)
              | tag (4 bytes: the publishing socket, on the origin process) | payload
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import struct
from typing import TYPE_CHECKING, Any, Final

from .._envelope import ORIGIN_SIZE
from .._frames import OP_BINARY, OP_TEXT
from .._history_local import HistoryUnavailable, Item, Record, Skip, Slice
from .._positions import Policy
from ._config import Config, Counters, Session, describe
from ._link import EXPECTED
from ._slots import topic_tag

if TYPE_CHECKING:
    from ._reader import Reader
    from ._writer import Writer

__all__ = ["FLAG", "MAGIC", "RedisHistory"]

logger = logging.getLogger("aiohttp_upgrade")

MAGIC: Final = b"AH\x01"
FLAG: Final = 0x40  # opcode | FLAG: a history message in the writer's queue
META_TTL_MS: Final = 86_400_000  # the epoch and offset outlive an idle stream
# Sockets remembered for their publishes on the way through Redis, at most.
MAX_SENDERS: Final = 65_536
_RECORD: Final = struct.Struct("!IBI")
_EPOCH: Final = re.compile(rb"[0-9a-f]{1,32}")
_FLAGS: Final = frozenset((OP_TEXT, OP_BINARY, OP_TEXT | 0x80, OP_BINARY | 0x80))

PUBLISH_SCRIPT: Final = """
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', 0)
end
local n = #ARGV - 6
local last = redis.call('HINCRBY', KEYS[1], 'o', n)
local first = last - n + 1
local t = redis.call('TIME')
local ms = string.format('%d', t[1] * 1000 + math.floor(t[2] / 1000))
for i = 1, n do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3],
    string.format('%d-0', first + i - 1), 'r', ARGV[6 + i], 't', ms)
end
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PUBLISH', ARGV[2], ARGV[6] .. epoch .. ';' ..
  string.format('%d', first) .. ';' .. table.concat(ARGV, '', 7))
return last
"""

# On a Redis Cluster: the sharded publish (the channel has the keys' hash tag).
SHARDED_PUBLISH_SCRIPT: Final = PUBLISH_SCRIPT.replace("'PUBLISH'", "'SPUBLISH'")

READ_SCRIPT: Final = """
local m = redis.call('HMGET', KEYS[1], 'e', 'o')
if not m[1] then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', ARGV[4], 'o', 0)
  m = {ARGV[4], '0'}
end
if m[2] == '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
local items = {}
local limit = tonumber(ARGV[2])
if limit > 0 then
  if ARGV[3] == '1' then
    items = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', limit)
  else
    items = redis.call('XRANGE', KEYS[2],
      string.format('%d-0', tonumber(ARGV[1]) + 1), '+', 'COUNT', limit)
  end
end
local t = redis.call('TIME')
return {m[1], m[2], items, t[1], t[2]}
"""


def _epoch() -> str:
    return f"{random.getrandbits(64):016x}"


class RedisHistory:
    """The Redis Streams history of one start of a RedisBroker (made by its
    reader; the writer sends what :meth:`publish` queues)."""

    remote = True

    def __init__(
        self, config: Config, counters: Counters, session: Session, reader: Reader
    ) -> None:
        self.config = config
        self.counters = counters
        self.session = session
        self.reader = reader
        self.writer: Writer | None = None
        self.queued = False  # a history message waits in the writer's queue
        # topic -> (size, ttl ms) of the messages queued for the next pipeline
        self.policies: dict[str, tuple[int, int]] = {}
        self.senders: dict[int, Skip] = {}  # tag -> who the publish skips
        self.tag = 0
        self.header = MAGIC + session.origin
        self.script = SHARDED_PUBLISH_SCRIPT if config.sharded else PUBLISH_SCRIPT

    def keys(self, topic: str) -> tuple[bytes, bytes]:
        """The hash and the stream of ``topic``."""
        base = self.config.prefix + b"h" + topic_tag(topic.encode())
        return base + b"m", base + b"s"

    # -- publishing ------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        policy: Policy,
        opcode: int,
        payload: bytes,
        compress: bool,
        sender: Skip,
    ) -> int:
        """Queue a history message for the writer's next pipeline; -1 when
        queued, 0 when dropped (Redis unreachable, or the queue full)."""
        tag = 0
        if sender is not None:
            tag = self.tag = self.tag % 0xFFFFFFFF + 1
            senders = self.senders
            if len(senders) >= MAX_SENDERS:  # publishes dropped on their way
                for oldest in list(senders)[: MAX_SENDERS // 2]:
                    del senders[oldest]
            senders[tag] = sender
        flags = opcode | 0x80 if compress else opcode
        record = _RECORD.pack(len(payload), flags, tag) + payload
        self.policies[topic] = (policy.size, int(policy.ttl * 1000))
        writer, counters = self.writer, self.counters
        assert writer is not None
        dropped = counters.dropped
        self.queued = True
        writer.publish(topic, opcode | FLAG, record, compress)
        if counters.dropped != dropped:
            self.senders.pop(tag, None)
            return 0
        return -1

    def commands(
        self, batch: Any, commands: list[Any]
    ) -> tuple[list[tuple[str, int, bytes, bool]], int]:
        """Move the history messages of ``batch`` into ``commands`` (one EVAL
        per run of one topic); return the other messages and the bytes moved."""
        self.queued = False
        rest = []
        nbytes = size = 0
        run: list[bytes] = []
        topic = ""
        limit = self.config.max_batch_bytes
        for message in batch:
            if not message[1] & FLAG:
                rest.append(message)
                continue
            record = message[2]
            nbytes += len(record)
            if message[0] != topic or size + len(record) > limit:
                self._run(topic, run, commands)
                topic, run, size = message[0], [], 0
            run.append(record)
            size += len(record)
        self._run(topic, run, commands)
        self.policies.clear()  # each publish sets its topic's again
        return rest, nbytes

    def _run(self, topic: str, records: list[bytes], commands: list[Any]) -> None:
        if not records:
            return
        meta, stream = self.keys(topic)
        size, ttl = self.policies.get(topic, (1000, 300_000))
        commands.append(
            (
                *("EVAL", self.script, 2, meta, stream, _epoch()),
                *(self.config.channel(topic), size, ttl, max(ttl, META_TTL_MS)),
                self.header,
                *records,
            )
        )

    # -- receiving -------------------------------------------------------------------

    def received(self, topic: str, data: bytes) -> None:
        """A history envelope from Redis (this process's own included)."""
        try:
            epoch, records = self._decode(data)
        except (ValueError, struct.error) as exc:
            self.counters.malformed += 1
            logger.warning("ignoring a malformed history message on %r: %s", topic, exc)
            return
        self.counters.received += len(records)
        history = self._history()
        if history is None:
            return
        try:
            history.accept(topic, epoch, records)
        except Exception:
            logger.exception("delivering a history message from Redis failed")

    def _history(self) -> Any:
        """The host's :class:`~aiohttp_upgrade.History` (a Server's), or None."""
        host: Any = self.session.host
        try:
            return host.history
        except AttributeError:  # a host that keeps no history
            return None

    def _sender(self, tag: int) -> Skip:
        """The socket that published the message ``tag`` here (to skip it)."""
        senders = self.senders
        sender = None
        while senders:  # tags come back in order; older ones were dropped
            oldest = next(iter(senders))
            if oldest > tag:
                break
            port = senders.pop(oldest)
            if oldest == tag:
                sender = port
                break
        return sender

    def _decode(self, data: bytes) -> tuple[str, list[Record]]:
        """Raises ValueError (or struct.error) for anything malformed."""
        head = len(MAGIC) + ORIGIN_SIZE
        if not data.startswith(MAGIC) or len(data) < head + 4:
            raise ValueError("not a history envelope")
        origin = data[len(MAGIC) : head]
        split = data.index(b";", head)
        stop = data.index(b";", split + 1)
        epoch = data[head:split]
        if not _EPOCH.fullmatch(epoch) or not data[split + 1 : stop].isdigit():
            raise ValueError("bad epoch or offset")
        offset = int(data[split + 1 : stop])
        own = origin == self.session.origin and bool(self.senders)
        records: list[Record] = []
        pos, end = stop + 1, len(data)
        while pos < end:
            opcode, payload, compress, tag = _record(data, pos)
            sender = self._sender(tag) if own and tag else None
            records.append((offset, opcode, payload, compress, sender))
            offset += 1
            pos += _RECORD.size + len(payload)
        if not records:
            raise ValueError("no record")
        return epoch.decode(), records

    def other_reply(self, reply: Any) -> None:
        """A reply on the subscriber connection that is not a message: after a
        SUBSCRIBE takes effect, read what was published before it."""
        if (
            isinstance(reply, list)
            and len(reply) == 3
            and reply[0] == self.config.subscribed_kind
        ):
            topic = self.reader.topic_of.get(reply[1])
            history = self._history()
            if topic is not None and history is not None:
                history.check(topic)

    # -- reading ---------------------------------------------------------------------

    async def fetch(
        self, topic: str, policy: Policy, after: int, limit: int, tail: bool = False
    ) -> Slice:
        """See :class:`~aiohttp_upgrade._history_local.Backend`."""
        client = self.session.client
        writer = self.writer
        if client is None or writer is None or not writer.link.up:
            raise HistoryUnavailable("Redis unreachable")
        meta, stream = self.keys(topic)
        ttl = int(policy.ttl * 1000)
        # A topic never published to is kept for its ttl only (ARGV[6]).
        args = (after, limit, int(tail), _epoch(), max(ttl, META_TTL_MS), max(ttl, 1))
        try:
            async with asyncio.timeout(self.config.stall_timeout):
                reply = await client.eval(READ_SCRIPT, 2, meta, stream, *args)
        except (*EXPECTED, TimeoutError) as exc:
            raise HistoryUnavailable(f"reading the history: {describe(exc)}") from exc
        try:
            return self._slice(reply, after, ttl, tail)
        except (ValueError, TypeError, IndexError, struct.error) as exc:
            self.counters.malformed += 1
            raise HistoryUnavailable(f"malformed history of {topic!r}") from exc

    @staticmethod
    def _slice(reply: Any, after: int, ttl: int, tail: bool) -> Slice:
        epoch, last, entries, seconds, micros = reply
        oldest = int(seconds) * 1000 + int(micros) // 1000 - ttl
        items: list[Item] = []
        complete = True
        for entry_id, fields in reversed(entries) if tail else entries:
            if len(fields) != 4 or fields[0] != b"r" or fields[2] != b"t":
                raise ValueError("not a history entry")
            if int(fields[3]) < oldest:
                complete = False  # too old to replay: and so is every earlier one
                items.clear()
                continue
            opcode, payload, compress, _ = _record(fields[1], 0)
            items.append((int(entry_id[:-2]), opcode, payload, compress))
        last_offset = int(last)
        if not tail and after < last_offset:
            complete = complete and bool(items) and items[0][0] == after + 1
        return Slice(epoch.decode(), last_offset, items, complete)


def _record(data: bytes, pos: int) -> tuple[int, bytes, bool, int]:
    """(opcode, payload, compress, tag) of the record at ``pos``."""
    length, flags, tag = _RECORD.unpack_from(data, pos)
    start = pos + _RECORD.size
    if flags not in _FLAGS or start + length > len(data):
        raise ValueError("bad record")
    payload = data[start : start + length]
    opcode = flags & 0x0F
    if opcode == OP_TEXT:
        payload.decode()  # UnicodeDecodeError is a ValueError
    return opcode, payload, flags > 0x7F, tag
