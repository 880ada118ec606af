"""Fan-out: one publisher, N subscribers, aiohttp-upgrade's ``server.publish``
against plain aiohttp's ``for ws in room: await ws.send_str(m)``, the Python
WebSocket servers picows and ``websockets``, and Bun, in one run.

The server runs in a child process pinned to CPU 0; this process is the load
generator (N subscriber sockets read with recvmsg(), one publisher connection,
on uvloop when installed), pinned to CPU 1. The publisher sends M text messages
that start with its ``time.time()``; the server publishes each to the N
subscribers. Two modes:

- burst: the M messages back to back;
- paced: one message every 1/rate s (100/s at N=1000, the same 100,000
  deliveries/s at larger N), so each publish runs in its own loop turn.

Delivery latency is taken to the kernel's receive timestamp of the subscriber
socket (SO_TIMESTAMPNS, CLOCK_REALTIME like ``time.time()``, shared by all
processes): that is the server's latency even when the single-CPU load
generator falls behind reading 1000 sockets. "p99 read" is the latency to this
process's read, which includes that queueing.

Printed per (N, mode, server): deliveries/s, p50/p99 delivery latency, server CPU
µs per delivery (utime+stime from /proc/<pid>/stat over the measured interval),
the load generator's own CPU per delivery, and the ratios of server CPU per
delivery against plain aiohttp and against Bun, and of p99 latency against
plain aiohttp, in the same round; then the kernel's part of the server's CPU
per delivery (stime: its send() calls, and on loopback the TCP receive path of
the subscriber's socket, which runs in them), alone and over plain aiohttp's
whole CPU per delivery: the ratio the server would reach if its own code cost
nothing.

Each figure is the median over --repeat rounds (servers alternating order), with
[min-max] after it; ratios are taken within each round.

The peers, none of which has our topic registry: picows (Cython; a room of its
transports, looped over with ``transport.send``), ``websockets`` (its
``broadcast()`` over a set of connections) and Bun (``benchmarks/bun_fanout.ts``,
``server.publish``). Each joins the default servers when it is available: picows
when it is importable, Bun when ``$BUN`` or ``bun`` on PATH is found; a missing
one named in ``--servers`` is an error.

At N=5,000 each process needs about 2N + 100 file descriptors: the script
raises its soft RLIMIT_NOFILE (the servers inherit it) up to the hard limit
(``ulimit -Hn``), which must allow that.

Usage: python benchmarks/fanout.py [--n 100 1000 5000] [--repeat 3] [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Final

from aiohttp import WSMsgType, web

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (
    CLIENT_CPU,
    CLK_TCK,
    RawClient,
    ServerProcess,
    add_json_option,
    announce_port,
    client_frame,
    close_clients,
    connect_clients,
    install_uvloop,
    open_socket,
    parse_server_frames,
    percentile,
    pin,
    print_table,
    pure_python,
    raise_nofile,
    serve_app,
    settle_malloc,
    spread,
    start_server,
    write_json,
)

if TYPE_CHECKING:
    from aiohttp_upgrade import Server

SCRIPT: Final = os.path.abspath(__file__)

TOPIC: Final = "room"
COUNT_QUERY: Final = "?"
COUNT_QUERY_BYTES: Final = COUNT_QUERY.encode()
TIMESTAMP_LENGTH: Final = 21
IMPLS: Final = ("aiohttp", "upgrade", "upgrade-pure", "picows", "websockets", "bun")
MODES: Final = ("burst", "paced")
LABELS: Final = {
    "aiohttp": "plain aiohttp",
    "upgrade": "aiohttp-upgrade",
    "upgrade-pure": "upgrade pure Python",
    "picows": "picows",
    "websockets": "websockets",
    "bun": "Bun",
}
# Bun (``$BUN`` or ``bun`` on PATH) joins the default servers when it is found.
BUN: Final = os.environ.get("BUN") or shutil.which("bun")
BUN_SCRIPT: Final = os.path.join(os.path.dirname(SCRIPT), "bun_fanout.ts")


def available(impl: str) -> bool:
    """Whether the ``impl`` server can run here (the optional peers may be absent)."""
    if impl == "bun":
        return BUN is not None
    if impl in ("picows", "websockets"):
        return importlib.util.find_spec(impl) is not None
    return True


# -- servers (run in the child process) ------------------------------------------


def upgrade_with_path(
    request: web.Request, server: Server[str]
) -> web.StreamResponse | None:
    """The fetch handler of the aiohttp-upgrade servers: the socket's data is the
    request path without its slashes ("sub", "pub", ...)."""
    if server.upgrade(request, data=request.path.strip("/")):
        return None
    return web.Response(status=400)


def upgrade_app() -> web.Application:
    from aiohttp_upgrade import Server, ServerWebSocket, WebSocketHandler

    class Room(WebSocketHandler[str]):
        idle_timeout = 0

        def open(self, ws: ServerWebSocket[str]) -> None:
            if ws.data == "sub":
                ws.subscribe(TOPIC)

        def message(self, ws: ServerWebSocket[str], message: str | bytes) -> None:
            if message == COUNT_QUERY:
                ws.send(str(server.subscriber_count(TOPIC)))
            else:
                server.publish(TOPIC, message)

    server: Server[str] = Server(Room())

    app = web.Application()
    server.setup(app)
    app.router.add_get("/sub", server.handler(upgrade_with_path))
    app.router.add_get("/pub", server.handler(upgrade_with_path))
    return app


def plain_app() -> web.Application:
    room: list[web.WebSocketResponse] = []

    async def subscriber(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        room.append(ws)
        try:
            async for _ in ws:
                pass
        finally:
            room.remove(ws)
        return ws

    async def publisher(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            m = msg.data
            if m == COUNT_QUERY:
                await ws.send_str(str(len(room)))
                continue
            for peer in room:
                await peer.send_str(m)
        return ws

    app = web.Application()
    app.router.add_get("/sub", subscriber)
    app.router.add_get("/pub", publisher)
    return app


APPS: Final[dict[str, Callable[[], web.Application]]] = {
    "aiohttp": plain_app,
    "upgrade": upgrade_app,
    "upgrade-pure": pure_python(upgrade_app),
}


async def serve_picows() -> None:
    """The same room on picows: it has no pub/sub, so the publisher's frame is
    sent to each subscriber's transport in turn (written for this benchmark)."""
    from picows import (
        WSFrame,
        WSListener,
        WSTransport,
        WSUpgradeRequest,
        ws_create_server,
    )
    from picows import WSMsgType as Opcode

    settle_malloc()
    room: dict[WSTransport, None] = {}

    class Subscriber(WSListener):
        def on_ws_connected(self, transport: WSTransport) -> None:
            room[transport] = None

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            room.pop(transport, None)

    class Publisher(WSListener):
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type is Opcode.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()
                return
            if frame.msg_type is not Opcode.TEXT:
                return
            payload = frame.get_payload_as_bytes()
            if payload == COUNT_QUERY_BYTES:
                transport.send(Opcode.TEXT, str(len(room)).encode())
                return
            for peer in room:
                peer.send(Opcode.TEXT, payload)

    def route(request: WSUpgradeRequest) -> WSListener | None:
        if request.path == b"/sub":
            return Subscriber()
        if request.path == b"/pub":
            return Publisher()
        return None

    server = await ws_create_server(route, "127.0.0.1", 0, backlog=4096)
    announce_port(server.sockets[0].getsockname()[1])
    await asyncio.Event().wait()


