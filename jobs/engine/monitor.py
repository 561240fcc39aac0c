"""Numbers for ``GET /health`` (issue 4 item 8), read without ever asking workers over the broker.

Workers publish their own heartbeat into Redis (a thread in each worker's main process, see
``install_worker_heartbeat``): which queues they consume and how many tasks of each they run now. The
API reads those heartbeats, the length of each queue's Redis list, and a few counters. Everything here
answers in milliseconds or raises ``MonitorUnavailable`` when Redis cannot be reached.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

import redis
from django.conf import settings

from jobs.states import TaskState

logger = logging.getLogger(__name__)

QUEUES = ("controller", "work", "windows_capture", "callback", "scheduler")
WORKER_HEARTBEAT_SECONDS = 2.0
# A worker that missed a few heartbeats no longer counts as live.
WORKER_TTL_SECONDS = 10
# kombu's Redis transport keeps one list per priority step: "<queue>" and "<queue>\x06\x16<step>".
KOMBU_PRIORITY_SEP = "\x06\x16"
KOMBU_PRIORITY_STEPS = (0, 3, 6, 9)

_client: redis.Redis | None = None
_client_lock = threading.Lock()


class MonitorUnavailable(Exception):
    """Redis could not be reached; the message names the cause."""


def key_prefix() -> str:
    """The broker's ``global_keyprefix`` (TASKENGINE_BROKER_PREFIX), which kombu puts before its keys."""
    options: dict[str, Any] = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {})
    return str(options.get("global_keyprefix", ""))


def redis_client() -> redis.Redis:
    global _client
    with _client_lock:
        if _client is None:
            _client = redis.Redis.from_url(
                settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=2, decode_responses=True
            )
        return _client


def _workers_key() -> str:
    return f"{key_prefix()}taskengine:workers"


def _worker_key(hostname: str) -> str:
    return f"{key_prefix()}taskengine:worker:{hostname}"


def _stat_key(name: str) -> str:
    return f"{key_prefix()}taskengine:stats:{name}"


def queue_keys(queue: str) -> list[str]:
    """The Redis lists kombu uses for ``queue``, prefixed like kombu prefixes them."""
    prefix = key_prefix()
    return [
        f"{prefix}{queue}" if step == 0 else f"{prefix}{queue}{KOMBU_PRIORITY_SEP}{step}"
        for step in KOMBU_PRIORITY_STEPS
    ]


# --- worker side -----------------------------------------------------------------------------------


def publish_worker_heartbeat(hostname: str, queues: list[str], working: dict[str, int]) -> None:
    """Record that ``hostname`` is alive, consumes ``queues`` and runs ``working`` tasks per queue."""
    client = redis_client()
    expires = time.time() + WORKER_TTL_SECONDS
    payload = json.dumps({"hostname": hostname, "queues": queues, "working": working, "pid": os.getpid()})
    pipe = client.pipeline(transaction=False)
    pipe.set(_worker_key(hostname), payload, ex=WORKER_TTL_SECONDS)
    pipe.zadd(_workers_key(), {hostname: expires})
    pipe.execute()


def withdraw_worker(hostname: str) -> None:
    client = redis_client()
    client.delete(_worker_key(hostname))
    client.zrem(_workers_key(), hostname)


def _working_now() -> dict[str, int]:
    from celery.worker import state

    counts: dict[str, int] = {}
    for _ in range(3):
        try:
            requests = list(state.active_requests)
            break
        except RuntimeError:  # the set changed size while we copied it; copy again
            continue
    else:
        return counts
    for request in requests:
        queue = (request.delivery_info or {}).get("routing_key") or ""
        counts[queue] = counts.get(queue, 0) + 1
    return counts


def install_worker_heartbeat() -> None:
    """Connect the worker signals that start and stop the heartbeat thread (idempotent)."""
    from celery.signals import worker_ready, worker_shutdown

    worker_ready.connect(_on_worker_ready, weak=False, dispatch_uid="taskengine-heartbeat-ready")
    worker_shutdown.connect(_on_worker_shutdown, weak=False, dispatch_uid="taskengine-heartbeat-stop")


