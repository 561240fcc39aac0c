"""This process's memory of the API keys it checked against the database, and the token that retires it.

Reading the key and its client from Postgres was the largest part of an authenticated request's own work
after the job's insert (bench/README.md, issue 16). A key the database accepted is remembered here, by
client name and the SHA-256 of the key, with the row's values and the **keys token** read from Redis
*before* that database read. A later request with the same client and key is accepted from memory only
while Redis still holds the same token: every change to a client or a key (a save, a delete, a queryset
update of either model, which ``clients.models`` routes here) sets a new random token, at once and again
after its commit, so a remembered key stops being accepted as soon as the change commits. The commit's
second token closes the window in which a request could read the new token and then the row as it was
before the commit.

Where the token cannot settle it, the database decides:

- no token in Redis (flushed, evicted, Redis unreachable): nothing is remembered or accepted from memory;
- a change the ORM does not see (SQL typed into psql) or a token that could not be set: a key is
  remembered for ``KNOWN_SECONDS`` at most, after which the next request reads the database again.

Only keys the database accepted are remembered; a refused key is checked against the database every time.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Sequence
from typing import Any

from django.core.cache import cache
from django.db import transaction

from taskengine_site.cache import stored_bytes

logger = logging.getLogger(__name__)

# The cache key of the token (the project's cache prefix and version are added by the cache).
TOKEN_KEY = "clients:keys-token"  # noqa: S105 (the name of a cache key, not a secret)
# How long a remembered key is accepted without reading the database again, whatever the token says.
KNOWN_SECONDS = 10.0
# Remembered keys at most; beyond, the memory starts again (an API has a handful of clients).
KNOWN_LIMIT = 1024


class Known:
    """A key the database accepted: its row and its client's (raw values, as the lookup read them), the
    keys token read before that read, until when it may be accepted, and its ``last_used_at``."""

    __slots__ = ("last_used_at", "token", "until", "values")

    def __init__(self, values: Sequence[Any], token: int, last_used_at: Any) -> None:
        self.values = tuple(values)
        self.token = token
        self.until = time.monotonic() + KNOWN_SECONDS
        self.last_used_at = last_used_at


_known: dict[tuple[str, str], Known] = {}


def recall(name: str, key_hash: str) -> Known | None:
    """The remembered key of client ``name`` with this hash, if it is still within ``KNOWN_SECONDS``
    (the caller still compares its token with Redis's)."""
    known = _known.get((name, key_hash))
    if known is None:
        return None
    if time.monotonic() >= known.until:
        _known.pop((name, key_hash), None)
        return None
    return known


def remember(name: str, key_hash: str, known: Known) -> None:
    if len(_known) >= KNOWN_LIMIT:
        _known.clear()
    _known[(name, key_hash)] = known


def forget(name: str, key_hash: str) -> None:
    _known.pop((name, key_hash), None)


def token_from(raw: Any) -> int | None:
    """The token as Redis returned it (bytes of an integer, or nothing); None when there is none."""
    if raw is None or raw is False:
        return None
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


def current_token() -> int | None:
    """The keys token, set to a new one if Redis has none; None when Redis cannot be reached."""
    try:
        token = token_from(_get_raw())
        if token is None:
            cache.add(TOKEN_KEY, _new_token(), timeout=None)
            token = token_from(_get_raw())
    except Exception:  # Redis unreachable: nothing is remembered, the database decides every time
        return None
    return token


def _get_raw() -> Any:
    return stored_bytes(cache, TOKEN_KEY)


def _new_token() -> int:
    # Random, not a counter: a Redis that lost its data must not hand out an old token again.
    return secrets.randbits(62) + 1


def keys_changed() -> None:
    """A client or a key changed: retire every remembered key now and again once the change commits
    (at once when no transaction is open)."""
    _set_new_token()
    if transaction.get_connection().in_atomic_block:
        transaction.on_commit(_set_new_token)


def _set_new_token() -> None:
    _known.clear()
    try:
        cache.set(TOKEN_KEY, _new_token(), timeout=None)
    except Exception:
        # Other processes' memories then last until KNOWN_SECONDS ends (module docstring).
        logger.warning("the API keys token could not be renewed in Redis", exc_info=True)