async def serve_websockets() -> None:
    """The same room on the ``websockets`` library, published with its
    ``broadcast()`` (which writes to every connection without awaiting)."""
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    settle_malloc()
    room: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        if ws.request is not None and ws.request.path == "/sub":
            room.add(ws)
            try:
                await ws.wait_closed()
            finally:
                room.discard(ws)
            return
        async for message in ws:
            if message == COUNT_QUERY:
                await ws.send(str(len(room)))
            else:
                broadcast(room, message)

    async with serve(
        handler,
        "127.0.0.1",
        0,
        backlog=4096,
        compression=None,
        ping_interval=None,
        close_timeout=1,
    ) as server:
        announce_port(next(iter(server.sockets)).getsockname()[1])
        await asyncio.Event().wait()


async def serve(impl: str) -> None:
    if impl == "picows":
        await serve_picows()
    elif impl == "websockets":
        await serve_websockets()
    else:
        await serve_app(APPS[impl](), backlog=4096)


# -- load generator -----------------------------------------------------------------


@dataclass
class Run:
    """Delivery bookkeeping for one measured batch of messages."""

    target: int
    received: int = 0
    # Publisher's send time to the kernel's receive timestamp of the subscriber
    # socket (the server's delivery latency, whatever the load generator does) ...
    latencies: list[float] = field(default_factory=list)
    # ... and to the load generator reading it (includes its own queueing).
    app_latencies: list[float] = field(default_factory=list)
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


