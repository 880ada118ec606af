"""The README's quick start runs as written."""

from __future__ import annotations

import sys
import types
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

README = Path(__file__).resolve().parent.parent / "README.rst"


def quick_start_source() -> str:
    """The first ``code-block:: python`` of the README, dedented."""
    text = README.read_text(encoding="utf-8")
    start = text.index(".. code-block:: python\n") + len(".. code-block:: python\n")
    lines = []
    for line in text[start:].splitlines()[1:]:
        if line and not line.startswith("    "):
            break
        lines.append(line[4:])
    return "\n".join(lines)


async def test_quick_start_chat_reaches_the_room(
    aiohttp_server: Callable[[web.Application], Awaitable[TestServer]],
    client_session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two clients of the quick start's app greet and hear each other in the lobby."""
    module = types.ModuleType("readme_quick_start")
    monkeypatch.setitem(sys.modules, module.__name__, module)  # for @dataclass
    exec(compile(quick_start_source(), str(README), "exec"), module.__dict__)
    server = await aiohttp_server(module.app)
    url = server.make_url("/ws")
    async with (
        client_session.ws_connect(url.with_query(user="ada")) as ada,
        client_session.ws_connect(url.with_query(user="bob")) as bob,
    ):
        assert await ada.receive_str() == "hello ada"
        assert await bob.receive_str() == "hello bob"
        await ada.send_str("hi bob")
        assert await bob.receive_str() == "hi bob"
