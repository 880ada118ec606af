"""Real processes for the cluster tests: a ``redis-server`` on a free loopback port
and app servers (``tests/cluster_app.py`` under ``python -m aiohttp.web``); and
what the in-process RedisBroker tests share (the ``redis`` fixture, ``Subscribe``).

Both are started with ``subprocess`` and are ready when they say so on their
output (redis: "Ready to accept connections"; aiohttp: "Running on"), never after
a sleep. Redis runs without persistence (``--save '' --appendonly no``) so that
a restart comes back empty, as after a crash.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import pytest

if TYPE_CHECKING:
    from aiohttp_upgrade import RedisBroker
    from aiohttp_upgrade._redis._shard import Shard

from aiohttp_upgrade import ServerWebSocket, WebSocketHandler

__all__ = [
    "REDIS_SERVER",
    "ROOM",
    "AppProcess",
    "RedisProcess",
    "Subscribe",
    "free_port",
    "module_redis",
    "poll_until",
    "requires_redis",
    "running_redis",
    "wait_subscribed",
    "wait_until",
]

REDIS_SERVER: Final = shutil.which("redis-server") or "/usr/bin/redis-server"
ROOT: Final = Path(__file__).resolve().parent.parent
START_TIMEOUT: Final = 20.0
RUNNING: Final = re.compile(r"Running on http://([\d.]+):(\d+)")

requires_redis = pytest.mark.skipif(
    not os.path.exists(REDIS_SERVER),
    reason="needs Debian's redis-server (make test installs it as root)",
)

T = TypeVar("T")


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free on ``host`` a moment ago."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def poll_until(
    check: Callable[[], T | None], timeout: float = 15.0, what: str = "condition"
) -> T:
    """Call ``check`` until it returns something other than None/False; fail at
    the deadline. For state another process changes, which sends no event."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


async def wait_until(
    check: Callable[[], Any], within: float = 15.0, what: str = "condition"
) -> Any:
    """:func:`poll_until` for async tests: the loop keeps running between polls."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def wait_subscribed(redis: RedisProcess, channel: str, count: int) -> None:
    """Wait until ``count`` connections subscribe to ``channel`` in Redis
    (PUBSUB NUMSUB)."""
    await wait_until(
        lambda: redis.numsub(channel) == count,
        what=f"{count} subscriptions to {channel}",
    )


def _wait_for_line(
    process: subprocess.Popen[bytes], pattern: re.Pattern[str], name: str
) -> tuple[re.Match[str], str]:
    """Read ``process``'s output until it matches ``pattern`` (raw reads of the
    pipe: a buffered reader would hide lines from select)."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    deadline = time.monotonic() + START_TIMEOUT
    seen = ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            raise AssertionError(f"{name} exited: {seen}")
        seen += chunk.decode(errors="replace")
        match = pattern.search(seen)
        if match:
            return match, seen
    process.kill()
    raise AssertionError(f"{name} did not start: {seen}")


class RedisProcess:
    """A ``redis-server`` on ``127.0.0.1:port``; ``kill()`` and ``start()`` again
    on the same port simulate a crash and a restart."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--loglevel",
                "notice",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        _wait_for_line(
            self.process, re.compile("Ready to accept connections"), "redis-server"
        )

    def kill(self) -> None:
        """SIGKILL: no goodbye to the clients, as in a crash."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process.stdout and self.process.stdout.close()
            self.process = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def command(self, *args: str) -> str:
        """Run one command with a raw RESP client; return the reply, decoded
        roughly (enough for integers, arrays of bulk strings and status)."""
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"".join(parts))
            return _read_reply(sock.makefile("rb"))

    def raw_command(self, *args: bytes) -> str:
        """Like :meth:`command`, with bytes arguments (for forged payloads)."""
        parts = [f"*{len(args)}\r\n".encode()]
        for data in args:
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"".join(parts))
            return _read_reply(sock.makefile("rb"))

    def numsub(self, channel: str) -> int:
        """``PUBSUB NUMSUB channel``: how many connections subscribe to it."""
        reply = self.command("PUBSUB", "NUMSUB", channel)
        return int(reply.split()[-1])


def _read_reply(stream: object) -> str:
    readline = stream.readline  # type: ignore[attr-defined]
    read = stream.read  # type: ignore[attr-defined]
    line: bytes = readline().rstrip(b"\r\n")
    kind, rest = line[:1], line[1:]
    if kind in (b"+", b":"):
        return rest.decode()
    if kind == b"-":
        raise AssertionError(f"redis error: {rest.decode()}")
    if kind == b"$":
        length = int(rest)
        if length < 0:
            return ""
        data: bytes = read(length + 2)
        return data[:-2].decode(errors="replace")
    if kind == b"*":
        return " ".join(_read_reply(stream) for _ in range(int(rest)))
    raise AssertionError(f"unexpected reply {line!r}")


class AppProcess:
    """``tests/cluster_app.py`` (or ``app``) under ``python -m aiohttp.web`` on
    ``host``."""

    def __init__(
        self,
        host: str,
        redis_url: str | None,
        heartbeat: float = 5.0,
        app: str = "tests.cluster_app:init_app",
    ):
        env = dict(os.environ)
        env.pop("CLUSTER_REDIS_URL", None)
        if redis_url is not None:
            env["CLUSTER_REDIS_URL"] = redis_url
        env["CLUSTER_HEARTBEAT"] = str(heartbeat)
        env["PYTHONUNBUFFERED"] = "1"
        self.host = host
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aiohttp.web",
                "-H",
                host,
                "-P",
                "0",
                app,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        match, startup = _wait_for_line(self.process, RUNNING, "app server")
        self.port = int(match.group(2))
        # Keep reading: a full pipe would block the server's logging.
        self._output: list[bytes] = [startup.encode()]
        self._drain = threading.Thread(target=self._read_all, daemon=True)
        self._drain.start()

    def _read_all(self) -> None:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        while chunk := os.read(fd, 65536):
            self._output.append(chunk)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def ws_url(self, topics: str = "") -> str:
        return f"ws://{self.host}:{self.port}/ws?sub={topics}"

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        self.process.wait(timeout=15)

    def stop(self) -> str:
        """SIGTERM, wait, and return everything the process printed."""
        self.kill(signal.SIGTERM)
        self._drain.join(timeout=15)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return b"".join(self._output).decode(errors="replace")


def running_redis() -> Iterator[RedisProcess]:
    """A started redis-server, killed afterwards (the body of fixtures)."""
    redis = RedisProcess()
    redis.start()
    try:
        yield redis
    finally:
        redis.kill()


@pytest.fixture(scope="module", name="redis")
def module_redis() -> Iterator[RedisProcess]:
    """The ``redis`` fixture: a redis-server shared by one test module's tests.
    Import it into a module (``noqa: F401``) to use it there."""
    yield from running_redis()


ROOM: Final = "room"


class Subscribe(WebSocketHandler[Any]):
    """Subscribes every socket to :data:`ROOM`."""

    idle_timeout = 0

    def open(self, ws: ServerWebSocket[Any]) -> None:
        ws.subscribe(ROOM)


def single_shard(broker: RedisBroker) -> Shard:
    """The parts of a broker on one Redis (for tests that break one on purpose)."""
    from aiohttp_upgrade._redis._shard import Shard

    engine = broker._engine
    assert isinstance(engine, Shard)
    return engine
