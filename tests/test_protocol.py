"""The close state machine of :class:`ServerProtocol`, step by step, without sockets.

Each test drives a protocol with bytes (client frames) and calls, and checks the
state it reaches and the actions it records for the connection to carry out.
"""

from __future__ import annotations

import logging

import pytest

from aiohttp_upgrade._closecode import CloseCode
from aiohttp_upgrade._deflate import Inflater
from aiohttp_upgrade._frames import build_close_frame
from aiohttp_upgrade._protocol import (
    Abort,
    Action,
    ArmCloseTimeout,
    Closed,
    CloseTransport,
    Closing,
    HalfClose,
    ReadOn,
    ReadyState,
    SendFrame,
    ServerProtocol,
)

from .test_structure import run_without_aiohttp
from .wire import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_TEXT,
    client_frame,
    close_payload,
)

OPEN = ReadyState.OPEN
CLOSING = ReadyState.CLOSING
CLOSED = ReadyState.CLOSED


class Owner:
    """Records the data events; answers ``can_half_close`` as told."""

    def __init__(self, half_close: bool = True) -> None:
        self.half_close = half_close
        self.events: list[tuple[str, object]] = []

    def on_message(self, message: str | bytes) -> None:
        self.events.append(("message", message))

    def on_ping(self, data: bytes) -> None:
        self.events.append(("ping", data))

    def on_pong(self, data: bytes) -> None:
        self.events.append(("pong", data))

    def can_half_close(self) -> bool:
        return self.half_close


def new(half_close: bool = True) -> tuple[ServerProtocol, Owner]:
    owner = Owner(half_close)
    return ServerProtocol(owner, 1 << 20, peer="192.0.2.1"), owner


def lingering(code: int, reason: str, half_close: bool = True) -> list[Action]:
    """What closing on our side records: Close, (EOF), read on, timeout, report."""
    sent: list[Action] = [SendFrame(build_close_frame(code, reason))]
    eof: list[Action] = [HalfClose()] if half_close else []
    rest: list[Action] = [ReadOn(), ArmCloseTimeout(), Closed(code, reason)]
    return sent + eof + rest


def test_each_protocol_has_its_own_id() -> None:
    """Two protocols have different ids, each stable once read."""
    first, _ = new()
    second, _ = new()
    assert first.id != second.id
    assert first.id == first.id


def test_a_new_protocol_is_open_with_nothing_to_do() -> None:
    """A new protocol is OPEN and has recorded no action."""
    protocol, _ = new()
    assert protocol.state is OPEN
    assert protocol.take_actions() == []


def test_data_frames_go_to_the_owner_without_actions() -> None:
    """Messages and pings reach the owner as they are parsed; no action is recorded."""
    protocol, owner = new()
    protocol.parser.feed(client_frame(OP_TEXT, b"hi") + client_frame(OP_PING, b"p"))
    assert owner.events == [("message", "hi"), ("ping", b"p")]
    assert protocol.actions is None


def test_our_close_goes_to_closing_and_half_closes() -> None:
    """close(): OPEN -> CLOSING; Close sent, EOF, read on, close timeout, close reported."""
    protocol, _ = new()
    protocol.close(4000, "bye")
    assert protocol.state is CLOSING
    expected = [Closing(drop_events=True), *lingering(4000, "bye")]
    assert protocol.take_actions() == expected


def test_our_close_skips_what_the_peer_still_sends() -> None:
    """After close() on a transport that half-closes, input is discarded."""
    protocol, owner = new()
    protocol.close(1000, "")
    protocol.take_actions()
    protocol.parser.feed(client_frame(OP_TEXT, b"late") + client_frame(OP_CLOSE, b""))
    assert owner.events == []
    assert protocol.take_actions() == []
    assert protocol.state is CLOSING


def test_garbage_while_closing_is_no_second_error() -> None:
    """A protocol error in what the peer sends after our close (half-closed TCP) is
    neither logged nor reported: input is discarded."""
    protocol, _ = new()
    protocol.close(1000, "")
    protocol.take_actions()
    protocol.parser.feed(bytes((0x81, 0x02)) + b"hi")  # unmasked
    assert protocol.take_actions() == []
    assert protocol.state is CLOSING


