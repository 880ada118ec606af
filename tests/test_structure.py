"""The package's shape: what ``help()`` shows, which modules stay pure, one CloseCode."""

from __future__ import annotations

import ast
import pydoc
import re
import subprocess
import sys
from pathlib import Path

import pytest

import aiohttp_upgrade
from aiohttp_upgrade import CloseCode, Server, ServerWebSocket, WebSocketHandler

REPO_ROOT = Path(__file__).resolve().parent.parent

DOCUMENTED = {
    ServerWebSocket: {
        "close",
        "cork",
        "data",
        "get_buffered_amount",
        "is_subscribed",
        "ping",
        "pong",
        "publish",
        "publish_binary",
        "publish_text",
        "ready_state",
        "remote_address",
        "send",
        "send_binary",
        "send_text",
        "subprotocol",
        "subscribe",
        "subscriptions",
        "terminate",
        "track",
        "unsubscribe",
        "untrack",
        "update_presence",
    },
    Server: {
        "cluster_subscriber_count",
        "deliver",
        "handler",
        "local_counts",
        "metrics",
        "pending_websockets",
        "publish",
        "setup",
        "shutdown",
        "shutting_down",
        "subscriber_count",
        "subscribers",
        "upgrade",
    },
    WebSocketHandler: {
        "backpressure_limit",
        "close",
        "close_on_backpressure_limit",
        "drain",
        "dropped",
        "error",
        "idle_timeout",
        "max_payload_length",
        "message",
        "open",
        "per_message_deflate",
        "ping",
        "pong",
        "publish_to_self",
        "rate_limit",
        "rate_limited",
        "reset_idle_timeout_on_send",
        "send_pings",
        "server",
        "subscription",
        "close_timeout",
        "shutdown_timeout",
        "max_lifetime",
        "ping_interval",
        "shutdown_drain",
        "max_presence_meta_length",
        "presence",
    },
}
"""The names README "The API" documents for each class."""

INTERNALS = ["run", "flush", "idle_tick", "parser", "publish_frame", "forget"]
INTERNALS += ["flusher", "topics", "hooks"]
_PLUMBING = {"__class_getitem__", "__orig_bases__", "__parameters__", "__weakref__"}
_PLUMBING.add("__getattr__")  # hints for Bun's camelCase names (_bun_names)


def shown_by_help(cls: type) -> set[str]:
    """The attribute names ``help(cls)`` lists, minus what every class has."""
    inherited = set(dir(object)) | _PLUMBING | {"__dict__", "__module__", "__slots__"}
    inherited |= {"__annotations__", "__init_subclass__"}
    return {
        name
        for name in dir(cls)
        if pydoc.visiblename(name, obj=cls) and name not in inherited
    }


@pytest.mark.parametrize("cls", list(DOCUMENTED), ids=lambda cls: cls.__name__)
def test_help_shows_the_documented_api_only(cls: type) -> None:
    """help() of each public class lists exactly its documented names, no internals."""
    shown = shown_by_help(cls)
    assert shown == DOCUMENTED[cls]
    text = pydoc.render_doc(cls, renderer=pydoc.TextDoc())
    for name in INTERNALS:
        assert f" {name}(" not in text
    assert not any(name.startswith(("feed_", "on_")) for name in shown)


# Run first by run_without_aiohttp: any import of aiohttp fails, and the package is
# an empty module so that its __init__ (which imports aiohttp) does not run.
BLOCK_AIOHTTP = f"""
import importlib, importlib.abc, sys, types

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "aiohttp" or name.startswith("aiohttp."):
            raise ImportError("aiohttp is blocked in this test")
        return None

sys.meta_path.insert(0, Block())
sys.modules["aiohttp_upgrade"] = package = types.ModuleType("aiohttp_upgrade")
package.__path__ = ["{REPO_ROOT / "aiohttp_upgrade"}"]
"""


