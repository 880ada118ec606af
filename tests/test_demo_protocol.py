"""The demo's JSON schema: what is accepted, what is refused, what is sent."""

from __future__ import annotations

import json

import pytest

from demo.models import ChatMessage, User
from demo.protocol import (
    MAX_FRAME_LENGTH,
    MAX_TEXT_LENGTH,
    Join,
    Leave,
    ProtocolError,
    Say,
    encode_error,
    encode_joined,
    encode_member_joined,
    encode_member_left,
    encode_message,
    parse_client_message,
)

ADA = User(1, "ada")


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ('{"type": "join", "room": "general"}', Join("general")),
        ('{"type": "leave", "room": "a-1"}', Leave("a-1")),
        (
            '{"type": "message", "room": "general", "text": " hi "}',
            Say("general", "hi"),
        ),
    ],
    ids=["join", "leave", "message-stripped"],
)
def test_valid_frames_parse(frame: str, expected: object) -> None:
    """Each valid client frame parses to its message."""
    assert parse_client_message(frame) == expected


def test_extra_keys_are_ignored() -> None:
    """A claimed author in the payload is dropped, not trusted."""
    frame = json.dumps(
        {"type": "message", "room": "r", "text": "x", "user_id": 99, "user": {"id": 99}}
    )
    assert parse_client_message(frame) == Say("r", "x")


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b'{"type": "join", "room": "general"}', "not_text"),
        ("x" * (MAX_FRAME_LENGTH + 1), "too_long"),
        ("{not json", "bad_json"),
        ("[" * 3000 + "]" * 3000, "bad_json"),
        ("[1, 2]", "bad_message"),
        ('"join"', "bad_message"),
        ('{"room": "general"}', "bad_type"),
        ('{"type": "shout", "room": "general"}', "bad_type"),
        ('{"type": "join"}', "bad_room"),
        ('{"type": "join", "room": "General"}', "bad_room"),
        ('{"type": "join", "room": "-x"}', "bad_room"),
        ('{"type": "join", "room": "' + "a" * 33 + '"}', "bad_room"),
        ('{"type": "join", "room": 7}', "bad_room"),
        ('{"type": "message", "room": "r"}', "bad_text"),
        ('{"type": "message", "room": "r", "text": 5}', "bad_text"),
        ('{"type": "message", "room": "r", "text": "   "}', "bad_text"),
        (
            json.dumps({"type": "message", "room": "r", "text": "x" * 2001}),
            "bad_text",
        ),
    ],
    ids=[
        "binary",
        "too-long",
        "not-json",
        "deeply-nested",
        "array",
        "string",
        "no-type",
        "unknown-type",
        "no-room",
        "uppercase-room",
        "room-leading-dash",
        "room-too-long",
        "room-not-string",
        "no-text",
        "text-not-string",
        "blank-text",
        "text-too-long",
    ],
)
def test_invalid_frames_raise_with_code(frame: str | bytes, code: str) -> None:
    """Each kind of malformed frame raises ProtocolError with its own code."""
    with pytest.raises(ProtocolError) as info:
        parse_client_message(frame)
    assert info.value.code == code


def test_text_limit_is_inclusive() -> None:
    """A message of exactly the maximum length is accepted."""
    frame = json.dumps({"type": "message", "room": "r", "text": "x" * MAX_TEXT_LENGTH})
    assert parse_client_message(frame) == Say("r", "x" * MAX_TEXT_LENGTH)


def test_message_encoding() -> None:
    """A saved message encodes with its id, author and time."""
    message = ChatMessage(7, "general", ADA, "hé <b>", 1.5)
    assert json.loads(encode_message(message)) == {
        "type": "message",
        "id": 7,
        "room": "general",
        "user": {"id": 1, "name": "ada"},
        "text": "hé <b>",
        "created_at": 1.5,
    }


def test_joined_encoding() -> None:
    """The join answer carries history oldest first and the member list."""
    history = [ChatMessage(1, "r", ADA, "a", 1.0), ChatMessage(2, "r", ADA, "b", 2.0)]
    decoded = json.loads(encode_joined("r", history, [ADA]))
    assert decoded["type"] == "joined"
    assert [m["id"] for m in decoded["history"]] == [1, 2]
    assert decoded["members"] == [{"id": 1, "name": "ada"}]


@pytest.mark.parametrize(
    ("encoded", "kind"),
    [
        (encode_member_joined("r", ADA), "member_joined"),
        (encode_member_left("r", ADA), "member_left"),
    ],
    ids=["joined", "left"],
)
def test_member_encoding(encoded: str, kind: str) -> None:
    """Presence changes name the room and the user."""
    assert json.loads(encoded) == {
        "type": kind,
        "room": "r",
        "user": {"id": 1, "name": "ada"},
    }


def test_error_encoding() -> None:
    """An error frame carries a code and a human message."""
    assert json.loads(encode_error("bad_json", "nope")) == {
        "type": "error",
        "code": "bad_json",
        "message": "nope",
    }


def test_lone_surrogate_is_bad_text() -> None:
    """A JSON \\ud800 escape (a lone surrogate, not UTF-8) is refused as bad_text."""
    with pytest.raises(ProtocolError) as info:
        parse_client_message(
            '{"type": "message", "room": "general", "text": "a\\ud800"}'
        )
    assert info.value.code == "bad_text"


def test_surrogate_pair_escape_is_accepted() -> None:
    """A JSON surrogate pair escape decodes to one valid character and is accepted."""
    message = parse_client_message(
        '{"type": "message", "room": "general", "text": "\\ud83d\\ude00"}'
    )
    assert message == Say("general", "\U0001f600")
