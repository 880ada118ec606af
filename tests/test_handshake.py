"""Opening-handshake validation (RFC 6455 4.2) as pure functions: no sockets."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from aiohttp_upgrade import PerMessageDeflate
from aiohttp_upgrade._handshake import (
    Accept,
    Reject,
    accept_key,
    check_handshake,
    response_headers,
)

from .wire import KEY


def handshake_headers(**overrides: str | None) -> CIMultiDict[str]:
    """A valid client handshake; ``overrides`` use underscores for dashes, None drops."""
    headers: CIMultiDict[str] = CIMultiDict(
        {
            "Host": "example.com",
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": KEY,
            "Sec-WebSocket-Version": "13",
        }
    )
    for name, value in overrides.items():
        header = name.replace("_", "-")
        headers.popall(header, None)
        if value is not None:
            headers[header] = value
    return headers


def accepted(**overrides: str | None) -> Accept:
    decision = check_handshake("GET", handshake_headers(**overrides), None)
    assert isinstance(decision, Accept), decision
    return decision


def rejected(method: str = "GET", **overrides: str | None) -> Reject:
    decision = check_handshake(method, handshake_headers(**overrides), None)
    assert isinstance(decision, Reject), decision
    return decision


# -- accept_key --------------------------------------------------------------------


def test_accept_key_matches_rfc_example() -> None:
    """accept_key gives the Sec-WebSocket-Accept of the worked example in RFC 6455 1.3."""
    assert accept_key(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_accept_key_differs_per_key() -> None:
    """Two different keys give two different accept values."""
    assert accept_key(KEY) != accept_key("AQIDBAUGBwgJCgsMDQ4PEA==")


# -- check_handshake: accepted -------------------------------------------------------


def test_valid_handshake_is_accepted_with_its_key() -> None:
    """A minimal valid handshake is accepted and carries the client's key."""
    assert accepted() == Accept(key=KEY, subprotocol=None, deflate=None)


@pytest.mark.parametrize(
    ("upgrade", "connection"),
    [
        ("WebSocket", "upgrade"),
        ("websocket", "keep-alive, Upgrade"),
        ("websocket", "Upgrade, HTTP2-Settings"),
        (" websocket\t", " UPGRADE "),
    ],
    ids=["mixed-case", "connection-list", "connection-list-upgrade-first", "padded"],
)
def test_upgrade_is_one_case_insensitive_value_and_connection_a_token_list(
    upgrade: str, connection: str
) -> None:
    """Upgrade matches websocket in any case; Connection is a comma-separated list."""
    assert isinstance(
        check_handshake(
            "GET", handshake_headers(Upgrade=upgrade, Connection=connection), None
        ),
        Accept,
    )


def test_key_surrounded_by_whitespace_is_accepted() -> None:
    """Whitespace around Sec-WebSocket-Key is ignored, and the stripped key is kept."""
    assert accepted(Sec_WebSocket_Key=f"  {KEY} ").key == KEY


# -- check_handshake: rejected -------------------------------------------------------


@pytest.mark.parametrize(
    "method", ["POST", "HEAD", "PUT", "get"], ids=["post", "head", "put", "lowercase"]
)
def test_method_other_than_get_is_rejected(method: str) -> None:
    """Only GET can open a WebSocket (RFC 6455 4.1), and the rejection is not a 426."""
    assert rejected(method=method).status == 0


@pytest.mark.parametrize(
    "overrides",
    [
        {"Upgrade": None},
        {"Upgrade": "h2c"},
        {"Upgrade": "websockets"},
        {"Connection": None},
        {"Connection": "keep-alive"},
    ],
    ids=[
        "no-upgrade",
        "other-upgrade",
        "upgrade-lookalike",
        "no-connection",
        "connection-without-upgrade",
    ],
)
def test_request_that_is_not_an_upgrade_is_rejected(
    overrides: dict[str, str | None],
) -> None:
    """A request without both Upgrade: websocket and Connection: upgrade is rejected."""
    decision = check_handshake("GET", handshake_headers(**overrides), None)
    assert isinstance(decision, Reject)
    assert decision.status == 0


