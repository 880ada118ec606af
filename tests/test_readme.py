"""The quick start (``examples/quickstart.py``, shown by the README and the docs) runs
as written, and the install instructions work before the first release."""

from __future__ import annotations

import configparser
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from .examples_support import EXAMPLES, load_example

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.rst"
INSTALL_PAGES = [README, ROOT / "docs" / "index.rst", ROOT / "docs" / "quickstart.rst"]
"""Where a newcomer reads how to install the package."""

_PIP_INSTALL = re.compile(r"pip install (?P<args>[^`#\n]+)")


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


def repository_url() -> str:
    """The project's repository, as ``setup.cfg`` gives it."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg", encoding="utf-8")
    return config["metadata"]["url"]


def installs_of_the_package(text: str) -> list[str]:
    """The arguments of each ``pip install`` in ``text`` that installs this
    package: by name, from its repository, or from a checkout (``.``, ``-e .``)."""
    commands = [match["args"].strip() for match in _PIP_INSTALL.finditer(text)]
    return [
        args
        for args in commands
        if "aiohttp-upgrade" in args or args.split()[-1].strip("'\"").startswith(".")
    ]


@pytest.mark.parametrize(
    "page", INSTALL_PAGES, ids=[page.name for page in INSTALL_PAGES]
)
def test_install_instructions_do_not_need_the_package_index(page: Path) -> None:
    """Until aiohttp-upgrade is on PyPI, every ``pip install`` of it that a newcomer's
    page gives installs from the repository or a checkout, never by name alone."""
    installs = installs_of_the_package(page.read_text(encoding="utf-8"))
    assert installs, f"{page.name} does not say how to install aiohttp-upgrade"
    from_the_index = [
        args
        for args in installs
        if "aiohttp-upgrade" in args and f"git+{repository_url()}" not in args
    ]
    assert from_the_index == []


def test_readme_shows_how_to_install_the_redis_extra_from_a_checkout() -> None:
    """The README's install section names the ``redis`` extra in a form that works
    without the package index."""
    installs = installs_of_the_package(README.read_text(encoding="utf-8"))
    assert any(
        "[redis]" in args
        and (f"git+{repository_url()}" in args or "aiohttp-upgrade" not in args)
        for args in installs
    )
