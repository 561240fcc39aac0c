"""The only writer of ``Job.queue_state`` (DESIGN.md §1, §5).

Every move is a compare-and-set: ``UPDATE … WHERE id = %s AND queue_state IN (expected)``. A duplicate
delivery, or a message about a job that is gone or already moved, changes nothing and returns False.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import connection
from django.utils import timezone

from jobs.models import Job
from jobs.states import JobState, can_transition


def _assignments(target: JobState, fields: dict[str, Any]) -> tuple[list[str], list[Any]]:
    # Column names and values come from the model's own fields.
    values: dict[str, Any] = {"queue_state": int(target), "updated_at": timezone.now(), **fields}
    assignments, params = [], []
    for name, value in values.items():
        field = Job._meta.get_field(name)
        assignments.append(f'"{field.column}" = %s')  # type: ignore[union-attr]
        params.append(field.get_db_prep_save(value, connection))  # type: ignore[union-attr]
    return assignments, params


def job_transition(job_id: int, *, source: Iterable[int], target: JobState, **fields: Any) -> bool:
    """Move job ``job_id`` from one of ``source`` to ``target`` (setting ``fields`` too) if it is there."""
    allowed = [int(state) for state in source if can_transition(state, target)]
    if not allowed:
        return False
    # One plain UPDATE: this runs several times per job (dispatch, end) and the ORM's compilation of it
    # cost more than the statement.
    assignments, params = _assignments(target, fields)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE jobs_job SET {', '.join(assignments)} WHERE id = %s AND queue_state = ANY(%s)",  # noqa: S608 (model column names only) # nosec B608
            [*params, job_id, allowed],
        )
        return bool(cursor.rowcount == 1)


def job_transition_many(
    job_ids: Iterable[int], *, source: Iterable[int], target: JobState, **fields: Any
) -> list[int]:
    """``job_transition`` for several jobs in one UPDATE; returns the ids of the jobs it moved."""
    allowed = [int(state) for state in source if can_transition(state, target)]
    ids = list(job_ids)
    if not allowed or not ids:
        return []
    assignments, params = _assignments(target, fields)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE jobs_job SET {', '.join(assignments)} WHERE id = ANY(%s) AND queue_state = ANY(%s) "  # noqa: S608 (model column names only) # nosec B608
            "RETURNING id",
            [*params, ids, allowed],
        )
        return [int(row[0]) for row in cursor.fetchall()]


# started -> completed (not failed), written as SQL for a statement that ends a job in the same round
# trip as its last step (``runner._STEP_SQL``): the body of a data-modifying CTE over the relation
# ``done`` (columns ``job_id``, ``movable``, ``last``), with parameters ``now`` and ``end_message``.
# It sets what ``job_transition`` sets for this move, and lives here so that this module stays the one
# that writes ``queue_state``.
if not can_transition(JobState.STARTED, JobState.COMPLETED):  # the transition table is the authority
    raise RuntimeError("started -> completed is not a transition")
END_AFTER_LAST_STEP = f"""
UPDATE jobs_job AS j SET queue_state = {int(JobState.COMPLETED)}, failed = false, finished_at = %(now)s,
    message = %(end_message)s, updated_at = %(now)s
FROM done AS d
WHERE j.id = d.job_id AND d.movable AND d.last AND j.queue_state = {int(JobState.STARTED)}
RETURNING j.id
"""  # noqa: S608 (only constants are formatted in) # nosec B608
