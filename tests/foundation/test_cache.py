"""The project's Redis cache backend (taskengine_site.cache): Django's, with a reused client and a
one-round-trip window counter for the throttle."""

from __future__ import annotations

import uuid
from typing import Any

from django.core.cache import cache, caches

from taskengine_site.cache import RedisCache


def test_the_configured_cache_is_the_project_backend() -> None:
    assert isinstance(caches["default"], RedisCache)


def test_one_client_is_reused_for_every_call() -> None:
    backend = caches["default"]
    assert isinstance(backend, RedisCache)
    client = backend._cache
    assert client.get_client("a", write=True) is client.get_client("b", write=True)
    assert client.get_client("a") is client.get_client("a", write=True)  # one server: one pool


def test_incr_window_counts_and_expires_like_add_and_incr() -> None:
    key = f"window-{uuid.uuid4().hex}"

    assert [cache.incr_window(key, 61) for _ in range(3)] == [1, 2, 3]  # type: ignore[attr-defined]
    # The same key and value the generic path (cache.add(key, 0) + cache.incr(key)) would have made.
    assert cache.get(key) == 3
    assert cache.incr(key) == 4
    redis_key = cache.make_key(key)
    ttl: Any = cache._cache.get_client(redis_key).ttl(redis_key)  # type: ignore[attr-defined]
    assert 0 < ttl <= 61
    cache.delete(key)


def test_incr_window_never_extends_a_running_window() -> None:
    key = f"window-{uuid.uuid4().hex}"
    cache.incr_window(key, 5)  # type: ignore[attr-defined]
    cache.incr_window(key, 3600)  # type: ignore[attr-defined]
    redis_key = cache.make_key(key)
    assert cache._cache.get_client(redis_key).ttl(redis_key) <= 5  # type: ignore[attr-defined]
    cache.delete(key)
