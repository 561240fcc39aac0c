"""Celery tasks: three-line adapters around one engine function each, taking primary keys only.

Queues are chosen by the publisher (``jobs.engine.bus`` passes ``queue=``): ``run_task`` goes to its step's
queue, ``advance_job`` and ``dispatch`` to ``controller``, ``reconcile`` to ``scheduler``.
"""

from __future__ import annotations

from celery import Task, shared_task

from jobs.engine import controller, dispatcher, runner
from jobs.engine import reconcile as reconciler


@shared_task(name="jobs.tasks.run_task")
def run_task(task_id: int) -> None:
    runner.run_task(task_id)


@shared_task(name="jobs.tasks.run_tasks", bind=True)
def run_tasks(self: Task, task_ids: list[int]) -> None:
    # The queue the message came from: where the tasks it does not start are published again.
    runner.run_tasks(task_ids, (self.request.delivery_info or {}).get("routing_key"))


@shared_task(name="jobs.tasks.advance_job")
def advance_job(job_id: int) -> None:
    if controller.advance(job_id):
        dispatcher.dispatch()  # the job ended: its slot is free


@shared_task(name="jobs.tasks.dispatch")
def dispatch() -> None:
    dispatcher.dispatch()


@shared_task(name="jobs.tasks.reconcile")
def reconcile() -> None:
    reconciler.reconcile()
