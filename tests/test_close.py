"""Close semantics: which code and reason the close hook sees, and what the client sees."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest

from aiohttp_upgrade import ReadyState, ServerWebSocket, WebSocketHandler

from .conftest import ConnectRaw, Event, Recorder, ServeFactory
from .wire import (
    OP_BINARY,
    OP_CLOSE,
    OP_TEXT,
    Raw,
    client_frame,
    close_payload,
    parse_close,
)


async def read_close(raw: Raw) -> tuple[int | None, bytes]:
    """Read frames until the server's Close; return its (code, reason bytes)."""
    while True:
        _, opcode, payload = await raw.recv()
        if opcode == OP_CLOSE:
            return parse_close(payload)


async def wait_eof(raw: Raw) -> None:
    """Wait until the server has ended the TCP connection."""
    try:
        while await raw.reader.read(65536):
            pass
    except ConnectionResetError:
        pass


async def events_until_close(handler: Recorder) -> list[Event]:
    """Every event recorded up to and including the close hook's."""
    events = []
    async with asyncio.timeout(10):
        while True:
            event = await handler.events.get()
            events.append(event)
            if event.hook == "close":
                return events


class CountingRecorder(Recorder):
    """A Recorder that also counts close hook calls and notes the state inside it."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.close_calls = 0
        self.inside_close: list[tuple[ReadyState, int]] = []

    def close(self, ws: ServerWebSocket[Any], code: int, reason: str) -> None:
        self.close_calls += 1
        self.inside_close.append((ws.ready_state, ws.send("too late")))
        super().close(ws, code, reason)


# -- whose code the close hook sees -----------------------------------------------------


@pytest.mark.parametrize(
    ("code", "reason"),
    [(1000, ""), (1001, "going"), (4000, "custom ✓"), (3999, "r" * 123)],
    ids=["1000", "1001-reason", "4000-utf8", "3999-long-reason"],
)
async def test_close_hook_gets_the_clients_code_and_reason(
    serve: ServeFactory, connect_raw: ConnectRaw, code: int, reason: str
) -> None:
    """A client Close reaches the close hook with the client's code and reason."""
    handler = Recorder()
    served = await serve(handler)
    raw = await connect_raw(served.port)
    await raw.send(OP_CLOSE, close_payload(code, reason))
    assert (await handler.next("close")).args == (code, reason)


async def test_server_echoes_the_clients_close_code(
    serve: ServeFactory, connect_raw: ConnectRaw
) -> None:
    """The server answers a client Close with the same code (RFC 6455 5.5.1), not 1000."""
    served = await serve(Recorder())
    raw = await connect_raw(served.port)
    await raw.send(OP_CLOSE, close_payload(4321, "bye"))
    code, _ = await read_close(raw)
    assert code == 4321
    await wait_eof(raw)


async def test_close_hook_runs_exactly_once(
    serve: ServeFactory, connect_raw: ConnectRaw
) -> None:
    """The close hook runs once, even when the client then drops TCP and the app closes again."""
    handler = CountingRecorder()
    served = await serve(handler)
    raw = await connect_raw(served.port)
    ws = (await handler.next("open")).ws
    await raw.send(OP_CLOSE, close_payload(1000))
    await handler.next("close")
    await wait_eof(raw)
    ws.close(4000)
    ws.terminate()
    assert handler.close_calls == 1
    assert served.server.pending_websockets == 0


async def test_empty_client_close_is_1005(
    serve: ServeFactory, connect_raw: ConnectRaw
) -> None:
    """A Close frame without a body reaches the close hook as 1005 with no reason."""
    handler = Recorder()
    served = await serve(handler)
    raw = await connect_raw(served.port)
    await raw.send(OP_CLOSE)
    assert (await handler.next("close")).args == (1005, "")


async def test_empty_client_close_is_answered_with_an_empty_close(
    serve: ServeFactory, connect_raw: ConnectRaw
) -> None:
    """The reply to an empty Close is an empty Close (1005 is never sent on the wire)."""
    served = await serve(Recorder())
    raw = await connect_raw(served.port)
    await raw.send(OP_CLOSE)
    assert await read_close(raw) == (None, b"")


async def test_dropped_tcp_connection_is_1006(
    serve: ServeFactory, connect_raw: ConnectRaw
) -> None:
    """A client that closes TCP without a Close frame reaches the close hook as 1006."""
    handler = Recorder()
    served = await serve(handler)
    raw = await connect_raw(served.port)
    await handler.next("open")
    await raw.close()
    assert (await handler.next("close")).args == (1006, "")


