"""The chat's WebSocket side: what each socket carries and how its frames are handled.

Rooms are topics named ``room:<name>``. A join subscribes the socket, tracks it
in the room's presence (the library's: ``ws.track``, under the user's id, with
their name) and answers with the room's recent history and members; a chat
message is saved to the database first and published to the room after, with
the author taken from ``ws.data``. Who is where is the library's presence, kept
by every worker for every worker (through Redis when there are several): the
``presence`` hook, which runs on every worker for every change, announces a
person to this worker's sockets in the room when their first socket there
joins and when their last one leaves (once, however many tabs they have, on
however many workers). Every socket is also tracked in ``sockets:<user id>``
under its session, for the caps below and for "is this name in use".

Defences (numbers in :mod:`demo.limits`):

- every frame a socket sends (pings and continuation frames too) and its bytes
  count against the library's ``rate_limit`` (:meth:`~demo.limits.Limits.rate_limit`):
  past it the socket gets one ``rate_limited`` error frame and is not read until
  its budget is back (TCP pushes back on the client);
- every message of a user spends a token of the user's
  :class:`~demo.limits.FloodGuard`, shared by all their sessions and sockets (so
  signing in again gives no fresh budget); the first over budget gets a
  ``rate_limited`` error frame, the next are dropped, and a socket that goes on
  is closed with 1008;
- a session, and a user over all sessions, may hold a few sockets on all
  workers together: the route answers 429 beyond that, and
  :meth:`ChatHandler.open` closes with 1008 a socket that got past it in a race
  of concurrent handshakes on this worker (the count and the track are one
  synchronous step). Across workers the count is presence's, which lags by the
  time a delta takes through Redis (milliseconds): handshakes racing on two
  workers within it may both pass;
- the frame budget is per worker: a user with tabs on two workers gets
  twice the rate (each worker keeps its own buckets, in memory);
- a socket is closed (4001) when its session expires, by a timer set in ``open``;
- a client that stops reading is cut once ``backpressure_limit`` bytes wait for
  it, and one that goes silent is pinged and closed after ``idle_timeout`` even
  in a busy room (``reset_idle_timeout_on_send = False``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp_upgrade import CloseCode, ReadyState, ServerWebSocket, WebSocketHandler

from .limits import (
    DEFAULT_BACKPRESSURE_LIMIT,
    DEFAULT_IDLE_TIMEOUT,
    FloodGuard,
    Limits,
    Verdict,
)
from .models import User
from .protocol import (
    MAX_FRAME_LENGTH,
    Join,
    Leave,
    ProtocolError,
    Say,
    encode_error,
    encode_hello,
    encode_joined,
    encode_left,
    encode_member_joined,
    encode_member_left,
    encode_message,
    encode_resumed,
    parse_client_message,
)
from .store import DEFAULT_HISTORY_LIMIT, Store

__all__ = [
    "MAX_ROOMS_PER_SOCKET",
    "POLICY_VIOLATION",
    "ROOM_PREFIX",
    "SESSION_ENDED",
    "ChatHandler",
    "SocketData",
    "room_topic",
    "sockets_topic",
]

log = logging.getLogger(__name__)

MAX_ROOMS_PER_SOCKET = 20
ROOM_PREFIX = "room:"
# Private-use close code (RFC 6455 7.4.2): the session was signed out or expired.
SESSION_ENDED = 4001
# A flooding socket, or one beyond the caps.
POLICY_VIOLATION = CloseCode.POLICY_VIOLATION

Socket = ServerWebSocket["SocketData"]
KeyT = TypeVar("KeyT")


@dataclass
class SocketData:
    """What the WebSocket route attaches to each socket with ``server.upgrade``.

    Everything but ``rooms`` is fixed at the handshake; ``rooms`` is the set of
    rooms this socket has joined.
    """

    created_at: float
    token: str
    user_id: int
    user_name: str
    session_id: str
    expires_at: int
    rooms: set[str] = field(default_factory=set)
    expiry: asyncio.TimerHandle | None = field(default=None, compare=False)

    @property
    def user(self) -> User:
        """The signed-in user of the socket."""
        return User(self.user_id, self.user_name)


def room_topic(room: str) -> str:
    """The pub/sub and presence topic of ``room``."""
    return f"{ROOM_PREFIX}{room}"


def sockets_topic(user_id: int) -> str:
    """The presence topic of a user's sockets (keyed by session), on every worker."""
    return f"sockets:{user_id}"


