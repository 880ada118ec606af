"""Sphinx configuration: ``make docs`` builds docs/_build/html with warnings as errors."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The reference documents the Python sources, whatever is built: the compiled
# twins would show their own module names (``_hub_c``) in signatures.
os.environ["AIOHTTP_UPGRADE_NO_EXTENSIONS"] = "1"

import aiohttp_upgrade  # noqa: E402

project = "aiohttp-upgrade"
author = "the aiohttp-upgrade authors"
copyright = "2026, the aiohttp-upgrade authors"
release = aiohttp_upgrade.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

exclude_patterns = ["_build"]
nitpicky = True
# The build is offline (no intersphinx): names from the standard library, aiohttp
# and its dependencies are shown but not linked.
nitpick_ignore_regex = [
    ("py:.*", r"(aiohttp|yarl|multidict|redis|asyncio|collections|typing|enum)\..*"),
    # What a broker may call on its server: an internal Protocol.
    ("py:class", r"aiohttp_upgrade\._broker\.BrokerHost"),
    # The history's internals in the signatures of its hub-facing methods.
    ("py:class", r"aiohttp_upgrade\._(positions\.Policy|history\.Track)"),
    ("py:class", r"(aiohttp_upgrade\._\w+\.)?(SocketPort|RemoteBackend|Backend)"),
    ("py:.*", r"web\.(Request|BaseRequest|Application|StreamResponse|AppKey)"),
    ("py:class", r"(Awaitable|Callable|Iterable|Mapping|Any|Headers)"),
    # Type variables: DataT is the type of ``ws.data``; T a callback's result.
    ("py:class", r"(aiohttp_upgrade\.\w+\.)?(DataT|_?T)"),
    ("py:class", r"(int|str|bytes|bytearray|memoryview|bool|float|None|object)"),
    ("py:(class|exc)", r"(BaseException|Exception|ValueError|TypeError)"),
]

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "furo"
html_title = f"aiohttp-upgrade {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
