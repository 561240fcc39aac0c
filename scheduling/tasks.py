"""Celery tasks of the scheduler and callback queues: thin adapters around one service each.

Publishers name the queue (``publish``); the beat schedules carry it in their rows.
"""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

SCHEDULER_QUEUE = "scheduler"
CALLBACK_QUEUE = "callback"


def publish(task: Task[Any, Any], *args: int, countdown: float | None = None) -> None:
    """Publish ``task`` with primary-key ``args`` on its queue (callback for deliveries, else scheduler)."""
    queue = CALLBACK_QUEUE if task.name.startswith("callbacks.") else SCHEDULER_QUEUE
    if countdown is None:
        task.apply_async(args, queue=queue)
    else:
        task.apply_async(args, queue=queue, countdown=countdown)


@shared_task(name="scheduling.queue_jobs")
def queue_jobs() -> None:
    from scheduling.services import jobs_promote_due

    jobs_promote_due()


@shared_task(name="scheduling.promote_job")
def promote_job(job_id: int) -> None:
    from scheduling.services import job_promote

    job_promote(job_id=job_id)


@shared_task(name="scheduling.semaphore_check")
def semaphore_check(job_id: int) -> None:
    from scheduling.services import job_semaphore_check

    job_semaphore_check(job_id=job_id)


@shared_task(name="scheduling.semaphore_watch")
def semaphore_watch(job_id: int) -> None:
    from scheduling.services import job_semaphore_watch

    job_semaphore_watch(job_id=job_id)


@shared_task(name="scheduling.cleanup")
def cleanup() -> None:
    from scheduling.services import jobs_cleanup

    jobs_cleanup()


@shared_task(name="scheduling.redeliver_callbacks")
def redeliver_callbacks() -> None:
    from jobs.callbacks import callbacks_redeliver

    callbacks_redeliver()


@shared_task(name="callbacks.deliver")
def callback_deliver(delivery_id: int) -> None:
    from jobs.callbacks import callback_deliver as deliver

    deliver(delivery_id=delivery_id)
