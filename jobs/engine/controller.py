"""The controller: starts a job's tasks, moves a job on when a task ends, ends the job (DESIGN §1, §4).

``start_job`` runs in the dispatcher's transaction; ``move_on`` in the worker's transaction that records
a task's end (so no hand-over message can be lost between the two); ``advance`` on the ``controller``
queue, for the reconciler. Every entry point locks the job row and re-checks its state, so a duplicate
or late message changes nothing.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from jobs.engine import bus, notify
from jobs.engine.sql import sql
from jobs.engine.transitions import job_start_defined, job_transition
from jobs.models import Job, Task
from jobs.states import TASK_WAITING, JobState, TaskState
from jobs.workflows.registry import resolve_steps
from logs.models import Severity
from logs.services import job_log
from taskengine_site import prepared
from taskengine_site.errors import DomainError

logger = logging.getLogger(__name__)

PROGNAME = "controller"
JOB_COMPLETED = "job has completed successfully"


Resolved = tuple[list[dict[str, Any]], bool] | None | DomainError


def start_job(job_id: int, *, definitions: dict[tuple[int, str], Resolved] | None = None) -> bool:
    """Give a job that has just moved to started its tasks (first start) and publish its next task.

    Called by the dispatcher inside its transaction, which holds the job row (it moved it to started).
    ``definitions`` memoises resolved workflow definitions across the jobs of one dispatch. Returns False
    when the job could not start (its workflow no longer resolves) and was ended as failed instead.
    """
    return bool(start_jobs([job_id], definitions={} if definitions is None else definitions))


def _resolve(client_id: int, workflow: str, own: Any, memo: dict[tuple[int, str], Resolved]) -> Resolved:
    """The definition a job of this client and workflow starts with (``own``: the steps of the client's
    own definition of it, read with the job, or None), memoised across a dispatch."""
    key = (client_id, workflow)
    if key not in memo:
        try:
            memo[key] = resolve_steps(workflow, own)
        except DomainError as exc:  # a client definition naming a step that no longer exists
            memo[key] = exc
    return memo[key]


def start_jobs(job_ids: list[int], *, definitions: dict[tuple[int, str], Resolved]) -> list[int]:
    """``start_job`` for jobs the dispatcher has just moved to started, all in a few statements.

    Called in the dispatcher's transaction (a savepoint of it: on any error the dispatcher undoes this
    and starts the same jobs one at a time, each in its own savepoint, so one job that cannot start
    does not hold the others back). Returns the ids of the jobs that started: a resumed job (it had
    tasks) goes on from its first unfinished task, and a job whose workflow no longer resolves is ended
    as failed instead.
    """
    if not job_ids:
        return []
    return _begin(_plan(_lock_starting(job_ids, JobState.STARTED), definitions), written=False)


def start_queued(
    job_ids: list[int], *, definitions: dict[tuple[int, str], Resolved]
) -> tuple[list[int], list[int]]:
    """Start queued jobs the dispatcher admitted, in its transaction: ``(the ids moved, the ids started)``.

    ``start_jobs`` with the move done here: the jobs still queued are locked, the definition of each
    that starts for the first time is resolved, and the move stores it (``job_start_defined``), so a new
    job's row is written once to start, not twice (every write of a job row is a new version of it with
    an entry in each of its indexes, its parameters' trigram index among them). Then as ``start_jobs``:
    tasks for the new jobs, the next step for the resumed ones, and a failed end for those whose workflow
    no longer resolves (they move to started first, as the dispatcher's jobs always did).
    """
    if not job_ids:
        return [], []
    plans = _plan(_lock_starting(job_ids, JobState.QUEUED), definitions)
    moved = job_start_defined(
        {plan.job_id: None if plan.fresh is None else _definition(*plan.fresh) for plan in plans},
        source=[JobState.QUEUED],
    )
    kept = set(moved)
    return moved, _begin([plan for plan in plans if plan.job_id in kept], written=True)


@dataclass(frozen=True)
class _Start:
    """How one job starts: ``fresh`` (its steps, and whether its client's own definition gave them) for a
    first start, ``failure`` (the message it ends with) when its workflow no longer resolves, neither
    for a job resumed after a pause."""

    job_id: int
    fresh: tuple[list[dict[str, Any]], bool] | None = None
    failure: str = ""


def _lock_starting(job_ids: list[int], state: JobState) -> list[tuple[Any, ...]]:
    with prepared.cursor() as cursor:
        cursor.execute(sql("lock_starting_jobs"), {"ids": job_ids, "state": int(state)})
        return [tuple(row) for row in cursor.fetchall()]


def _plan(rows: list[tuple[Any, ...]], definitions: dict[tuple[int, str], Resolved]) -> list[_Start]:
    """How each locked job (a ``lock_starting_jobs`` row) starts, its workflow resolved (memoised in
    ``definitions`` across a dispatch)."""
    plans: list[_Start] = []
    for job_id, client_id, workflow, first_start, own in rows:
        if not first_start:
            plans.append(_Start(int(job_id)))
            continue
        # jsonb arrives as its text on Django's connections (Django parses JSONField values itself).
        steps = None if own is None else json.loads(own)
        resolved = _resolve(int(client_id), str(workflow), steps, definitions)
        if isinstance(resolved, DomainError):
            failure = f"invalid workflow definition '{workflow}': {resolved.message}"
            plans.append(_Start(int(job_id), failure=failure))
        elif resolved is None:
            plans.append(_Start(int(job_id), failure=f"unknown workflow '{workflow}'"))
        else:
            plans.append(_Start(int(job_id), fresh=resolved))
    return plans


def _definition(steps: list[dict[str, Any]], own: bool) -> str:
    """The definition a job stores when it first starts (``Job.definition``), as JSON text."""
    return json.dumps({"source": "client" if own else "common", "steps": steps})


def _begin(plans: list[_Start], *, written: bool) -> list[int]:
    """Carry out ``plans`` for jobs now started; the ids that started. ``written``: the move stored the new
    jobs' definitions already."""
    started: list[int] = []
    fresh: list[tuple[int, list[dict[str, Any]], bool]] = []
    for plan in plans:
        if plan.failure:
            _end_job(Job.objects.get(pk=plan.job_id), failed=True, message=plan.failure)
        elif plan.fresh is None:
            _progress(Job.objects.get(pk=plan.job_id), resume=True)
            started.append(plan.job_id)
        else:
            fresh.append((plan.job_id, *plan.fresh))
            started.append(plan.job_id)
    if fresh:
        _give_tasks(fresh, write_definitions=not written)
    return started


def _give_tasks(jobs: list[tuple[int, list[dict[str, Any]], bool]], *, write_definitions: bool) -> None:
    """Write the task rows (and, with ``write_definitions``, the definition) of jobs starting for the
    first time, one statement each, and publish each job's first task after commit. ``jobs``: (id,
    steps, is a client definition).
    """
    now = timezone.now()
    ids: list[int] = []
    definitions: list[str] = []
    tasks: dict[str, list[Any]] = {"job_ids": [], "positions": [], "names": [], "queues": []}
    tasks.update(parameters=[], states=[])
    for job_id, steps, own in jobs:
        if write_definitions:
            ids.append(job_id)
            definitions.append(_definition(steps, own))
        for index, item in enumerate(steps, start=1):
            tasks["job_ids"].append(job_id)
            tasks["positions"].append(index)
            tasks["names"].append(item["step"])
            tasks["queues"].append(item["queue"])
            tasks["parameters"].append(json.dumps(item["parameters"]))
            # The first step is queued at once: nothing else can have happened to a new job's tasks.
            tasks["states"].append(int(TaskState.QUEUED if index == 1 else TaskState.PENDING))
    with prepared.cursor() as cursor:
        if write_definitions:
            cursor.execute(sql("write_definitions"), {"ids": ids, "definitions": definitions, "now": now})
        cursor.execute(sql("insert_tasks"), {**tasks, "now": now})
        first = sorted((r for r in cursor.fetchall() if r[2] == 1), key=lambda r: r[1])
    bus.publish_starts([(int(task_id), queue) for task_id, _, _, queue in first])


def fail_start(job_id: int, message: str) -> None:
    """End, as failed, a job the dispatcher moved to started but could not give its tasks."""
    job = Job.objects.filter(pk=job_id).first()
    if job is None:
        return
    if job.queue_state == JobState.QUEUED:
        job_transition(job_id, source=[JobState.QUEUED], target=JobState.STARTED)
    _end_job(job, failed=True, message=message)


@dataclass(frozen=True)
class Progress:
    """What ``move_on`` did: whether the job ended (its slot is free)."""

    ended: bool = False


def advance(job_id: int) -> bool:
    """Move a started job on after one of its tasks ended: publish the next task or end the job.

    The worker does this itself in the statement that records a task's end (``step_end``); this entry
    point is for the reconciler, which nudges a started job with nothing in flight, and for the cases
    that statement leaves. A no-op unless the job is started. True when the job ended: its slot is free,
    and the caller runs the dispatcher.
    """
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id, queue_state=JobState.STARTED).first()
        if job is None:
            return False
        return move_on(job).ended


def move_on(job: Job) -> Progress:
    """Move a started job, locked by the caller's transaction, on after one of its tasks ended.

    The next task is marked queued and published after commit, or the job ends. A completed step's own
    worker does this in the step's end statement (``step_end``); this is the general path: a
    failed step, the reconciler, a case that statement leaves.
    """
    return _progress(job, resume=False)


def _progress(job: Job, *, resume: bool) -> Progress:
    """Decide the next move of a started, locked job.

    ``resume`` re-publishes a task already marked queued or retrying: after a pause its message may
    have been consumed (and refused) while the job was not started.
    """
    tasks = list(job.tasks.order_by("position"))
    failed = next((task for task in tasks if task.state == TaskState.FAILED), None)
    if failed is not None:
        _end_job(job, failed=True, message=f"'{failed.name}' failed: {failed.error}", task_id=failed.pk)
        return Progress(ended=True)
    current = next((task for task in tasks if task.state != TaskState.COMPLETED), None)
    if current is None:
        _end_job(job, failed=False, message=JOB_COMPLETED, task_id=tasks[-1].pk if tasks else 0)
        return Progress(ended=True)
    if current.state == TaskState.PENDING:
        if Task.objects.filter(pk=current.pk, state=TaskState.PENDING).update(
            state=TaskState.QUEUED, updated_at=timezone.now()
        ):
            bus.publish_run(current.pk, current.queue)
    elif resume and current.state == TaskState.QUEUED:
        bus.publish_run(current.pk, current.queue)
    elif resume and current.state == TaskState.RETRYING:
        due = current.next_attempt_at or timezone.now()
        bus.publish_run(current.pk, current.queue, countdown=max(0.0, (due - timezone.now()).total_seconds()))
    elif current.state == TaskState.CANCELLED:
        # Only a broken job cancels tasks; a started job with one cannot go on.
        _end_job(job, failed=True, message=f"'{current.name}' was cancelled", task_id=current.pk)
        return Progress(ended=True)
    # RUNNING: its worker moves the job on when the step ends.
    return Progress()


def _end_job(job: Job, *, failed: bool, message: str, task_id: int = 0) -> None:
    """End a started job; its log line is under ``task_id``, the task that ended it (0: none had run)."""
    now = timezone.now()
    if not job_transition(
        job.pk, source=[JobState.STARTED], target=JobState.COMPLETED, failed=failed, message=message
    ):
        return
    Task.objects.filter(job_id=job.pk, state__in=TASK_WAITING).update(
        state=TaskState.CANCELLED, updated_at=now
    )
    if failed:
        job_log(
            job.pk, f"job has failed: {message}", progname=PROGNAME, severity=Severity.ERROR, task_id=task_id
        )
    else:
        job_log(job.pk, message, progname=PROGNAME, task_id=task_id)
    notify.job_finished(job.pk, parameters=job.parameters)
