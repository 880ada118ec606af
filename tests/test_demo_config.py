"""The demo's settings from environment variables."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from demo.config import DEFAULT_SESSION_TTL, Config, ConfigError


def test_defaults_are_safe(caplog: pytest.LogCaptureFixture) -> None:
    """With no variables set, data goes to ./data and a random secret is logged."""
    with caplog.at_level(logging.WARNING, logger="demo.config"):
        config = Config.from_env({})
    assert config.data_dir == Path("./data")
    assert len(config.secret) == 32
    assert config.allowed_origins == ()
    assert config.session_ttl == DEFAULT_SESSION_TTL
    assert "DEMO_SECRET is not set" in caplog.text


def test_generated_secrets_differ() -> None:
    """Each process without DEMO_SECRET gets its own secret."""
    assert Config.from_env({}).secret != Config.from_env({}).secret


def test_variables_are_read() -> None:
    """Every variable is honoured, origins trimmed of spaces and trailing slashes."""
    config = Config.from_env(
        {
            "DEMO_DATA_DIR": "/srv/chat",
            "DEMO_SECRET": "x" * 20,
            "DEMO_ALLOWED_ORIGINS": " https://a.example/ ,http://b.example:8080,",
            "DEMO_SESSION_TTL": "60",
            "DEMO_REDIS_URL": " redis://cache:6379/2 ",
            "DEMO_PRESENCE_HEARTBEAT": "0.5",
        }
    )
    assert config.database_path == Path("/srv/chat/chat.sqlite3")
    assert config.secret == b"x" * 20
    assert config.allowed_origins == ("https://a.example", "http://b.example:8080")
    assert config.session_ttl == 60
    assert config.redis_url == "redis://cache:6379/2"
    assert config.presence_heartbeat == 0.5


def test_no_redis_by_default() -> None:
    """Without DEMO_REDIS_URL the demo is one process with the in-process broker."""
    assert Config.from_env({"DEMO_SECRET": "y" * 32}).redis_url is None


@pytest.mark.parametrize(
    "env",
    [
        {"DEMO_SECRET": "short"},
        {"DEMO_ALLOWED_ORIGINS": "evil.example"},
        {"DEMO_SESSION_TTL": "soon"},
        {"DEMO_SESSION_TTL": "0"},
        {"DEMO_REDIS_URL": "cache:6379"},
        {"DEMO_PRESENCE_HEARTBEAT": "often"},
        {"DEMO_PRESENCE_HEARTBEAT": "0"},
        {"DEMO_PRESENCE_HEARTBEAT": "nan"},
    ],
    ids=[
        "short-secret",
        "origin-without-scheme",
        "ttl-not-number",
        "ttl-zero",
        "redis-without-scheme",
        "heartbeat-not-number",
        "heartbeat-zero",
        "heartbeat-nan",
    ],
)
def test_bad_values_are_refused(env: dict[str, str]) -> None:
    """An unusable value stops the start with ConfigError naming the variable."""
    with pytest.raises(ConfigError, match="DEMO_"):
        Config.from_env({**env, "DEMO_SECRET": env.get("DEMO_SECRET", "y" * 32)})


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), (" 1 ", True), ("0", False), ("", False), (None, False)],
    ids=["one", "one-spaced", "zero", "empty", "unset"],
)
def test_redis_cluster_setting_is_read(value: str | None, expected: bool) -> None:
    """DEMO_REDIS_CLUSTER=1 makes DEMO_REDIS_URL a cluster's seed; 0, empty or
    unset leave it one Redis."""
    env = {"DEMO_SECRET": "y" * 32, "DEMO_REDIS_URL": "redis://node1:7000"}
    if value is not None:
        env["DEMO_REDIS_CLUSTER"] = value
    config = Config.from_env(env)
    assert (config.redis_url, config.redis_cluster) == ("redis://node1:7000", expected)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEMO_REDIS_CLUSTER": "yes"}, "must be 1 or 0, got 'yes'"),
        ({"DEMO_REDIS_CLUSTER": "true"}, "must be 1 or 0, got 'true'"),
        ({"DEMO_REDIS_CLUSTER": "2"}, "must be 1 or 0, got '2'"),
        ({"DEMO_REDIS_CLUSTER": "1", "DEMO_REDIS_URL": ""}, "needs DEMO_REDIS_URL"),
        (
            {"DEMO_REDIS_CLUSTER": "1", "DEMO_REDIS_URL": "unix:///run/redis.sock"},
            "needs DEMO_REDIS_URL",
        ),
    ],
    ids=["yes", "true", "two", "without-url", "unix-socket"],
)
def test_bad_redis_cluster_values_are_refused(
    env: dict[str, str], message: str
) -> None:
    """A DEMO_REDIS_CLUSTER other than 1/0, or 1 without a redis:// or rediss://
    URL of a node, stops the start with ConfigError naming DEMO_REDIS_CLUSTER."""
    env = {"DEMO_SECRET": "y" * 32, "DEMO_REDIS_URL": "redis://node1:7000", **env}
    with pytest.raises(ConfigError, match="DEMO_REDIS_CLUSTER") as info:
        Config.from_env(env)
    assert message in str(info.value)