def session_key(session_id: str) -> str:
    """A session's presence key: a digest, so that presence (which crosses Redis)
    never holds the session id itself."""
    return hashlib.sha256(session_id.encode()).hexdigest()[:32]


class ChatHandler(WebSocketHandler[SocketData]):
    """Handles every chat socket of one app (one worker).

    Who is connected and where is ``server.presence`` (see the module).
    """

    # One frame of the protocol, UTF-8 encoded, with room to spare.
    max_payload_length = 4 * MAX_FRAME_LENGTH
    # Both overridden by the Limits given to the constructor.
    idle_timeout = DEFAULT_IDLE_TIMEOUT
    # A reader that stops pins at most about this much.
    backpressure_limit = DEFAULT_BACKPRESSURE_LIMIT
    close_on_backpressure_limit = True
    # Only what the client sends keeps it alive: a silent client in a busy room
    # is pinged, then closed, and leaves "Here now".
    reset_idle_timeout_on_send = False

    def __init__(
        self,
        store: Store,
        clock: Callable[[], float],
        limits: Limits | None = None,
    ) -> None:
        limits = limits or Limits()
        super().__init__(
            idle_timeout=limits.idle_timeout,
            backpressure_limit=limits.backpressure_limit,
            rate_limit=limits.rate_limit(),
        )
        self.store = store
        self.clock = clock
        self.limits = limits
        self._in_room: dict[str, set[Socket]] = {}  # this worker's sockets
        self._swept_to = 0  # the users sweep goes on after this id
        self._by_session: dict[str, set[Socket]] = {}
        self._by_user: dict[int, set[Socket]] = {}
        self._guards: dict[int, FloodGuard] = {}  # by user id

    def end_session(self, session_id: str) -> int:
        """Close every socket of a signed-out session; return how many."""
        sockets = list(self._by_session.get(session_id, ()))
        for ws in sockets:
            ws.close(SESSION_ENDED, "signed out")
        return len(sockets)

    async def refusal(self, session_id: str, user_id: int) -> str | None:
        """Why one more socket of this session and user is refused, or ``None``:
        the session or the user holds its cap of sockets on all workers, or the
        user has spent their frame budget on this worker (so a flooder closed
        with 1008 cannot reconnect at once, or sign in again, and go on)."""
        guard = self._guards.get(user_id)
        if guard is not None and guard.bucket.retry_after(self.clock()) > 0:
            return "too many messages: wait a moment"
        in_session, of_user = self.socket_counts(session_id, user_id)
        if in_session >= self.limits.sockets_per_session:
            return f"a session may open {self.limits.sockets_per_session} connections"
        if of_user >= self.limits.sockets_per_user:
            return f"a user may open {self.limits.sockets_per_user} connections"
        return None

    async def connected_elsewhere(self, user_id: int, session_id: str | None) -> bool:
        """True when ``user_id`` has an open socket, on any worker, of a session
        other than ``session_id``: somebody is using that name in another
        browser now."""
        mine = None if session_id is None else session_key(session_id)
        sessions = self.server.presence.list(sockets_topic(user_id))
        return any(key != mine for key in sessions)

    def socket_counts(self, session_id: str, user_id: int) -> tuple[int, int]:
        """Open sockets of the session, and of the user, on every worker."""
        sessions = self.server.presence.list(sockets_topic(user_id))
        in_session = len(sessions.get(session_key(session_id), ()))
        return in_session, sum(len(metas) for metas in sessions.values())

    def members(self, room: str) -> list[User]:
        """The people in ``room`` on every worker, sorted by name then id; the
        changes before are announced first (so that what a client is told
        next starts from this list)."""
        self.server.presence.flush()
        members = self.server.presence.list(room_topic(room))
        users = [User(int(key), metas[0]["name"]) for key, metas in members.items()]
        return sorted(users, key=lambda u: (u.name.lower(), u.id))

    def presence(
        self, topic: str, joins: dict[str, list[Any]], leaves: dict[str, list[Any]]
    ) -> None:
        """A change of who is in a room, on any worker: announce each person whose
        first socket there joined, or whose last one left, to this worker's
        sockets in the room but the person's own (every worker does the same
        for its own). A plain hook runs as its batch ends: the presence view
        is then the state after ``joins`` and ``leaves``."""
        if not topic.startswith(ROOM_PREFIX):
            return
        room = topic[len(ROOM_PREFIX) :]
        view = self.server.presence
        for key in {*joins, *leaves}:
            now = len(view.get(topic, key))
            before = now - len(joins.get(key, ())) + len(leaves.get(key, ()))
            if bool(now) == bool(before):
                continue
            metas = joins.get(key) or leaves[key]
            user = User(int(key), metas[0]["name"])
            encode = encode_member_joined if now else encode_member_left
            self._tell(room, user.id, encode(room, user))

    def _tell(self, room: str, about: int, frame: str) -> None:
        """Send ``frame`` to this worker's sockets in ``room``, but ``about``'s."""
        for ws in self._in_room.get(room, ()):
            if ws.data.user_id != about:
                ws.send_text(frame)

    async def housekeeping(self) -> None:
        """Run every heartbeat: close this worker's sockets of sessions signed
        out elsewhere, and delete the users nothing refers to (of the next few
        thousand: a full pass takes several beats), a user with a socket on any
        worker included."""
        await self.end_signed_out_sessions()
        connected = {
            int(topic.partition(":")[2])
            for topic in self.server.presence.topics()
            if topic.startswith("sockets:")
        }
        self._swept_to = await self.store.forget_unused_users(self._swept_to, connected)

    async def end_signed_out_sessions(self) -> int:
        """Close this worker's sockets whose session no longer exists (signed out
        on another worker, or expired); return how many were closed."""
        if not self._by_session:
            return 0
        live = await self.store.live_sessions(list(self._by_session), self.clock())
        return sum(
            self.end_session(session_id)
            for session_id in list(self._by_session)
            if session_id not in live
        )

    def _guard(self, user_id: int) -> FloodGuard:
        guard = self._guards.get(user_id)
        if guard is None:
            if len(self._guards) > 2 * len(self._by_user) + 64:
                self._forget_idle_guards()
            limits = self.limits
            guard = FloodGuard(
                limits.message_rate, limits.message_burst, limits.strikes
            )
            self._guards[user_id] = guard
        return guard

    def _forget_idle_guards(self) -> None:
        """Drop the guards of users without sockets whose bucket is full again
        (a new one would be the same), so the map stays small."""
        now = self.clock()
        for user_id, guard in list(self._guards.items()):
            if user_id not in self._by_user and guard.bucket.is_full(now):
                del self._guards[user_id]

    # -- hooks -------------------------------------------------------------------

    def open(self, ws: Socket) -> None:
        """Register the socket under its session and user (tracked in presence,
        for every worker), unless either holds its cap already (then close it
        with 1008), arm its expiry and say hello."""
        data = ws.data
        self._by_session.setdefault(data.session_id, set()).add(ws)
        self._by_user.setdefault(data.user_id, set()).add(ws)
        limits = self.limits
        in_session, of_user = self.socket_counts(data.session_id, data.user_id)
        if (
            in_session >= limits.sockets_per_session
            or of_user >= limits.sockets_per_user
        ):
            ws.close(POLICY_VIOLATION, "too many connections")
            return
        ws.track(sockets_topic(data.user_id), session_key(data.session_id))
        self._guard(data.user_id)
        delay = max(0.0, data.expires_at - self.clock())
        data.expiry = asyncio.get_running_loop().call_later(delay, self._expire, ws)
        ws.send_text(encode_hello(data.user))

    def rate_limited(self, ws: Socket) -> None:
        """The socket sent more frames or bytes than its ``rate_limit``: say so
        (once; the library stops reading it until its budget is back)."""
        ws.send_text(
            encode_error(
                "rate_limited",
                f"too many frames: at most {self.limits.frame_rate:g} a second; "
                "slow down",
            )
        )

    @staticmethod
    def _expire(ws: Socket) -> None:
        ws.close(SESSION_ENDED, "session expired")

    async def message(self, ws: Socket, message: str | bytes) -> None:
        """Parse one frame; answer a malformed one with an error frame."""
        now = self.clock()
        if now >= ws.data.expires_at:
            ws.close(SESSION_ENDED, "session expired")
            return
        verdict = self._guard(ws.data.user_id).check(now)
        if verdict is not Verdict.ALLOW:
            if verdict is Verdict.WARN:
                rate = self.limits.message_rate
                ws.send_text(
                    encode_error(
                        "rate_limited",
                        f"too many messages: at most {rate:g} a second; "
                        "this one was dropped",
                    )
                )
            elif verdict is Verdict.CLOSE:
                ws.close(POLICY_VIOLATION, "too many messages")
            return
        try:
            request = parse_client_message(message)
        except ProtocolError as exc:
            ws.send_text(encode_error(exc.code, exc.message))
            return
        if isinstance(request, Join):
            await self._join(ws, request.room, request.since)
        elif isinstance(request, Leave):
            await self._leave(ws, request.room)
        elif isinstance(request, Say):
            await self._say(ws, request.room, request.text)

    def close(self, ws: Socket, code: int, reason: str) -> None:
        """Forget the socket (its presence ended as it closed: the ``presence``
        hook announces its person leaving where it was their last socket)."""
        data = ws.data
        if data.expiry is not None:
            data.expiry.cancel()
            data.expiry = None
        _discard(self._by_session, data.session_id, ws)
        _discard(self._by_user, data.user_id, ws)
        for room in data.rooms:
            _discard(self._in_room, room, ws)
        data.rooms.clear()

    # -- requests ----------------------------------------------------------------

    async def _join(self, ws: Socket, room: str, since: str | None = None) -> None:
        data = ws.data
        position: str | None = None
        if room not in data.rooms:
            if len(data.rooms) >= MAX_ROOMS_PER_SOCKET:
                ws.send_text(
                    encode_error(
                        "too_many_rooms",
                        f"a connection can join {MAX_ROOMS_PER_SOCKET} rooms",
                    )
                )
                return
            # Subscribe before reading history: a message saved meanwhile then
            # arrives live (perhaps twice, which clients merge by id), never not at all.
            # With ``since``, what the client missed is replayed first, once.
            data.rooms.add(room)
            resumed = await self.server.history.resume(ws, room_topic(room), since)
            position = str(resumed.position) if resumed.position else None
            # The socket may have closed (or left the room) during the replay.
            gone = resumed.reason in ("closed", "subscribed", "dropped")
            if gone or ws.ready_state is not ReadyState.OPEN:
                data.rooms.discard(room)
                return
            ws.track(room_topic(room), str(data.user_id), {"name": data.user_name})
            self._in_room.setdefault(room, set()).add(ws)
            if resumed.recovered and since is not None and position is not None:
                if ws.ready_state is ReadyState.OPEN and room in data.rooms:
                    ws.send_text(encode_resumed(room, self.members(room), position))
                return
        history = await self.store.recent_messages(room, DEFAULT_HISTORY_LIMIT)
        if ws.ready_state is ReadyState.OPEN and room in data.rooms:
            ws.send_text(encode_joined(room, history, self.members(room), position))

    async def _leave(self, ws: Socket, room: str) -> None:
        data = ws.data
        if room in data.rooms:
            data.rooms.discard(room)
            _discard(self._in_room, room, ws)
            ws.unsubscribe(room_topic(room))
            ws.untrack(room_topic(room))
        if ws.ready_state is ReadyState.OPEN:
            ws.send_text(encode_left(room))

    async def _say(self, ws: Socket, room: str, text: str) -> None:
        data = ws.data
        if room not in data.rooms:
            ws.send_text(encode_error("not_joined", f"join {room!r} before writing"))
            return
        # Saved first (the author is the socket's user, never the payload's),
        # published after: whoever sees a message can find it in history.
        saved = await self.store.save_message(room, data.user_id, text, self.clock())
        self.server.publish(room_topic(room), encode_message(saved))


def _discard(index: dict[KeyT, set[Socket]], key: KeyT, ws: Socket) -> None:
    """Remove ``ws`` from ``index[key]``, and the key once its set is empty."""
    sockets = index.get(key)
    if sockets is not None:
        sockets.discard(ws)
        if not sockets:
            del index[key]
