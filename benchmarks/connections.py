"""Memory per idle WebSocket: aiohttp-upgrade against plain aiohttp (and Bun), in one run.

For each implementation a server runs in a child process (``--serve IMPL``) and
this process opens N raw client sockets against it. Every socket completes its
handshake and receives one "hi" message from the server (so it was served, not
just accepted), then stays idle. The figure is the growth of the server's resident
set (VmRSS from ``/proc/<pid>/status``) from before the N sockets to after them,
divided by N. A warm-up round of connections is opened and closed first so that
one-time allocations (code paths, caches, allocator arenas) are not charged to the
sockets, and the server runs ``gc.collect()`` before each reading. Kernel socket
buffers are not process memory and are not counted.

The plain aiohttp server is the canonical handler: ``WebSocketResponse``,
``prepare``, ``send_str``, then ``async for msg in ws`` echoing. The
aiohttp-upgrade server is a ``WebSocketHandler`` whose ``open`` sends "hi" and
whose ``message`` echoes, with default options.

The N sockets are opened by client processes of at most --per-process sockets
each (a process may hold 20,000 file descriptors on these machines), each bound
to its own loopback source address (127.0.0.2, 127.0.0.3, ...) so that no
address runs short of ephemeral ports. "open s" is the wall time from telling
the client processes to start until all of them hold their sockets open.

Compression (``--servers``): ``aiohttp-deflate``, ``upgrade-shared``,
``upgrade-dedicated`` and ``bun-deflate`` are the same servers with
permessage-deflate on (aiohttp's default ``compress=True``; ``per_message_deflate``
True, i.e. Bun's shared mode, or ``{"compress": "dedicated", "decompress":
"dedicated"}``; Bun's ``perMessageDeflate: true``), and their clients offer
``permessage-deflate; client_max_window_bits`` as aiohttp's client does with
``compress=15``. ``bun`` is ``benchmarks/bun_connections.ts`` without compression
(``$BUN`` or ``bun`` on PATH). "after msg" is the RSS per socket once every
socket has also sent one message (compressed where negotiated) and read its echo
(compressed too: ``send(message, compress=True)``, Bun's ``ws.send(message, true)``,
aiohttp compresses every send once negotiated).

With --tracemalloc the servers trace Python allocations instead (which inflates
RSS, so no RSS figures are printed) and the biggest allocation sites grown from
before the N sockets to after them are listed, in bytes per socket: where the
remaining bytes of an idle socket go.

Usage: python benchmarks/connections.py [--n 5000] [--warmup 500] [--repeat 1]
       [--per-process 5000] [--tracemalloc] [--servers aiohttp upgrade ...]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
import tracemalloc
import weakref
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from aiohttp import web

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import add_json_option, write_json

IMPLS: Final = (
    "aiohttp",
    "upgrade",
    "aiohttp-deflate",
    "upgrade-shared",
    "upgrade-dedicated",
    "bun",
    "bun-deflate",
)
LABELS: Final = {
    "aiohttp": "plain aiohttp",
    "upgrade": "aiohttp-upgrade",
    "aiohttp-deflate": "aiohttp deflate",
    "upgrade-shared": "upgrade shared",
    "upgrade-dedicated": "upgrade dedicated",
    "bun": "Bun",
    "bun-deflate": "Bun deflate",
}
DEFLATE: Final = frozenset(
    ("aiohttp-deflate", "upgrade-shared", "upgrade-dedicated", "bun-deflate")
)
"""Servers whose clients offer permessage-deflate."""
OFFER: Final = (
    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
)
"""What aiohttp's client offers with ``compress=15``."""
MESSAGE: Final = (
    b'{"type": "chat", "room": "lobby", "text": "hello, hello, hello everyone"}'
)
"""The message each socket sends once for the "after msg" figure."""
BUN: Final = os.environ.get("BUN") or shutil.which("bun")
BUN_SCRIPT: Final = os.path.join(os.path.dirname(__file__), "bun_connections.ts")
READY_PREFIX: Final = "PORT "
CONNECT_CONCURRENCY: Final = 100
"""Handshakes in flight at once, per client process (the listen backlog is 1024)."""
TRACE_LINES: Final = 15


# -- servers (run in the child process) ------------------------------------------


def plain_aiohttp_app() -> web.Application:
    sockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sockets.add(ws)
        await ws.send_str("hi")
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type is aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    async def stats(request: web.Request) -> web.Response:
        gc.collect()
        return web.Response(text=str(len(sockets)))

    app = web.Application()
    app.router.add_get("/ws", websocket)
    app.router.add_get("/stats", stats)
    return app


