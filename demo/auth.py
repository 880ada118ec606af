"""Session tokens signed with HMAC-SHA256, and the cookie that carries them.

A token is ``<session id>.<expiry>.<signature>``: a random session id, the Unix
time after which it is refused, and an HMAC over both. The signature and expiry
are checked here without I/O; the session id is then looked up in the store
(see :mod:`demo.chat`), so signing out on the server revokes a token even
before it expires.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from aiohttp import web

__all__ = [
    "COOKIE_NAME",
    "SessionToken",
    "clear_session_cookie",
    "issue_token",
    "read_session_cookie",
    "set_session_cookie",
    "verify_token",
]

COOKIE_NAME = "demo_session"

_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{22}")
_EXPIRY = re.compile(r"[0-9]{1,12}")
# Unpadded URL-safe base64 of a SHA-256 digest. A cookie may hold any character,
# and hmac.compare_digest raises on a str that is not ASCII: the shape is checked
# first.
_SIGNATURE = re.compile(r"[A-Za-z0-9_-]{43}")


@dataclass(frozen=True)
class SessionToken:
    """A token whose signature and expiry were checked."""

    session_id: str
    expires_at: int
    value: str


def _sign(secret: bytes, payload: str) -> str:
    digest = hmac.new(secret, payload.encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def issue_token(secret: bytes, now: float, ttl: int) -> SessionToken:
    """Make a token for a new session that expires ``ttl`` seconds after ``now``."""
    session_id = secrets.token_urlsafe(16)
    expires_at = int(now) + ttl
    payload = f"{session_id}.{expires_at}"
    return SessionToken(session_id, expires_at, f"{payload}.{_sign(secret, payload)}")


def verify_token(secret: bytes, value: str, now: float) -> SessionToken | None:
    """Return the token in ``value`` if it is well formed, signed with ``secret``
    and not expired at ``now``; otherwise ``None``.

    Never raises, whatever ``value`` holds (any characters, any length). The
    signature is compared in constant time.
    """
    parts = value.split(".")
    if len(parts) != 3:
        return None
    session_id, expiry, signature = parts
    if not (
        _SESSION_ID.fullmatch(session_id)
        and _EXPIRY.fullmatch(expiry)
        and _SIGNATURE.fullmatch(signature)
    ):
        return None
    expected = _sign(secret, f"{session_id}.{expiry}")
    if not hmac.compare_digest(expected, signature):
        return None
    expires_at = int(expiry)
    if now >= expires_at:
        return None
    return SessionToken(session_id, expires_at, value)


def read_session_cookie(request: web.Request) -> str | None:
    """The raw session cookie of ``request``, or ``None`` when it has none."""
    return request.cookies.get(COOKIE_NAME) or None


def set_session_cookie(
    response: web.StreamResponse, request: web.Request, token: SessionToken, ttl: int
) -> None:
    """Attach ``token`` to ``response`` as an ``HttpOnly``, ``SameSite=Lax`` cookie,
    ``Secure`` when ``request`` came over https, that the browser drops after
    ``ttl`` seconds.
    """
    response.set_cookie(
        COOKIE_NAME,
        token.value,
        max_age=ttl,
        path="/",
        httponly=True,
        samesite="Lax",
        secure=request.secure,
    )


def clear_session_cookie(response: web.StreamResponse, request: web.Request) -> None:
    """Tell the browser to forget the session cookie."""
    response.del_cookie(
        COOKIE_NAME, path="/", httponly=True, samesite="Lax", secure=request.secure
    )
