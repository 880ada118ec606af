"""Backpressure: flood a client that never reads, through aiohttp-upgrade and plain aiohttp.

Each scenario runs in a fresh server process pinned to CPU 0 (``taskset -c 0``),
so its peak RSS (``VmHWM`` in /proc/self/status, reset through
/proc/self/clear_refs once the connection is up) belongs to that scenario alone.
The server process starts a client process pinned to CPU 1 that connects over
loopback, completes the WebSocket handshake and never reads again. The server
then sends 64 KiB text messages to it for ``--duration`` seconds:

- aiohttp-upgrade: ``ws.send(message)`` in a loop, yielding to the event loop
  every ``--yield-every`` sends, with the default ``backpressure_limit``
  (16 MiB) and with 1 MiB;
- plain aiohttp: ``await ws.send_str(message)`` in the same loop.

Printed per scenario: send results (length / -1 / 0), bytes accepted, the peak of
``get_buffered_amount()``, peak RSS growth over the RSS measured just before the
flood, the slowest single send call, the worst event-loop lag (a 10 ms ticker)
and whether the sending coroutine was ever blocked: no send had returned for
``BLOCKED_AFTER`` seconds. Target for aiohttp-upgrade: RSS growth under
``backpressure_limit`` + 5 MiB.

Usage: python benchmarks/backpressure.py [--duration 3] [--yield-every 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from aiohttp import web

from aiohttp_upgrade import Server, ServerWebSocket, WebSocketHandler

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import add_json_option, write_json

SCRIPT: Final = os.path.abspath(__file__)
MIB: Final = 1024 * 1024
MESSAGE_SIZE: Final = 64 * 1024
SERVER_CPU: Final = 0
CLIENT_CPU: Final = 1
BLOCKED_AFTER: Final = 1.0
TICK: Final = 0.01
SCENARIOS: Final = {
    "upgrade-16MiB": ("upgrade", 16 * MIB),
    "upgrade-1MiB": ("upgrade", 1 * MIB),
    "aiohttp": ("aiohttp", 0),
}
HANDSHAKE: Final = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


# -- placement -----------------------------------------------------------------------


def pinned(cpu: int, argv: list[str]) -> list[str]:
    """Prefix ``argv`` with ``taskset -c cpu`` when the machine has that CPU."""
    if shutil.which("taskset") and cpu < (os.cpu_count() or 1):
        return ["taskset", "-c", str(cpu), *argv]
    return argv


def own_placement() -> str:
    cpus = sorted(os.sched_getaffinity(0))
    return ",".join(map(str, cpus))


# -- memory --------------------------------------------------------------------------


def status_kib(field_name: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise LookupError(field_name)


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


# -- the client that never reads -----------------------------------------------------


def run_client(port: int) -> None:
    """Handshake, then never read again; exit when stdin closes."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(HANDSHAKE)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)  # byte by byte: read nothing past the 101 response
        if not chunk:
            raise SystemExit("server closed during the handshake")
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    print("ready", flush=True)
    sys.stdin.read()  # the server process closes our stdin when it is done
    sock.close()


# -- the server side -----------------------------------------------------------------


@dataclass
class Result:
    scenario: str
    limit: int
    cpu: str
    duration: float
    sends: int = 0
    accepted_bytes: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    peak_buffered: int = 0
    rss_before_kib: int = 0
    peak_rss_kib: int = 0
    peak_reset: bool = False
    slowest_send: float = 0.0
    worst_lag: float = 0.0
    longest_stall: float = 0.0
    blocked: bool = False

    @property
    def growth(self) -> int:
        return (self.peak_rss_kib - self.rss_before_kib) * 1024


class Monitor:
    """Measures event-loop lag and how long the sender has gone without progress."""

    def __init__(self) -> None:
        self.last_progress = time.perf_counter()
        self.worst_lag = 0.0
        self.longest_stall = 0.0

    def progress(self) -> None:
        now = time.perf_counter()
        self.longest_stall = max(self.longest_stall, now - self.last_progress)
        self.last_progress = now

    async def run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(TICK)
            now = time.perf_counter()
            self.worst_lag = max(self.worst_lag, now - before - TICK)
            self.longest_stall = max(self.longest_stall, now - self.last_progress)


