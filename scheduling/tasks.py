"""Celery tasks of the scheduler queue: thin adapters around one service each.

Publishers name the queue (``publish``); the beat schedules carry it in their rows.
"""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from jobs.engine.bus import SCHEDULER_QUEUE
from scheduling.services import (
    job_promote,
    job_semaphore_check,
    job_semaphore_watch,
    jobs_cleanup,
    jobs_promote_due,
)


def publish(task: Task[Any, Any], *args: int, countdown: float | None = None) -> None:
    """Publish ``task`` with primary-key ``args`` on the scheduler queue."""
    if countdown is None:
        task.apply_async(args, queue=SCHEDULER_QUEUE)
    else:
        task.apply_async(args, queue=SCHEDULER_QUEUE, countdown=countdown)


@shared_task(name="scheduling.queue_jobs")
def queue_jobs() -> None:
    jobs_promote_due()


@shared_task(name="scheduling.promote_job")
def promote_job(job_id: int) -> None:
    job_promote(job_id=job_id)


@shared_task(name="scheduling.semaphore_check")
def semaphore_check(job_id: int) -> None:
    job_semaphore_check(job_id=job_id)


@shared_task(name="scheduling.semaphore_watch")
def semaphore_watch(job_id: int) -> None:
    job_semaphore_watch(job_id=job_id)


@shared_task(name="scheduling.cleanup")
def cleanup() -> None:
    jobs_cleanup()