async def test_dropped_connection_during_a_message_is_1006(
    serve: ServeFactory, connect_raw: ConnectRaw
) -> None:
    """A client that disconnects halfway through a frame reaches the close hook as 1006."""
    handler = Recorder()
    served = await serve(handler)
    raw = await connect_raw(served.port)
    await handler.next("open")
    raw.writer.write(b"\x81\x85mask")  # a 5-byte text frame header, no payload
    await raw.writer.drain()
    await raw.close()
    assert (await handler.next("close")).args == (1006, "")


async def test_server_close_gives_the_hook_the_servers_code(
    serve: ServeFactory, connect_raw: ConnectRaw
) -> None:
    """ws.close(code, reason) reaches the close hook with the server's code and reason."""
    handler = Recorder()
    served = await serve(handler)
    raw = await connect_raw(served.port)
    ws = (await handler.next("open")).ws
    ws.close(4002, "kicked")
    assert await read_close(raw) == (4002, b"kicked")
    assert (await handler.next("close")).args == (4002, "kicked")


async def test_clients_reply_does_not_change_the_servers_code(
    serve: ServeFactory, connect_raw: ConnectRaw
) -> None:
    """After ws.close(4002), a client Close with another code does not change the hook's code."""
    handler = Recorder()
    served = await serve(handler)
    raw = await connect_raw(served.port)
    ws = (await handler.next("open")).ws
    ws.close(4002, "kicked")
    await read_close(raw)
    await raw.send(OP_CLOSE, close_payload(1000, "ok"))
    assert (await handler.next("close")).args == (4002, "kicked")


async def test_terminate_is_1006(serve: ServeFactory, connect_raw: ConnectRaw) -> None:
    """ws.terminate() reaches the close hook as 1006."""
    handler = Recorder()
    served = await serve(handler)
    await connect_raw(served.port)
    (await handler.next("open")).ws.terminate()
    assert (await handler.next("close")).args == (1006, "")


async def test_close_frame_is_sent_after_pending_messages(
    serve: ServeFactory, connect_raw: ConnectRaw
) -> None:
    """Messages sent before ws.close() reach the client before the Close frame."""
    handler = Recorder()
    served = await serve(handler)
    raw = await connect_raw(served.port)
    ws = (await handler.next("open")).ws
    ws.send("last words")
    ws.close(1000)
    assert await raw.recv() == (True, OP_TEXT, b"last words")
    assert (await raw.recv())[1] == OP_CLOSE


# -- inside the close hook --------------------------------------------------------------------


async def test_inside_close_ready_state_is_closed_and_send_returns_0(
    serve: ServeFactory, connect_raw: ConnectRaw
) -> None:
    """In the close hook ready_state is CLOSED and send() returns 0."""
    handler = CountingRecorder()
    served = await serve(handler)
    raw = await connect_raw(served.port)
    await raw.send(OP_CLOSE, close_payload(1000))
    await handler.next("close")
    assert handler.inside_close == [(ReadyState.CLOSED, 0)]


async def test_socket_is_no_longer_pending_in_the_close_hook(
    serve: ServeFactory, connect_raw: ConnectRaw
) -> None:
    """By the time the close hook runs, the socket no longer counts as pending."""
    seen: list[int] = []
    handler = Recorder()
    original = handler.close

    def close(ws: ServerWebSocket[Any], code: int, reason: str) -> None:
        seen.append(served.server.pending_websockets)
        original(ws, code, reason)

    handler.close = close  # type: ignore[method-assign]
    served = await serve(handler)
    raw = await connect_raw(served.port)
    await raw.send(OP_CLOSE, close_payload(1000))
    await handler.next("close")
    assert seen == [0]


# -- a hook that raises ---------------------------------------------------------------------


