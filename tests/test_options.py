"""Handler options: Bun's defaults, validation when the handler is created."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from aiohttp_upgrade import (
    InvalidOptionError,
    PerMessageDeflate,
    ServerWebSocket,
    WebSocketHandler,
)
from aiohttp_upgrade._handler import hook_table
from aiohttp_upgrade._hooks import HOOK_NAMES, HOOKS, SERVER_HOOK_NAMES, HookSpec, Kind
from aiohttp_upgrade._options import OPTION_NAMES, OPTIONS, Options, OptionSpec

MiB = 1024 * 1024


class Plain(WebSocketHandler[Any]):
    """A handler that sets no options."""


# -- defaults ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "default"),
    [
        ("max_payload_length", 16 * MiB),
        ("idle_timeout", 120),
        ("backpressure_limit", 16 * MiB),
        ("close_on_backpressure_limit", False),
        ("per_message_deflate", None),
        ("send_pings", True),
        ("publish_to_self", False),
        ("reset_idle_timeout_on_send", True),
        ("close_timeout", 5.0),
        ("shutdown_timeout", 5.0),
        ("max_lifetime", 0),
        ("ping_interval", 0),
        ("shutdown_drain", 0),
    ],
    ids=lambda value: str(value),
)
def test_default_matches_bun(name: str, default: object) -> None:
    """A handler without options gets Bun's default for each option."""
    assert getattr(Plain().options, name) == default


def test_options_cover_exactly_bun_names() -> None:
    """The option table is Bun's websocket options in snake_case, plus uWebSockets.js's
    resetIdleTimeoutOnSend and our close and shutdown timeouts, uWebSockets'
    maxLifetime, our ping interval and shutdown drain, our rate limit and the
    presence meta bound."""
    assert set(OPTION_NAMES) == {
        "max_payload_length",
        "idle_timeout",
        "backpressure_limit",
        "close_on_backpressure_limit",
        "per_message_deflate",
        "send_pings",
        "publish_to_self",
        "reset_idle_timeout_on_send",
        "close_timeout",
        "shutdown_timeout",
        "max_lifetime",
        "ping_interval",
        "shutdown_drain",
        "rate_limit",
        "max_presence_meta_length",
    }


@pytest.mark.parametrize("spec", OPTIONS, ids=OPTION_NAMES)
def test_option_table_is_what_options_and_the_handler_read(spec: OptionSpec) -> None:
    """Each option of the table is a field of Options and a class attribute of
    WebSocketHandler with the table's default, and the docstring documents it."""
    assert getattr(WebSocketHandler, spec.name) == spec.default
    assert getattr(Options(), spec.name) == spec.check(spec.name, spec.default)
    assert f"``{spec.name}`` ({spec.shown_default})" in (WebSocketHandler.__doc__ or "")
    assert tuple(Options.__dataclass_fields__) == OPTION_NAMES


@pytest.mark.parametrize("spec", OPTIONS, ids=OPTION_NAMES)
def test_bun_spelling_of_each_option_warns(spec: OptionSpec) -> None:
    """Bun's camelCase spelling of any option in the table warns, naming the option."""
    camel = "".join(
        part.title() if index else part
        for index, part in enumerate(spec.name.split("_"))
    )
    cls = type("BunStyle", (WebSocketHandler,), {camel: spec.default})
    with pytest.warns(UserWarning, match=rf"'{spec.name}'"):
        cls()


# -- class attributes and constructor kwargs ----------------------------------------------


def test_class_attribute_sets_the_option() -> None:
    """An option given as a class attribute is used by every instance."""

    class Short(WebSocketHandler[Any]):
        idle_timeout = 10

    assert Short().options.idle_timeout == 10


def test_constructor_kwarg_sets_the_option() -> None:
    """An option given to the constructor is used by that instance."""
    assert Plain(max_payload_length=1000).options.max_payload_length == 1000


