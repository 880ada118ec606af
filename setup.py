"""The optional C extensions of the hot path (metadata is in setup.cfg).

Each module of ``MODULES`` gets a compiled twin, ``aiohttp_upgrade.<name>_c``,
built by Cython from the same ``.py`` (copied to ``build/cython/``, as aiohttp
links ``reader_c.py`` to ``reader_py.py``) with the C declarations of
``aiohttp_upgrade/<name>.pxd``. Without Cython or a working C compiler, or with
``AIOHTTP_UPGRADE_NO_EXTENSIONS`` set, the build prints one line and installs
pure Python (``aiohttp_upgrade/_speedups.py`` picks what is there at import);
``AIOHTTP_UPGRADE_REQUIRE_EXTENSIONS`` makes a failure fail the build instead.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
PACKAGE = "aiohttp_upgrade"
# As _speedups.MODULES: each twin imports the ones before it.
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
# C-only twins of pure helpers: .pxd of inline functions that twins cimport.
HEADERS = ("_cbuffers", "_csendring", "_csyscalls")
GENERATED = Path("build") / "cython"
# What setuptools raises when there is no working C compiler.
COMPILER_ERRORS = ("CompileError", "LinkError", "CCompilerError")
COMPILER_ERRORS += ("DistutilsPlatformError", "DistutilsExecError")
COMPILE_ARGS = [] if os.name == "nt" else ["-g0"]
DIRECTIVES = {
    "language_level": "3",
    # Types come from the .pxd only: an annotation such as ``payload: bytes`` would
    # make Cython reject a bytearray that the pure module accepts.
    "annotation_typing": False,
    # No boundscheck/wraparound/cdivision: they change what indexing and division
    # do, and the twins must behave as the .py.
}


def fallback(reason: str) -> None:
    print(
        f"aiohttp-upgrade: C extensions not built ({reason}); using pure Python",
        file=sys.stderr,
    )


def copy_if_changed(source: Path, target: Path) -> None:
    """Copy, keeping the target's mtime when nothing changed (no needless rebuild).

    A module's copy ends with the digest of its source, which _speedups compares
    with the .py beside the twin: a twin left from an older source is not used.
    """
    text = source.read_bytes()
    if source.suffix == ".py":
        digest = hashlib.sha256(text).hexdigest()
        text += f"\n__source_sha256__ = {digest!r}\n".encode()
    if not target.exists() or target.read_bytes() != text:
        target.write_bytes(text)


class BuildExt(build_ext):
    """Cythonize the twins at build time; any failure falls back to pure Python."""

    def run(self) -> None:
        if os.environ.get("AIOHTTP_UPGRADE_NO_EXTENSIONS"):
            fallback("AIOHTTP_UPGRADE_NO_EXTENSIONS is set")
            return
        try:
            from Cython.Build import cythonize
        except ImportError:
            if os.environ.get("AIOHTTP_UPGRADE_REQUIRE_EXTENSIONS"):
                raise
            fallback("Cython is not installed")
            return
        try:
            generated = cythonize(
                self.twins(),
                compiler_directives=DIRECTIVES,
                annotate=bool(os.environ.get("CYTHON_ANNOTATE")),
                quiet=True,
            )
            # The C sources into setup()'s Extensions, which setuptools prepared.
            sources = {e.name: e.sources for e in generated}
            for extension in self.extensions:
                extension.sources = sources[extension.name]
            super().run()
        except Exception as exc:  # no compiler (CC=false), a failing one, ...
            if os.environ.get("AIOHTTP_UPGRADE_REQUIRE_EXTENSIONS"):
                raise  # make build-ext: a .pxd that no longer fits fails the build
            kind = type(exc).__name__
            if type(exc).__module__.startswith("Cython"):
                fallback(f"Cython failed: {kind}")  # its messages are above
            elif kind in COMPILER_ERRORS:
                fallback(f"the C compiler failed: {kind}")  # its output is above
            else:
                detail = f"{kind}: {exc}".splitlines()[0]
                fallback(detail if len(detail) < 80 else detail[:77] + "...")

    def twins(self) -> list[Extension]:
        """Write build/cython/aiohttp_upgrade/<name>_c.py/.pxd; their Extensions."""
        package = ROOT / GENERATED / PACKAGE
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").touch()  # so that Cython names the package
        extensions = []
        for name in HEADERS:
            copy_if_changed(ROOT / PACKAGE / f"{name}.pxd", package / f"{name}.pxd")
        for name in MODULES:
            copy_if_changed(ROOT / PACKAGE / f"{name}.py", package / f"{name}_c.py")
            declarations = ROOT / PACKAGE / f"{name}.pxd"  # none: compiled as is
            if declarations.exists():
                copy_if_changed(declarations, package / f"{name}_c.pxd")
            extensions.append(
                Extension(
                    f"{PACKAGE}.{name}_c", [str(GENERATED / PACKAGE / f"{name}_c.py")]
                )
            )
        return extensions


setup(
    # Sources filled in by BuildExt; no debug symbols (a quarter of the size).
    ext_modules=[
        Extension(f"{PACKAGE}.{name}_c", [], extra_compile_args=COMPILE_ARGS)
        for name in MODULES
    ],
    cmdclass={"build_ext": BuildExt},
)