def upgrade_app(impl: str = "upgrade") -> web.Application:
    from aiohttp_upgrade import Server, ServerWebSocket, WebSocketHandler

    class Hello(WebSocketHandler[None]):
        def open(self, ws: ServerWebSocket[None]) -> None:
            ws.send("hi")

        def message(self, ws: ServerWebSocket[None], message: str | bytes) -> None:
            ws.send(message, compress=True)

    deflate: object = {
        "upgrade": False,
        "upgrade-shared": True,
        "upgrade-dedicated": {"compress": "dedicated", "decompress": "dedicated"},
    }[impl]
    # No handshake timeout: under load, a handshake waiting in the backlog would be
    # cut; plain aiohttp has none either.
    server: Server[None] = Server(
        Hello(per_message_deflate=deflate), handshake_timeout=None
    )

    def fetch(request: web.Request, server: Server[None]) -> web.Response | None:
        if server.upgrade(request):
            return None
        return web.Response(status=400)

    async def stats(request: web.Request) -> web.Response:
        gc.collect()
        return web.Response(text=str(server.pending_websockets))

    app = web.Application()
    server.setup(app)
    app.router.add_get("/ws", server.handler(fetch))
    app.router.add_get("/stats", stats)
    return app


def add_tracing(app: web.Application) -> None:
    """``/mark`` snapshots Python allocations; ``/diff?n=N`` lists the growth since."""
    marks: list[tracemalloc.Snapshot] = []

    async def mark(request: web.Request) -> web.Response:
        gc.collect()
        marks[:] = [tracemalloc.take_snapshot()]
        return web.Response(text="ok")

    async def diff(request: web.Request) -> web.Response:
        gc.collect()
        n = int(request.query["n"])
        snapshot = tracemalloc.take_snapshot()
        stats = snapshot.compare_to(marks[0], "lineno")
        total = sum(stat.size_diff for stat in stats)
        lines = [f"all Python allocations: {total / n:8.0f} B/socket"]
        for stat in stats[:TRACE_LINES]:
            frame = stat.traceback[0]
            where = f"{os.path.basename(frame.filename)}:{frame.lineno}"
            lines.append(
                f"  {stat.size_diff / n:8.0f} B/socket {stat.count_diff / n:6.2f}"
                f" blocks/socket  {where}  {linecache_line(frame)}"
            )
        return web.Response(text="\n".join(lines))

    app.router.add_get("/mark", mark)
    app.router.add_get("/diff", diff)


def linecache_line(frame: tracemalloc.Frame) -> str:
    import linecache

    return linecache.getline(frame.filename, frame.lineno).strip()[:60]


