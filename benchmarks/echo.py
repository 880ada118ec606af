"""Echo: aiohttp-upgrade against plain aiohttp, the cost of the layer itself.

The server runs in a child process pinned to CPU 0; this process runs K clients
(raw asyncio protocols, on uvloop when installed) pinned to CPU 1. Each client
keeps one text message in flight: it sends the next as soon as the echo of the
previous one arrives. Printed per (server, K): round trips/s, p50/p99 round-trip
latency, server CPU µs per round trip (utime+stime from /proc/<pid>/stat over the
measured interval) and its ratio against plain aiohttp in the same run; then the
kernel's part of it (stime: the server's system calls, and on loopback the TCP
receive path of the client's socket, which runs in the sender's send()), alone
and over plain aiohttp's whole CPU per round trip: the ratio the server would
reach if its own code cost nothing.

Servers: plain aiohttp (``async for msg in ws: await ws.send_str(msg.data)``),
aiohttp-upgrade with a plain ``def message`` hook (dispatched straight from the
parser) and with an ``async def message`` hook (dispatched by the socket's owner
task), picows (Cython; its README's echo, which sends the payload back as bytes
without decoding text) when installed, and Bun (``benchmarks/bun_echo.ts``) when
``$BUN``, ``bun`` on PATH or /work/tools/bun/bin/bun is found.

The state of the server process (``--states``): ``settled`` (the default) frees
one 1 MiB block at startup so that glibc's malloc is in its steady state, and
measures every client count in one process; ``fresh`` starts a new process per
measurement that has never closed a connection, so glibc still serves every
large allocation (asyncio's 256 KiB read buffer for a plain ``asyncio.Protocol``)
with ``mmap``; ``warm`` starts a new process and opens and closes one connection
first (its EOF read frees a 256 KiB block whole, which raises glibc's mmap
threshold for good). With both ``fresh`` and ``warm`` the fresh/warm CPU ratio
of each server is printed too.

Each figure is the median over --repeat rounds (servers alternating order), with
[min-max] after it; ratios are taken within each round.

Usage: python benchmarks/echo.py [--clients 1 50] [--seconds 1.5] [--repeat 3]
       [--uvloop] [--states fresh warm]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

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
    percentile,
    pin,
    print_table,
    pure_python,
    serve_app,
    settle_malloc,
    spread,
    start_server,
    write_json,
)

SCRIPT: Final = os.path.abspath(__file__)

IMPLS: Final = ("aiohttp", "upgrade", "upgrade-pure", "upgrade-async", "picows", "bun")
LABELS: Final = {
    "aiohttp": "plain aiohttp",
    "upgrade": "aiohttp-upgrade",
    "upgrade-pure": "upgrade pure Python",
    "upgrade-async": "upgrade async",
    "picows": "picows",
    "bun": "Bun",
}
STATES: Final = ("settled", "fresh", "warm")
_LOCAL_BUN: Final = "/work/tools/bun/bin/bun"
# Bun and picows join the default servers when they are found.
BUN: Final = (
    os.environ.get("BUN")
    or shutil.which("bun")
    or (_LOCAL_BUN if os.access(_LOCAL_BUN, os.X_OK) else None)
)
PICOWS: Final = importlib.util.find_spec("picows") is not None
BUN_SCRIPT: Final = os.path.join(os.path.dirname(SCRIPT), "bun_echo.ts")
WARM_UP_SECONDS: Final = 0.3


# -- servers (run in the child process) ------------------------------------------


def upgrade_app(async_hook: bool) -> web.Application:
    from aiohttp_upgrade import Server, ServerWebSocket, WebSocketHandler

    class Echo(WebSocketHandler[None]):
        idle_timeout = 0

        def message(self, ws: ServerWebSocket[None], message: str | bytes) -> None:
            ws.send(message)

    class AsyncEcho(WebSocketHandler[None]):
        idle_timeout = 0

        async def message(
            self, ws: ServerWebSocket[None], message: str | bytes
        ) -> None:
            ws.send(message)

    server: Server[None] = Server(AsyncEcho() if async_hook else Echo())

    def fetch(request: web.Request, server: Server[None]) -> web.StreamResponse | None:
        if server.upgrade(request):
            return None
        return web.Response(status=400)

    app = web.Application()
    server.setup(app)
    app.router.add_get("/", server.handler(fetch))
    return app


def plain_app() -> web.Application:
    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/", echo)
    return app


APPS: Final[dict[str, Callable[[], web.Application]]] = {
    "aiohttp": plain_app,
    "upgrade": lambda: upgrade_app(async_hook=False),
    "upgrade-pure": pure_python(lambda: upgrade_app(async_hook=False)),
    "upgrade-async": lambda: upgrade_app(async_hook=True),
}


async def serve_picows(settle: bool) -> None:
    """An echo server written with picows' API (a listener per connection)."""
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server

    class Echo(WSListener):
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            kind = frame.msg_type
            if kind == WSMsgType.TEXT or kind == WSMsgType.BINARY:
                transport.send(kind, frame.get_payload_as_bytes())
            elif kind == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()

    if settle:
        settle_malloc()
    server = await ws_create_server(
        lambda request: Echo(), "127.0.0.1", 0, backlog=1024
    )
    announce_port(server.sockets[0].getsockname()[1])
    await asyncio.Event().wait()


