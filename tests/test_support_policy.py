"""The aiohttp versions setup.cfg admits are the ones CI tests, and the docs say so.

The take-over reads aiohttp internals (``aiohttp_upgrade/_compat.py``) and refuses
to import on an aiohttp that changed them, so an open upper bound would turn the
next aiohttp minor release into an ``ImportError`` for every ``pip install -U``.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def _aiohttp_requirement() -> Requirement:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options"]["install_requires"].split("\n")
    (line,) = [line for line in lines if line.strip().startswith("aiohttp")]
    return Requirement(line.strip())


def _tested_versions() -> list[Version]:
    makefile = (ROOT / "Makefile").read_text()
    match = re.search(r"^MATRIX_AIOHTTP \?= (.+)$", makefile, re.MULTILINE)
    assert match, "the Makefile names the aiohttp versions of the matrix"
    return sorted(Version(v) for v in match.group(1).split())


def test_setup_cfg_admits_only_the_minor_release_ci_tests() -> None:
    """No aiohttp minor release newer than the newest tested one is admitted."""
    requirement = _aiohttp_requirement()
    newest = _tested_versions()[-1]
    next_minor = Version(f"{newest.major}.{newest.minor + 1}.0")
    assert newest in requirement.specifier
    assert next_minor not in requirement.specifier
    assert not requirement.specifier.contains(f"{next_minor}rc1", prereleases=True)


def test_setup_cfg_floor_is_the_oldest_tested_release() -> None:
    """The oldest aiohttp admitted is the oldest the matrix runs."""
    requirement = _aiohttp_requirement()
    oldest = _tested_versions()[0]
    assert oldest in requirement.specifier
    below = Version(f"{oldest.major}.{oldest.minor}.{oldest.micro - 1}")
    assert below not in requirement.specifier


def test_the_docs_state_the_supported_range() -> None:
    """README and the docs' front page name the range setup.cfg admits."""
    tested = _tested_versions()
    newest = tested[-1]
    wording = f"aiohttp {tested[0]} or a later {newest.major}.{newest.minor}.x"
    for page in ("README.rst", "docs/index.rst"):
        text = " ".join((ROOT / page).read_text().split())
        assert wording in text, page
