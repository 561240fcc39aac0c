"""Job and task states, their groups, the transition table and the order of the queue (DESIGN.md §1, §2).

``jobs.engine.transitions`` is the only code that writes ``queue_state``; it consults this table.
"""

from __future__ import annotations

from django.db import models


class JobState(models.IntegerChoices):
    QUEUED = 0, "queued"
    STARTED = 1, "started"
    COMPLETED = 2, "completed"
    PENDING = 3, "pending"
    BROKEN = 4, "broken"
    SCHEDULED = 5, "scheduled"
    PAUSED = 6, "paused"


NAME_TO_STATE: dict[str, JobState] = {state.label: state for state in JobState}
TERMINAL: frozenset[int] = frozenset({JobState.COMPLETED, JobState.BROKEN})
NON_TERMINAL: frozenset[int] = frozenset(set(JobState) - TERMINAL)

# (from, to) pairs allowed, whoever asks. Operator requests (PUT queue_state) are limited further by
# OPERATOR_TARGETS; the engine's own moves (dispatch, completion, promotion) use the same table.
TRANSITIONS: dict[int, frozenset[int]] = {
    JobState.SCHEDULED: frozenset({JobState.PENDING, JobState.QUEUED, JobState.PAUSED, JobState.BROKEN}),
    JobState.PENDING: frozenset({JobState.QUEUED, JobState.SCHEDULED, JobState.PAUSED, JobState.BROKEN}),
    JobState.QUEUED: frozenset(
        {JobState.STARTED, JobState.SCHEDULED, JobState.PENDING, JobState.PAUSED, JobState.BROKEN}
    ),
    JobState.STARTED: frozenset({JobState.COMPLETED, JobState.PAUSED, JobState.BROKEN}),
    JobState.PAUSED: frozenset({JobState.QUEUED, JobState.BROKEN}),
    JobState.COMPLETED: frozenset({JobState.BROKEN}),  # only through a rerun
    JobState.BROKEN: frozenset(),
}

# What PUT/PATCH queue_state may ask for, in the order the API names them.
OPERATOR_TARGETS: tuple[JobState, ...] = (JobState.PAUSED, JobState.BROKEN, JobState.QUEUED)


def can_transition(source: int, target: int) -> bool:
    return target in TRANSITIONS.get(source, frozenset())


# The order in which the dispatcher starts queued jobs (and the dashboard lists them); the partial index
# job_dispatch_order (jobs.models) is in this order exactly.
DISPATCH_ORDER = ("-top_of_queue", "priority", "position", "created_at", "id")


class TaskState(models.IntegerChoices):
    PENDING = 0, "pending"  # not yet handed to a worker
    QUEUED = 1, "queued"  # published to its Celery queue
    RUNNING = 2, "running"  # claimed by a worker
    COMPLETED = 3, "completed"
    FAILED = 4, "failed"  # failed for good (retries exhausted or permanent error)
    RETRYING = 5, "retrying"  # failed, waiting retry_delay before the next attempt
    CANCELLED = 6, "cancelled"  # its job was broken before it ran


TASK_TERMINAL: frozenset[int] = frozenset({TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED})
# Not yet running: cancelled when their job ends or breaks.
TASK_WAITING = (TaskState.PENDING, TaskState.QUEUED, TaskState.RETRYING)
