"""Helpers shared by the benchmark scripts: CPU pinning and accounting, server
processes, a raw WebSocket client protocol, percentiles, JSON output.

Every benchmark runs its server in a child process pinned to one CPU and its load
generator in the parent, pinned to another, and charges the server's CPU time
(utime + stime from ``/proc/<pid>/stat``) to the work measured.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import datetime
import json
import math
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Final, TypeVar, cast

from aiohttp import web

__all__ = [
    "CLIENT_CPU",
    "CLK_TCK",
    "SERVER_CPU",
    "RawClient",
    "ServerProcess",
    "add_json_option",
    "announce_port",
    "client_frame",
    "close_clients",
    "connect_clients",
    "cpu_seconds",
    "cpu_times",
    "handshake_request",
    "install_uvloop",
    "machine",
    "open_socket",
    "parse_server_frames",
    "percentile",
    "pin",
    "print_table",
    "raise_nofile",
    "serve_app",
    "settle_malloc",
    "spread",
    "start_server",
    "write_json",
]

SERVER_CPU: Final = 0
CLIENT_CPU: Final = 1
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
_READY_PREFIX: Final = "PORT "


def pin(cpu: int) -> set[int]:
    """Pin the calling process to ``cpu`` (if the machine has it); return the CPU set."""
    if cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {cpu})
    return os.sched_getaffinity(0)


def cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads), in seconds.

    Resolution is one clock tick (1/CLK_TCK s, usually 10 ms): measure intervals
    long enough for that not to matter.
    """
    return sum(cpu_times(pid))


def cpu_times(pid: int) -> tuple[float, float]:
    """utime and stime (user and kernel CPU) of process ``pid``, in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    # The command name (field 2) may contain spaces: split after its ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return utime / CLK_TCK, stime / CLK_TCK


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) of ``values`` by the nearest-rank method."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def spread(values: Sequence[float], digits: int = 2) -> str:
    """The median, followed by [min-max] when there are several values."""
    if not values:
        return "-"
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:.{digits}f}"
    return f"{median:.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """Print rows as columns; the first row is the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(
                cell.ljust(width) for cell, width in zip(row, widths, strict=True)
            ).rstrip()
        )


def raise_nofile(needed: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit to at least ``needed`` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, needed)
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    if want != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


def install_uvloop() -> bool:
    """Make new event loops uvloop ones; False if uvloop is not installed."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


# -- JSON output -------------------------------------------------------------------


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--json PATH``: also write every measurement (all rounds) as JSON."""
    parser.add_argument(
        "--json", metavar="PATH", help="also write the raw results as JSON to PATH"
    )


T = TypeVar("T")


def compiled() -> bool:
    """True when aiohttp-upgrade's compiled twins are built and in use here."""
    from aiohttp_upgrade import _speedups

    return _speedups.COMPILED


