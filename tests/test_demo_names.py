"""Display names: lookalikes share one key, mixed scripts are refused (pure)."""

from __future__ import annotations

import pytest

from demo.names import NameRefused, clean_name, name_key, scripts_of

CYRILLIC_A = "\u0430"
FULLWIDTH_ADA = "\uff21\uff24\uff21"


@pytest.mark.parametrize(
    "name",
    ["ada", "ADA", "Ada", FULLWIDTH_ADA, "\uff41da"],
    ids=["lower", "upper", "title", "fullwidth", "fullwidth-a"],
)
def test_lookalikes_share_one_key(name: str) -> None:
    """Case and compatibility forms of a name have the key of ``ada``."""
    assert name_key(clean_name(name)) == name_key("ada")


def test_fullwidth_name_is_shown_in_plain_letters() -> None:
    """A fullwidth name is stored as its NFKC form."""
    assert clean_name(FULLWIDTH_ADA) == "ADA"


@pytest.mark.parametrize(
    "name",
    [f"{CYRILLIC_A}da", "p\u0430ypal", "\u0391da", "ada\u0663"],
    ids=["cyrillic-a", "cyrillic-inside", "greek-alpha", "arabic-digit"],
)
def test_mixed_scripts_are_refused(name: str) -> None:
    """A name mixing Latin with Cyrillic, Greek or Arabic digits is refused."""
    with pytest.raises(NameRefused) as info:
        clean_name(name)
    assert info.value.code == "script"


@pytest.mark.parametrize(
    "name",
    [
        "Ada Lovelace",
        "Jos\u00e9",
        "\u0410\u043d\u043d\u0430",
        "\u5c71\u7530\u305f\u308d\u3046",
        "\ud55c\uad6d\u4eba",
        "r2-d2_x.y",
    ],
    ids=["latin", "accent", "cyrillic", "han-hiragana", "hangul-han", "punctuation"],
)
def test_single_script_names_are_accepted(name: str) -> None:
    """Names in one script (or Japanese/Korean mixes of Han) are accepted as is."""
    assert clean_name(name) == name


def test_combining_accent_is_composed() -> None:
    """An e with a combining accent becomes the precomposed letter."""
    assert clean_name("Jose\u0301") == "Jos\u00e9"


def test_inner_spaces_are_collapsed() -> None:
    """Runs of spaces become one, so ``a  b`` cannot pose as ``a b``."""
    assert clean_name("  ada   lovelace ") == "ada lovelace"


@pytest.mark.parametrize(
    "name",
    ["", "   ", "x" * 25, "<b>", "a\u200bb"],
    ids=["empty", "blank", "long", "tag", "zwsp"],
)
def test_bad_shapes_are_refused(name: str) -> None:
    """Empty, long, markup and invisible characters are refused with code 'name'."""
    with pytest.raises(NameRefused) as info:
        clean_name(name)
    assert info.value.code == "name"


def test_scripts_of_ignores_digits_and_punctuation() -> None:
    """ASCII digits, spaces and ``_.-`` belong to no script."""
    assert scripts_of("ada_2 .-") == {"LATIN"}
    assert scripts_of("42") == set()