async def serve(impl: str, settle: bool) -> None:
    if impl == "picows":
        await serve_picows(settle)
    else:
        await serve_app(APPS[impl](), backlog=1024, settle=settle)


# -- load generator -----------------------------------------------------------------


class EchoClient(RawClient):
    """Keeps one message in flight and records each round trip."""

    def __init__(self, port: int, size: int) -> None:
        super().__init__("127.0.0.1", port, "/")
        self.frame = client_frame(b"e" * size, mask=os.urandom(4))
        self.reply_size = (2 if size < 126 else 4) + size
        self.pending = 0
        self.sent_at = 0.0
        self.round_trips = 0
        self.latencies: list[float] = []
        self.on_data = self.received

    def start(self) -> None:
        self.sent_at = time.monotonic()
        self.send(self.frame)

    def received(self, data: bytes) -> None:
        self.pending += len(data)
        if self.pending < self.reply_size:
            return
        assert self.pending == self.reply_size, "one message in flight"
        self.pending = 0
        now = time.monotonic()
        self.latencies.append(now - self.sent_at)
        self.round_trips += 1
        self.sent_at = now
        self.send(self.frame)


@dataclass
class Result:
    round: int
    impl: str
    state: str
    clients: int
    round_trips: int
    seconds: float
    server_cpu: float
    p50: float
    p99: float
    server_sys: float = 0.0  # the kernel's part of server_cpu

    @property
    def server_us(self) -> float:
        return self.server_cpu / self.round_trips * 1e6

    @property
    def kernel_us(self) -> float:
        return self.server_sys / self.round_trips * 1e6


def launch(impl: str, state: str, args: argparse.Namespace) -> ServerProcess:
    """Start ``impl``'s server; malloc settled at startup only in ``settled``."""
    if impl == "bun" or state == "settled":
        return start_server(SCRIPT, impl, args.uvloop, BUN, BUN_SCRIPT)
    options = ["--serve", impl, "--unsettled"] + (["--uvloop"] if args.uvloop else [])
    return ServerProcess.start(SCRIPT, options)


async def open_and_close_one(port: int) -> None:
    """One connection, one echo, a clean close (FIN): what warms glibc up."""
    (client,) = await connect_clients(lambda: EchoClient(port, 32), 1, port)
    assert isinstance(client, EchoClient)
    echoed = asyncio.get_running_loop().create_future()

    def received(data: bytes) -> None:
        client.received(data)
        if not echoed.done():
            echoed.set_result(None)

    client.on_data = received
    client.start()
    await echoed
    assert client.transport is not None
    client.transport.close()
    await client.closed
    await asyncio.sleep(0.2)  # for the server to read the EOF and drop it


async def measure(
    server: ServerProcess,
    impl: str,
    state: str,
    count: int,
    round_: int,
    args: argparse.Namespace,
) -> Result:
    clients = await connect_clients(
        lambda: EchoClient(server.port, args.size), count, server.port
    )
    echo_clients = [c for c in clients if isinstance(c, EchoClient)]
    for client in echo_clients:
        client.start()
    await asyncio.sleep(WARM_UP_SECONDS)
    for client in echo_clients:
        client.latencies.clear()
    trips0 = sum(c.round_trips for c in echo_clients)
    user0, sys0 = server.cpu_times()
    t0 = time.monotonic()
    await asyncio.sleep(args.seconds)
    user1, sys1 = server.cpu_times()
    elapsed = time.monotonic() - t0
    trips = sum(c.round_trips for c in echo_clients) - trips0
    latencies = [x for c in echo_clients for x in c.latencies]
    await close_clients(clients)
    return Result(
        round_,
        impl,
        state,
        count,
        trips,
        elapsed,
        user1 + sys1 - user0 - sys0,
        percentile(latencies, 50) * 1e6,
        percentile(latencies, 99) * 1e6,
        sys1 - sys0,
    )


