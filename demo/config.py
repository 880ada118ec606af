"""Demo settings, read from environment variables with safe defaults.

===========================  ==============================================  ==========
variable                     meaning                                         default
===========================  ==============================================  ==========
``DEMO_DATA_DIR``            directory holding ``chat.sqlite3``; created     ``./data``
``DEMO_SECRET``              key that signs session cookies (the same for    generated
                             every worker)
``DEMO_ALLOWED_ORIGINS``     extra origins allowed to open the WebSocket     none
                             (comma separated); the page's own origin
                             is always allowed
``DEMO_SESSION_TTL``         seconds a sign-in stays valid                   ``604800``
``DEMO_REDIS_URL``           the workers' Redis (``redis://host:6379/0``):   none
                             publishes cross to every worker through a
                             ``RedisBroker``; unset, the demo is one
                             process with the in-process broker
``DEMO_REDIS_CLUSTER``       ``1``: ``DEMO_REDIS_URL`` is one node (the      ``0``
                             seed) of a Redis Cluster, and the workers use
                             ``RedisBroker(url, cluster=True)``; ``0``:
                             it is one Redis
``DEMO_PRESENCE_HEARTBEAT``  seconds between a worker's presence             ``5``
                             heartbeats (its RedisBroker's); a killed
                             worker's people leave "Here now" within 3
                             times this
===========================  ==============================================  ==========

A missing ``DEMO_SECRET`` is generated for this process only (and logged), so
every restart signs everybody out; set it to keep sessions across restarts.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .limits import Limits

__all__ = [
    "DATABASE_NAME",
    "DEFAULT_DATA_DIR",
    "DEFAULT_HEARTBEAT",
    "DEFAULT_SESSION_TTL",
    "MIN_SECRET_LENGTH",
    "Config",
    "ConfigError",
    "redis_cluster_setting",
]

# Seconds between heartbeats: the RedisBroker's (a killed worker's people leave
# the others' presence 3 heartbeats after its last) and the chat's housekeeping.
DEFAULT_HEARTBEAT = 5.0

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = "./data"
DEFAULT_SESSION_TTL = 7 * 24 * 3600
DATABASE_NAME = "chat.sqlite3"
MIN_SECRET_LENGTH = 16


class ConfigError(ValueError):
    """An environment variable holds a value the demo cannot use."""


def redis_cluster_setting(env: Mapping[str, str]) -> bool:
    """``DEMO_REDIS_CLUSTER`` of ``env``: ``1`` (a Redis Cluster) or ``0``, unset
    or empty (one Redis).

    Raises:
        ConfigError: any other value.
    """
    raw = env.get("DEMO_REDIS_CLUSTER", "").strip()
    if raw not in ("", "0", "1"):
        raise ConfigError(f"DEMO_REDIS_CLUSTER must be 1 or 0, got {raw!r}")
    return raw == "1"


@dataclass(frozen=True)
class Config:
    """Everything the chat app needs to start.

    ``clock`` returns the current Unix time; tests replace it to expire
    sessions without waiting. ``limits`` holds the rate limits and caps (see
    :mod:`demo.limits`); they are not read from the environment.
    """

    data_dir: Path
    secret: bytes
    allowed_origins: tuple[str, ...] = ()
    session_ttl: int = DEFAULT_SESSION_TTL
    clock: Callable[[], float] = field(default=time.time, compare=False)
    limits: Limits = field(default_factory=Limits)
    redis_url: str | None = None
    redis_cluster: bool = False
    presence_heartbeat: float = DEFAULT_HEARTBEAT

    @property
    def database_path(self) -> Path:
        """The SQLite file inside :attr:`data_dir`."""
        return self.data_dir / DATABASE_NAME

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        """Build a config from ``env`` (usually ``os.environ``).

        Raises:
            ConfigError: a variable is set to an unusable value.
        """
        data_dir = Path(env.get("DEMO_DATA_DIR") or DEFAULT_DATA_DIR)
        raw_secret = env.get("DEMO_SECRET", "")
        if raw_secret:
            if len(raw_secret) < MIN_SECRET_LENGTH:
                raise ConfigError(
                    f"DEMO_SECRET must be at least {MIN_SECRET_LENGTH} characters"
                )
            secret = raw_secret.encode()
        else:
            secret = secrets.token_bytes(32)
            log.warning(
                "DEMO_SECRET is not set: generated a secret for this process; "
                "everybody is signed out when it restarts"
            )
        origins = tuple(
            origin.strip().rstrip("/")
            for origin in env.get("DEMO_ALLOWED_ORIGINS", "").split(",")
            if origin.strip()
        )
        for origin in origins:
            if not origin.startswith(("http://", "https://")):
                raise ConfigError(
                    f"DEMO_ALLOWED_ORIGINS entry {origin!r} must start with "
                    "http:// or https://"
                )
        raw_ttl = env.get("DEMO_SESSION_TTL", "")
        try:
            ttl = int(raw_ttl) if raw_ttl else DEFAULT_SESSION_TTL
        except ValueError:
            raise ConfigError("DEMO_SESSION_TTL must be a whole number") from None
        if ttl <= 0:
            raise ConfigError("DEMO_SESSION_TTL must be positive")
        redis_url = env.get("DEMO_REDIS_URL", "").strip() or None
        if redis_url is not None and not redis_url.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ConfigError(
                "DEMO_REDIS_URL must start with redis://, rediss:// or unix://"
            )
        redis_cluster = redis_cluster_setting(env)
        if redis_cluster and (redis_url is None or redis_url.startswith("unix://")):
            raise ConfigError(
                "DEMO_REDIS_CLUSTER=1 needs DEMO_REDIS_URL: a redis:// or rediss:// "
                "URL of one node of the cluster"
            )
        raw_heartbeat = env.get("DEMO_PRESENCE_HEARTBEAT", "")
        try:
            heartbeat = float(raw_heartbeat) if raw_heartbeat else DEFAULT_HEARTBEAT
        except ValueError:
            raise ConfigError("DEMO_PRESENCE_HEARTBEAT must be a number") from None
        if not 0 < heartbeat < 3600:
            raise ConfigError("DEMO_PRESENCE_HEARTBEAT must be between 0 and 3600")
        return cls(
            data_dir=data_dir,
            secret=secret,
            allowed_origins=origins,
            session_ttl=ttl,
            redis_url=redis_url,
            redis_cluster=redis_cluster,
            presence_heartbeat=heartbeat,
        )
