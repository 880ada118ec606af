"""Reconnect rate of a shutdown: every socket closed at once against a rolling drain.

A server process holds N idle sockets (raw clients in this process); it is then
sent SIGTERM, which runs ``runner.cleanup()`` and so ``server.shutdown()`` with
the handler's ``shutdown_drain``. Each client notes when its Close (or the end of
its connection) arrives, counted from the SIGTERM: that is when a real client
would reconnect. The figures are closes per 100 ms window (the reconnect rate a
fleet of clients would put on the next instance), the time the last close
arrived, and how long the server's shutdown took.

Usage: python benchmarks/drain.py [--n 5000] [--drains 0,5] [--uvloop]
       [--histogram] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (
    CLIENT_CPU,
    RawClient,
    ServerProcess,
    add_json_option,
    announce_port,
    connect_clients,
    install_uvloop,
    percentile,
    pin,
    print_table,
    raise_nofile,
    write_json,
)

from aiohttp_upgrade import Server, WebSocketHandler

WINDOW: Final = 0.1  # seconds: the histogram's bucket
DONE_PREFIX: Final = "SHUTDOWN "
SCRIPT: Final = os.path.abspath(__file__)


async def serve(drain: float) -> None:
    """Serve idle sockets; on SIGTERM shut the app down and report how long it took."""
    server: Server[None] = Server(
        WebSocketHandler(shutdown_drain=drain, idle_timeout=0)
    )

    def fetch(request: web.Request, server: Server[None]) -> web.Response | None:
        return None if server.upgrade(request) else web.Response(status=400)

    app = web.Application()
    server.setup(app)
    app.router.add_get("/ws", server.handler(fetch))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    announce_port(runner.addresses[0][1])
    await stop.wait()
    started = time.monotonic()
    await runner.cleanup()
    print(f"{DONE_PREFIX}{time.monotonic() - started:.3f}", flush=True)


class Watcher(RawClient):
    """A raw client that notes when its Close (or its connection's end) arrives."""

    closed_at = 0.0

    def data_received(self, data: bytes) -> None:
        if self.opened.done() and not self.closed_at:
            self.closed_at = time.monotonic()
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed_at:
            self.closed_at = time.monotonic()
        super().connection_lost(exc)


@dataclass
class Result:
    drain: float
    sockets: int
    histogram: list[int]  # closes per WINDOW, from the SIGTERM
    last_close_s: float
    median_close_s: float
    shutdown_s: float

    @property
    def peak_per_100ms(self) -> int:
        return max(self.histogram)

    @property
    def windows_with_closes(self) -> int:
        return sum(1 for count in self.histogram if count)


async def measure(n: int, drain: float, uvloop: bool) -> Result:
    args = ["--serve", str(drain)] + (["--uvloop"] if uvloop else [])
    server = ServerProcess.start(SCRIPT, args)
    try:
        watchers: list[Watcher] = []

        def watcher() -> Watcher:
            watchers.append(Watcher("127.0.0.1", server.port, "/ws"))
            return watchers[-1]

        clients = await connect_clients(watcher, n, server.port)
        await asyncio.sleep(0.5)  # let the server settle before the signal
        sent = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(drain + 60):
            await asyncio.gather(*(client.closed for client in clients))
        assert server.process.stdout is not None
        line = await asyncio.to_thread(server.process.stdout.readline)
        shutdown_s = float(line[len(DONE_PREFIX) :])
    finally:
        server.stop()
    offsets = sorted(watcher.closed_at - sent for watcher in watchers)
    histogram = [0] * (int(offsets[-1] / WINDOW) + 1)
    for offset in offsets:
        histogram[int(offset / WINDOW)] += 1
    return Result(
        drain,
        n,
        histogram,
        round(offsets[-1], 3),
        round(percentile(offsets, 50), 3),
        shutdown_s,
    )


def report(results: Sequence[Result], show_histogram: bool) -> None:
    rows = [
        [
            "drain s",
            "sockets",
            "peak closes/100 ms",
            "windows with closes",
            "median close s",
            "last close s",
            "shutdown s",
        ]
    ]
    for r in results:
        rows.append(
            [
                f"{r.drain:g}",
                str(r.sockets),
                str(r.peak_per_100ms),
                str(r.windows_with_closes),
                f"{r.median_close_s:.3f}",
                f"{r.last_close_s:.3f}",
                f"{r.shutdown_s:.3f}",
            ]
        )
    print_table(rows)
    if show_histogram:
        for r in results:
            print(f"\ndrain {r.drain:g} s: closes per 100 ms from SIGTERM")
            for index, count in enumerate(r.histogram):
                if count:
                    print(
                        f"  {index * WINDOW:5.1f}-{(index + 1) * WINDOW:5.1f} s {count:5d}"
                    )


async def main(args: Any) -> None:
    raise_nofile(args.n + 100)
    pin(CLIENT_CPU)
    drains = [float(value) for value in args.drains.split(",")]
    results = [await measure(args.n, drain, args.uvloop) for drain in drains]
    report(results, args.histogram)
    write_json(args.json, "drain", args, results)


def parse_args(argv: Sequence[str]) -> Any:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=5000, help="sockets (5000)")
    parser.add_argument(
        "--drains", default="0,5", help="comma-separated drains in seconds (0,5)"
    )
    parser.add_argument("--uvloop", action="store_true", help="server on uvloop")
    parser.add_argument(
        "--histogram", action="store_true", help="print every 100 ms window"
    )
    add_json_option(parser)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    if arguments.serve is not None:
        if arguments.uvloop:
            install_uvloop()
        asyncio.run(serve(arguments.serve))
    else:
        asyncio.run(main(arguments))
