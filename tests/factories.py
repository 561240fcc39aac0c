"""Rows for tests, built one way: clients with a key, jobs in any state with their tasks, tasks, log entries.

Jobs and tasks are written as rows, in the state asked for, with nothing of the engine behind them (no
dispatch, no message): for reads, for the periodic paths, for a step run by hand. A test of the real
paths submits through ``jobs.services.job_submit`` (the ``submit`` fixtures) and lets the engine move
the job. Every field the model has can be given; what is not given gets the value a fresh row would.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from django.utils import timezone

from clients.models import Client
from clients.services import client_create
from jobs.models import Job, Task
from jobs.states import JobState, TaskState
from logs.models import LogEntry


def client(
    name: str | None = None, *, operator: bool = False, webhook_secret: str = ""
) -> tuple[Client, str]:
    """A client (a fresh unique name unless ``name`` is given) and its one API key."""
    return client_create(
        name=name or f"client-{uuid.uuid4().hex[:8]}", is_operator=operator, webhook_secret=webhook_secret
    )


def job(
    owner: Client,
    *,
    workflow: str = "noop",
    queue_state: int = JobState.QUEUED,
    tasks: Sequence[str] = (),
    task_state: TaskState = TaskState.PENDING,
    **fields: Any,
) -> Job:
    """A job of ``owner`` in ``queue_state`` (``run_at`` now unless given), with a task row per step name
    in ``tasks``, at positions 1, 2, … as the engine numbers them, all in ``task_state``."""
    fields.setdefault("run_at", timezone.now())
    row = Job.objects.create(client=owner, workflow=workflow, queue_state=queue_state, **fields)
    for name in tasks:
        task(row, name, state=task_state)
    return row


def task(of: Job, name: str = "noop", *, position: int | None = None, **fields: Any) -> Task:
    """A task of job ``of``; by default after its last one."""
    if position is None:
        last = Task.objects.filter(job=of).order_by("-position").values_list("position", flat=True).first()
        position = (last or 0) + 1
    return Task.objects.create(job=of, name=name, position=position, **fields)


def log_entry(of: Job, message: str = "a line", *, progname: str = "worker", **fields: Any) -> LogEntry:
    """An entry of job ``of``'s log (job-level unless ``task_id`` is given)."""
    return LogEntry.objects.create(job=of, message=message, progname=progname, **fields)
