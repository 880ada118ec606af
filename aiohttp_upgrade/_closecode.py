"""Close codes (RFC 6455 7.4): the one place they are defined. Pure, no I/O."""

from __future__ import annotations

import enum

from ._errors import ProtocolError

__all__ = [
    "CloseCode",
    "check_close_code",
    "is_valid_close_code",
    "parse_close_payload",
]


class CloseCode(enum.IntEnum):
    """The close codes RFC 6455 7.4.1 and the IANA registry define.

    Hooks receive the code as a plain ``int`` (a client may send any code in
    3000-4999); compare it with these members.
    """

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS_RECEIVED = 1005  # never sent: an empty Close frame
    ABNORMAL_CLOSURE = 1006  # never sent: the connection ended without a Close
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014


def is_valid_close_code(code: int) -> bool:
    """True for codes a peer may send in a Close frame (RFC 6455 7.4.1, 7.4.2)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def check_close_code(code: int) -> None:
    """Raise ValueError, naming the codes that may be sent, unless ``code`` may be.

    1005, 1006 and 1015 only report a close without a code, an aborted connection
    and a TLS failure; they never go on the wire (RFC 6455 7.4.1).
    """
    if not is_valid_close_code(code):
        raise ValueError(
            f"close code {code} may not be sent: use 1000-1003, 1007-1014 or "
            "3000-4999 (RFC 6455 7.4; 1005, 1006 and 1015 are reserved)"
        )


def parse_close_payload(payload: bytes | bytearray) -> tuple[int, str]:
    """Return the code and reason of a Close frame's unmasked body (RFC 6455 5.5.1).

    An empty body is 1005 with no reason.

    Raises:
        ProtocolError: a 1-byte body or a code no endpoint may send (1002), a
            reason that is not UTF-8 (1007).
    """
    if not payload:
        return CloseCode.NO_STATUS_RECEIVED, ""
    if len(payload) == 1:
        raise ProtocolError(CloseCode.PROTOCOL_ERROR, "Close frame with a 1-byte body")
    code = int.from_bytes(payload[:2], "big")
    if not is_valid_close_code(code):
        raise ProtocolError(CloseCode.PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(
            CloseCode.INVALID_PAYLOAD, "invalid UTF-8 in reason"
        ) from None
    return code, reason