def test_constructor_kwarg_overrides_class_attribute() -> None:
    """A constructor kwarg wins over the class attribute, for that instance only."""

    class Short(WebSocketHandler[Any]):
        idle_timeout = 10

    assert Short(idle_timeout=20).options.idle_timeout == 20
    assert Short().options.idle_timeout == 10


def test_constructor_kwarg_is_visible_as_instance_attribute() -> None:
    """After Chat(idle_timeout=5), handler.idle_timeout reads back 5."""
    assert Plain(idle_timeout=5).idle_timeout == 5


def test_subclass_inherits_class_attribute_options() -> None:
    """Options set on a base handler class apply to its subclasses."""

    class Base(WebSocketHandler[Any]):
        send_pings = False

    class Child(Base):
        pass

    assert Child().options.send_pings is False


def test_invalid_class_attribute_fails_when_the_handler_is_created() -> None:
    """A bad class attribute raises when an instance is created, naming the option."""

    class Bad(WebSocketHandler[Any]):
        idle_timeout = -1

    with pytest.raises(ValueError, match="idle_timeout"):
        Bad()


def test_unknown_kwarg_is_type_error() -> None:
    """A misspelt option raises TypeError naming it, as an unknown kwarg would."""
    with pytest.raises(TypeError, match="idle_timout"):
        Plain(idle_timout=10)


def test_hook_names_are_not_options() -> None:
    """A hook name passed as a kwarg is an unknown option, not a hook override."""
    with pytest.raises(TypeError, match="message"):
        Plain(message=print)


# -- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_payload_length", 0),
        ("max_payload_length", -1),
        ("max_payload_length", 1.5),
        ("max_payload_length", "1024"),
        ("max_payload_length", True),
        ("idle_timeout", -1),
        ("idle_timeout", 961),
        ("idle_timeout", "60"),
        ("idle_timeout", True),
        ("idle_timeout", None),
        ("backpressure_limit", -1),
        ("backpressure_limit", 1.0),
        ("backpressure_limit", None),
        ("close_on_backpressure_limit", 1),
        ("close_on_backpressure_limit", "yes"),
        ("per_message_deflate", "yes"),
        ("per_message_deflate", 1),
        ("per_message_deflate", {"level": 1}),
        ("send_pings", 0),
        ("send_pings", None),
        ("publish_to_self", "no"),
        ("reset_idle_timeout_on_send", 0),
        ("reset_idle_timeout_on_send", None),
        ("close_timeout", 0),
        ("close_timeout", -1.0),
        ("close_timeout", float("inf")),
        ("close_timeout", float("nan")),
        ("close_timeout", "5"),
        ("close_timeout", True),
        ("close_timeout", None),
        ("shutdown_timeout", 0),
        ("shutdown_timeout", float("inf")),
        ("shutdown_timeout", "5"),
        ("shutdown_timeout", False),
        ("shutdown_timeout", None),
    ],
    ids=lambda value: repr(value),
)
def test_invalid_value_is_value_error_naming_the_option(
    name: str, value: object
) -> None:
    """A value outside what an option accepts raises ValueError that names the option."""
    with pytest.raises(ValueError, match=name) as info:
        Plain(**{name: value})
    assert isinstance(info.value, InvalidOptionError)
    assert info.value.option == name


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_payload_length", 1),
        ("idle_timeout", 0),
        ("idle_timeout", 0.5),
        ("idle_timeout", 960),
        ("backpressure_limit", 0),
        ("close_on_backpressure_limit", True),
        ("send_pings", False),
        ("publish_to_self", True),
        ("close_timeout", 0.001),
        ("close_timeout", 3600),
        ("shutdown_timeout", 0.001),
        ("shutdown_timeout", 3600),
    ],
    ids=lambda value: repr(value),
)
def test_boundary_value_is_accepted(name: str, value: object) -> None:
    """Values at the edge of an option's range are accepted and kept."""
    assert getattr(Plain(**{name: value}).options, name) == value


