"""The API reference (``docs/api.rst``) covers the whole public surface.

The reference is read as text: a name counts as documented when an autodoc
directive names it (``.. autoclass:: Server`` with ``:members: ...``) or an
explicit entry does (``.. attribute:: handshake_timeout`` inside the class's
directive, or ``.. attribute:: Server.handshake_timeout`` anywhere).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import aiohttp_upgrade
from aiohttp_upgrade import (
    BrokerUnavailableError,
    HistoryUnavailable,
    InvalidOptionError,
    InvalidStateError,
    LocalBroker,
    PerMessageDeflate,
    Position,
    ProtocolError,
    RateLimit,
    RedisBroker,
    Resumed,
    Server,
    TokenBucket,
    WebSocketError,
    WebSocketHandler,
)
from aiohttp_upgrade._hooks import HOOK_NAMES

API_RST = Path(__file__).resolve().parent.parent / "docs" / "api.rst"

PUBLIC_NAMES = sorted([*aiohttp_upgrade.__all__, "RedisBroker"])
"""``__all__``, plus ``RedisBroker`` (public, but imported lazily: extra ``redis``)."""

SAMPLES: dict[str, Callable[[], object]] = {
    "Server": lambda: Server(WebSocketHandler()),
    "WebSocketHandler": WebSocketHandler,
    "LocalBroker": LocalBroker,
    "RedisBroker": lambda: RedisBroker("redis://127.0.0.1:1/0"),  # never connects
    "PerMessageDeflate": PerMessageDeflate,
    "RateLimit": lambda: RateLimit(frames_per_second=1),
    "TokenBucket": lambda: TokenBucket(1.0, 1),
    "WebSocketError": lambda: WebSocketError("x"),
    "InvalidOptionError": lambda: InvalidOptionError("idle_timeout", "x"),
    "InvalidStateError": lambda: InvalidStateError("x"),
    "BrokerUnavailableError": lambda: BrokerUnavailableError("x"),
    "ProtocolError": lambda: ProtocolError(1002, "x"),
    "History": lambda: Server(WebSocketHandler()).history,
    "Position": lambda: Position("ab", 1),
    "Resumed": lambda: Resumed(True, None),
    "HistoryUnavailable": lambda: HistoryUnavailable("x"),
}
"""An instance of each exported class, to find the attributes ``__init__`` sets."""

WITHOUT_SAMPLE = {
    "Broker": "abstract; its subclasses have samples",
    "CloseCode": "an enum: its members are class attributes",
    "ReadyState": "an enum: its members are class attributes",
    "ServerWebSocket": "made by the server only; its attributes are __slots__",
    "Metrics": "made by server.metrics() only; its fields are __slots__",
    "Presence": "made by the server only (server.presence); __slots__",
}

_DIRECTIVE = re.compile(
    r"^(?P<indent> *)\.\. (?:py:)?(?P<kind>[a-z]+)::[ ]*(?P<signature>.*)$"
)
_OPTION = re.compile(r"^ *:(?P<name>[a-z-]+):(?P<value>.*)$")
_NAME = re.compile(r"[A-Za-z_][\w.]*")
_CLASS_KINDS = {"autoclass", "autoexception", "class", "exception"}
_TOP_KINDS = {"autodata", "autofunction", "data", "function"}
_MEMBER_KINDS = {
    "attribute",
    "method",
    "property",
    "autoattribute",
    "automethod",
    "autoproperty",
}


@dataclass
class Documented:
    """What the reference says about one class."""

    members: set[str] = field(default_factory=set)
    all_members: bool = False  # a bare ``:members:``
    undoc_members: bool = False


@dataclass
class Reference:
    """The names ``docs/api.rst`` documents."""

    names: set[str] = field(default_factory=set)
    classes: dict[str, Documented] = field(default_factory=dict)

    def documents(self, cls: type, member: str) -> bool:
        """Whether ``cls.member`` is documented, on ``cls`` or on a documented base
        it inherits (or overrides) the member from."""
        for klass in cls.__mro__:
            entry = self.classes.get(klass.__name__)
            # Instance attributes are not in dir(cls); inherited ones are in dir(base).
            if entry is None or (klass is not cls and member not in dir(klass)):
                continue
            if member in entry.members or (entry.all_members and entry.undoc_members):
                return True
            value = inspect.getattr_static(klass, member, None)
            if entry.all_members and (
                inspect.isfunction(value) or isinstance(value, property)
            ):
                return bool(value.__doc__)
        return False


def _signatures(lines: list[str], index: int, indent: int) -> list[str]:
    """The signature of the directive on ``lines[index]`` and those continuing it
    on the next lines (``.. attribute:: a`` then ``               b``)."""
    match = _DIRECTIVE.match(lines[index])
    assert match is not None
    signatures = [match["signature"]]
    for line in lines[index + 1 :]:
        stripped = line.strip()
        if (
            not stripped
            or len(line) - len(line.lstrip()) <= indent
            or stripped.startswith((":", ".."))
        ):
            break
        signatures.append(stripped)
    return signatures


def parse_reference(text: str) -> Reference:
    """Read the documented names out of the reference's reStructuredText."""
    reference = Reference()
    lines = text.splitlines()
    context: list[tuple[int, str]] = []  # (indent, class name) of enclosing classes
    options_of: Documented | None = None  # the class directive whose options follow
    for index, line in enumerate(lines):
        option = _OPTION.match(line)
        if option is not None and options_of is not None:
            if option["name"] == "members":
                listed = [name.strip() for name in option["value"].split(",")]
                options_of.members.update(name for name in listed if name)
                options_of.all_members = not any(listed)
            elif option["name"] == "undoc-members":
                options_of.undoc_members = True
            continue
        directive = _DIRECTIVE.match(line)
        if directive is None:
            if line.strip():
                options_of = None
            continue
        options_of = None
        indent = len(directive["indent"])
        while context and context[-1][0] >= indent:
            context.pop()
        kind = directive["kind"]
        for signature in _signatures(lines, index, indent):
            name_match = _NAME.match(signature.removeprefix("async ").strip())
            if name_match is None:
                continue
            name = name_match.group()
            if kind in _CLASS_KINDS or kind in _TOP_KINDS:
                reference.names.add(name)
            if kind in _CLASS_KINDS:
                options_of = reference.classes.setdefault(name, Documented())
                context.append((indent, name))
            elif kind in _MEMBER_KINDS:
                owner, _, member = name.rpartition(".")
                if not owner and context:
                    owner = context[-1][1]
                if owner:
                    reference.classes.setdefault(owner, Documented()).members.add(
                        member
                    )
    return reference