def test_close_is_idempotent() -> None:
    """A second close() (or fail) while CLOSING records nothing."""
    protocol, _ = new()
    protocol.close(1000, "")
    protocol.take_actions()
    protocol.close(4001, "again")
    protocol.fail(1011, "")
    assert protocol.take_actions() == []
    assert protocol.state is CLOSING


def test_abort_while_closing_aborts_without_a_second_close_report() -> None:
    """terminate() after close() cuts the handshake short: CLOSED, the transport
    aborted, no second Closed (the close hook has run)."""
    protocol, _ = new()
    protocol.close(1000, "")
    protocol.take_actions()
    protocol.abort()
    assert protocol.take_actions() == [Abort()]
    assert protocol.state is CLOSED


def test_shutdown_while_closing_aborts_without_a_second_close_report() -> None:
    """A shutdown does not wait for a closing socket's client: CLOSED at once, the
    transport aborted, and no second Closed (its close hook has run)."""
    protocol, _ = new()
    protocol.close(1000, "")
    protocol.take_actions()
    protocol.shutdown(1001, "", build_close_frame(1001))
    assert protocol.take_actions() == [Abort()]
    assert protocol.state is CLOSED
    protocol.shutdown(1001, "", build_close_frame(1001))
    assert protocol.take_actions() == []


def test_peer_fin_after_our_close_ends_it_quietly() -> None:
    """The transport lost while CLOSING: CLOSED, no second close report."""
    protocol, _ = new()
    protocol.close(1000, "")
    protocol.take_actions()
    protocol.connection_lost()
    assert protocol.state is CLOSED
    assert protocol.take_actions() == []


def test_close_timeout_while_closing_aborts() -> None:
    """The close timeout firing while CLOSING: abort, CLOSED, nothing reported."""
    protocol, _ = new()
    protocol.close(1000, "")
    protocol.take_actions()
    protocol.close_timed_out()
    assert protocol.take_actions() == [Abort()]
    assert protocol.state is CLOSED


def test_close_timeout_while_open_does_nothing() -> None:
    """A stale close timeout does not touch an open connection."""
    protocol, _ = new()
    protocol.close_timed_out()
    assert protocol.take_actions() == []
    assert protocol.state is OPEN


@pytest.mark.parametrize(
    ("payload", "code", "reply"),
    [
        (close_payload(1000, "ok"), 1000, build_close_frame(1000, "ok")),
        (close_payload(4321), 4321, build_close_frame(4321)),
        (b"", CloseCode.NO_STATUS_RECEIVED, build_close_frame(None)),
    ],
    ids=["1000-with-reason", "application-code", "empty-is-1005"],
)
def test_peer_close_is_echoed_and_tcp_closed(
    payload: bytes, code: int, reply: bytes
) -> None:
    """The peer's Close: OPEN -> CLOSED, its code echoed (empty for 1005), TCP closed."""
    protocol, _ = new()
    protocol.parser.feed(client_frame(OP_CLOSE, payload))
    assert protocol.state is CLOSED
    reason = "ok" if code == 1000 else ""
    assert protocol.take_actions() == [
        Closing(drop_events=False),
        SendFrame(reply),
        CloseTransport(),
        Closed(code, reason),
    ]


def test_a_second_peer_close_is_ignored() -> None:
    """Frames after the peer's Close, a second Close included, are not parsed."""
    protocol, owner = new()
    close = client_frame(OP_CLOSE, close_payload(1000))
    protocol.parser.feed(close + client_frame(OP_TEXT, b"x") + close)
    assert [type(a) for a in protocol.take_actions()].count(Closed) == 1
    assert owner.events == []


