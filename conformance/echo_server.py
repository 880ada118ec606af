"""Echo server for the Autobahn|Testsuite fuzzing client, built on aiohttp-upgrade.

Every message is sent back as it came: text as text, binary as binary, with
``compress=True`` (so compressed where permessage-deflate was negotiated). The
handler keeps aiohttp-upgrade's defaults except ``per_message_deflate``, which
``--deflate`` turns off (the extension is declined), on (RFC 7692 is negotiated
in the default, shared, mode) or to ``dedicated`` (per-socket compressor and
decompressor, context takeover both ways).

Usage::

    python conformance/echo_server.py --deflate on --port 9001
    python conformance/echo_server.py --deflate off --port 0 --port-file /tmp/port

``--port 0`` binds a free port; ``--port-file`` names a file that receives the
bound port once the server accepts connections (how ``run.sh`` finds it). The
server stops on SIGINT or SIGTERM, closing open sockets with 1001.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path
from typing import Final

from aiohttp import web

from aiohttp_upgrade import Server, ServerWebSocket, WebSocketHandler, _speedups

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "Echo", "main", "make_app"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9001


class Echo(WebSocketHandler[None]):
    """Send every message back to its sender unchanged."""

    def message(self, ws: ServerWebSocket[None], message: str | bytes) -> None:
        """Echo ``message``: ``send`` keeps str as text and bytes as binary."""
        ws.send(message, compress=True)


def fetch(request: web.Request, server: Server[None]) -> web.StreamResponse | None:
    """Upgrade every request; answer 400 to one that is not a WebSocket handshake."""
    if server.upgrade(request):
        return None
    return web.Response(status=400, text="Expected a WebSocket upgrade\n")


DEFLATE: Final = {
    "off": False,
    "on": True,
    "dedicated": {"compress": "dedicated", "decompress": "dedicated"},
}
"""``--deflate``: the handler's ``per_message_deflate`` for each choice."""


def make_app(*, deflate: bool | str) -> web.Application:
    """Build the echo application, serving WebSockets on every path.

    Args:
        deflate: whether the handler negotiates permessage-deflate, or the name
            of a ``--deflate`` choice.
    """
    if isinstance(deflate, bool):
        deflate = "on" if deflate else "off"
    server = Server(Echo(per_message_deflate=DEFLATE[deflate]))
    app = web.Application()
    server.setup(app)
    app.router.add_get("/{tail:.*}", server.handler(fetch))
    return app


async def serve(
    deflate: bool | str, host: str, port: int, port_file: Path | None
) -> None:
    """Serve until SIGINT or SIGTERM, writing the bound port to ``port_file``."""
    runner = web.AppRunner(make_app(deflate=deflate), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1]
        logging.getLogger(__name__).warning(
            "echo server on ws://%s:%d/ (per_message_deflate %s, %s)",
            host,
            bound,
            deflate if isinstance(deflate, str) else ("on" if deflate else "off"),
            "compiled" if _speedups.COMPILED else "pure Python",
        )
        if port_file is not None:
            tmp = port_file.with_name(port_file.name + ".tmp")
            tmp.write_text(f"{bound}\n")
            tmp.replace(port_file)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(
        description="Autobahn|Testsuite echo server built on aiohttp-upgrade."
    )
    parser.add_argument(
        "--deflate",
        choices=tuple(DEFLATE),
        default="off",
        help="per_message_deflate of the handler (default: off)",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="default: 127.0.0.1")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="0 picks a free port"
    )
    parser.add_argument(
        "--port-file", type=Path, help="write the bound port here once listening"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(serve(args.deflate, args.host, args.port, args.port_file))


if __name__ == "__main__":
    main()
