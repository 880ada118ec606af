"""Demo chat under a message flood: what a bystander's messages cost, with and
without a flooder, with the demo's limits and with limits lifted.

Three scenarios, each on a fresh demo server (``demo.chat.create_app`` with a
throw-away database) in its own process pinned to CPU 0:

- ``alone``: the bystander by itself, with the demo's default limits;
- ``flood``: the same while a flooder process (pinned to CPU 1) signs in
  ``--flooders`` users, opens as many sockets for each as the server lets it,
  joins the bystander's room and sends messages as fast as each socket takes
  them, reconnecting whenever the server closes it; it also tries
  ``--sign-ins`` extra sign-ins;
- ``flood-unlimited``: the same flood against a server whose rate limits and
  caps are lifted (what the demo did before it had them).

The bystander (the parent process, pinned to CPU 1) sends ``--samples``
messages, one per ``--interval`` seconds (under the demo's rate limit), and
times each from send until its own echo comes back through the room; it reads
every flood message on the way, as a browser in that room would. Printed per
scenario: the bystander's latency (median, p90, max), the flood frames sent
and the sockets the server closed (1008) or refused (429), sign-ins refused,
the server's CPU seconds in the measured window and per flood frame, and the
size of the database afterwards.

Usage: python benchmarks/demo_flood.py [--samples 40] [--interval 0.25]
       [--flooders 4] [--sign-ins 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp import web

# The benchmarks' helpers sit beside this script; the demo at the repository root.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import (
    CLIENT_CPU,
    ServerProcess,
    announce_port,
    percentile,
    pin,
    print_table,
)

from demo.chat import create_app
from demo.config import Config
from demo.limits import Limits

SCRIPT: Final = os.path.abspath(__file__)
ROOM: Final = "general"
UNLIMITED: Final = Limits(
    message_rate=1e9,
    message_burst=10**9,
    strikes=10**9,
    sign_in_rate=1e9,
    sign_in_burst=10**9,
    sockets_per_session=10**6,
    sockets_per_user=10**6,
    backpressure_limit=16 * 1024 * 1024,
    frame_rate=1e9,
    frame_burst=10**9,
    byte_rate=1e15,
    byte_burst=10**15,
)
SCENARIOS: Final = {
    "alone": (False, False),
    "flood": (True, False),
    "flood-unlimited": (True, True),
}


# -- the server process -------------------------------------------------------------


async def serve(data_dir: str, unlimited: bool) -> None:
    """Run the demo on a free loopback port until killed."""
    config = Config(
        data_dir=Path(data_dir),
        secret=secrets.token_bytes(32),
        limits=UNLIMITED if unlimited else Limits(),
    )
    runner = web.AppRunner(create_app(config), handle_signals=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    announce_port(runner.addresses[0][1])
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


# -- clients ------------------------------------------------------------------------


async def signed_in(base: str, name: str) -> aiohttp.ClientSession | None:
    """A client session signed in as ``name``, or None when the server refused."""
    # unsafe=True: keep cookies of an IP address such as 127.0.0.1.
    session = aiohttp.ClientSession(base, cookie_jar=aiohttp.CookieJar(unsafe=True))
    response = await session.post(
        "/sign-in", data={"name": name}, allow_redirects=False
    )
    if response.status != 303 or response.headers.get("Location") != "/":
        await session.close()
        return None
    return session


async def flood_socket(
    session: aiohttp.ClientSession, stats: dict[str, int], until: float
) -> None:
    """Send messages as fast as the socket takes them; reconnect when closed."""
    n = 0
    while time.monotonic() < until:
        try:
            ws = await session.ws_connect("/ws")
        except aiohttp.WSServerHandshakeError as exc:
            stats[f"refused {exc.status}"] = stats.get(f"refused {exc.status}", 0) + 1
            await asyncio.sleep(0.05)
            continue
        drain = asyncio.create_task(_drain(ws))
        try:
            await ws.send_json({"type": "join", "room": ROOM})
            while not ws.closed and time.monotonic() < until:
                n += 1
                await ws.send_str(
                    json.dumps({"type": "message", "room": ROOM, "text": f"flood {n}"})
                )
                stats["frames"] += 1
                if n % 64 == 0:
                    await asyncio.sleep(0)  # let the reader see a Close
        except (ConnectionError, aiohttp.ClientError):
            pass
        await ws.close()
        await drain
        if ws.close_code == 1008:
            stats["closed 1008"] += 1


async def _drain(ws: aiohttp.ClientWebSocketResponse) -> None:
    async for _ in ws:
        pass


async def flood(base: str, flooders: int, sign_ins: int, seconds: float) -> None:
    """The flooder process: print its counts as JSON when ``seconds`` are over."""
    stats = {"frames": 0, "closed 1008": 0, "sign-ins refused": 0}
    until = time.monotonic() + seconds
    sessions = []
    for i in range(flooders):
        session = await signed_in(base, f"flooder{i}")
        if session is None:
            stats["sign-ins refused"] += 1
        else:
            sessions.append(session)
    for i in range(sign_ins):
        extra = await signed_in(base, f"extra{i}")
        if extra is None:
            stats["sign-ins refused"] += 1
        else:
            await extra.close()
    print("FLOODING", flush=True)
    per_session = 5
    await asyncio.gather(
        *(
            flood_socket(session, stats, until)
            for session in sessions
            for _ in range(per_session + 1)  # one more than the demo allows
        )
    )
    for session in sessions:
        await session.close()
    print(json.dumps(stats), flush=True)


async def bystander(
    base: str, samples: int, interval: float, ready: Callable[[], None]
) -> list[float]:
    """Latencies (seconds) of the bystander's own messages, send to echo.

    ``ready`` runs once the bystander is signed in and in the room (it starts
    the flooder, whose sign-ins would otherwise use up the address's budget).
    """
    session = await signed_in(base, "bystander")
    assert session is not None, "the bystander could not sign in"
    latencies = []
    async with session, session.ws_connect("/ws") as ws:
        await ws.send_json({"type": "join", "room": ROOM})
        ready()
        for n in range(samples):
            started = time.perf_counter()
            text = f"probe {n}"
            await ws.send_json({"type": "message", "room": ROOM, "text": text})
            async for message in ws:
                frame = json.loads(message.data)
                if frame.get("type") == "message" and frame.get("text") == text:
                    break
                if frame.get("type") == "error":
                    raise RuntimeError(f"the bystander was refused: {frame}")
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(max(0.0, interval - latencies[-1]))
    return latencies


# -- the parent ---------------------------------------------------------------------


def run_scenario(name: str, args: argparse.Namespace) -> list[str]:
    with_flood, unlimited = SCENARIOS[name]
    with tempfile.TemporaryDirectory(prefix="demo-flood-") as data_dir:
        server_args = ["--serve", data_dir] + (["--unlimited"] if unlimited else [])
        server = ServerProcess.start(SCRIPT, server_args)
        base = f"http://127.0.0.1:{server.port}"
        flooder: subprocess.Popen[str] | None = None
        cpu_before = 0.0

        def start_flooder() -> None:
            nonlocal flooder, cpu_before
            if with_flood:
                seconds = args.samples * args.interval + 2
                command = [SCRIPT, "--flood", base, str(args.flooders)]
                command += [str(args.sign_ins), str(seconds)]
                flooder = subprocess.Popen(
                    [sys.executable, *command],
                    stdout=subprocess.PIPE,
                    text=True,
                    preexec_fn=lambda: pin(CLIENT_CPU) and None,
                )
                assert flooder.stdout is not None
                if flooder.stdout.readline().strip() != "FLOODING":
                    raise RuntimeError("the flooder did not start")
            cpu_before = server.cpu_seconds()

        try:
            latencies = asyncio.run(
                bystander(base, args.samples, args.interval, start_flooder)
            )
            cpu = server.cpu_seconds() - cpu_before
            stats: dict[str, Any] = {}
            if flooder is not None:
                assert flooder.stdout is not None
                stats = json.loads(flooder.stdout.readline())
                flooder.wait(timeout=30)
            db_bytes = sum(
                f.stat().st_size for f in Path(data_dir).glob("chat.sqlite3*")
            )
        finally:
            if flooder is not None and flooder.poll() is None:
                flooder.kill()
                flooder.wait()
            server.stop()
    frames = int(stats.get("frames", 0))
    ms = [1000 * x for x in latencies]
    return [
        name,
        f"{percentile(ms, 50):.1f}",
        f"{percentile(ms, 90):.1f}",
        f"{max(ms):.1f}",
        str(frames),
        str(stats.get("closed 1008", "-")),
        str(stats.get("refused 429", "-")),
        str(stats.get("sign-ins refused", "-")),
        f"{cpu:.2f}",
        f"{1e6 * cpu / frames:.1f}" if frames else "-",
        f"{db_bytes / 1e6:.1f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--interval", type=float, default=0.25)
    parser.add_argument("--flooders", type=int, default=4)
    parser.add_argument("--sign-ins", type=int, default=50)
    parser.add_argument("--serve", metavar="DATA_DIR")
    parser.add_argument("--unlimited", action="store_true")
    parser.add_argument("--flood", nargs=4, metavar=("BASE", "N", "SIGN_INS", "SECS"))
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.unlimited))
        return
    if args.flood:
        base, n, sign_ins, seconds = args.flood
        asyncio.run(flood(base, int(n), int(sign_ins), float(seconds)))
        return
    cpus = pin(CLIENT_CPU)
    print(
        f"server on CPU 0, bystander and flooder on CPU(s) {sorted(cpus)}; "
        f"{args.samples} bystander messages, one per {args.interval} s; "
        f"{args.flooders} flooders, 6 sockets each tried"
    )
    rows = [
        [
            "scenario",
            "p50 ms",
            "p90 ms",
            "max ms",
            "flood frames",
            "1008",
            "429",
            "sign-ins refused",
            "server CPU s",
            "CPU µs/flood frame",
            "db MB",
        ]
    ]
    for name in SCENARIOS:
        rows.append(run_scenario(name, args))
    print_table(rows)


if __name__ == "__main__":
    main()
