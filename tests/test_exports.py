"""The public surface: ``aiohttp_upgrade.__all__`` is what the docs promise."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import aiohttp_upgrade

PUBLIC_NAMES = [
    "SERVER_KEY",
    "Broker",
    "BrokerUnavailableError",
    "CloseCode",
    "Fetch",
    "History",
    "HistoryUnavailable",
    "InvalidOptionError",
    "InvalidStateError",
    "LocalBroker",
    "Metrics",
    "PerMessageDeflate",
    "Presence",
    "Position",
    "ProtocolError",
    "RateLimit",
    "ReadyState",
    "Resumed",
    "Server",
    "ServerWebSocket",
    "TokenBucket",
    "WebSocketError",
    "WebSocketHandler",
    "origin_allowed",
]
"""The documented public names (README "The API"; errors in errors.py's tree).
``RedisBroker`` is public too but lazily imported (extra ``redis``), so it is not
in ``__all__``: a star import must work without redis (tests/test_broker.py)."""

SUBMODULES = sorted(
    info.name for info in pkgutil.iter_modules(aiohttp_upgrade.__path__)
)


def test_every_module_is_private() -> None:
    """The public API is what __init__ exports: every module is an implementation
    detail (a leading underscore), free to change."""
    assert SUBMODULES
    assert [name for name in SUBMODULES if not name.startswith("_")] == []


def test_all_is_exactly_the_documented_names() -> None:
    """__all__ lists the documented public names, no more and no fewer."""
    assert sorted(aiohttp_upgrade.__all__) == sorted(PUBLIC_NAMES)


def test_all_has_no_duplicates() -> None:
    """No name appears twice in __all__."""
    assert len(set(aiohttp_upgrade.__all__)) == len(aiohttp_upgrade.__all__)


@pytest.mark.parametrize("name", PUBLIC_NAMES, ids=PUBLIC_NAMES)
def test_public_name_is_importable(name: str) -> None:
    """`from aiohttp_upgrade import <name>` works for every public name."""
    namespace: dict[str, object] = {}
    exec(f"from aiohttp_upgrade import {name}", namespace)
    assert namespace[name] is getattr(aiohttp_upgrade, name)


def test_star_import_gives_exactly_all() -> None:
    """`from aiohttp_upgrade import *` brings in the public names and nothing else."""
    namespace: dict[str, object] = {}
    exec("from aiohttp_upgrade import *", namespace)
    namespace.pop("__builtins__")
    assert sorted(namespace) == sorted(PUBLIC_NAMES)


def test_no_public_class_or_function_is_left_out() -> None:
    """Every class or function the package namespace defines is either in __all__ or private."""
    stray = [
        name
        for name, value in vars(aiohttp_upgrade).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and getattr(value, "__module__", "").startswith("aiohttp_upgrade")
        and name not in aiohttp_upgrade.__all__
    ]
    assert stray == []


@pytest.mark.parametrize("module", SUBMODULES, ids=SUBMODULES)
def test_every_module_declares_all_and_its_names_exist(module: str) -> None:
    """Each module has an __all__ whose names all resolve (the STYLE habit)."""
    mod = importlib.import_module(f"aiohttp_upgrade.{module}")
    names = getattr(mod, "__all__", None)
    assert isinstance(names, list)
    missing = [name for name in names if not hasattr(mod, name)]
    assert missing == []


def test_exceptions_form_one_tree() -> None:
    """Every exported exception derives from WebSocketError; option errors are ValueErrors."""
    exported = [
        getattr(aiohttp_upgrade, name)
        for name in PUBLIC_NAMES
        if inspect.isclass(getattr(aiohttp_upgrade, name))
        and issubclass(getattr(aiohttp_upgrade, name), BaseException)
    ]
    assert {cls.__name__ for cls in exported} == {
        "BrokerUnavailableError",
        "HistoryUnavailable",
        "InvalidOptionError",
        "InvalidStateError",
        "ProtocolError",
        "WebSocketError",
    }
    assert all(issubclass(cls, aiohttp_upgrade.WebSocketError) for cls in exported)
    assert issubclass(aiohttp_upgrade.InvalidOptionError, ValueError)


def test_package_is_typed() -> None:
    """The package ships py.typed, so mypy users get its annotations."""
    assert (Path(aiohttp_upgrade.__file__).parent / "py.typed").is_file()


def test_version_is_a_string() -> None:
    """__version__ is a dotted version string (setup.cfg reads it)."""
    assert all(part.isdigit() for part in aiohttp_upgrade.__version__.split("."))