def test_idle_timeout_zero_disables_the_timeout() -> None:
    """idle_timeout=0 is accepted (Bun: 0 disables the idle timeout)."""
    assert Plain(idle_timeout=0).options.idle_timeout == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, PerMessageDeflate()), (False, None)],
    ids=["true", "false"],
)
def test_per_message_deflate_bool_is_normalised(
    value: bool, expected: PerMessageDeflate | None
) -> None:
    """per_message_deflate=True means the default PerMessageDeflate(); False means off."""
    assert Plain(per_message_deflate=value).options.per_message_deflate == expected


def test_per_message_deflate_instance_is_kept() -> None:
    """A PerMessageDeflate instance is used as given."""
    deflate = PerMessageDeflate(level=1)
    assert Plain(per_message_deflate=deflate).options.per_message_deflate is deflate


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"server_max_window_bits": 8}, "server_max_window_bits"),
        ({"level": 10}, "level"),
    ],
    ids=["window-bits", "level"],
)
def test_per_message_deflate_validates_its_fields(
    kwargs: dict[str, Any], option: str
) -> None:
    """PerMessageDeflate checks its own fields, naming them under per_message_deflate."""
    with pytest.raises(ValueError, match=f"per_message_deflate.{option}"):
        PerMessageDeflate(**kwargs)


def test_invalid_option_error_is_a_value_error() -> None:
    """InvalidOptionError can be caught as ValueError, as Bun's callers expect."""
    assert issubclass(InvalidOptionError, ValueError)


# -- hooks -----------------------------------------------------------------------------------


def test_only_overridden_hooks_are_registered() -> None:
    """A hook the handler does not override is recorded as absent, so it costs nothing."""

    class OnlyMessage(WebSocketHandler[Any]):
        def message(self, ws: ServerWebSocket[Any], message: str | bytes) -> None:
            pass

    hooks = hook_table(OnlyMessage())
    assert hooks[Kind.MESSAGE] is not None
    assert [spec.name for spec, hook in zip(HOOKS, hooks, strict=True) if hook] == [
        "message"
    ]


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_hook_kind_is_detected(is_async: bool) -> None:
    """Each registered hook records whether it is a coroutine function."""

    class Sync(WebSocketHandler[Any]):
        def open(self, ws: ServerWebSocket[Any]) -> None:
            pass

    class Async(WebSocketHandler[Any]):
        async def open(self, ws: ServerWebSocket[Any]) -> None:
            pass

    hook = hook_table((Async if is_async else Sync)())[Kind.OPEN]
    assert hook is not None
    assert hook[1] is is_async


def test_a_hook_set_on_the_instance_is_registered() -> None:
    """A hook assigned to a handler instance counts as overridden."""
    handler = WebSocketHandler[Any]()
    handler.close = lambda ws, code, reason: None  # type: ignore[method-assign]
    assert hook_table(handler)[Kind.CLOSE] == (handler.close, False)


@pytest.mark.parametrize("spec", HOOKS, ids=HOOK_NAMES)
def test_hook_table_matches_the_handler(spec: HookSpec) -> None:
    """Each hook in the table is a WebSocketHandler method taking the table's arity
    (after self), and Kind numbers it by its place in the table."""
    parameters = inspect.signature(getattr(WebSocketHandler, spec.name)).parameters
    assert len(parameters) - 1 == spec.arity
    assert getattr(Kind, spec.name.upper()) == HOOKS.index(spec)


def test_hook_table_lists_every_hook_method() -> None:
    """Every public method of WebSocketHandler but ``server`` is in a hook table
    (the sockets' or the server-level one)."""
    methods = {
        name
        for name, value in vars(WebSocketHandler).items()
        if inspect.isfunction(value) and not name.startswith("_")
    }
    assert methods == {*HOOK_NAMES, *SERVER_HOOK_NAMES}
