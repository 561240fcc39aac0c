"""Typed reading of environment variables.

Every parser raises ``ImproperlyConfigured`` with a message that names the variable, so a malformed
value stops start-up with a clear reason instead of a traceback deep inside Django or Celery.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _raw(name: str, environ_: dict[str, str] | None) -> str | None:
    source = os.environ if environ_ is None else environ_
    value = source.get(name)
    return None if value is None else value.strip()


def env_bool(name: str, default: bool, environ_: dict[str, str] | None = None) -> bool:
    """Read a boolean: 1/true/yes/on or 0/false/no/off (any case)."""
    value = _raw(name, environ_)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}: expected true or false, got {value!r}")


def env_choice(
    name: str, default: str, choices: tuple[str, ...], environ_: dict[str, str] | None = None
) -> str:
    """Read one word of a fixed set (any case), returned in lower case."""
    value = _raw(name, environ_)
    if not value:
        return default
    lowered = value.lower()
    if lowered not in choices:
        raise ImproperlyConfigured(f"{name}: expected one of {', '.join(choices)}, got {value!r}")
    return lowered


def env_int(
    name: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    environ_: dict[str, str] | None = None,
) -> int:
    """Read an integer within optional bounds."""
    value = _raw(name, environ_)
    if value is None or value == "":
        return default
    return _bounded_int(name, value, minimum, maximum)


def _bounded_int(name: str, text: str, minimum: int | None, maximum: int | None) -> int:
    try:
        number = int(text)
    except ValueError:
        raise ImproperlyConfigured(f"{name}: expected an integer, got {text!r}") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}: must be at least {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise ImproperlyConfigured(f"{name}: must be at most {maximum}, got {number}")
    return number


def env_ints(
    name: str, default: tuple[int, ...], *, minimum: int | None = None, environ_: dict[str, str] | None = None
) -> tuple[int, ...]:
    """Read a comma-separated list of integers, each at least ``minimum``; set but empty: none."""
    value = _raw(name, environ_)
    if value is None:
        return default
    items = (part.strip() for part in value.split(","))
    return tuple(_bounded_int(name, item, minimum, None) for item in items if item)


def env_str(name: str, default: str, environ_: dict[str, str] | None = None) -> str:
    value = _raw(name, environ_)
    return default if value is None or value == "" else value


def env_list(name: str, default: list[str], environ_: dict[str, str] | None = None) -> list[str]:
    """Read a comma-separated list; blank items are dropped."""
    value = _raw(name, environ_)
    if value is None:
        return default
    items = [item.strip() for item in value.split(",") if item.strip()]
    for item in items:
        if any(ch.isspace() for ch in item):
            raise ImproperlyConfigured(f"{name}: item {item!r} contains white space")
    return items


def env_database(name: str, environ_: dict[str, str] | None = None) -> dict[str, Any]:
    """Read a PostgreSQL URL (``postgres://user:pass@host:port/db``, ``?host=/socket/dir`` accepted)."""
    value = _raw(name, environ_)
    if not value:
        raise ImproperlyConfigured(
            f"{name} is not set. Run through `make run` / `make test` (they start an embedded "
            f"PostgreSQL), or set {name}=postgres://user@host:5432/dbname."
        )
    parts = urlsplit(value)
    if parts.scheme not in {"postgres", "postgresql", "pgsql"}:
        raise ImproperlyConfigured(
            f"{name}: expected a postgres:// URL, got scheme {parts.scheme or '(none)'!r}"
        )
    try:
        config: dict[str, Any] = environ.Env.db_url_config(value)
    except Exception as exc:  # environ raises several kinds for a broken URL
        raise ImproperlyConfigured(f"{name}: cannot parse the URL ({exc})") from None
    if not config.get("NAME"):
        raise ImproperlyConfigured(f"{name}: the URL names no database (expected .../dbname)")
    if config.get("PORT") not in ("", None):
        try:
            port = int(config["PORT"])
        except ValueError:
            raise ImproperlyConfigured(f"{name}: port {config['PORT']!r} is not a number") from None
        if not 0 < port < 65536:
            raise ImproperlyConfigured(f"{name}: port {port} is out of range")
    return config


def env_redis(name: str, environ_: dict[str, str] | None = None) -> str:
    """Read a Redis URL: ``redis://``, ``rediss://`` or ``unix://`` (a socket path)."""
    value = _raw(name, environ_)
    if not value:
        raise ImproperlyConfigured(
            f"{name} is not set. Run through `make run` / `make test` (they start an embedded Redis), "
            f"or set {name}=redis://host:6379/0."
        )
    parts = urlsplit(value)
    if parts.scheme not in {"redis", "rediss", "unix"}:
        raise ImproperlyConfigured(
            f"{name}: expected a redis://, rediss:// or unix:// URL, got scheme {parts.scheme or '(none)'!r}"
        )
    if parts.scheme == "unix" and not parts.path:
        raise ImproperlyConfigured(f"{name}: a unix:// URL needs a socket path")
    if parts.scheme != "unix":
        if not parts.hostname:
            raise ImproperlyConfigured(f"{name}: the URL names no host")
        try:
            parts.port  # noqa: B018  (raises ValueError on a bad port)
        except ValueError:
            raise ImproperlyConfigured(f"{name}: the port is not a valid number") from None
        db = parts.path.lstrip("/")
        if db and not db.isdigit():
            raise ImproperlyConfigured(f"{name}: database {db!r} is not a number")
    return value


RATE_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(text: str, name: str = "TASKENGINE_RATE_LIMIT") -> tuple[int, int]:
    """Parse a rate like DRF's (``1200/minute``) into (requests, window seconds); 0 requests: no limit."""
    count, _, period = text.partition("/")
    unit = period.strip()[:1].lower()
    if not count.strip().isdigit() or unit not in RATE_PERIODS:
        raise ImproperlyConfigured(f"{name}: expected <requests>/<second|minute|hour|day>, got {text!r}")
    return int(count), RATE_PERIODS[unit]


def env_rate(name: str, default: str, environ_: dict[str, str] | None = None) -> str:
    """Read a rate (``<n>/<second|minute|hour|day>``), refusing a malformed one at start-up."""
    value = env_str(name, default, environ_)
    parse_rate(value, name)
    return value


def celery_broker_url(redis_url: str) -> str:
    """Celery spells a unix socket ``redis+socket://``; redis-py spells it ``unix://``."""
    if redis_url.startswith("unix://"):
        return "redis+socket://" + redis_url[len("unix://") :]
    return redis_url


def env_path(name: str, default: Path, environ_: dict[str, str] | None = None) -> Path:
    value = _raw(name, environ_)
    if not value:
        return default
    path = Path(value)
    if not path.is_absolute():
        raise ImproperlyConfigured(f"{name}: expected an absolute path, got {value!r}")
    return path
