"""The selector of the hot path's implementation: compiled twins when built, pure
Python when forced by the environment (aiohttp_upgrade/_speedups.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
FORCE_PURE = ("AIOHTTP_UPGRADE_NO_EXTENSIONS", "AIOHTTP_NO_EXTENSIONS")
MODULES = (
    "_counters",
    "_frames",
    "_parser",
    "_sendbatch",
    "_tcp",
    "_poller",
    "_outbox",
    "_hub",
    "_dispatcher",
    "_reads",
    "_connection",
)


REPORT = """
import json, aiohttp_upgrade
from aiohttp_upgrade import _speedups, _frames, _parser, _outbox, _hub
from aiohttp_upgrade import _dispatcher, _reads, _tcp, _connection, _counters
from aiohttp_upgrade import _poller, _sendbatch
probes = {"_counters": _counters.Counters, "_frames": _frames.build_frame, "_parser": _parser.FrameParser,
          "_sendbatch": _sendbatch.SendBatch, "_poller": _poller.Poller,
          "_outbox": _outbox.Outbox, "_hub": _hub.Hub,
          "_dispatcher": _dispatcher.Dispatcher, "_reads": _reads.ProtocolAdapter,
          "_tcp": _tcp.SocketTransport, "_connection": _connection.Connection}
print(json.dumps({"compiled": _speedups.COMPILED,
                  "modules": {k: v.__module__ for k, v in probes.items()}}))
"""


def built() -> bool:
    """True when every compiled twin is built for this Python (importable)."""
    return all(
        importlib.util.find_spec(f"aiohttp_upgrade.{name}_c") is not None
        for name in MODULES
    )


def report(**env: str) -> dict[str, object]:
    """What a fresh interpreter with ``env`` (and no forcing variable unless
    given) imports: COMPILED and the module of each probe."""
    clean = {k: v for k, v in os.environ.items() if k not in FORCE_PURE}
    clean["PYTHONPATH"] = str(REPO_ROOT)
    result = subprocess.run(
        [sys.executable, "-c", REPORT],
        env=clean | env,
        capture_output=True,
        text=True,
        check=True,
    )
    data: dict[str, object] = json.loads(result.stdout)
    return data


@pytest.mark.parametrize("variable", FORCE_PURE, ids=FORCE_PURE)
def test_the_environment_forces_pure_python(variable: str) -> None:
    """With the variable set the package imports its pure-Python modules."""
    assert report(**{variable: "1"}) == {
        "compiled": False,
        "modules": {name: f"aiohttp_upgrade.{name}" for name in MODULES},
    }


@pytest.mark.skipif(not built(), reason="the C extensions are not built")
def test_the_compiled_twins_are_in_use_when_built() -> None:
    """Built and not forced, every hot-path module's names are its compiled twin's."""
    assert report() == {
        "compiled": True,
        "modules": {name: f"aiohttp_upgrade.{name}_c" for name in MODULES},
    }


@pytest.mark.skipif(not built(), reason="the C extensions are not built")
def test_the_compiled_fan_out_sees_the_compiled_outbox() -> None:
    """The fan-out's C call to a socket's outbox is taken for the compiled Outbox
    only (``type(outbox) is Outbox`` in ``_hub``): both must be the same class."""
    code = (
        "import aiohttp_upgrade, aiohttp_upgrade._hub_c as hub, "
        "aiohttp_upgrade._outbox_c as outbox; print(hub.Outbox is outbox.Outbox)"
    )
    clean = {k: v for k, v in os.environ.items() if k not in FORCE_PURE}
    clean["PYTHONPATH"] = str(REPO_ROOT)
    result = subprocess.run(
        [sys.executable, "-c", code], env=clean, capture_output=True, text=True
    )
    assert result.stdout.strip() == "True", result.stderr


def test_a_missing_twin_means_pure_python(tmp_path: Path) -> None:
    """A package with its compiled twins missing (no compiler) runs pure Python."""
    copy = tmp_path / "aiohttp_upgrade"
    copy.mkdir()
    for source in (REPO_ROOT / "aiohttp_upgrade").rglob("*.py"):
        target = copy / source.relative_to(REPO_ROOT / "aiohttp_upgrade")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
    clean = {k: v for k, v in os.environ.items() if k not in FORCE_PURE}
    clean["PYTHONPATH"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", REPORT],
        env=clean,
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert json.loads(result.stdout)["compiled"] is False


@pytest.mark.skipif(not built(), reason="the C extensions are not built")
def test_a_twin_built_from_another_source_is_not_used(tmp_path: Path) -> None:
    """A twin whose .py changed since the build (a stale in-place build) is not
    used: pure Python runs, with a warning that says to rebuild."""
    copy = tmp_path / "aiohttp_upgrade"
    shutil.copytree(REPO_ROOT / "aiohttp_upgrade", copy)
    with (copy / "_hub.py").open("a") as source:
        source.write("# changed after the build\n")
    clean = {k: v for k, v in os.environ.items() if k not in FORCE_PURE}
    clean["PYTHONPATH"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", REPORT],
        env=clean,
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert json.loads(result.stdout)["compiled"] is False
    assert "_hub_c was built from another _hub.py" in result.stderr