def machine() -> dict[str, Any]:
    """What a reader needs to compare figures: versions, CPU, placement."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "aiohttp": version("aiohttp"),
        "aiohttp_upgrade": version("aiohttp-upgrade"),
        "aiohttp_upgrade_compiled": compiled(),
        "uvloop": version("uvloop"),
        "picows": version("picows"),
        "websockets": version("websockets"),
        "bun": _bun_version(),
        "platform": platform.platform(),
        "cpu": model,
        "cpus": os.cpu_count(),
        "server_cpu": SERVER_CPU,
        "client_cpu": CLIENT_CPU,
    }


def _bun_version() -> str | None:
    """The version of the Bun the scripts would run (``$BUN`` or on PATH)."""
    bun = os.environ.get("BUN") or shutil.which("bun")
    if bun is None:
        return None
    try:
        done = subprocess.run([bun, "--version"], capture_output=True, text=True)
    except OSError:
        return None
    return done.stdout.strip() or None


def _record(result: object) -> dict[str, Any]:
    """A dataclass result as a dict, with its derived properties."""
    assert dataclasses.is_dataclass(result) and not isinstance(result, type)
    record = dataclasses.asdict(result)
    for name, value in vars(type(result)).items():
        if isinstance(value, property):
            record[name] = getattr(result, name)
    return record


def write_json(
    path: str | None,
    benchmark: str,
    args: argparse.Namespace,
    results: Iterable[object],
) -> None:
    """Write ``results`` (dataclasses) with the run's arguments and machine to
    ``path``; nothing when ``path`` is None. ``benchmarks/chart.py`` reads it."""
    if path is None:
        return
    document = {
        "benchmark": benchmark,
        "machine": machine(),
        "args": {
            key: value
            for key, value in vars(args).items()
            if key not in ("serve", "client", "json")
        },
        "results": [_record(result) for result in results],
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(document, f, indent=1)
        f.write("\n")
    print(f"wrote {path}")


# -- server processes -------------------------------------------------------------


def settle_malloc() -> None:
    """Put glibc malloc in the state of a server that has been running a while.

    asyncio's selector transports read into a fresh 256 KiB bytes object on every
    read. glibc serves that from mmap() (plus mremap and munmap: three syscalls and
    page faults per read) until the process has once freed an mmap'ed block at
    least that large, which raises its mmap and trim thresholds for good. Whether
    that has happened depends on the process's history, so a fresh server lands
    at random in a slow mode (measured: ~37 µs instead of ~22 µs per echo round
    trip, for plain aiohttp and aiohttp-upgrade alike). Freeing one 1 MiB block
    at startup settles every server in the steady state. uvloop reads into a
    buffer of its own and is not affected.
    """
    block = bytes(1 << 20)
    del block


def announce_port(port: int) -> None:
    """Called by a server process once it listens: tells the parent its port."""
    print(f"{_READY_PREFIX}{port}", flush=True)


def pure_python(factory: Callable[[], T]) -> Callable[[], T]:
    """``factory`` run with the compiled twins off (AIOHTTP_UPGRADE_NO_EXTENSIONS):
    the ``upgrade-pure`` servers, to compare with the compiled ``upgrade`` ones."""

    def make() -> T:
        os.environ["AIOHTTP_UPGRADE_NO_EXTENSIONS"] = "1"  # before the first import
        return factory()

    return make


async def serve_app(app: web.Application, backlog: int, settle: bool = True) -> None:
    """Serve ``app`` on a free loopback port, announce the port to the parent and
    run until the parent terminates this process; ``settle``: call
    :func:`settle_malloc` first."""
    if settle:
        settle_malloc()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=backlog)
    await site.start()
    announce_port(runner.addresses[0][1])
    await asyncio.Event().wait()


@dataclass
class ServerProcess:
    """A benchmark server running as ``python script --serve ...`` on its own CPU."""

    process: subprocess.Popen[str]
    port: int

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    def start(cls, script: str, args: Sequence[str]) -> ServerProcess:
        return cls.start_command([sys.executable, script, *args])

    @classmethod
    def start_command(cls, command: Sequence[str]) -> ServerProcess:
        """Run any server (Bun's too) that prints ``PORT n`` once it listens."""
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: pin(SERVER_CPU) and None,
        )
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith(_READY_PREFIX):
            process.kill()
            process.wait()
            raise RuntimeError(f"server did not start: {line!r}")
        return cls(process, int(line[len(_READY_PREFIX) :]))

    def cpus(self) -> set[int]:
        return os.sched_getaffinity(self.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def cpu_times(self) -> tuple[float, float]:
        """The server's user and kernel CPU seconds so far."""
        return cpu_times(self.pid)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_server(
    script: str, impl: str, uvloop: bool, bun: str | None, bun_script: str
) -> ServerProcess:
    """Start the ``impl`` server of ``script`` (``--serve impl``, on uvloop if
    asked), or Bun running ``bun_script`` when ``impl`` is ``"bun"``."""
    if impl == "bun":
        if bun is None:
            raise SystemExit("bun not found: set BUN=/path/to/bun")
        return ServerProcess.start_command([bun, bun_script])
    return ServerProcess.start(
        script, ["--serve", impl] + (["--uvloop"] if uvloop else [])
    )


# -- a raw WebSocket client ---------------------------------------------------------


def client_frame(payload: bytes, opcode: int = 0x1, mask: bytes = b"\0\0\0\0") -> bytes:
    """A masked client frame (RFC 6455 5.2, 5.3) carrying ``payload``."""
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    if mask != b"\0\0\0\0":
        key = (mask * (n // 4 + 1))[:n]
        payload = (
            int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")
        ).to_bytes(n, "little")
    return header + mask + payload


def parse_server_frames(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Remove complete unmasked frames from ``buffer``; return (opcode, payload)."""
    frames = []
    pos = 0
    size = len(buffer)
    while size - pos >= 2:
        length = buffer[pos + 1] & 0x7F
        start = pos + 2
        if length == 126:
            if size - pos < 4:
                break
            length = int.from_bytes(buffer[pos + 2 : pos + 4], "big")
            start = pos + 4
        elif length == 127:
            if size - pos < 10:
                break
            length = int.from_bytes(buffer[pos + 2 : pos + 10], "big")
            start = pos + 10
        end = start + length
        if end > size:
            break
        frames.append((buffer[pos] & 0x0F, bytes(buffer[start:end])))
        pos = end
    del buffer[:pos]
    return frames


def handshake_request(host: str, port: int, path: str) -> bytes:
    """An opening handshake request (RFC 6455 4.1)."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


async def open_socket(
    port: int, path: str, options: Sequence[tuple[int, int, int]] = ()
) -> tuple[socket.socket, bytes]:
    """Connect a non-blocking socket and do the handshake on it.

    Returns the socket and whatever arrived after the 101 response.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        for option in options:
            sock.setsockopt(*option)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, handshake_request("127.0.0.1", port, path))
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = await loop.sock_recv(sock, 4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            received += chunk
    except BaseException:
        sock.close()
        raise
    head, _, rest = received.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        sock.close()
        raise RuntimeError(head.decode(errors="replace"))
    return sock, rest


class RawClient(asyncio.Protocol):
    """A WebSocket client on a bare asyncio protocol, cheap enough to run 1000 of.

    Does the opening handshake, then hands every later read to ``on_data``.
    """

    def __init__(self, host: str, port: int, path: str) -> None:
        self.request = handshake_request(host, port, path)
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._head = b""
        self.on_data: Callable[[bytes], None] = lambda data: None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses.
        self.transport = cast(asyncio.Transport, transport)
        transport = self.transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.opened.done():
            self.on_data(data)
            return
        self._head += data
        head, sep, rest = self._head.partition(b"\r\n\r\n")
        if not sep:
            return
        if not head.startswith(b"HTTP/1.1 101"):
            self.opened.set_exception(RuntimeError(head.decode(errors="replace")))
            return
        self.opened.set_result(None)
        if rest:
            self.on_data(rest)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed during handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, frame: bytes) -> None:
        assert self.transport is not None
        self.transport.write(frame)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def connect_clients(
    factory: Callable[[], RawClient], count: int, port: int, batch: int = 100
) -> list[RawClient]:
    """Open ``count`` clients, ``batch`` at a time (the listen backlog is finite)."""
    loop = asyncio.get_running_loop()
    clients: list[RawClient] = []
    while len(clients) < count:
        protocols = [factory() for _ in range(min(batch, count - len(clients)))]
        await asyncio.gather(
            *(loop.create_connection(_returns(p), "127.0.0.1", port) for p in protocols)
        )
        await asyncio.gather(*(p.opened for p in protocols))
        clients.extend(protocols)
    return clients


def _returns(protocol: RawClient) -> Callable[[], RawClient]:
    return lambda: protocol


async def close_clients(clients: Sequence[RawClient]) -> None:
    for client in clients:
        client.abort()
    await asyncio.gather(*(client.closed for client in clients))
