"""The only writer of ``Job.queue_state`` (DESIGN.md §1, §5).

Every move is a compare-and-set: ``UPDATE … WHERE id = %s AND queue_state IN (expected)``. A duplicate
delivery, or a message about a job that is gone or already moved, changes nothing and returns False.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.utils import timezone

from jobs.models import Job
from jobs.states import JobState, can_transition


def job_transition(job_id: int, *, source: Iterable[int], target: JobState, **fields: Any) -> bool:
    """Move job ``job_id`` from one of ``source`` to ``target`` (setting ``fields`` too) if it is there."""
    allowed = [state for state in source if can_transition(state, target)]
    if not allowed:
        return False
    updated = Job.objects.filter(pk=job_id, queue_state__in=allowed).update(
        queue_state=target, updated_at=timezone.now(), **fields
    )
    return updated == 1