async def bench_server(
    impl: str, state: str, round_: int, args: argparse.Namespace
) -> list[Result]:
    """Measure ``impl`` in ``state``: every client count in one process when
    settled, else each on a process of its own (closing clients warms it)."""
    results = []
    batches = [args.clients] if state == "settled" else [[n] for n in args.clients]
    for counts in batches:
        server = launch(impl, state, args)
        try:
            if state == "warm":
                await open_and_close_one(server.port)
            for count in counts:
                results.append(await measure(server, impl, state, count, round_, args))
        finally:
            server.stop()
    return results


def report(results: list[Result]) -> None:
    """One row per (clients, server, state): medians, [min-max] over the rounds,
    the ratio against plain aiohttp in the same state taken within each round,
    and with fresh and warm both measured, fresh over warm within each round."""
    by_key = {(r.round, r.clients, r.impl, r.state): r for r in results}
    groups: dict[tuple[int, str, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.clients, r.impl, r.state), []).append(r)
    states = {r.state for r in results}
    both = {"fresh", "warm"} <= states
    rows = [
        [
            "clients",
            "server",
            *(["state"] if states != {"settled"} else []),
            "round trips/s",
            "p50 µs",
            "p99 µs",
            "server µs/round trip",
            "CPU ratio",
            "kernel µs",
            "kernel/aiohttp",
            *(["fresh/warm"] if both else []),
        ]
    ]
    order = sorted(
        groups.items(),
        key=lambda item: (
            item[0][0],
            IMPLS.index(item[0][1]),
            STATES.index(item[0][2]),
        ),
    )
    for (clients, impl, state), runs in order:
        plain = [by_key.get((r.round, clients, "aiohttp", state)) for r in runs]
        ratios = [
            r.server_us / p.server_us for r, p in zip(runs, plain, strict=True) if p
        ]
        row = [str(clients), LABELS[impl]]
        if states != {"settled"}:
            row.append(state)
        row += [
            spread([r.round_trips / r.seconds for r in runs], 0),
            spread([r.p50 for r in runs], 0),
            spread([r.p99 for r in runs], 0),
            spread([r.server_us for r in runs]),
            spread(ratios),
            spread([r.kernel_us for r in runs]),
            spread(
                [
                    r.kernel_us / p.server_us
                    for r, p in zip(runs, plain, strict=True)
                    if p
                ]
            ),
        ]
        if both:
            warm = [by_key.get((r.round, clients, impl, "warm")) for r in runs]
            fresh_warm = [
                r.server_us / w.server_us for r, w in zip(runs, warm, strict=True) if w
            ]
            row.append(spread(fresh_warm) if state == "fresh" else "")
        rows.append(row)
    print_table(rows)


async def main(args: argparse.Namespace) -> None:
    results: list[Result] = []
    for round_ in range(args.repeat):
        # Alternate the order so that a drift in background load hits all.
        impls = args.servers if round_ % 2 == 0 else args.servers[::-1]
        states = args.states if round_ % 2 == 0 else args.states[::-1]
        for impl in impls:
            for state in states:
                results += await bench_server(impl, state, round_, args)
    report(results)
    write_json(args.json, "echo", args, results)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 50])
    parser.add_argument("--seconds", type=float, default=1.5, help="per measurement")
    parser.add_argument("--size", type=int, default=32, help="payload bytes")
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds; medians and spread are shown"
    )
    parser.add_argument(
        "--servers",
        nargs="+",
        choices=IMPLS,
        default=[
            impl
            for impl in IMPLS
            if impl != "upgrade-pure"
            and (impl != "bun" or BUN)
            and (impl != "picows" or PICOWS)
        ],
    )
    parser.add_argument("--uvloop", action="store_true", help="run servers on uvloop")
    parser.add_argument(
        "--states",
        nargs="+",
        choices=STATES,
        default=["settled"],
        help="server process states to measure (see the module docstring)",
    )
    parser.add_argument("--unsettled", action="store_true", help=argparse.SUPPRESS)
    add_json_option(parser)
    parser.add_argument("--serve", choices=IMPLS, help=argparse.SUPPRESS)
    return parser.parse_args()


def run() -> None:
    args = parse_args()
    if args.serve:
        if args.uvloop and not install_uvloop():
            raise SystemExit("uvloop is not installed")
        asyncio.run(serve(args.serve, settle=not args.unsettled))
        return
    cpus = pin(CLIENT_CPU)
    generator_loop = "uvloop" if install_uvloop() else "asyncio"
    print(
        f"echo: {args.size}-byte text messages, {args.seconds:g} s per measurement;"
        f" server on CPU 0 ({'uvloop' if args.uvloop else 'asyncio'}), clients"
        f" pid {os.getpid()} on CPUs {sorted(cpus)} ({generator_loop});"
        f" CPU accounting resolution {1000 / CLK_TCK:.0f} ms"
    )
    asyncio.run(main(args))


if __name__ == "__main__":
    run()
