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


def job_transition(job_id: int, *, source: Iterable[int], target: JobState, **fields: Any) -> bool:
    """Move job ``job_id`` from one of ``source`` to ``target`` (setting ``fields`` too) if it is there."""
    allowed = [int(state) for state in source if can_transition(state, target)]
    if not allowed:
        return False
    # One plain UPDATE: this runs several times per job (dispatch, end) and the ORM's compilation of it
    # cost more than the statement. Column names and values come from the model's own fields.
    values: dict[str, Any] = {"queue_state": int(target), "updated_at": timezone.now(), **fields}
    assignments, params = [], []
    for name, value in values.items():
        field = Job._meta.get_field(name)
        assignments.append(f'"{field.column}" = %s')  # type: ignore[union-attr]
        params.append(field.get_db_prep_save(value, connection))  # type: ignore[union-attr]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE jobs_job SET {', '.join(assignments)} WHERE id = %s AND queue_state = ANY(%s)",  # noqa: S608 (model column names only) # nosec B608
            [*params, job_id, allowed],
        )
        return bool(cursor.rowcount == 1)