REFERENCE = parse_reference(API_RST.read_text(encoding="utf-8"))


def _exported_classes() -> list[type]:
    return [
        value
        for name in PUBLIC_NAMES
        if inspect.isclass(value := getattr(aiohttp_upgrade, name))
    ]


def public_members(cls: type) -> set[str]:
    """The public methods and attributes of ``cls``: what the package's classes in
    its MRO define (not ``int``'s or ``Exception``'s), and what ``__init__`` sets."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass.__module__.startswith("aiohttp_upgrade"):
            names.update(vars(klass))
    sample = SAMPLES.get(cls.__name__)
    if sample is not None:
        names.update(getattr(sample(), "__dict__", {}))
    return {name for name in names if not name.startswith("_")}


MEMBERS = sorted(
    (cls.__name__, member)
    for cls in _exported_classes()
    for member in public_members(cls)
)


@pytest.mark.parametrize("name", PUBLIC_NAMES, ids=PUBLIC_NAMES)
def test_public_name_is_in_the_reference(name: str) -> None:
    """Each name in ``__all__`` (and ``RedisBroker``) has a directive in docs/api.rst."""
    assert name in REFERENCE.names, f"{name} is not in docs/api.rst"


@pytest.mark.parametrize(
    ("owner", "member"), MEMBERS, ids=[f"{owner}.{member}" for owner, member in MEMBERS]
)
def test_public_member_is_in_the_reference(owner: str, member: str) -> None:
    """Each public method and attribute of an exported class is documented in
    docs/api.rst, on the class or on the documented base it comes from."""
    documented = REFERENCE.documents(getattr(aiohttp_upgrade, owner), member)
    assert documented, f"{owner}.{member} is not in docs/api.rst"


@pytest.mark.parametrize("hook", HOOK_NAMES, ids=HOOK_NAMES)
def test_every_hook_is_in_the_reference(hook: str) -> None:
    """Each hook of the handler's hook table is documented on WebSocketHandler."""
    documented = REFERENCE.documents(WebSocketHandler, hook)
    assert documented, f"the {hook} hook is not in docs/api.rst"


def test_every_exported_class_is_sampled_or_says_why_not() -> None:
    """Each exported class has an instance to read attributes from, or a reason
    why its class attributes are all there is."""
    names = {cls.__name__ for cls in _exported_classes()}
    assert names == set(SAMPLES) | set(WITHOUT_SAMPLE)
    assert not set(SAMPLES) & set(WITHOUT_SAMPLE)


def test_every_documented_member_exists() -> None:
    """No entry in docs/api.rst names a member its class does not have (a stale entry)."""
    stale = [
        f"{owner}.{member}"
        for owner, entry in REFERENCE.classes.items()
        for member in sorted(entry.members)
        if member not in public_members(getattr(aiohttp_upgrade, owner))
    ]
    assert stale == []


def test_the_parser_reads_members_and_nested_entries() -> None:
    """The reader of docs/api.rst finds listed members, nested and qualified entries."""
    reference = parse_reference(
        ".. autoclass:: A\n"
        "   :members: one, two\n"
        "\n"
        "   .. attribute:: three\n"
        "                  four\n"
        "\n"
        "      Text.\n"
        "\n"
        ".. autoclass:: B\n"
        "   :members:\n"
        "   :undoc-members:\n"
        "\n"
        ".. attribute:: A.five\n"
        ".. autodata:: C\n"
    )
    assert reference.names == {"A", "B", "C"}
    assert reference.classes["A"].members == {"one", "two", "three", "four", "five"}
    assert reference.classes["B"].all_members and reference.classes["B"].undoc_members