def test_close_after_peer_close_does_nothing() -> None:
    """close() after the peer's Close records nothing: the socket is CLOSED."""
    protocol, _ = new()
    protocol.parser.feed(client_frame(OP_CLOSE, close_payload(1000)))
    protocol.take_actions()
    protocol.close(1000, "")
    protocol.connection_lost()
    assert protocol.take_actions() == []


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (bytes((0x81, 0x02)) + b"hi", CloseCode.PROTOCOL_ERROR),
        (client_frame(OP_TEXT, b"\xff"), CloseCode.INVALID_PAYLOAD),
        (client_frame(OP_TEXT, b"x" * 101), CloseCode.MESSAGE_TOO_BIG),
        (client_frame(OP_CLOSE, close_payload(1005)), CloseCode.PROTOCOL_ERROR),
    ],
    ids=["unmasked-1002", "bad-utf8-1007", "too-big-1009", "bad-close-code-1002"],
)
def test_protocol_error_closes_with_its_code(frame: bytes, code: int) -> None:
    """A protocol error: OPEN -> CLOSING with its code, queued events kept."""
    owner = Owner()
    protocol = ServerProtocol(owner, 100)
    protocol.parser.feed(frame)
    assert protocol.state is CLOSING
    actions = protocol.take_actions()
    assert actions[0] == Closing(drop_events=False)
    closed = actions[-1]
    assert isinstance(closed, Closed)
    assert closed.code == code
    assert actions[1:] == lingering(code, closed.reason)


def test_protocol_error_is_logged_once_with_the_connection_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A protocol error is logged once, the line naming ``conn <id>`` and the peer."""
    protocol, _ = new()
    with caplog.at_level(logging.INFO, logger="aiohttp_upgrade"):
        protocol.parser.feed(bytes((0x81, 0x02)) + b"hi")
        protocol.fail(1011, "")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert lines[0].startswith(f"conn {protocol.id}: closing WebSocket from 192.0.2.1:")


def test_hook_failure_closes_with_1011_keeping_queued_events() -> None:
    """hook_failed(): OPEN -> CLOSING with 1011, undispatched events kept."""
    protocol, _ = new()
    protocol.hook_failed()
    assert protocol.state is CLOSING
    expected = [Closing(drop_events=False), *lingering(1011, "")]
    assert protocol.take_actions() == expected


def test_shutdown_closes_tcp_without_waiting() -> None:
    """shutdown(): OPEN -> CLOSED, the given frame sent and TCP closed at once."""
    protocol, _ = new()
    frame = build_close_frame(1001, "bye")
    protocol.shutdown(1001, "bye", frame)
    assert protocol.state is CLOSED
    assert protocol.take_actions() == [
        Closing(drop_events=True),
        SendFrame(frame),
        CloseTransport(),
        Closed(1001, "bye"),
    ]


def test_abort_reports_1006_with_its_reason() -> None:
    """abort(reason): OPEN -> CLOSED, no Close frame, 1006 and the reason reported."""
    protocol, _ = new()
    protocol.abort("idle timeout")
    assert protocol.state is CLOSED
    assert protocol.take_actions() == [
        Closing(drop_events=True),
        Abort(),
        Closed(CloseCode.ABNORMAL_CLOSURE, "idle timeout"),
    ]


def test_connection_lost_while_open_reports_1006() -> None:
    """The transport lost while OPEN: CLOSED, 1006 reported once."""
    protocol, _ = new()
    protocol.connection_lost()
    protocol.connection_lost()
    assert protocol.state is CLOSED
    assert protocol.take_actions() == [
        Closing(drop_events=False),
        Closed(CloseCode.ABNORMAL_CLOSURE, ""),
    ]


def test_write_failure_aborts_once_open_or_not() -> None:
    """A failed write aborts: with a 1006 report while OPEN, alone while CLOSING."""
    protocol, _ = new()
    protocol.write_failed()
    assert [type(a) for a in protocol.take_actions()] == [Closing, Abort, Closed]
    protocol, _ = new()
    protocol.close(1000, "")
    protocol.take_actions()
    protocol.write_failed()
    assert protocol.take_actions() == [Abort()]
    assert protocol.state is CLOSED


def test_tls_close_keeps_parsing_for_the_peers_close() -> None:
    """Without half-close (TLS): no EOF; data frames skipped; the peer's Close
    closes TCP and ends CLOSING."""
    protocol, owner = new(half_close=False)
    protocol.close(4000, "bye")
    expected = [Closing(drop_events=True), *lingering(4000, "bye", half_close=False)]
    assert protocol.take_actions() == expected
    protocol.parser.feed(client_frame(OP_TEXT, b"skipped"))
    assert protocol.take_actions() == []
    protocol.parser.feed(client_frame(OP_CLOSE, close_payload(4000)))
    assert protocol.take_actions() == [CloseTransport()]
    assert protocol.state is CLOSED
    assert owner.events == []


def test_tls_protocol_error_while_closing_closes_tcp() -> None:
    """Without half-close, garbage after our Close ends the handshake: TCP closed,
    no second report."""
    protocol, _ = new(half_close=False)
    protocol.close(1000, "")
    protocol.take_actions()
    protocol.parser.feed(bytes((0x81, 0x02)) + b"hi")  # unmasked
    assert protocol.take_actions() == [CloseTransport()]
    assert protocol.state is CLOSED


def test_tls_protocol_error_closes_tcp_after_our_close() -> None:
    """Without half-close, a protocol error sends our Close and closes TCP at once:
    the parser stopped at the error (RFC 6455 7.1.7), so no Close of the peer's
    could end a wait, which only the close timeout would."""
    protocol, _ = new(half_close=False)
    protocol.parser.feed(client_frame(OP_TEXT, b"\xff"))
    reason = "invalid UTF-8 in text"
    assert protocol.take_actions() == [
        Closing(drop_events=False),
        SendFrame(build_close_frame(1007, reason)),
        CloseTransport(),
        Closed(1007, reason),
    ]
    assert protocol.state is CLOSED
    protocol.parser.feed(client_frame(OP_CLOSE, close_payload(1007)))
    protocol.close_timed_out()  # the timeout bounds the flush alone: it aborts
    assert protocol.take_actions() == [Abort()]


def tls_closing(inflater: Inflater | None = None) -> ServerProtocol:
    """A protocol over TLS (no half-close) awaiting the peer's Close after ours."""
    protocol = ServerProtocol(Owner(half_close=False), 1 << 20, inflater)
    protocol.close(1000, "")
    protocol.take_actions()
    return protocol


