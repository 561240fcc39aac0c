"""Workers' own view of themselves, kept in Redis: heartbeats and step-attempt counters.

Each worker's main process publishes a heartbeat (a thread started by a Celery signal, connected in
``monitoring.apps``): which queues it consumes and how many tasks of each it runs now. The engine
announces the step attempts each message finished (``jobs.engine.signals.steps_finished``); this module
counts them in Redis. The reading side (``monitoring.selectors``) answers in milliseconds or raises
``MonitorUnavailable`` when Redis cannot be reached.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

import redis

from jobs.engine import bus
from monitoring.broker import MonitorUnavailable, key_prefix, redis_client

logger = logging.getLogger(__name__)

WORKER_HEARTBEAT_SECONDS = 2.0
# A worker that missed a few heartbeats no longer counts as live.
WORKER_TTL_SECONDS = 10


def _workers_key() -> str:
    return f"{key_prefix()}taskengine:workers"


def _worker_key(hostname: str) -> str:
    return f"{key_prefix()}taskengine:worker:{hostname}"


def _stat_key(name: str) -> str:
    return f"{key_prefix()}taskengine:stats:{name}"


# --- worker side -----------------------------------------------------------------------------------


def publish_worker_heartbeat(
    hostname: str, queues: list[str], working: dict[str, int], *, runs_task_groups: bool = True
) -> None:
    """Record that ``hostname`` is alive, consumes ``queues`` and runs ``working`` tasks per queue, and
    whether it runs ``run_tasks`` messages (``every_worker_runs_task_groups``)."""
    client = redis_client()
    expires = time.time() + WORKER_TTL_SECONDS
    fields = {"hostname": hostname, "queues": queues, "working": working, "pid": os.getpid()}
    payload = json.dumps({**fields, "runs_task_groups": runs_task_groups})
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
    # A release that has the task says so; a worker of the release before it says nothing.
    groups = sender is not None and bus.RUN_TASKS in sender.app.tasks

    def loop() -> None:
        while True:
            try:
                publish_worker_heartbeat(hostname, queues, _working_now(), runs_task_groups=groups)
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


def count_processed(processed: int = 1, failed: int = 0, **_: Any) -> None:
    """Count finished step attempts (``failed`` of them failed) in one round trip. Never raises.

    The receiver of ``jobs.engine.signals.steps_finished``."""
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


def every_worker_runs_task_groups(queue: str) -> bool:
    """Whether ``run_tasks`` messages may go to ``queue``: some worker alive now consumes it, and every
    one that does runs this release or a later one (its heartbeat says it runs them). False while a
    worker of the release before is alive on it (during a deploy), or when Redis cannot tell.

    Registered with ``jobs.engine.bus.register_group_gate`` by ``MonitoringConfig.ready``."""
    try:
        consumers = [w for w in live_workers() if queue in w.get("queues", ())]
    except MonitorUnavailable:
        return False
    return bool(consumers) and all(w.get("runs_task_groups") is True for w in consumers)


def step_counters() -> tuple[int, int]:
    """``(processed, failed)`` step attempts counted since Redis last started empty."""
    try:
        processed, failed = redis_client().mget([_stat_key("processed"), _stat_key("failed")])
    except redis.RedisError as exc:
        raise MonitorUnavailable(f"redis: {exc}") from exc
    return int(processed or 0), int(failed or 0)
