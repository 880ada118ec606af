"""The chat's JSON messages: parsing what clients send, encoding what they get.

Pure functions, no I/O. Every frame is one JSON object with a ``"type"``.

Client to server::

    {"type": "join", "room": "general"}
    {"type": "join", "room": "general", "since": "<position>"}   (resume)
    {"type": "leave", "room": "general"}
    {"type": "message", "room": "general", "text": "hello"}

Server to client::

    {"type": "hello", "user": {"id": 1, "name": "ada"}}
    {"type": "joined", "room": "general", "history": [MESSAGE...], "members": [USER...],
     "position": "<position>" | null}
    {"type": "resumed", "room": "general", "members": [USER...], "position": "<position>"}
    {"type": "left", "room": "general"}
    {"type": "member_joined" | "member_left", "room": "general", "user": USER}
    {"type": "message", "id": 7, "room": "general", "user": USER, "text": "hello",
     "created_at": 1700000000.0}
    {"type": "error", "code": "bad_json", "message": "..."}

Keys a client adds beyond these are ignored; in particular the author of a
message is always the signed-in user of the socket, never anything in the
payload. ``joined`` may arrive after live ``message`` frames of the same room,
and a message may appear both live and in ``history``: clients merge by ``id``.

Every frame published to a room (``message``, ``member_joined``,
``member_left``) carries ``"position"``, its place in the room's history
(``aiohttp_upgrade.Position`` as a string, added by :func:`with_position`). A
client that lost its socket joins again with the last position it saw as
``since``: the server then replays every frame of the room published since, in
order and once, and answers ``resumed`` instead of ``joined``; when it cannot
(the position is too old, or the history was lost), it answers ``joined`` with
the room's history from the database, as on a first load.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .models import ChatMessage, User

__all__ = [
    "MAX_FRAME_LENGTH",
    "MAX_NESTING",
    "MAX_TEXT_LENGTH",
    "ROOM_PATTERN",
    "ClientMessage",
    "Join",
    "Leave",
    "ProtocolError",
    "Say",
    "encode_error",
    "encode_hello",
    "encode_joined",
    "encode_left",
    "encode_member_joined",
    "encode_member_left",
    "encode_message",
    "encode_resumed",
    "parse_client_message",
    "with_position",
]

MAX_FRAME_LENGTH = 8 * 1024
MAX_TEXT_LENGTH = 2000
# Arrays and objects nested deeper than this make a frame bad_json. Python's own
# limit depends on the version (3.11's json raises RecursionError near 1000
# levels, 3.13's parses thousands), so the demo sets its own.
MAX_NESTING = 32
ROOM_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
# A JSON string (escapes included; an unterminated one runs to the end), or one
# bracket: brackets inside strings do not nest.
_NESTING_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)


class ProtocolError(ValueError):
    """A client sent a frame that breaks the schema.

    ``code`` is a short machine-readable word sent back in the error frame.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Join:
    """Subscribe to ``room`` and get its history and members, or, with
    ``since``, what was published after that position."""

    room: str
    since: str | None = None


@dataclass(frozen=True)
class Leave:
    """Stop receiving ``room``."""

    room: str


@dataclass(frozen=True)
class Say:
    """Post ``text`` to ``room``."""

    room: str
    text: str


ClientMessage = Join | Leave | Say


def _room(payload: dict[str, Any]) -> str:
    room = payload.get("room")
    if not isinstance(room, str) or not ROOM_PATTERN.fullmatch(room):
        raise ProtocolError(
            "bad_room",
            "room must be 1-32 lowercase letters, digits or '-', "
            "starting with a letter or digit",
        )
    return room