class Flood(WebSocketHandler[None]):
    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.opened: asyncio.Future[ServerWebSocket[None]] = (
            asyncio.get_running_loop().create_future()
        )

    def open(self, ws: ServerWebSocket[None]) -> None:
        self.opened.set_result(ws)


def upgrade(request: web.Request, server: Server[None]) -> web.Response | None:
    return None if server.upgrade(request) else web.Response(status=400)


async def start_app(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.base_events.Server)
    return runner, server.sockets[0].getsockname()[1]


async def start_client(port: int) -> asyncio.subprocess.Process:
    """Start the non-reading client process; return once its handshake is done."""
    argv = [sys.executable, SCRIPT, "--client", str(port)]
    client = await asyncio.create_subprocess_exec(
        *pinned(CLIENT_CPU, argv),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert client.stdout is not None
    if (await client.stdout.readline()).strip() != b"ready":
        raise RuntimeError("the client did not complete its handshake")
    return client


async def flood_upgrade(
    result: Result, args: argparse.Namespace, message: str
) -> Callable[[], Awaitable[None]]:
    handler = Flood(backpressure_limit=result.limit, idle_timeout=0)
    server: Server[None] = Server(handler)
    app = web.Application()
    server.setup(app)
    app.router.add_get("/ws", server.handler(upgrade))
    runner, port = await start_app(app)
    client = await start_client(port)
    ws = await handler.opened
    monitor = Monitor()
    ticker = asyncio.ensure_future(monitor.run())
    codes = {"length": 0, "-1": 0, "0": 0}
    result.rss_before_kib = status_kib("VmRSS")
    result.peak_reset = reset_peak_rss()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.duration
    while loop.time() < deadline:
        for _ in range(args.yield_every):
            before = time.perf_counter()
            code = ws.send(message)
            result.slowest_send = max(result.slowest_send, time.perf_counter() - before)
            monitor.progress()
            result.sends += 1
            if code > 0:
                codes["length"] += 1
                result.accepted_bytes += code
            elif code < 0:
                codes["-1"] += 1
                result.accepted_bytes += len(message)
            else:
                codes["0"] += 1
            result.peak_buffered = max(result.peak_buffered, ws.get_buffered_amount())
        await asyncio.sleep(0)
    finish(result, monitor, codes)
    ticker.cancel()

    async def cleanup() -> None:
        ws.terminate()
        await close_client(client)
        await runner.cleanup()

    return cleanup


async def flood_aiohttp(
    result: Result, args: argparse.Namespace, message: str
) -> Callable[[], Awaitable[None]]:
    opened: asyncio.Future[tuple[web.WebSocketResponse, web.Request]] = (
        asyncio.get_running_loop().create_future()
    )
    done = asyncio.Event()

    async def handle(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        opened.set_result((ws, request))
        await done.wait()
        return ws

    app = web.Application()
    app.router.add_get("/ws", handle)
    runner, port = await start_app(app)
    client = await start_client(port)
    ws, request = await opened
    monitor = Monitor()
    ticker = asyncio.ensure_future(monitor.run())
    codes = {"returned": 0}
    result.rss_before_kib = status_kib("VmRSS")
    result.peak_reset = reset_peak_rss()

    async def sender() -> None:
        while True:
            for _ in range(args.yield_every):
                before = time.perf_counter()
                await ws.send_str(message)
                result.slowest_send = max(
                    result.slowest_send, time.perf_counter() - before
                )
                monitor.progress()
                result.sends += 1
                codes["returned"] += 1
                result.accepted_bytes += len(message)
                transport = request.transport
                if transport is not None:
                    result.peak_buffered = max(
                        result.peak_buffered, transport.get_write_buffer_size()
                    )
            await asyncio.sleep(0)

    task = asyncio.ensure_future(sender())
    await asyncio.wait([task], timeout=args.duration)
    if not task.done():
        # Count the stall of the send that is still waiting.
        monitor.progress()
    finish(result, monitor, codes)
    ticker.cancel()
    task.cancel()

    async def cleanup() -> None:
        if request.transport is not None:
            request.transport.abort()
        done.set()
        await close_client(client)
        await runner.cleanup()

    return cleanup


def finish(result: Result, monitor: Monitor, codes: dict[str, int]) -> None:
    result.peak_rss_kib = status_kib("VmHWM")
    result.codes = codes
    result.worst_lag = monitor.worst_lag
    result.longest_stall = monitor.longest_stall
    result.blocked = monitor.longest_stall >= BLOCKED_AFTER


async def close_client(client: asyncio.subprocess.Process) -> None:
    assert client.stdin is not None
    client.stdin.close()
    try:
        await asyncio.wait_for(client.wait(), 5)
    except TimeoutError:
        client.kill()
        await client.wait()


async def serve_scenario(args: argparse.Namespace) -> None:
    kind, limit = SCENARIOS[args.scenario]
    result = Result(args.scenario, limit, own_placement(), args.duration)
    message = "x" * MESSAGE_SIZE
    flood = flood_upgrade if kind == "upgrade" else flood_aiohttp
    cleanup = await flood(result, args, message)
    await cleanup()
    print(json.dumps(asdict(result)), flush=True)


# -- the orchestrator ----------------------------------------------------------------


def run_scenario(name: str, args: argparse.Namespace) -> Result:
    argv = [
        sys.executable,
        SCRIPT,
        "--serve",
        name,
        "--duration",
        str(args.duration),
        "--yield-every",
        str(args.yield_every),
    ]
    output = subprocess.run(
        pinned(SERVER_CPU, argv), check=True, capture_output=True, text=True
    ).stdout
    data = json.loads(output.strip().splitlines()[-1])
    return Result(**data)


def mib(n: float) -> str:
    return f"{n / MIB:.1f} MiB"


def report(results: list[Result]) -> None:
    rows = [
        (
            "scenario",
            "limit",
            "sends",
            "results",
            "accepted",
            "peak buffered",
            "RSS growth",
            "target",
            "slowest send",
            "worst loop lag",
            "sender blocked",
        )
    ]
    for r in results:
        target = (
            ("met" if r.growth < r.limit + 5 * MIB else "MISSED")
            + f" (<{mib(r.limit + 5 * MIB)})"
            if r.limit
            else "-"
        )
        rows.append(
            (
                r.scenario,
                mib(r.limit) if r.limit else "-",
                str(r.sends),
                " ".join(f"{k}:{v}" for k, v in r.codes.items()),
                mib(r.accepted_bytes),
                mib(r.peak_buffered),
                mib(r.growth),
                target,
                f"{r.slowest_send * 1e3:.2f} ms"
                if not r.blocked
                else f"never returned ({r.longest_stall:.1f} s)",
                f"{r.worst_lag * 1e3:.1f} ms",
                f"YES ({r.longest_stall:.1f} s without progress)"
                if r.blocked
                else f"no (longest gap {r.longest_stall * 1e3:.1f} ms)",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(
                cell.ljust(width) for cell, width in zip(row, widths, strict=True)
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--yield-every", type=int, default=16)
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS))
    parser.add_argument("--serve", choices=list(SCENARIOS), help=argparse.SUPPRESS)
    parser.add_argument("--client", type=int, help=argparse.SUPPRESS)
    add_json_option(parser)
    args = parser.parse_args()
    if args.client is not None:
        run_client(args.client)
        return
    if args.serve is not None:
        args.scenario = args.serve
        asyncio.run(serve_scenario(args))
        return
    placement = "taskset" if shutil.which("taskset") else "none (taskset missing)"
    print(
        f"CPU placement: server process `taskset -c {SERVER_CPU}`, non-reading client "
        f"process `taskset -c {CLIENT_CPU}` ({os.cpu_count()} CPUs; pinning: {placement})"
    )
    print(
        f"{MESSAGE_SIZE // 1024} KiB text messages for {args.duration:g} s, "
        f"yielding to the loop every {args.yield_every} sends; "
        f"'blocked' = no send returned for {BLOCKED_AFTER:g} s"
    )
    results = [run_scenario(name, args) for name in args.scenarios]
    for r in results:
        if r.cpu != str(SERVER_CPU):
            print(f"note: {r.scenario} ran on CPUs {r.cpu}")
        if not r.peak_reset:
            print(f"note: {r.scenario} could not reset VmHWM; growth includes startup")
    report(results)
    write_json(args.json, "backpressure", args, results)


if __name__ == "__main__":
    main()
