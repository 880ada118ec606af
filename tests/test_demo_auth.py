"""Session tokens of the demo: signing, expiry and tampering (pure, no I/O)."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from demo.auth import (
    COOKIE_NAME,
    clear_session_cookie,
    issue_token,
    set_session_cookie,
    verify_token,
)

SECRET = b"s" * 32
NOW = 1_700_000_000.0
TTL = 3600


def test_fresh_token_verifies() -> None:
    """A token verifies with the secret that signed it before it expires."""
    token = issue_token(SECRET, NOW, TTL)
    assert verify_token(SECRET, token.value, NOW + TTL - 1) == token


def test_tokens_are_unique() -> None:
    """Two sign-ins at the same instant get different session ids."""
    first = issue_token(SECRET, NOW, TTL)
    second = issue_token(SECRET, NOW, TTL)
    assert first.session_id != second.session_id


def test_expired_token_is_refused() -> None:
    """A token is refused from the second it expires."""
    token = issue_token(SECRET, NOW, TTL)
    assert verify_token(SECRET, token.value, NOW + TTL) is None


def test_other_secret_is_refused() -> None:
    """A token signed with another secret is refused."""
    token = issue_token(b"o" * 32, NOW, TTL)
    assert verify_token(SECRET, token.value, NOW) is None


def test_extended_expiry_is_refused() -> None:
    """Pushing the expiry forward breaks the signature."""
    token = issue_token(SECRET, NOW, TTL)
    session_id, _, signature = token.value.split(".")
    forged = f"{session_id}.{int(NOW) + 10 * TTL}.{signature}"
    assert verify_token(SECRET, forged, NOW + 2 * TTL) is None


def test_swapped_session_id_is_refused() -> None:
    """Putting another session id under a valid signature is refused."""
    mine = issue_token(SECRET, NOW, TTL)
    theirs = issue_token(SECRET, NOW, TTL)
    _, expiry, signature = mine.value.split(".")
    assert (
        verify_token(SECRET, f"{theirs.session_id}.{expiry}.{signature}", NOW) is None
    )


@pytest.mark.parametrize(
    "value",
    ["", "x", "a.b", "a.b.c.d", "!" * 22 + ".1.sig", "A" * 22 + ".-1.sig", "é.1.x"],
    ids=[
        "empty",
        "one-part",
        "two-parts",
        "four-parts",
        "bad-id",
        "bad-expiry",
        "utf8",
    ],
)
def test_malformed_token_is_refused(value: str) -> None:
    """Anything not shaped like a token is refused without raising."""
    assert verify_token(SECRET, value, NOW) is None


@pytest.mark.parametrize(
    "signature",
    ["\u00e9" * 43, "\U0001f600" * 43, "\udce9" * 43, "A" * 42 + "\u00e9", "A" * 44],
    ids=["latin", "emoji", "surrogate", "last-char", "too-long"],
)
def test_signature_of_wrong_shape_is_refused(signature: str) -> None:
    """A signature that is not 43 base64url characters is refused without raising."""
    token = issue_token(SECRET, NOW, TTL)
    session_id, expiry, _ = token.value.split(".")
    assert verify_token(SECRET, f"{session_id}.{expiry}.{signature}", NOW) is None


@pytest.mark.parametrize(
    ("scheme", "secure"), [("http", False), ("https", True)], ids=["http", "https"]
)
def test_cookie_is_secure_only_over_https(scheme: str, secure: bool) -> None:
    """The session cookie gets the Secure flag exactly when the request is https."""
    request = make_mocked_request("POST", "/sign-in").clone(scheme=scheme)
    response = web.Response()
    set_session_cookie(response, request, issue_token(SECRET, NOW, TTL), TTL)
    cookie = response.cookies[COOKIE_NAME]
    assert bool(cookie["secure"]) is secure
    assert ("Secure" in cookie.OutputString()) is secure
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"


def test_clearing_expires_the_cookie() -> None:
    """Clearing the session cookie sends it back empty and already expired."""
    request = make_mocked_request("POST", "/sign-out")
    response = web.Response()
    clear_session_cookie(response, request)
    cookie = response.cookies[COOKIE_NAME]
    assert cookie.value == ""
    assert cookie["max-age"] == "0"
