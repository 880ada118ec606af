"""The chat's WebSocket side: what each socket carries and how its frames are handled.

Rooms are topics named ``room:<name>``. A join subscribes the socket, announces
the person to the room (once, however many tabs they have) and answers with the
room's recent history and members; a chat message is saved to the database
first and published to the room after, with the author taken from ``ws.data``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp_upgrade import ReadyState, ServerWebSocket, WebSocketHandler

from .models import User
from .presence import Presence
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
    parse_client_message,
)
from .store import DEFAULT_HISTORY_LIMIT, Store

__all__ = [
    "MAX_ROOMS_PER_SOCKET",
    "SESSION_ENDED",
    "ChatHandler",
    "SocketData",
    "room_topic",
]

log = logging.getLogger(__name__)

MAX_ROOMS_PER_SOCKET = 20
# Private-use close code (RFC 6455 7.4.2): the session was signed out or expired.
SESSION_ENDED = 4001

Socket = ServerWebSocket["SocketData"]


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

    @property
    def user(self) -> User:
        """The signed-in user of the socket."""
        return User(self.user_id, self.user_name)


def room_topic(room: str) -> str:
    """The pub/sub topic of ``room``."""
    return f"room:{room}"


class ChatHandler(WebSocketHandler[SocketData]):
    """Handles every chat socket of one app.

    The hooks publish through :attr:`server` (a person leaving is announced
    after their socket is closed, when ``ws.publish`` can no longer send).
    """

    # One frame of the protocol, UTF-8 encoded, with room to spare.
    max_payload_length = 4 * MAX_FRAME_LENGTH
    idle_timeout = 60

    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        super().__init__()
        self.store = store
        self.clock = clock
        self.presence = Presence()
        self._by_session: dict[str, set[Socket]] = {}

    def end_session(self, session_id: str) -> int:
        """Close every socket of a signed-out session; return how many."""
        sockets = list(self._by_session.get(session_id, ()))
        for ws in sockets:
            ws.close(SESSION_ENDED, "signed out")
        return len(sockets)

    # -- hooks -------------------------------------------------------------------

    def open(self, ws: Socket) -> None:
        """Register the socket under its session and say who it belongs to."""
        self._by_session.setdefault(ws.data.session_id, set()).add(ws)
        ws.send_text(encode_hello(ws.data.user))

    async def message(self, ws: Socket, message: str | bytes) -> None:
        """Parse one frame; answer a malformed one with an error frame."""
        if self.clock() >= ws.data.expires_at:
            ws.close(SESSION_ENDED, "session expired")
            return
        try:
            request = parse_client_message(message)
        except ProtocolError as exc:
            ws.send_text(encode_error(exc.code, exc.message))
            return
        if isinstance(request, Join):
            await self._join(ws, request.room)
        elif isinstance(request, Leave):
            self._leave(ws, request.room)
        elif isinstance(request, Say):
            await self._say(ws, request.room, request.text)

    def close(self, ws: Socket, code: int, reason: str) -> None:
        """Forget the socket and announce its person leaving each room."""
        sockets = self._by_session.get(ws.data.session_id)
        if sockets is not None:
            sockets.discard(ws)
            if not sockets:
                del self._by_session[ws.data.session_id]
        for room in sorted(ws.data.rooms):
            if self.presence.remove(room, ws.data.user):
                self.server.publish(
                    room_topic(room), encode_member_left(room, ws.data.user)
                )
        ws.data.rooms.clear()

    # -- requests ----------------------------------------------------------------

    async def _join(self, ws: Socket, room: str) -> None:
        data = ws.data
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
            ws.subscribe(room_topic(room))
            data.rooms.add(room)
            if self.presence.add(room, data.user):
                ws.publish_text(room_topic(room), encode_member_joined(room, data.user))
        history = await self.store.recent_messages(room, DEFAULT_HISTORY_LIMIT)
        if ws.ready_state is ReadyState.OPEN and room in data.rooms:
            ws.send_text(encode_joined(room, history, self.presence.members(room)))

    def _leave(self, ws: Socket, room: str) -> None:
        data = ws.data
        if room in data.rooms:
            data.rooms.discard(room)
            ws.unsubscribe(room_topic(room))
            if self.presence.remove(room, data.user):
                self.server.publish(
                    room_topic(room), encode_member_left(room, data.user)
                )
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
