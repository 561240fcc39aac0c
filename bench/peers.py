"""The same work on engines users might pick instead: 1,000 jobs of 5 sequential no-op steps each.

RQ 3 (Redis): each step enqueues the next on queue ``bench-<pid>``; two ``rq worker`` processes (RQ's
``SimpleWorker``, which runs jobs in the worker process: RQ's default worker forks a work horse per job
and managed about 6 steps/s here). Procrastinate 3 (Postgres, its own database
``te_bench_procrastinate``): each step defers the next; two ``procrastinate worker`` processes of
concurrency 1. The last step of a job counts it done in Redis (``<prefix>peer:<name>:done``).
"""

from __future__ import annotations

import os
from typing import Any

import redis

PREFIX = os.environ.get("TASKENGINE_BROKER_PREFIX", "")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/8")
RQ_QUEUE = os.environ.get("BENCH_RQ_QUEUE", "bench")
PROC_DB = os.environ.get("BENCH_PROCRASTINATE_DB", "postgres://root@127.0.0.1:5432/te_bench_procrastinate")
STEPS = 5


def _done(name: str) -> None:
    redis.Redis.from_url(REDIS_URL).incr(f"{PREFIX}peer:{name}:done")


# --- RQ --------------------------------------------------------------------------------------------


def rq_step(job: int, step: int, steps: int = STEPS) -> None:
    if step >= steps:
        _done("rq")
        return
    from rq import Queue

    queue = Queue(RQ_QUEUE, connection=redis.Redis.from_url(REDIS_URL))
    queue.enqueue(rq_step, job, step + 1, steps, result_ttl=0)


def rq_submit(n: int, steps: int = STEPS) -> None:
    from rq import Queue

    queue = Queue(RQ_QUEUE, connection=redis.Redis.from_url(REDIS_URL))
    for i in range(n):
        queue.enqueue(rq_step, i, 1, steps, result_ttl=0)


# --- Procrastinate ---------------------------------------------------------------------------------

import procrastinate  # noqa: E402

proc_app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=PROC_DB))


@proc_app.task(name="bench_step", queue="bench")
async def proc_step(job: int, step: int, steps: int = STEPS) -> None:
    if step >= steps:
        _done("procrastinate")
        return
    await proc_step.defer_async(job=job, step=step + 1, steps=steps)


async def proc_submit(n: int, steps: int = STEPS) -> None:
    async with proc_app.open_async():
        jobs: list[dict[str, Any]] = [{"job": i, "step": 1, "steps": steps} for i in range(n)]
        await proc_step.batch_defer_async(*jobs)
