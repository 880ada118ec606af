"""Compressed fan-out: server CPU per publish with ``compress=True``, by mode.

N subscribers offer permessage-deflate (``permessage-deflate;
client_max_window_bits``, as aiohttp's client with ``compress=15``) and one
publisher sends M distinct JSON chat messages (about 190 bytes) back to back; the
server publishes each to the room with ``compress=True``. Printed per mode: server
CPU (utime + stime of its process, pinned to CPU 0) over the batch per publish and
per delivery, the median over --repeat rounds with [min-max], and the compressed
size of one message on the wire.

Modes: ``shared`` (``per_message_deflate=True``: Bun's default, one compression
per publish), ``dedicated`` (a compressor per socket: one compression per
delivery) and ``off`` (no compression, for reference). Run the script with
PYTHONPATH set to another checkout to measure that version's server (``shared``
and ``off`` only, for versions without Bun's modes).

Usage: python benchmarks/deflate_fanout.py [--n 1000] [--m 200] [--repeat 3]
       [--modes shared dedicated off]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from typing import Any, Final

from aiohttp import web

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (
    CLIENT_CPU,
    RawClient,
    ServerProcess,
    client_frame,
    close_clients,
    connect_clients,
    parse_server_frames,
    pin,
    raise_nofile,
    serve_app,
    spread,
)

SCRIPT: Final = os.path.abspath(__file__)
TOPIC: Final = "room"
MODES: Final = {
    "shared": True,
    "dedicated": {"compress": "dedicated", "decompress": "dedicated"},
    "off": False,
}
OFFER: Final = (
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
)


def message(seq: int) -> bytes:
    """A distinct chat message, JSON as a chat app would publish it."""
    return (
        f'{{"type": "message", "room": "lobby", "seq": {seq}, '
        f'"user": {{"id": {seq % 97}, "name": "user{seq % 97}"}}, '
        f'"text": "message number {seq} for everyone in the lobby, hello again", '
        f'"sent_at": "2026-12-02T16:{seq % 60:02d}:00Z"}}'
    ).encode()


# -- the server (child process) ----------------------------------------------------


def app(mode: str) -> web.Application:
    from aiohttp_upgrade import Server, ServerWebSocket, WebSocketHandler

    class Room(WebSocketHandler[str]):
        idle_timeout = 0

        def open(self, ws: ServerWebSocket[str]) -> None:
            if ws.data == "sub":
                ws.subscribe(TOPIC)

        def message(self, ws: ServerWebSocket[str], message: str | bytes) -> None:
            server.publish(TOPIC, message, compress=True)

    server: Server[str] = Server(Room(per_message_deflate=MODES[mode]))

    def fetch(request: web.Request, server: Server[str]) -> web.Response | None:
        if server.upgrade(request, data=request.path.strip("/")):
            return None
        return web.Response(status=400)

    application = web.Application()
    server.setup(application)
    application.router.add_get("/{role}", server.handler(fetch))
    return application


# -- the load generator -------------------------------------------------------------


class Subscriber(RawClient):
    """Offers permessage-deflate and counts the frames it receives."""

    def __init__(self, port: int, path: str) -> None:
        super().__init__("127.0.0.1", port, path)
        head, _, _ = self.request.partition(b"\r\n\r\n")
        self.request = head + b"\r\n" + OFFER + b"\r\n"
        self.buffer = bytearray()
        self.frames = 0
        self.size = 0
        self.target = 0
        self.done: asyncio.Future[None] | None = None
        self.on_data = self.received

    def received(self, data: bytes) -> None:
        self.buffer += data
        frames = parse_server_frames(self.buffer)
        if frames:
            self.size = len(frames[-1][1])
        self.frames += len(frames)
        done = self.done
        if done is not None and self.frames >= self.target and not done.done():
            done.set_result(None)


async def round_(mode: str, n: int, m: int) -> tuple[float, int]:
    """One round: server CPU seconds for M publishes to N subscribers, frame size."""
    server = ServerProcess.start(SCRIPT, ["--serve", mode])
    try:
        subs = [Subscriber(server.port, "/sub") for _ in range(n)]
        pending = iter(subs)
        await connect_clients(lambda: next(pending), n, server.port)
        [publisher] = await connect_clients(
            lambda: RawClient("127.0.0.1", server.port, "/pub"), 1, server.port
        )
        loop = asyncio.get_running_loop()
        for sub in subs:
            sub.target = m
            sub.done = loop.create_future()
        frames = b"".join(client_frame(message(seq)) for seq in range(m))
        await asyncio.sleep(0.5)  # let the server settle after the connections
        before = server.cpu_seconds()
        publisher.send(frames)
        await asyncio.gather(*(sub.done for sub in subs if sub.done is not None))
        cpu = server.cpu_seconds() - before
        size = subs[0].size
        await close_clients([*subs, publisher])
        return cpu, size
    finally:
        server.stop()


async def main(args: Any) -> None:
    pin(CLIENT_CPU)
    raise_nofile(args.n + 200)
    print(
        f"{args.n} subscribers, {args.m} publishes with compress=True, "
        f"{len(message(0))}-byte messages; server CPU, median of {args.repeat}"
    )
    for mode in args.modes:
        rounds = [await round_(mode, args.n, args.m) for _ in range(args.repeat)]
        per_publish = [cpu / args.m * 1e6 for cpu, _ in rounds]
        per_delivery = [cpu / (args.m * args.n) * 1e6 for cpu, _ in rounds]
        print(
            f"{mode:<10} {spread(per_publish, 0)} µs/publish  "
            f"{spread(per_delivery, 3)} µs/delivery  "
            f"frame payload {statistics.median(size for _, size in rounds):.0f} B"
        )


def parse_args(argv: list[str]) -> Any:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="subscribers")
    parser.add_argument("--m", type=int, default=200, help="publishes")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=list(MODES),
        default=["shared", "dedicated", "off"],
    )
    parser.add_argument("--serve", choices=list(MODES), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    if arguments.serve:
        asyncio.run(serve_app(app(arguments.serve), backlog=4096))
    else:
        asyncio.run(main(arguments))