@pytest.mark.parametrize(
    "frames",
    [
        [client_frame(OP_TEXT, b"\xff")],
        [
            client_frame(OP_TEXT, b"\xff", fin=False),
            client_frame(OP_CONTINUATION, b"\xff"),
        ],
        [client_frame(OP_BINARY, b"not deflate data", rsv=4)],
    ],
    ids=["invalid-utf8", "invalid-utf8-fragments", "corrupt-deflate"],
)
def test_tls_closing_skips_messages_without_decoding_them(frames: list[bytes]) -> None:
    """While awaiting the peer's Close over TLS, skipped messages are neither
    UTF-8 decoded nor inflated (their bad data is no error); the Close ends it."""
    protocol = tls_closing(Inflater(1 << 20, no_context_takeover=False))
    for frame in frames:
        protocol.parser.feed(frame)
    assert protocol.take_actions() == []
    assert protocol.state is CLOSING
    protocol.parser.feed(client_frame(OP_CLOSE, close_payload(1000)))
    assert protocol.take_actions() == [CloseTransport()]


def test_tls_closing_does_not_buffer_skipped_fragments() -> None:
    """Fragments skipped while awaiting the peer's Close are not kept: a message
    of fragments past max_payload_length is no 1009."""
    protocol = ServerProtocol(Owner(half_close=False), 1000)
    protocol.close(1000, "")
    protocol.take_actions()
    protocol.parser.feed(client_frame(OP_BINARY, bytes(800), fin=False))
    protocol.parser.feed(client_frame(OP_CONTINUATION, bytes(800), fin=False))
    protocol.parser.feed(client_frame(OP_CONTINUATION, bytes(800)))
    assert protocol.take_actions() == []
    protocol.parser.feed(client_frame(OP_CLOSE, close_payload(1000)))
    assert protocol.take_actions() == [CloseTransport()]


def test_the_protocol_module_needs_no_asyncio_nor_aiohttp() -> None:
    """protocol.py imports, and closes, where aiohttp cannot be imported."""
    result = run_without_aiohttp("""
protocol = importlib.import_module("aiohttp_upgrade._protocol")
assert "asyncio" not in sys.modules
class Owner:
    def on_message(self, m): pass
    on_ping = on_pong = on_message
    def can_half_close(self): return True
p = protocol.ServerProtocol(Owner(), 100)
p.close(1000, "")
print(p.state.name)
""")
    assert result.stdout.strip() == "CLOSING", result.stderr
