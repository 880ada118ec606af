"""Compiled or pure Python: the one place that picks the hot path's implementation.

The hot-path modules (:data:`MODULES`) are plain Python, the reference
implementation. A build with Cython and a C compiler also makes a compiled twin
of each from the same source and a ``.pxd`` of C declarations
(``aiohttp_upgrade._frames`` -> ``aiohttp_upgrade._frames_c``; ``setup.py``).
Imported first by the package's ``__init__``, this module puts the twin's public
names (its ``__all__``) in place of the pure module's, before any other module
imports them: ``from ._parser import FrameParser`` anywhere in the package, the
tests included, then gets the compiled class.

A non-empty ``AIOHTTP_UPGRADE_NO_EXTENSIONS`` (or aiohttp's
``AIOHTTP_NO_EXTENSIONS``) in the environment forces pure Python; so does a
missing twin (a build without a compiler). :data:`COMPILED` says which it is.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import warnings
from typing import Final

__all__ = ["COMPILED", "MODULES", "NO_EXTENSIONS"]

MODULES: Final = (
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
"""The modules with a compiled twin, in dependency order (each twin imports the
ones before it, already swapped)."""

NO_EXTENSIONS: Final = bool(
    os.environ.get("AIOHTTP_UPGRADE_NO_EXTENSIONS")
    or os.environ.get("AIOHTTP_NO_EXTENSIONS")
)
"""True when the environment forces pure Python."""


def _use_compiled() -> bool:
    """Swap in every twin, in order; False if one is not built (nothing swapped)
    or was built from another source (a warning; the twins before it swapped)."""
    package = __name__.rpartition(".")[0]
    here = os.path.dirname(os.path.abspath(__file__))
    for name in MODULES:
        spec = importlib.util.find_spec(f"{package}.{name}_c")
        # Only a twin beside this package's own sources: not one that another
        # finder (an editable install of another checkout) finds elsewhere.
        if spec is None or spec.origin is None or os.path.dirname(spec.origin) != here:
            return False  # a build without a compiler, or a copy of the sources
    for name in MODULES:
        twin = importlib.import_module(f"{package}.{name}_c")
        if twin.__source_sha256__ != _digest(twin.__file__, name):
            # The ones before it stay swapped: each twin is its pure module's equal.
            warnings.warn(
                f"{twin.__name__} was built from another {name}.py; using pure"
                " Python (rebuild: python setup.py build_ext --inplace)",
                RuntimeWarning,
                stacklevel=1,
            )
            return False
        pure = importlib.import_module(f"{package}.{name}")
        for attr in twin.__all__:
            setattr(pure, attr, getattr(twin, attr))
    return True


def _digest(twin_file: str | None, name: str) -> str:
    """The SHA-256 of the pure module's source beside ``twin_file``."""
    assert twin_file is not None  # an extension module has a file
    source = os.path.join(os.path.dirname(twin_file), f"{name}.py")
    with open(source, "rb") as file:
        return hashlib.sha256(file.read()).hexdigest()


COMPILED: Final = False if NO_EXTENSIONS else _use_compiled()
"""True when the compiled twins are in use, False when the package runs pure Python."""