async def serve(impl: str, trace: bool) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if trace:
        tracemalloc.start()
    app = upgrade_app(impl) if impl.startswith("upgrade") else plain_aiohttp_app()
    if trace:
        add_tracing(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    print(f"{READY_PREFIX}{runner.addresses[0][1]}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


# -- the load generator (this process) ----------------------------------------------


def raise_nofile(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        sys.exit(f"RLIMIT_NOFILE hard limit {hard} < {needed}: lower --n")
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def rss_bytes(pid: int) -> int:
    """VmRSS of process ``pid`` from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class Child:
    process: subprocess.Popen[str]
    port: int

    def cpu_seconds(self) -> float:
        """utime + stime of the server process, from /proc/<pid>/stat."""
        with open(f"/proc/{self.process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    @classmethod
    def start(cls, impl: str, trace: bool = False) -> Child:
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        extra = ["--tracemalloc"] if trace else []
        if impl.startswith("bun"):
            if BUN is None:
                raise RuntimeError("Bun not found: set $BUN or put bun on PATH")
            env["DEFLATE"] = "1" if impl in DEFLATE else ""
            command = [BUN, BUN_SCRIPT]
        else:
            command = [sys.executable, os.path.abspath(__file__), "--serve", impl]
        process = subprocess.Popen(
            [*command, *extra],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith(READY_PREFIX):
            process.kill()
            process.wait()
            raise RuntimeError(f"{impl} server did not start: {line!r}")
        return cls(process, int(line[len(READY_PREFIX) :]))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def whole_frame(data: bytes) -> bool:
    """True when ``data`` holds one complete short server frame (under 126 bytes)."""
    return len(data) >= 2 and len(data) >= 2 + (data[1] & 0x7F)


async def read_frame(sock: socket.socket, buffer: bytes = b"") -> bytes:
    """Read until ``buffer`` holds one whole short frame; raise if the peer closed."""
    loop = asyncio.get_running_loop()
    while not whole_frame(buffer):
        data = await loop.sock_recv(sock, 4096)
        if not data:
            raise ConnectionError("server closed the connection")
        buffer += data
    return buffer


async def open_socket(
    port: int, gate: asyncio.Semaphore, source: str = "127.0.0.1", deflate: bool = False
) -> socket.socket:
    """Open one WebSocket on a raw non-blocking socket; return once "hi" arrived."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    sock.bind((source, 0))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"{OFFER if deflate else ''}"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    try:
        async with gate:
            await loop.sock_connect(sock, ("127.0.0.1", port))
            await loop.sock_sendall(sock, request)
            buffer = b""
            while b"\r\n\r\n" not in buffer:
                data = await loop.sock_recv(sock, 4096)
                if not data:
                    raise ConnectionError("server closed the connection")
                buffer += data
            head, _, rest = buffer.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 101 "):
                raise ConnectionError(buffer[:60].decode(errors="replace"))
            if deflate and b"permessage-deflate" not in head:
                raise ConnectionError("permessage-deflate was not negotiated")
            await read_frame(sock, rest)  # "hi"
    except BaseException:
        sock.close()
        raise
    return sock


def message_frame(deflate: bool) -> bytes:
    """MESSAGE as a masked client text frame, compressed when ``deflate``."""
    payload, first = MESSAGE, 0x81
    if deflate:
        z = zlib.compressobj(6, zlib.DEFLATED, -15)
        payload = (z.compress(MESSAGE) + z.flush(zlib.Z_SYNC_FLUSH))[:-4]
        first |= 0x40  # RSV1: compressed (RFC 7692 6)
    return bytes((first, 0x80 | len(payload))) + bytes(4) + payload


async def echo_once(sock: socket.socket, frame: bytes, gate: asyncio.Semaphore) -> None:
    """Send ``frame`` and read the echo."""
    async with gate:
        await asyncio.get_running_loop().sock_sendall(sock, frame)
        await read_frame(sock)


async def open_sockets(
    port: int, n: int, source: str = "127.0.0.1", deflate: bool = False
) -> list[socket.socket]:
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    results = await asyncio.gather(
        *(open_socket(port, gate, source, deflate) for _ in range(n)),
        return_exceptions=True,
    )
    sockets = [s for s in results if isinstance(s, socket.socket)]
    errors = [e for e in results if isinstance(e, BaseException)]
    if errors:
        for sock in sockets:
            sock.close()
        raise RuntimeError(f"{len(errors)} of {n} sockets failed: {errors[0]!r}")
    return sockets


async def open_count(session: aiohttp.ClientSession, port: int) -> int:
    """Ask the server to collect garbage and report its open WebSockets."""
    async with session.get(f"http://127.0.0.1:{port}/stats") as response:
        return int(await response.text())


async def wait_open_count(
    session: aiohttp.ClientSession, port: int, expected: int
) -> None:
    for _ in range(1000):
        if await open_count(session, port) == expected:
            return
        await asyncio.sleep(0.01)
    raise RuntimeError(f"server did not reach {expected} open sockets")


async def hold_sockets(port: int, n: int, source: str, deflate: bool) -> None:
    """A client process: on "go" open ``n`` sockets from ``source``, report; on
    "echo" send one message on each and read the echoes, report; hold them until
    stdin closes."""
    raise_nofile(n + 100)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    print("ready", flush=True)
    await reader.readline()
    try:
        sockets = await open_sockets(port, n, source, deflate)
    except RuntimeError as exc:
        print(f"failed: {exc}", flush=True)
        return
    print("open", flush=True)
    if (await reader.readline()).strip() == b"echo":
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        frame = message_frame(deflate)
        await asyncio.gather(*(echo_once(sock, frame, gate) for sock in sockets))
        print("echoed", flush=True)
    await reader.read()
    for sock in sockets:
        sock.close()


class Clients:
    """Client processes holding ``n`` sockets, at most ``per_process`` each."""

    def __init__(self, port: int, n: int, per_process: int, deflate: bool) -> None:
        self.processes: list[subprocess.Popen[str]] = []
        for index, start in enumerate(range(0, n, per_process)):
            count = min(per_process, n - start)
            source = f"127.0.0.{index + 2}"
            script = [sys.executable, os.path.abspath(__file__), "--hold"]
            self.processes.append(
                subprocess.Popen(
                    [*script, f"{port},{count},{source},{int(deflate)}"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for process in self.processes:
            assert process.stdout is not None
            if process.stdout.readline().strip() != "ready":
                raise RuntimeError("a client process did not start")

    async def tell(self, command: str, answer: str) -> float:
        """Send ``command`` to every process; return the seconds until all answered."""
        started = time.monotonic()
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(f"{command}\n")
            process.stdin.flush()
        for process in self.processes:
            assert process.stdout is not None
            line = await asyncio.to_thread(process.stdout.readline)
            if line.strip() != answer:
                raise RuntimeError(f"a client process: {line.strip()}")
        return time.monotonic() - started

    async def open_all(self) -> float:
        """Tell every process to open its sockets; return the seconds until all held."""
        return await self.tell("go", "open")

    async def echo_all(self) -> None:
        """Have every socket send one message and read its echo."""
        await self.tell("echo", "echoed")

    def close(self) -> None:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.close()
        for process in self.processes:
            process.wait(timeout=60)
            if process.stdout is not None:
                process.stdout.close()


@dataclass
class Result:
    impl: str
    n: int
    baseline: int
    loaded: int
    open_seconds: float
    open_cpu: float
    trace: str = ""
    echoed: int = 0
    """RSS once every socket also sent one message and read its echo."""

    @property
    def per_socket(self) -> float:
        return (self.loaded - self.baseline) / self.n

    @property
    def after_message(self) -> float:
        return (self.echoed - self.baseline) / self.n


async def measure(
    impl: str, n: int, warmup: int, per_process: int, trace: bool = False
) -> Result:
    child = Child.start(impl, trace)
    deflate = impl in DEFLATE
    try:
        async with aiohttp.ClientSession() as session:
            warm = await open_sockets(child.port, warmup, deflate=deflate)
            for sock in warm:
                sock.close()
            await wait_open_count(session, child.port, 0)
            clients = Clients(child.port, n, per_process, deflate)
            try:
                await open_count(session, child.port)
                if trace:
                    await session.get(f"http://127.0.0.1:{child.port}/mark")
                baseline = rss_bytes(child.process.pid)
                cpu = child.cpu_seconds()
                seconds = await clients.open_all()
                await wait_open_count(session, child.port, n)
                cpu = child.cpu_seconds() - cpu
                loaded = rss_bytes(child.process.pid)
                traced = ""
                if trace:
                    url = f"http://127.0.0.1:{child.port}/diff?n={n}"
                    async with session.get(url) as response:
                        traced = await response.text()
                    echoed = 0
                else:
                    await clients.echo_all()
                    await open_count(session, child.port)  # collects garbage
                    echoed = rss_bytes(child.process.pid)
            finally:
                clients.close()
        return Result(impl, n, baseline, loaded, seconds, cpu, traced, echoed)
    finally:
        child.stop()


def report(rounds: Sequence[dict[str, Result]]) -> None:
    """One line per server and round; the ratio is against plain aiohttp's figure
    from the same round (the first server's when plain aiohttp did not run)."""
    mib = 1024 * 1024
    print(
        f"{'server':<17} {'sockets':>7} {'RSS before':>11} {'RSS after':>10}"
        f" {'per socket':>11} {'vs aiohttp':>10} {'after msg':>10}"
        f" {'open s':>7} {'server CPU s':>12}"
    )
    for results in rounds:
        first = results.get("aiohttp") or next(iter(results.values()))
        reference = first.per_socket
        for impl, r in results.items():
            ratio = f"{r.per_socket / reference:.2f}" if reference > 0 else "n/a"
            print(
                f"{LABELS[impl]:<17} {r.n:>7} {r.baseline / mib:>8.1f} MiB"
                f" {r.loaded / mib:>6.1f} MiB {r.per_socket / 1024:>7.1f} KiB"
                f" {ratio:>10} {r.after_message / 1024:>6.1f} KiB"
                f" {r.open_seconds:>7.2f} {r.open_cpu:>12.2f}"
            )


async def main(args: Any) -> None:
    raise_nofile(args.warmup + 200)
    processes = -(-args.n // args.per_process)
    print(
        f"Python {sys.version.split()[0]}, aiohttp {aiohttp.__version__}; "
        f"{args.n} idle sockets from {processes} client process(es) after "
        f"{args.warmup} warm-up connections; server RSS growth / sockets"
    )
    if args.tracemalloc:
        for impl in args.servers:
            result = await measure(
                impl, args.n, args.warmup, args.per_process, trace=True
            )
            print(f"{LABELS[impl]} (tracemalloc on), {args.n} sockets:")
            print(result.trace)
        return
    rounds = []
    for _ in range(args.repeat):
        rounds.append(
            {
                impl: await measure(impl, args.n, args.warmup, args.per_process)
                for impl in args.servers
            }
        )
    report(rounds)
    write_json(
        args.json, "connections", args, [r for one in rounds for r in one.values()]
    )


def parse_args(argv: Sequence[str]) -> Any:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="idle sockets to hold")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--per-process", type=int, default=5000, help="sockets per client process"
    )
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument(
        "--servers",
        nargs="+",
        choices=IMPLS,
        default=["aiohttp", "upgrade"],
        help="servers to measure, in this order (bun*: $BUN or bun on PATH)",
    )
    add_json_option(parser)
    parser.add_argument("--serve", choices=IMPLS, help=argparse.SUPPRESS)
    parser.add_argument("--hold", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    if arguments.serve:
        asyncio.run(serve(arguments.serve, arguments.tracemalloc))
    elif arguments.hold:
        port, count, source, deflate = arguments.hold.split(",")
        asyncio.run(hold_sockets(int(port), int(count), source, deflate == "1"))
    else:
        asyncio.run(main(arguments))
