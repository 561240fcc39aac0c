"""The floor: a raw Celery app whose chain of 5 no-op tasks is what one engine job of ``noop5`` does.

Same broker (Redis, the run's own key prefix) and the worker options of taskengine_site.settings:
acks_late, reject_on_worker_lost, prefetch 1, no result backend, json. The last task of a chain counts
the chain done in Redis (``<prefix>raw:done``) and records its finish time.

    celery -A bench.rawcelery worker -Q raw --concurrency 2 --pool prefork
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

PREFIX = os.environ.get("TASKENGINE_BROKER_PREFIX", "")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/8")


def floor_app(name: str, queue: str) -> Celery:
    """A floor's Celery app: the worker options the module docstring names, its keys under
    ``<prefix><queue>:``, its tasks on ``queue`` (also used by bench/durablecelery.py)."""
    floor = Celery(name, broker=REDIS_URL)
    floor.conf.update(
        broker_transport_options={"global_keyprefix": f"{PREFIX}{queue}:", "visibility_timeout": 3600},
        broker_connection_retry_on_startup=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=queue,
        worker_hijack_root_logger=False,
    )
    return floor


app = floor_app("rawbench", "raw")
_client: list[redis.Redis] = []


def _redis() -> redis.Redis:
    if not _client:
        _client.append(redis.Redis.from_url(REDIS_URL))
    return _client[0]


@app.task(name="bench.noop")
def noop(chain_id: int, step: int, last: bool = False) -> None:
    if last:
        client = _redis()
        client.incr(PREFIX + "raw:done")
        client.set(PREFIX + "raw:last", repr(time.time()))


def submit(n: int, steps: int = 5) -> None:
    from celery import chain

    for i in range(n):
        chain(*(noop.si(i, s, s == steps) for s in range(1, steps + 1))).apply_async()


@app.task(name="bench.eta_probe")
def eta_probe(due: float) -> None:
    """Records how late it ran after its eta (the floor of scheduling lag)."""
    _redis().rpush(PREFIX + "raw:eta", repr(time.time() - due))
