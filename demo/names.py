"""Display names: the allowed shape, the key that makes lookalikes one name, and
a refusal of names that mix scripts (pure, no I/O).

``ADA`` in fullwidth letters (U+FF21 U+FF24 U+FF21), ``ADA`` and ``ada`` are one
name: names are compared by their :func:`name_key`, NFKC then case-folded
(Unicode's ``NFKC_Casefold`` in spirit). ``ada`` spelt with a Cyrillic ``a``
(U+0430) is not made equal to anything: it mixes two scripts, so it is refused. The script of a character is read from the first
word of its Unicode name (``CYRILLIC SMALL LETTER A``), which is enough for a
demo and needs no dependency; a real deployment would use Unicode's confusables
data (UTS #39).
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["NAME_PATTERN", "NameRefused", "clean_name", "name_key", "scripts_of"]

NAME_PATTERN = re.compile(r"[\w .-]{1,24}")

# Scripts that one name may combine: Japanese writes Han with kana, Korean
# Hangul with Han.
_COMPATIBLE = (
    frozenset({"HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"HAN", "HANGUL"}),
)
# First words of Unicode names that are not a script's name.
_ALIASES = {"CJK": "HAN", "ARABIC-INDIC": "ARABIC", "EXTENDED": "ARABIC"}


class NameRefused(ValueError):
    """A name the chat does not accept; ``code`` goes into the ``?error=`` of the
    sign-in page."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def scripts_of(name: str) -> set[str]:
    """The scripts of ``name``'s letters, digits and marks, such as ``{"LATIN"}``.

    ASCII digits, spaces, ``_``, ``.``, ``-`` and combining marks belong to no
    script and are left out.
    """
    scripts: set[str] = set()
    for char in name:
        if char.isascii() and not char.isalpha():
            continue
        category = unicodedata.category(char)
        if category[0] not in "LMN":
            continue
        word = unicodedata.name(char, "UNKNOWN").split(" ", 1)[0]
        if word == "COMBINING":
            continue
        scripts.add(_ALIASES.get(word, word))
    return scripts


def clean_name(raw: str) -> str:
    """The name to show for what a user typed: NFKC-normalised, trimmed, with
    inner runs of spaces made one.

    Raises:
        NameRefused: ``code="name"`` when it is empty, longer than 24
            characters or holds characters besides letters, digits, spaces,
            ``_``, ``.`` and ``-``; ``code="script"`` when it mixes scripts.
    """
    name = " ".join(unicodedata.normalize("NFKC", raw).split())
    if not NAME_PATTERN.fullmatch(name):
        raise NameRefused(
            "name", "use 1 to 24 letters, digits, spaces, '_', '.' or '-'"
        )
    scripts = scripts_of(name)
    if len(scripts) > 1 and not any(scripts <= ok for ok in _COMPATIBLE):
        raise NameRefused(
            "script", "a name may not mix scripts: " + ", ".join(sorted(scripts))
        )
    return name


def name_key(name: str) -> str:
    """The key under which ``name`` is unique: equal for names that only differ
    by case or by compatibility forms (fullwidth ``ADA``, ``Ada``, ``ada``)."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