def run_without_aiohttp(script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a new Python where importing aiohttp fails."""
    return subprocess.run(
        [sys.executable, "-c", BLOCK_AIOHTTP + script],
        capture_output=True,
        text=True,
        check=False,
    )


PURE_MODULES = ["_frames", "_parser", "_topics", "_handshake", "_options", "_deflate"]
PURE_MODULES += ["_closecode", "_outbox", "_dispatcher", "_protocol"]
PURE_MODULES += ["_bun_names"]
PURE_MODULES += ["_deflate_modes", "_zstreams", "_payloads", "_sinks"]


@pytest.mark.parametrize("module", PURE_MODULES, ids=PURE_MODULES)
def test_pure_module_imports_without_aiohttp(module: str) -> None:
    """The module imports, and works, in a process where importing aiohttp fails."""
    result = run_without_aiohttp(f"""
importlib.import_module("aiohttp_upgrade.{module}")
assert not any(name.startswith("aiohttp.") or name == "aiohttp" for name in sys.modules)
print("ok")
""")
    assert result.stdout.strip() == "ok", result.stderr


def test_the_parser_works_without_aiohttp() -> None:
    """With aiohttp blocked the parser unmasks with its pure-Python XOR."""
    result = run_without_aiohttp("""
parser = importlib.import_module("aiohttp_upgrade._parser")
frames = importlib.import_module("aiohttp_upgrade._frames")

class Sink:
    def on_message(self, message): print(message)
    on_ping = on_pong = on_close = on_protocol_error = print

frame = bytes([0x81, 0x80 | 5]) + b"\\x01\\x02\\x03\\x04" + frames.unmask(b"hello", b"\\x01\\x02\\x03\\x04")
parser.FrameParser(Sink(), 100).feed(frame)
""")
    assert result.stdout.strip() == "hello", result.stderr


def test_close_codes_are_defined_once() -> None:
    """No module but closecode.py assigns a close-code number to a name."""
    # A name like GOING_AWAY or INTERNAL_ERROR bound to a number 1000-1015.
    constant = re.compile(
        r"^\s*_?[A-Z_]*(CLOSURE|AWAY|ERROR|STATUS|BIG|PAYLOAD|POLICY|UNSUPPORTED)"
        r"[A-Z_]*\s*(:\s*Final)?\s*=\s*10(0\d|1[0-5])\b"
    )
    offenders = []
    for path in sorted((REPO_ROOT / "aiohttp_upgrade").glob("*.py")):
        if path.name == "_closecode.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if constant.match(line):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert offenders == []
    assert aiohttp_upgrade.CloseCode is CloseCode
    assert int(CloseCode.GOING_AWAY) == 1001


PACKAGE_MODULES = sorted((REPO_ROOT / "aiohttp_upgrade").rglob("*.py"))
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


@pytest.mark.parametrize(
    "path",
    PACKAGE_MODULES,
    ids=lambda path: str(path.relative_to(REPO_ROOT / "aiohttp_upgrade")),
)
def test_modules_and_functions_stay_small(path: Path) -> None:
    """Every module of the package is at most 400 lines and every function at most 60."""
    source = path.read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            assert node.end_lineno - node.lineno < MAX_FUNCTION_LINES, node.name


def test_no_private_member_of_another_object_outside_compat() -> None:
    """The package reads no private member of another object (ruff's SLF001),
    except in the two modules that isolate aiohttp's and redis-py's internals."""
    ruff = Path(sys.executable).parent / "ruff"
    result = subprocess.run(
        [ruff, "check", "--no-cache", "--select", "SLF001", "aiohttp_upgrade"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout
    ignores = (REPO_ROOT / "pyproject.toml").read_text()
    exempt = re.findall(r'^"(aiohttp_upgrade/[^"]+)" = \["SLF001"\]', ignores, re.M)
    assert sorted(exempt) == [
        "aiohttp_upgrade/_compat.py",
        "aiohttp_upgrade/_redis/_compat.py",
    ]