# Linux's SO_TIMESTAMPNS: recvmsg() reports when the kernel received the data
# (CLOCK_REALTIME, struct timespec). Not exported by the socket module.
SO_TIMESTAMPNS: Final = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC: Final = struct.Struct("qq")
_ANCILLARY_SIZE: Final = socket.CMSG_SPACE(_TIMESPEC.size)
_READ_SIZE: Final = 65536
_NO_LINGER: Final = struct.pack("ii", 1, 0)


class Subscriber:
    """A subscriber socket read with recvmsg(): counts the fixed-size text frames
    and records each one's latency at kernel receipt and at this process's read.

    With several frames in one read, all get the read's (latest) kernel timestamp.
    """

    def __init__(self, sock: socket.socket, size: int) -> None:
        self.sock = sock
        self.frame_size = (2 if size < 126 else 4) + size
        self.header = self.frame_size - size
        self.rest = b""
        self.run: Run | None = None

    @classmethod
    async def connect(cls, port: int, size: int) -> Subscriber:
        sock, rest = await open_socket(
            port, "/sub", [(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)]
        )
        if rest:
            sock.close()
            raise RuntimeError("data before the first publish")
        subscriber = cls(sock, size)
        asyncio.get_running_loop().add_reader(sock.fileno(), subscriber.readable)
        return subscriber

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        # Reset rather than FIN: no TIME_WAIT left on the loopback ports that
        # thousands of subscribers per round would otherwise hold for a minute.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _NO_LINGER)
        self.sock.close()

    def readable(self) -> None:
        try:
            data, ancillary, _, _ = self.sock.recvmsg(_READ_SIZE, _ANCILLARY_SIZE)
        except BlockingIOError:
            return
        now = time.time()
        if not data:
            raise ConnectionError("the server closed a subscriber")
        kernel = now
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanoseconds = _TIMESPEC.unpack(value)
                kernel = seconds + nanoseconds * 1e-9
        buf = self.rest + data if self.rest else data
        frame = self.frame_size
        count = len(buf) // frame
        end = count * frame
        if buf[0] != 0x81:
            raise RuntimeError(f"unexpected frame {buf[:16]!r}")
        start = self.header
        stop = start + TIMESTAMP_LENGTH
        run = self.run
        assert run is not None
        latency = run.latencies.append
        app_latency = run.app_latencies.append
        for pos in range(0, end, frame):
            sent = float(buf[pos + start : pos + stop])
            latency(kernel - sent)
            app_latency(now - sent)
        self.rest = buf[end:]
        run.received += count
        if run.received >= run.target and not run.done.done():
            run.done.set_result(None)


async def connect_subscribers(port: int, size: int, n: int) -> list[Subscriber]:
    subscribers: list[Subscriber] = []
    while len(subscribers) < n:
        batch = min(100, n - len(subscribers))
        subscribers += await asyncio.gather(
            *(Subscriber.connect(port, size) for _ in range(batch))
        )
    return subscribers