@pytest.mark.parametrize(
    "headers",
    [
        [("Upgrade", "h2c, websocket")],
        [("Upgrade", "websocket, h2c")],
        [("Upgrade", "websocket"), ("Upgrade", "websocket")],
        [("Upgrade", "h2c"), ("Upgrade", "websocket")],
        [("Upgrade", "WEBSOC\u212aET")],  # KELVIN SIGN lower-cases to "k"
        [("Connection", "upgrade\xa0")],  # str.strip() would remove it
    ],
    ids=[
        "upgrade-list-websocket-last",
        "upgrade-list-websocket-first",
        "two-upgrade-lines",
        "two-upgrade-lines-websocket-last",
        "non-ascii-lookalike",
        "connection-non-ascii-space",
    ],
)
def test_upgrade_aiohttp_would_not_switch_on_is_rejected(
    headers: list[tuple[str, str]],
) -> None:
    """A head after which aiohttp's parser reads on as HTTP is rejected (its frames
    would be lost): Upgrade must be the single value websocket."""
    request = handshake_headers(Upgrade=None, Connection=None)
    request.extend([("Upgrade", "websocket"), ("Connection", "Upgrade")])
    for name in {name for name, _ in headers}:
        request.popall(name)
    request.extend(headers)
    decision = check_handshake("GET", request, None)
    assert isinstance(decision, Reject)
    assert decision.status == 0


@pytest.mark.parametrize(
    "overrides",
    [
        {"Content_Length": "4"},
        {"Content_Length": "01"},
        {"Transfer_Encoding": "chunked"},
        {"Transfer_Encoding": "identity"},
    ],
    ids=["content-length", "content-length-leading-zero", "chunked", "identity"],
)
def test_handshake_with_a_body_is_rejected(overrides: dict[str, str]) -> None:
    """A body (Content-Length above 0 or any Transfer-Encoding) is rejected: aiohttp
    would read the frames behind the head as that body."""
    assert rejected(**overrides).status == 0


@pytest.mark.parametrize("length", ["0", "00", " 0 "], ids=["0", "00", "padded"])
def test_content_length_zero_is_accepted(length: str) -> None:
    """Content-Length: 0 is no body, and the handshake is accepted."""
    assert accepted(Content_Length=length).key == KEY


@pytest.mark.parametrize(
    "key",
    [
        None,
        "",
        "not base64!!",
        "AQIDBAUGBwgJCgsMDQ4P",  # 15 bytes
        "AQIDBAUGBwgJCgsMDQ4PEBE=",  # 17 bytes
        "AQIDBAUGBwgJCgsMDQ4PEA",  # 16 bytes without padding
    ],
    ids=["missing", "empty", "not-base64", "15-bytes", "17-bytes", "unpadded"],
)
def test_bad_or_missing_key_is_rejected(key: str | None) -> None:
    """Sec-WebSocket-Key must be 16 bytes in base64 (RFC 6455 4.1); else a plain reject."""
    assert rejected(Sec_WebSocket_Key=key).status == 0


@pytest.mark.parametrize(
    "version",
    [None, "", "8", "12", "14", "13, 8"],
    ids=["missing", "empty", "8", "12", "14", "list"],
)
def test_wrong_version_is_rejected_with_426(version: str | None) -> None:
    """A Sec-WebSocket-Version other than 13 is rejected with status 426 (RFC 6455 4.2.2)."""
    assert rejected(Sec_WebSocket_Version=version).status == 426


def test_bad_key_wins_over_wrong_version() -> None:
    """A handshake with a bad key is a plain reject even when the version is also wrong."""
    assert rejected(Sec_WebSocket_Key="short", Sec_WebSocket_Version="8").status == 0


