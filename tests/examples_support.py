"""Load the files in ``examples/`` (which the docs include verbatim) as modules."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

__all__ = ["EXAMPLES", "load_example"]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Execute ``examples/<name>.py`` as a fresh module (registered for dataclasses)."""
    path = EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module