class Publisher(RawClient):
    """Sends the timestamped messages and asks the server how many subscribe."""

    def __init__(self, port: int, size: int) -> None:
        super().__init__("127.0.0.1", port, "/pub")
        self.size = size
        self.buffer = bytearray()
        self.replies: asyncio.Queue[str] = asyncio.Queue()
        self.on_data = self.received

    def received(self, data: bytes) -> None:
        self.buffer += data
        for _, payload in parse_server_frames(self.buffer):
            self.replies.put_nowait(payload.decode())

    async def subscribers(self) -> int:
        self.send(client_frame(COUNT_QUERY.encode()))
        return int(await self.replies.get())

    def publish(self) -> None:
        stamp = f"{time.time():0{TIMESTAMP_LENGTH}.9f}"
        self.send(client_frame((stamp + "x" * (self.size - len(stamp))).encode()))


@dataclass
class Result:
    round: int
    n: int
    mode: str
    impl: str
    messages: int
    deliveries: int
    seconds: float
    server_cpu: float
    client_cpu: float
    p50: float
    p99: float
    app_p99: float
    rate: float | None = None  # paced: the messages/s asked for
    server_sys: float = 0.0  # the kernel's part of server_cpu

    @property
    def server_us(self) -> float:
        return self.server_cpu / self.deliveries * 1e6

    @property
    def kernel_us(self) -> float:
        return self.server_sys / self.deliveries * 1e6

    @property
    def behind(self) -> bool:
        """Whether a paced batch took over 5 % longer than its pace: the server
        (or the load generator) fell behind, and the batch was partly a burst."""
        return self.rate is not None and self.seconds > 1.05 * self.messages / self.rate


async def wait_subscribed(publisher: Publisher, n: int) -> None:
    """Return once the server counts ``n`` subscribers (they subscribe in ``open``)."""
    for _ in range(1000):
        if await publisher.subscribers() >= n:
            return
        await asyncio.sleep(0.01)
    raise RuntimeError("subscribers did not all subscribe")


def paced_rate(n: int) -> float:
    """The default paced rate: 100 messages/s at N=1000, so 100k deliveries/s,
    and the same deliveries/s for other N (1 to 1000 messages/s)."""
    return min(1000.0, max(1.0, 100_000 / n))


