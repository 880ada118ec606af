"""Checked by tests/test_typing.py with mypy --strict, not imported by pytest.

The natural overrides of the hooks type-check: ``dropped`` takes the message as
``message`` does (``str | bytes``), plain or async. Every line must be clean.
"""

from __future__ import annotations

from aiohttp_upgrade import ServerWebSocket, WebSocketHandler


class Plain(WebSocketHandler[None]):
    def message(self, ws: ServerWebSocket[None], message: str | bytes) -> None:
        ws.send(message)

    def dropped(self, ws: ServerWebSocket[None], message: str | bytes) -> None:
        ws.close(1013, "too slow")

    def close(self, ws: ServerWebSocket[None], code: int, reason: str) -> None:
        pass


class Async(WebSocketHandler[None]):
    async def message(self, ws: ServerWebSocket[None], message: str | bytes) -> None:
        ws.send(message)

    async def dropped(self, ws: ServerWebSocket[None], message: str | bytes) -> None:
        ws.send(message)


class Text(WebSocketHandler[None]):
    """A handler that only sends text may say so where it handles drops."""

    def dropped(self, ws: ServerWebSocket[None], message: str | bytes) -> None:
        if isinstance(message, str):
            ws.send_text(message)
