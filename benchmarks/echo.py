"""Echo: aiohttp-upgrade against plain aiohttp, the cost of the layer itself.

The server runs in a child process pinned to CPU 0; this process runs K clients
(raw asyncio protocols, on uvloop when installed) pinned to CPU 1. Each client
keeps one text message in flight: it sends the next as soon as the echo of the
previous one arrives. Printed per (server, K): round trips/s, p50/p99 round-trip
latency, server CPU µs per round trip (utime+stime from /proc/<pid>/stat over the
measured interval) and its ratio against plain aiohttp in the same run.

Servers: plain aiohttp (``async for msg in ws: await ws.send_str(msg.data)``),
aiohttp-upgrade with a plain ``def message`` hook (dispatched straight from the
parser) and with an ``async def message`` hook (dispatched by the socket's owner
task), and Bun (``benchmarks/bun_echo.ts``) when ``$BUN`` or ``bun`` on PATH is found.

Each figure is the median over --repeat rounds (servers alternating order), with
[min-max] after it; ratios are taken within each round.

Usage: python benchmarks/echo.py [--clients 1 50] [--seconds 1.5] [--repeat 3] [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
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
    add_json_option,
    client_frame,
    close_clients,
    connect_clients,
    install_uvloop,
    percentile,
    pin,
    print_table,
    pure_python,
    serve_app,
    spread,
    start_server,
    write_json,
)

SCRIPT: Final = os.path.abspath(__file__)

IMPLS: Final = ("aiohttp", "upgrade", "upgrade-pure", "upgrade-async", "bun")
LABELS: Final = {
    "aiohttp": "plain aiohttp",
    "upgrade": "aiohttp-upgrade",
    "upgrade-pure": "upgrade pure Python",
    "upgrade-async": "upgrade async",
    "bun": "Bun",
}
# Bun (``$BUN`` or ``bun`` on PATH) joins the default servers when it is found.
BUN: Final = os.environ.get("BUN") or shutil.which("bun")
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


async def serve(impl: str) -> None:
    await serve_app(APPS[impl](), backlog=1024)


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
    clients: int
    round_trips: int
    seconds: float
    server_cpu: float
    p50: float
    p99: float

    @property
    def server_us(self) -> float:
        return self.server_cpu / self.round_trips * 1e6


async def bench_server(
    impl: str, round_: int, args: argparse.Namespace
) -> list[Result]:
    server = start_server(SCRIPT, impl, args.uvloop, BUN, BUN_SCRIPT)
    results = []
    try:
        for count in args.clients:
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
            cpu0 = server.cpu_seconds()
            t0 = time.monotonic()
            await asyncio.sleep(args.seconds)
            cpu1 = server.cpu_seconds()
            elapsed = time.monotonic() - t0
            trips = sum(c.round_trips for c in echo_clients) - trips0
            latencies = [x for c in echo_clients for x in c.latencies]
            results.append(
                Result(
                    round_,
                    impl,
                    count,
                    trips,
                    elapsed,
                    cpu1 - cpu0,
                    percentile(latencies, 50) * 1e6,
                    percentile(latencies, 99) * 1e6,
                )
            )
            await close_clients(clients)
    finally:
        server.stop()
    return results


def report(results: list[Result]) -> None:
    """One row per (clients, server): medians, [min-max] over the rounds, and the
    ratio against plain aiohttp taken within each round."""
    plain = {(r.round, r.clients): r for r in results if r.impl == "aiohttp"}
    groups: dict[tuple[int, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.clients, r.impl), []).append(r)
    rows = [
        [
            "clients",
            "server",
            "round trips/s",
            "p50 µs",
            "p99 µs",
            "server µs/round trip",
            "CPU ratio",
        ]
    ]
    for (clients, impl), runs in sorted(
        groups.items(), key=lambda item: (item[0][0], IMPLS.index(item[0][1]))
    ):
        pairs = [
            (r, plain[r.round, clients]) for r in runs if (r.round, clients) in plain
        ]
        rows.append(
            [
                str(clients),
                LABELS[impl],
                spread([r.round_trips / r.seconds for r in runs], 0),
                spread([r.p50 for r in runs], 0),
                spread([r.p99 for r in runs], 0),
                spread([r.server_us for r in runs]),
                spread([r.server_us / ref.server_us for r, ref in pairs]),
            ]
        )
    print_table(rows)


async def main(args: argparse.Namespace) -> None:
    results: list[Result] = []
    for round_ in range(args.repeat):
        # Alternate the order so that a drift in background load hits all.
        impls = args.servers if round_ % 2 == 0 else args.servers[::-1]
        for impl in impls:
            results += await bench_server(impl, round_, args)
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
        default=[i for i in IMPLS if i != "upgrade-pure" and (i != "bun" or BUN)],
    )
    parser.add_argument("--uvloop", action="store_true", help="run servers on uvloop")
    add_json_option(parser)
    parser.add_argument("--serve", choices=IMPLS, help=argparse.SUPPRESS)
    return parser.parse_args()


def run() -> None:
    args = parse_args()
    if args.serve:
        if args.uvloop and not install_uvloop():
            raise SystemExit("uvloop is not installed")
        asyncio.run(serve(args.serve))
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