class Faulty(Recorder):
    """Echoes messages, except "boom", which raises from a sync or async message hook."""

    def __init__(self, is_async: bool = False, fail_open: bool = False) -> None:
        super().__init__()
        self.error_raised = RuntimeError("boom")
        self.fail_open = fail_open
        if is_async:
            self.message = self.message_async  # type: ignore[method-assign,assignment]

    def open(self, ws: ServerWebSocket[Any]) -> None:
        super().open(ws)
        if self.fail_open:
            raise self.error_raised

    def message(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
        super().message(ws, message)
        if message == "boom":
            raise self.error_raised
        ws.send(message)

    async def message_async(
        self, ws: ServerWebSocket[Any], message: str | bytes
    ) -> None:
        await asyncio.sleep(0)  # fail after a suspension, as real async code does
        Faulty.message(self, ws, message)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_raising_message_hook_closes_with_1011(
    serve: ServeFactory, connect_raw: ConnectRaw, is_async: bool
) -> None:
    """A message hook that raises closes its socket with 1011, seen by client and close hook."""
    handler = Faulty(is_async=is_async)
    served = await serve(handler)
    raw = await connect_raw(served.port)
    await raw.send(OP_TEXT, b"boom")
    assert (await read_close(raw))[0] == 1011
    assert (await handler.next("close")).args[0] == 1011


async def test_raising_open_hook_closes_with_1011(
    serve: ServeFactory, connect_raw: ConnectRaw
) -> None:
    """An open hook that raises closes the socket with 1011."""
    handler = Faulty(fail_open=True)
    served = await serve(handler)
    raw = await connect_raw(served.port)
    assert (await read_close(raw))[0] == 1011
    assert (await handler.next("close")).args[0] == 1011


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_raising_hook_calls_error_hook_with_the_exception(
    serve: ServeFactory, connect_raw: ConnectRaw, is_async: bool
) -> None:
    """The error hook receives the exception a hook raised, before the close hook runs."""
    handler = Faulty(is_async=is_async)
    served = await serve(handler)
    raw = await connect_raw(served.port)
    await raw.send(OP_TEXT, b"boom")
    assert (await handler.next("error")).args == (handler.error_raised,)
    assert (await handler.next("close")).args[0] == 1011


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_raising_hook_logs_one_traceback(
    serve: ServeFactory,
    connect_raw: ConnectRaw,
    caplog: pytest.LogCaptureFixture,
    is_async: bool,
) -> None:
    """A raising hook logs exactly one record with the exception's traceback."""
    handler = Faulty(is_async=is_async)
    served = await serve(handler)
    raw = await connect_raw(served.port)
    with caplog.at_level(logging.ERROR, logger="aiohttp_upgrade"):
        await raw.send(OP_TEXT, b"boom")
        await handler.next("close")
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1
    assert tracebacks[0].exc_info is not None
    assert tracebacks[0].exc_info[1] is handler.error_raised


async def test_raising_hook_does_not_affect_other_sockets(
    serve: ServeFactory, connect_raw: ConnectRaw
) -> None:
    """When one socket's hook raises, another socket keeps working."""
    handler = Faulty()
    served = await serve(handler)
    failing = await connect_raw(served.port)
    healthy = await connect_raw(served.port)
    await failing.send(OP_TEXT, b"boom")
    assert (await read_close(failing))[0] == 1011
    await healthy.send(OP_BINARY, b"still here")
    assert await healthy.recv() == (True, OP_BINARY, b"still here")
    assert served.server.pending_websockets == 1


async def test_error_hook_runs_with_messages_queued_behind_the_failure(
    serve: ServeFactory, connect_raw: ConnectRaw
) -> None:
    """The error hook still runs, before the close hook, when more messages were queued."""
    handler = Faulty(is_async=True)
    served = await serve(handler)
    raw = await connect_raw(served.port)
    # One write, so both messages are queued before the first hook runs.
    raw.writer.write(client_frame(OP_TEXT, b"boom") + client_frame(OP_TEXT, b"after"))
    hooks = [event.hook for event in await events_until_close(handler)]
    assert hooks.count("error") == 1
    assert hooks.index("error") < hooks.index("close")


class SlowHooks(WebSocketHandler[Any]):
    """Async error and close hooks that await real work before they finish."""

    def __init__(self) -> None:
        super().__init__()
        self.finished: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    def message(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
        if message == "boom":
            raise RuntimeError("boom")
        ws.close(4000, str(message))

    async def error(self, ws: ServerWebSocket[Any], exc: BaseException) -> None:
        await self._finish("error")

    async def close(self, ws: ServerWebSocket[Any], code: int, reason: str) -> None:
        await self._finish("close")

    async def _finish(self, hook: str) -> None:
        try:
            await asyncio.to_thread(str, "a database write")
        except asyncio.CancelledError:
            self.finished.put_nowait((hook, "cancelled"))
            raise
        self.finished.put_nowait((hook, "completed"))


@pytest.mark.parametrize(
    ("message", "hooks"),
    [(b"bye", ["close"]), (b"boom", ["error", "close"])],
    ids=["server-close", "hook-raised"],
)
async def test_async_hooks_after_close_are_not_cancelled(
    serve: ServeFactory, connect_raw: ConnectRaw, message: bytes, hooks: list[str]
) -> None:
    """Async error and close hooks run to completion although the TCP connection is gone."""
    handler = SlowHooks()
    served = await serve(handler)
    raw = await connect_raw(served.port)
    await raw.send(OP_TEXT, message)
    await wait_eof(raw)
    results = [await handler.finished.get() for _ in hooks]
    assert results == [(hook, "completed") for hook in hooks]


async def test_async_close_hook_after_client_drop_is_not_cancelled(
    serve: ServeFactory, connect_raw: ConnectRaw
) -> None:
    """An async close hook runs to completion when the client dropped the connection."""
    handler = SlowHooks()
    served = await serve(handler)
    raw = await connect_raw(served.port)
    await raw.close()
    assert await handler.finished.get() == ("close", "completed")


async def test_raising_close_hook_is_logged(
    serve: ServeFactory, connect_raw: ConnectRaw, caplog: pytest.LogCaptureFixture
) -> None:
    """A close hook that raises is logged with its traceback and the server carries on."""
    done = asyncio.Event()

    def close(ws: ServerWebSocket[Any], code: int, reason: str) -> None:
        done.set()
        raise KeyError("in close")

    handler = Recorder()
    handler.close = close  # type: ignore[method-assign]
    served = await serve(handler)
    raw = await connect_raw(served.port)
    with caplog.at_level(logging.ERROR, logger="aiohttp_upgrade"):
        await raw.send(OP_CLOSE, close_payload(1000))
        await done.wait()
        await wait_eof(raw)
    assert any(
        r.exc_info and isinstance(r.exc_info[1], KeyError) for r in caplog.records
    )
    second = await connect_raw(served.port)
    await second.send(OP_CLOSE, close_payload(1000))
    assert (await read_close(second))[0] == 1000


# -- max_payload_length ------------------------------------------------------------------------


async def test_oversized_message_closes_with_1009_seen_by_client(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """A message over max_payload_length closes with 1009, which the client receives."""
    served = await serve(Recorder(max_payload_length=1024))
    async with client_session.ws_connect(served.url) as ws:
        await ws.send_bytes(b"x" * 1025)
        msg = await ws.receive()
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert msg.data == 1009


async def test_oversized_message_gives_close_hook_1009(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """The close hook sees 1009 for an oversized message, not 1006."""
    handler = Recorder(max_payload_length=1024)
    served = await serve(handler)
    async with client_session.ws_connect(served.url) as ws:
        await ws.send_str("y" * 2000)
        event = await handler.next("close")
    assert event.args[0] == 1009


async def test_message_of_exactly_max_payload_length_is_accepted(
    serve: ServeFactory, client_session: aiohttp.ClientSession
) -> None:
    """A message of exactly max_payload_length bytes is delivered (the limit is inclusive)."""
    handler = Recorder(max_payload_length=70_000)
    served = await serve(handler)
    async with client_session.ws_connect(served.url) as ws:
        await ws.send_bytes(b"z" * 70_000)
        event = await handler.next("message")
    assert event.args == (b"z" * 70_000,)


# -- peer errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\x81\x01x", 1002),  # unmasked text frame
        (None, 1007),  # invalid UTF-8 text
        (b"\x88\x82\x00\x00\x00\x00\x03\xee", 1002),  # Close with code 1006
    ],
    ids=["unmasked", "bad-utf8", "close-1006"],
)
async def test_protocol_error_closes_with_its_code(
    serve: ServeFactory, connect_raw: ConnectRaw, frame: bytes | None, code: int
) -> None:
    """A frame that breaks RFC 6455 closes with the matching code, seen by client and hook."""
    handler = Recorder()
    served = await serve(handler)
    raw = await connect_raw(served.port)
    if frame is None:
        await raw.send(OP_TEXT, b"\xff")
    else:
        raw.writer.write(frame)
    assert (await read_close(raw))[0] == code
    assert (await handler.next("close")).args[0] == code


class ClosesOnFirstMessage(WebSocketHandler[Any]):
    """An async message hook that closes the socket on the first message."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str | bytes] = []
        self.closed = asyncio.Event()

    async def message(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
        self.seen.append(message)
        await asyncio.sleep(0)
        ws.close(4000, "enough")

    def close(self, ws: ServerWebSocket[Any], code: int, reason: str) -> None:
        self.closed.set()


async def test_queued_messages_are_dropped_when_the_server_closes(
    serve: ServeFactory, connect_raw: ConnectRaw
) -> None:
    """Messages queued behind an async hook that calls ws.close() are never dispatched."""
    handler = ClosesOnFirstMessage()
    served = await serve(handler)
    raw = await connect_raw(served.port)
    # One write, so all three are parsed and queued before the first hook runs.
    raw.writer.write(b"".join(client_frame(OP_TEXT, m) for m in (b"1", b"2", b"3")))
    assert await read_close(raw) == (4000, b"enough")
    await asyncio.wait_for(handler.closed.wait(), 10)
    assert handler.seen == ["1"]
