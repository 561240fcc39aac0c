"""Publishing engine messages to Celery, always after the surrounding transaction commits (DESIGN §5).

Messages name Celery tasks by their registered names so the engine never imports ``jobs.tasks`` (which
imports the engine). Every message carries primary keys only; its consumer re-reads Postgres and claims.
"""

from __future__ import annotations

from django.db import transaction

CONTROLLER_QUEUE = "controller"
SCHEDULER_QUEUE = "scheduler"

RUN_TASK = "jobs.tasks.run_task"
ADVANCE_JOB = "jobs.tasks.advance_job"
DISPATCH = "jobs.tasks.dispatch"
RECONCILE = "jobs.tasks.reconcile"


def _send(name: str, args: list[int], queue: str, countdown: float | None = None) -> None:
    from taskengine_site.celery import app

    app.send_task(name, args=args, queue=queue, countdown=countdown)


def publish_run(task_id: int, queue: str, countdown: float | None = None) -> None:
    """Ask a worker of ``queue`` to run task ``task_id`` once the current transaction commits."""
    transaction.on_commit(lambda: _send(RUN_TASK, [task_id], queue, countdown))


def publish_advance(job_id: int) -> None:
    """Ask the controller to move job ``job_id`` on (next task, or the end) after commit."""
    transaction.on_commit(lambda: _send(ADVANCE_JOB, [job_id], CONTROLLER_QUEUE))


def publish_dispatch() -> None:
    """Ask the controller to fill free slots after commit."""
    transaction.on_commit(lambda: _send(DISPATCH, [], CONTROLLER_QUEUE))
