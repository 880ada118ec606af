"""Flow control: stream a large download to each client at the pace it reads.

``pump`` sends until ``send`` returns -1 (the frame is queued behind bytes the
kernel has not taken yet), then returns; ``drain`` runs once that backlog is gone
and calls ``pump`` again. Memory per client stays near one socket buffer, however
slow the client, and nothing is ever dropped::

    python examples/producer.py   # ws://127.0.0.1:8080/download?chunks=64
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from aiohttp_upgrade import Server, ServerWebSocket, WebSocketHandler

CHUNK_SIZE = 64 * 1024
MAX_CHUNKS = 1024


@dataclass
class Download:
    """``ws.data``: one client's download."""

    chunks: int  # how many chunks to send in all
    sent: int = 0  # how many were queued
    waits: int = 0  # how often the producer waited for ``drain``


def chunk(index: int) -> bytes:
    """Chunk ``index``: its number, repeated (a client can check the order)."""
    return index.to_bytes(4, "big") * (CHUNK_SIZE // 4)


class Producer(WebSocketHandler[Download]):
    # pump() stops at -1, so sends stay far below this: nothing is dropped.
    backpressure_limit = 4 * 1024 * 1024

    def open(self, ws: ServerWebSocket[Download]) -> None:
        self.pump(ws)

    def drain(self, ws: ServerWebSocket[Download]) -> None:
        self.pump(ws)

    def pump(self, ws: ServerWebSocket[Download]) -> None:
        download = ws.data
        while download.sent < download.chunks:
            code = ws.send(chunk(download.sent))
            if code == 0:  # dropped: the socket is closed (or over the limit)
                return
            download.sent += 1
            if code == -1:  # queued behind unsent bytes: wait for drain()
                download.waits += 1
                return
        # The Close goes out after every queued chunk.
        ws.close(1000, f"done, waited for drain {download.waits} times")


def fetch(request: web.Request, server: Server[Download]) -> web.StreamResponse | None:
    try:
        chunks = int(request.query.get("chunks", "64"))
    except ValueError:
        chunks = -1
    if not 0 < chunks <= MAX_CHUNKS:
        return web.Response(status=400, text=f"chunks must be 1..{MAX_CHUNKS}")
    if server.upgrade(request, data=Download(chunks)):
        return None
    return web.Response(status=400, text="WebSocket only")


def create_app() -> web.Application:
    server = Server(Producer())
    app = web.Application()
    server.setup(app)
    app.router.add_get("/download", server.handler(fetch))
    return app


if __name__ == "__main__":
    web.run_app(create_app(), host="127.0.0.1", port=8080)
