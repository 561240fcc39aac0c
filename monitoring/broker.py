"""The broker's Redis as the monitoring room reads it: one client, kombu's key names, queue lengths."""

from __future__ import annotations

import threading

import redis
from django.conf import settings

from jobs.engine.bus import QUEUES

# kombu's Redis transport keeps one list per priority step: "<queue>" and "<queue>\x06\x16<step>".
KOMBU_PRIORITY_SEP = "\x06\x16"
KOMBU_PRIORITY_STEPS = (0, 3, 6, 9)

_client: redis.Redis | None = None
_client_lock = threading.Lock()


class MonitorUnavailable(Exception):
    """Redis could not be reached; the message names the cause."""


def key_prefix() -> str:
    """The broker's ``global_keyprefix`` (TASKENGINE_BROKER_PREFIX), which kombu puts before its keys."""
    return settings.TASKENGINE_BROKER_PREFIX


def redis_client() -> redis.Redis:
    global _client
    with _client_lock:
        if _client is None:
            _client = redis.Redis.from_url(
                settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=2, decode_responses=True
            )
        return _client


def queue_keys(queue: str) -> list[str]:
    """The Redis lists kombu uses for ``queue``, prefixed like kombu prefixes them."""
    prefix = key_prefix()
    return [
        f"{prefix}{queue}" if step == 0 else f"{prefix}{queue}{KOMBU_PRIORITY_SEP}{step}"
        for step in KOMBU_PRIORITY_STEPS
    ]


def messages_waiting() -> dict[str, int]:
    """Messages waiting in each queue's Redis lists (published, not yet taken by a worker)."""
    client = redis_client()
    try:
        pipe = client.pipeline(transaction=False)
        for queue in QUEUES:
            for key in queue_keys(queue):
                pipe.llen(key)
        lengths = pipe.execute()
    except redis.RedisError as exc:
        raise MonitorUnavailable(f"redis: {exc}") from exc
    per_queue = len(KOMBU_PRIORITY_STEPS)
    return {queue: sum(lengths[i * per_queue : (i + 1) * per_queue]) for i, queue in enumerate(QUEUES)}