# -- subprotocols ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offer", "chosen"),
    [
        (None, None),
        ("chat", "chat"),
        ("chat, superchat", "chat"),
        ("  v2.proto ,v1.proto", "v2.proto"),
        (", , chat", "chat"),
        ("", None),
    ],
    ids=["none", "one", "first-of-two", "padded", "empty-entries", "empty-header"],
)
def test_first_offered_subprotocol_is_chosen(
    offer: str | None, chosen: str | None
) -> None:
    """The first non-empty entry of Sec-WebSocket-Protocol is the default choice."""
    assert accepted(Sec_WebSocket_Protocol=offer).subprotocol == chosen


# -- permessage-deflate is only negotiated when enabled --------------------------------


def test_deflate_offer_is_ignored_when_disabled() -> None:
    """With per_message_deflate off, a client's permessage-deflate offer is not accepted."""
    assert accepted(Sec_WebSocket_Extensions="permessage-deflate").deflate is None


def test_deflate_offer_is_accepted_when_enabled() -> None:
    """With per_message_deflate on, a permessage-deflate offer is negotiated."""
    decision = check_handshake(
        "GET",
        handshake_headers(Sec_WebSocket_Extensions="permessage-deflate"),
        PerMessageDeflate(),
    )
    assert isinstance(decision, Accept)
    assert decision.deflate is not None
    assert decision.deflate.response.startswith("permessage-deflate")


# -- response_headers --------------------------------------------------------------------


def test_response_has_the_handshake_headers() -> None:
    """The 101 carries Upgrade, Connection and the accept value for the client's key."""
    headers, subprotocol = response_headers(accepted(), ())
    assert headers["Upgrade"] == "websocket"
    assert headers["Connection"] == "Upgrade"
    assert headers["Sec-WebSocket-Accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert "Sec-WebSocket-Protocol" not in headers
    assert "Sec-WebSocket-Extensions" not in headers
    assert subprotocol is None


def test_extra_headers_are_added_in_order_with_repeats() -> None:
    """Extra headers are added to the 101, repeated names included."""
    headers, _ = response_headers(
        accepted(),
        [("X-Served-By", "a"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")],
    )
    assert headers["X-Served-By"] == "a"
    assert headers.getall("Set-Cookie") == ["a=1", "b=2"]


@pytest.mark.parametrize(
    "name",
    [
        "Upgrade",
        "connection",
        "Sec-WebSocket-Accept",
        "SEC-WEBSOCKET-EXTENSIONS",
        "Content-Length",
        "Transfer-Encoding",
    ],
    ids=str,
)
def test_handshake_headers_from_the_user_are_ignored(name: str) -> None:
    """A user header that the handshake owns does not replace or add to its value."""
    headers, _ = response_headers(accepted(), [(name, "bogus")])
    assert "bogus" not in headers.getall(name, [])


def test_user_subprotocol_overrides_the_offered_one() -> None:
    """Sec-WebSocket-Protocol in the extra headers chooses the subprotocol."""
    headers, subprotocol = response_headers(
        accepted(Sec_WebSocket_Protocol="a, b"), [("Sec-WebSocket-Protocol", "b")]
    )
    assert subprotocol == "b"
    assert headers.getall("Sec-WebSocket-Protocol") == ["b"]


def test_offered_subprotocol_is_echoed_by_default() -> None:
    """Without a user choice, the first offered subprotocol is in the 101."""
    headers, subprotocol = response_headers(accepted(Sec_WebSocket_Protocol="a, b"), ())
    assert subprotocol == "a"
    assert headers["Sec-WebSocket-Protocol"] == "a"


def test_empty_user_subprotocol_selects_none() -> None:
    """An empty Sec-WebSocket-Protocol from the user declines every offered subprotocol."""
    headers, subprotocol = response_headers(
        accepted(Sec_WebSocket_Protocol="a"), [("Sec-WebSocket-Protocol", "")]
    )
    assert subprotocol is None
    assert "Sec-WebSocket-Protocol" not in headers


def test_connection_upgrade_on_a_second_header_line_is_accepted() -> None:
    """Connection tokens spread over several header lines are all considered."""
    headers = CIMultiDict(
        [
            ("Upgrade", "websocket"),
            ("Connection", "keep-alive"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ]
    )
    assert isinstance(check_handshake("GET", headers, None), Accept)
