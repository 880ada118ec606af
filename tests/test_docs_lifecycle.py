"""docs/lifecycle.rst and the Bun page cover the lifecycle options and names."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIFECYCLE_RST = ROOT / "docs" / "lifecycle.rst"
BUN_RST = ROOT / "docs" / "bun.rst"

NEW_OPTIONS = ["max_lifetime", "ping_interval", "shutdown_drain"]
BUN_NAMES = ["readyState", "sendText", "isSubscribed", "subscriberCount"]
BUN_NAMES += ["pendingWebSockets", "maxLifetime", "stop(true)", "Retry-After"]


def _flat(path: Path) -> str:
    return " ".join(path.read_text(encoding="utf-8").split())


@pytest.mark.parametrize("option", NEW_OPTIONS)
def test_each_lifecycle_option_has_a_section(option: str) -> None:
    """docs/lifecycle.rst has a section titled with each lifecycle option."""
    lines = LIFECYCLE_RST.read_text(encoding="utf-8").splitlines()
    assert any(
        line.endswith(f"``{option}``") and lines[index + 1].startswith("---")
        for index, line in enumerate(lines[:-1])
    )


@pytest.mark.parametrize("name", BUN_NAMES)
def test_bun_page_names_each_lifecycle_row(name: str) -> None:
    """The Bun page mentions each Bun name of the lifecycle rows."""
    assert name in _flat(BUN_RST)


def test_bun_page_says_what_stop_and_stop_true_do() -> None:
    """The stop() row says Bun's stop() waits for open connections and stop(true)
    closes them now, and names our equivalents."""
    text = _flat(BUN_RST)
    section = text[text.index("Counting sockets and shutting down") :]
    section = section[: section.index("Bun names with no equivalent")]
    assert "the last connection has closed" in section
    assert "closes every open connection now" in section
    assert "shutdown_drain" in section and "shutting_down" in section