def _is_unicode(text: str) -> bool:
    """False when ``text`` holds a lone surrogate, which JSON's ``\\ud800``
    escape can produce but UTF-8 (and so SQLite and every client) cannot carry."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _nests_too_deep(frame: str) -> bool:
    """True when arrays and objects in ``frame`` nest deeper than MAX_NESTING."""
    if frame.count("[") + frame.count("{") <= MAX_NESTING:
        return False  # the usual frame: too few brackets to say more
    depth = 0
    for token in _NESTING_TOKEN.findall(frame):
        if token == "[" or token == "{":
            depth += 1
            if depth > MAX_NESTING:
                return True
        elif token == "]" or token == "}":
            depth -= 1
    return False


def parse_client_message(frame: str | bytes) -> ClientMessage:
    """Parse and validate one frame from a client.

    Raises:
        ProtocolError: the frame is binary, too long, not JSON (or JSON nesting
            arrays and objects deeper than ``MAX_NESTING``, on every Python), or
            not a valid message; its ``code`` says which.
    """
    if not isinstance(frame, str):
        raise ProtocolError("not_text", "send JSON in text frames")
    if len(frame) > MAX_FRAME_LENGTH:
        raise ProtocolError("too_long", f"frames are limited to {MAX_FRAME_LENGTH}")
    if _nests_too_deep(frame):
        raise ProtocolError(
            "bad_json", f"frame nests arrays and objects deeper than {MAX_NESTING}"
        )
    try:
        payload = json.loads(frame)
    except ValueError:
        raise ProtocolError("bad_json", "frame is not valid JSON") from None
    if not isinstance(payload, dict):
        raise ProtocolError("bad_message", "frame must be a JSON object")
    kind = payload.get("type")
    if kind == "join":
        since = payload.get("since")
        if since is not None and not (isinstance(since, str) and len(since) <= 64):
            raise ProtocolError("bad_since", "since must be a position string")
        return Join(_room(payload), since)
    if kind == "leave":
        return Leave(_room(payload))
    if kind == "message":
        room = _room(payload)
        text = payload.get("text")
        if not isinstance(text, str):
            raise ProtocolError("bad_text", "text must be a string")
        text = text.strip()
        if not _is_unicode(text):
            raise ProtocolError(
                "bad_text", "text must be valid Unicode (no lone surrogates)"
            )
        if not text:
            raise ProtocolError("bad_text", "text must not be empty")
        if len(text) > MAX_TEXT_LENGTH:
            raise ProtocolError(
                "bad_text", f"text is limited to {MAX_TEXT_LENGTH} characters"
            )
        return Say(room, text)
    raise ProtocolError("bad_type", "type must be 'join', 'leave' or 'message'")


def _dumps(payload: dict[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def _user(user: User) -> dict[str, Any]:
    return {"id": user.id, "name": user.name}


def _message(message: ChatMessage) -> dict[str, Any]:
    return {
        "type": "message",
        "id": message.id,
        "room": message.room,
        "user": _user(message.user),
        "text": message.text,
        "created_at": message.created_at,
    }


def encode_hello(user: User) -> str:
    """The first frame of every connection: who the server thinks you are."""
    return _dumps({"type": "hello", "user": _user(user)})


def encode_joined(
    room: str,
    history: Iterable[ChatMessage],
    members: Iterable[User],
    position: str | None = None,
) -> str:
    """The answer to a join: recent history (oldest first), who is there, and
    the room's position (live frames follow it)."""
    return _dumps(
        {
            "type": "joined",
            "room": room,
            "history": [_message(m) for m in history],
            "members": [_user(u) for u in members],
            "position": position,
        }
    )


def encode_resumed(room: str, members: Iterable[User], position: str) -> str:
    """The answer to a join with ``since`` that replayed every missed frame."""
    return _dumps(
        {
            "type": "resumed",
            "room": room,
            "members": [_user(u) for u in members],
            "position": position,
        }
    )


def with_position(position: object, frame: str | bytes) -> str | bytes:
    """A room frame (a JSON object) with its history position added: the
    ``format`` of the rooms' history, run once per message per worker."""
    if isinstance(frame, str) and frame.endswith("}"):
        return f'{frame[:-1]},"position":"{position}"}}'
    return frame


def encode_left(room: str) -> str:
    """The answer to a leave."""
    return _dumps({"type": "left", "room": room})


def encode_member_joined(room: str, user: User) -> str:
    """``user`` opened their first socket in ``room``."""
    return _dumps({"type": "member_joined", "room": room, "user": _user(user)})


def encode_member_left(room: str, user: User) -> str:
    """``user`` closed or left with their last socket in ``room``."""
    return _dumps({"type": "member_left", "room": room, "user": _user(user)})


def encode_message(message: ChatMessage) -> str:
    """A chat message, as published to its room."""
    return _dumps(_message(message))


def encode_error(code: str, message: str) -> str:
    """An error about the frame the client just sent; the socket stays open."""
    return _dumps({"type": "error", "code": code, "message": message})