def batches(
    args: argparse.Namespace, n: int
) -> tuple[tuple[str, int, float | None], ...]:
    """The measured batches for N subscribers: (mode, messages, rate or None) for
    burst (back to back) and paced (at ``--rate``, or :func:`paced_rate`)."""
    burst = max(1, args.burst_deliveries // n)
    rate = args.rate or paced_rate(n)
    paced = max(1, round(rate * args.paced_seconds))
    return ("burst", burst, None), ("paced", paced, rate)


def new_run(subscribers: list[Subscriber], messages: int) -> Run:
    """A fresh :class:`Run` expecting ``messages`` at every subscriber."""
    run = Run(target=messages * len(subscribers))
    for subscriber in subscribers:
        subscriber.run = run
    return run


async def publish_and_wait(
    run: Run, publisher: Publisher, messages: int, rate: float | None
) -> float:
    """Publish ``messages`` (back to back, or at ``rate``), wait (up to 120 s) for
    every delivery ``run`` expects, and return the seconds that took."""
    t0 = time.monotonic()
    if rate is None:
        for _ in range(messages):
            publisher.publish()
    else:
        interval = 1 / rate
        for i in range(messages):
            publisher.publish()
            await asyncio.sleep(max(0.0, t0 + (i + 1) * interval - time.monotonic()))
    try:
        await asyncio.wait_for(asyncio.shield(run.done), timeout=120)
    except TimeoutError:
        print(f"  timed out: {run.received}/{run.target} delivered", file=sys.stderr)
    return time.monotonic() - t0


def own_cpu() -> float:
    times = os.times()
    return times.user + times.system


async def measure(
    server: ServerProcess,
    subscribers: list[Subscriber],
    publisher: Publisher,
    messages: int,
    rate: float | None,
) -> tuple[Run, float, tuple[float, float], float]:
    """Publish ``messages`` (back to back, or at ``rate``) and wait for every
    delivery; return the run, its seconds, the server's user and kernel CPU
    seconds, and this process's CPU seconds."""
    run = new_run(subscribers, messages)
    user0, sys0 = server.cpu_times()
    own0 = own_cpu()
    elapsed = await publish_and_wait(run, publisher, messages, rate)
    user1, sys1 = server.cpu_times()
    return run, elapsed, (user1 - user0, sys1 - sys0), own_cpu() - own0


async def bench_server(
    impl: str, n: int, round_: int, args: argparse.Namespace
) -> list[Result]:
    server = start_server(SCRIPT, impl, args.uvloop, BUN, BUN_SCRIPT)
    results = []
    try:
        size = args.size
        subs = await connect_subscribers(server.port, size, n)
        [publisher] = await connect_clients(
            lambda: Publisher(server.port, size), 1, server.port
        )
        assert isinstance(publisher, Publisher)
        await wait_subscribed(publisher, n)
        if args.verbose:
            print(f"  server pid {server.pid} on CPUs {sorted(server.cpus())}")
        await measure(server, subs, publisher, 20, None)  # warm-up
        for mode, messages, rate_or_none in batches(args, n):
            run, seconds, (server_user, server_sys), client_cpu = await measure(
                server, subs, publisher, messages, rate_or_none
            )
            results.append(
                Result(
                    round_,
                    n,
                    mode,
                    impl,
                    messages,
                    run.received,
                    seconds,
                    server_user + server_sys,
                    client_cpu,
                    percentile(run.latencies, 50) * 1e3,
                    percentile(run.latencies, 99) * 1e3,
                    percentile(run.app_latencies, 99) * 1e3,
                    rate_or_none,
                    server_sys,
                )
            )
        for subscriber in subs:
            subscriber.close()
        await close_clients([publisher])
    finally:
        server.stop()
    return results


def cpu_ratios(runs: list[Result], refs: dict[tuple[int, int, str], Result]) -> str:
    """Server CPU per delivery of ``runs`` over that of the reference server in
    the same round, as :func:`spread` prints it; "-" without a reference."""
    ratios = []
    for r in runs:
        ref = refs.get((r.round, r.n, r.mode))
        # /proc counts CPU in 10 ms ticks: a tiny batch can show 0.
        if ref is not None and ref.server_us:
            ratios.append(r.server_us / ref.server_us)
    return spread(ratios)


def report(results: list[Result]) -> None:
    """One row per (N, mode, server): medians, [min-max] over the rounds, and
    ratios against plain aiohttp and Bun taken within each round."""
    plain = {(r.round, r.n, r.mode): r for r in results if r.impl == "aiohttp"}
    bun = {(r.round, r.n, r.mode): r for r in results if r.impl == "bun"}
    groups: dict[tuple[int, str, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.n, r.mode, r.impl), []).append(r)
    rows = [
        [
            "N",
            "mode",
            "server",
            "msgs",
            "deliveries/s",
            "p50 ms",
            "p99 ms",
            "p99 read ms",
            "server µs/delivery",
            "loadgen µs/d",
            "CPU/aiohttp",
            "CPU/Bun",
            "p99/aiohttp",
            "behind",
            "kernel µs/d",
            "kernel/aiohttp",
        ]
    ]
    for (n, mode, impl), runs in sorted(
        groups.items(),
        key=lambda item: (item[0][0], MODES.index(item[0][1]), IMPLS.index(item[0][2])),
    ):
        pairs = [
            (r, plain[r.round, n, mode]) for r in runs if (r.round, n, mode) in plain
        ]
        rows.append(
            [
                str(n),
                mode,
                LABELS[impl],
                str(runs[0].messages),
                spread([r.deliveries / r.seconds for r in runs], 0),
                spread([r.p50 for r in runs]),
                spread([r.p99 for r in runs]),
                spread([r.app_p99 for r in runs]),
                spread([r.server_us for r in runs]),
                spread([r.client_cpu / r.deliveries * 1e6 for r in runs]),
                cpu_ratios(runs, plain),
                cpu_ratios(runs, bun),
                spread([r.p99 / ref.p99 for r, ref in pairs]),
                f"{sum(r.behind for r in runs)}/{len(runs)}" if mode == "paced" else "",
                spread([r.kernel_us for r in runs]),
                spread([r.kernel_us / ref.server_us for r, ref in pairs]),
            ]
        )
    print_table(rows)
    print(
        "behind: paced rounds that took over 5 % longer than their pace (the"
        " server fell behind, so part of the batch ran as a burst)"
    )


async def main(args: argparse.Namespace) -> None:
    results: list[Result] = []
    for round_ in range(args.repeat):
        # Alternate the order so that a drift in background load hits both.
        impls = args.servers if round_ % 2 == 0 else args.servers[::-1]
        for n in args.n:
            for impl in impls:
                results += await bench_server(impl, n, round_, args)
    report(results)
    write_json(args.json, "fanout", args, results)


def peer_versions(servers: list[str]) -> str:
    """The versions of the peer servers in this run, for the header."""
    peers = []
    if "picows" in servers:
        # picows uses aiofastnet's compiled transports when it is installed.
        aiofastnet = importlib.util.find_spec("aiofastnet") is not None
        transports = "aiofastnet" if aiofastnet else "asyncio"
        peers.append(f"picows {metadata.version('picows')} ({transports} transports)")
    if "websockets" in servers:
        peers.append(f"websockets {metadata.version('websockets')}")
    if "bun" in servers and BUN is not None:
        version = subprocess.run(
            [BUN, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
        peers.append(f"Bun {version} ({BUN})")
    return "peers: " + (", ".join(peers) or "none")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--size", type=int, default=100, help="payload bytes")
    parser.add_argument(
        "--burst-deliveries",
        type=int,
        default=300_000,
        help="burst messages = this / N",
    )
    parser.add_argument(
        "--rate",
        type=float,
        help="paced messages/s (default: 100 at N=1000, 100000/N up to 1000)",
    )
    parser.add_argument("--paced-seconds", type=float, default=2.0)
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds; medians and spread are shown"
    )
    parser.add_argument(
        "--servers",
        nargs="+",
        choices=IMPLS,
        default=[impl for impl in IMPLS if impl != "upgrade-pure" and available(impl)],
        help="default: all of them that are installed, but upgrade-pure",
    )
    parser.add_argument("--uvloop", action="store_true", help="run servers on uvloop")
    parser.add_argument("--verbose", action="store_true")
    add_json_option(parser)
    parser.add_argument("--serve", choices=IMPLS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.size < TIMESTAMP_LENGTH:
        parser.error(f"--size must be at least {TIMESTAMP_LENGTH}")
    missing = [impl for impl in args.servers if not available(impl)]
    if missing and not args.serve:
        hint = {"bun": "set BUN=/path/to/bun", "picows": "pip install picows"}
        parser.error(
            "not available: "
            + ", ".join(
                f"{impl} ({hint.get(impl, 'not installed')})" for impl in missing
            )
        )
    return args


def run() -> None:
    args = parse_args()
    if args.serve:
        if args.uvloop and not install_uvloop():
            raise SystemExit("uvloop is not installed")
        raise_nofile(max(args.n) * 2 + 100)
        asyncio.run(serve(args.serve))
        return
    raise_nofile(max(args.n) * 2 + 100)
    cpus = pin(CLIENT_CPU)
    generator_loop = "uvloop" if install_uvloop() else "asyncio"
    print(
        f"fanout: {args.size}-byte text messages; server on CPU 0"
        f" ({'uvloop' if args.uvloop else 'asyncio'}), load generator pid"
        f" {os.getpid()} on CPUs {sorted(cpus)} ({generator_loop});"
        f" CPU accounting resolution {1000 / CLK_TCK:.0f} ms"
    )
    print(peer_versions(args.servers))
    asyncio.run(main(args))


if __name__ == "__main__":
    run()
