"""The public API's types, proven by running mypy --strict on annotated snippets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")

HERE = Path(__file__).parent
ROOT = HERE.parent
SNIPPETS = sorted((HERE / "typing_snippets").glob("*.py"))
MARK = re.compile(r"#\s*([ER]):\s*(.+?)\s*$")
OUTPUT = re.compile(
    r"^(?P<file>[^:]+):(?P<line>\d+): (?P<kind>error|note): (?P<text>.*)$"
)


def expected(path: Path) -> set[tuple[int, str, str]]:
    """The (line, kind, value) marks of a snippet: E for an error code, R for a revealed type."""
    marks = set()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = MARK.search(line)
        if match:
            marks.add((number, match[1], match[2]))
    return marks


def found(path: Path, output: str) -> set[tuple[int, str, str]]:
    """The (line, kind, value) mypy reported for ``path``."""
    marks = set()
    for line in output.splitlines():
        match = OUTPUT.match(line)
        if not match or Path(match["file"]).name != path.name:
            continue
        text = match["text"]
        if match["kind"] == "error":
            code = re.search(r"\[([a-z-]+)\]$", text)
            marks.add((int(match["line"]), "E", code[1] if code else text))
        elif text.startswith("Revealed type is "):
            revealed = text.removeprefix("Revealed type is ").strip('"')
            revealed = revealed.replace("tests.typing_snippets.", "")
            marks.add((int(match["line"]), "R", revealed))
    return marks


@pytest.mark.parametrize("path", SNIPPETS, ids=[p.stem for p in SNIPPETS])
def test_snippet_types_as_marked(path: Path) -> None:
    """mypy --strict reports exactly the errors and revealed types a snippet marks."""
    stdout, stderr, _ = mypy_api.run(
        [
            "--strict",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(ROOT / ".mypy_cache" / "snippets"),
            "--hide-error-context",
            "--no-error-summary",
            "--show-error-codes",
            str(path),
        ]
    )
    assert not stderr, stderr
    assert found(path, stdout) == expected(path), stdout
