"""The quick start (``examples/quickstart.py``, shown by the README and the docs) runs
as written."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from .examples_support import EXAMPLES, load_example

README = Path(__file__).resolve().parent.parent / "README.rst"


def readme_quick_start() -> str:
    """The first ``code-block:: python`` of the README, dedented."""
    text = README.read_text(encoding="utf-8")
    start = text.index(".. code-block:: python\n") + len(".. code-block:: python\n")
    lines = []
    for line in text[start:].splitlines()[1:]:
        if line and not line.startswith("    "):
            break
        lines.append(line[4:])
    return "\n".join(lines).strip("\n") + "\n"


@pytest.fixture
async def quick_start(
    aiohttp_server: Callable[[web.Application], Awaitable[TestServer]],
    monkeypatch: pytest.MonkeyPatch,
) -> TestServer:
    """The quick start's app on a loopback port."""
    module = load_example("quickstart", monkeypatch)
    return await aiohttp_server(module.app)


def test_readme_shows_the_quick_start_file() -> None:
    """The README's code is ``examples/quickstart.py`` verbatim (PyPI cannot include files)."""
    source = (EXAMPLES / "quickstart.py").read_text(encoding="utf-8")
    assert readme_quick_start() == source


async def test_quick_start_chat_reaches_the_room(
    quick_start: TestServer, client_session: aiohttp.ClientSession
) -> None:
    """Two clients of the quick start's app greet and hear each other in the lobby."""
    url = quick_start.make_url("/ws")
    async with (
        client_session.ws_connect(url.with_query(user="ada")) as ada,
        client_session.ws_connect(url.with_query(user="bob")) as bob,
    ):
        assert ada._response.headers["X-Served-By"] == "a"
        assert await ada.receive_str() == "hello ada"
        assert await bob.receive_str() == "hello bob"
        await ada.send_str("hi bob")
        assert await bob.receive_str() == "hi bob"


async def test_quick_start_answers_plain_http_with_400(
    quick_start: TestServer, client_session: aiohttp.ClientSession
) -> None:
    """A plain GET of the quick start's /ws is refused with its 400, not upgraded."""
    async with client_session.get(quick_start.make_url("/ws")) as response:
        assert response.status == 400
        assert await response.text() == "Upgrade failed"