_stop = threading.Event()
_hostname: list[str] = []


def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    hostname = str(getattr(sender, "hostname", "") or f"worker@{os.getpid()}")
    try:
        queues = sorted(q.name for q in sender.task_consumer.queues)
    except AttributeError:
        queues = sorted(sender.app.amqp.queues.consume_from) if sender is not None else []
    _hostname[:] = [hostname]

    def loop() -> None:
        while True:
            try:
                publish_worker_heartbeat(hostname, queues, _working_now())
            except Exception as exc:  # Redis down: keep trying, the worker itself is fine
                logger.warning("worker heartbeat not published: %s", exc)
            if _stop.wait(WORKER_HEARTBEAT_SECONDS):
                return

    threading.Thread(target=loop, name="taskengine-worker-heartbeat", daemon=True).start()


def _on_worker_shutdown(**_: Any) -> None:
    _stop.set()
    for hostname in _hostname:
        try:
            withdraw_worker(hostname)
        except Exception as exc:
            logger.warning("worker heartbeat not withdrawn: %s", exc)


def count_processed(processed: int = 1, failed: int = 0) -> None:
    """Count finished step attempts (``failed`` of them failed) in one round trip. Never raises."""
    if processed <= 0 and failed <= 0:
        return
    try:
        pipe = redis_client().pipeline(transaction=False)
        pipe.incrby(_stat_key("processed"), processed)
        if failed:
            pipe.incrby(_stat_key("failed"), failed)
        pipe.execute()
    except Exception as exc:
        logger.warning("task counters not updated: %s", exc)


# --- reading side ----------------------------------------------------------------------------------


def live_workers() -> list[dict[str, Any]]:
    """The heartbeats of the workers alive now."""
    client = redis_client()
    now = time.time()
    try:
        client.zremrangebyscore(_workers_key(), "-inf", now)
        hostnames = [str(h) for h in client.zrangebyscore(_workers_key(), now, "+inf")]
        payloads = client.mget([_worker_key(h) for h in hostnames]) if hostnames else []
    except redis.RedisError as exc:
        raise MonitorUnavailable(f"redis: {exc}") from exc
    return [json.loads(p) for p in payloads if p]


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


def queue_numbers() -> dict[str, dict[str, int]]:
    """Per queue: ``workers`` alive consuming it, tasks ``working`` now, messages ``pending``."""
    numbers = {queue: {"workers": 0, "working": 0, "pending": 0} for queue in QUEUES}
    for worker in live_workers():
        for queue in worker.get("queues", []):
            if queue in numbers:
                numbers[queue]["workers"] += 1
        for queue, count in (worker.get("working") or {}).items():
            if queue in numbers:
                numbers[queue]["working"] += int(count)
    for queue, waiting in messages_waiting().items():
        numbers[queue]["pending"] = waiting
    return numbers


def task_numbers() -> dict[str, int]:
    """``processed`` and ``failed`` step attempts (Redis counters, since Redis last started empty) and
    ``pending`` tasks (Postgres: queued or waiting to retry)."""
    from jobs.models import Task

    client = redis_client()
    try:
        processed, failed = client.mget([_stat_key("processed"), _stat_key("failed")])
    except redis.RedisError as exc:
        raise MonitorUnavailable(f"redis: {exc}") from exc
    pending = Task.objects.filter(state__in=[TaskState.QUEUED, TaskState.RETRYING]).count()
    return {"failed": int(failed or 0), "pending": pending, "processed": int(processed or 0)}


def health_numbers() -> dict[str, Any]:
    """``{"queues": {queue: {workers, working, pending}}, "tasks": {failed, pending, processed}}``.

    Raises ``MonitorUnavailable`` when Redis is unreachable and Django's ``DatabaseError`` when
    Postgres is.
    """
    return {"queues": queue_numbers(), "tasks": task_numbers()}
