"""The only code that changes ``Job.queue_state`` (DESIGN.md §1, §5).

Every move is a compare-and-set run by one of the statements in ``jobs/engine/sql/transitions.sql``:
``UPDATE … WHERE id = ANY(ids) AND queue_state = ANY(allowed)``, where ``allowed`` is the caller's
expected states filtered through the transition table (``jobs.states.can_transition``). A duplicate
delivery, or a message about a job that is gone or already moved, changes nothing.

What a move implies is set by its statement and nothing else: a start notes ``started_at`` (and clears
an earlier end), an end notes ``finished_at`` with the outcome and message, a break notes
``finished_at``. Other fields (priority, run_at, …) are the services' to write, before the move, in the
same transaction. ``step_end`` (a step's completion, its job's next step and possibly the job's end, in
one statement) is here for the same reason: it may end the job.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.utils import timezone

from jobs.engine.sql import sql
from jobs.states import JobState, can_transition
from taskengine_site import prepared

# The statement that makes each target's move; any other target is a plain move.
_STATEMENTS = {
    JobState.STARTED: "job_start",
    JobState.COMPLETED: "job_end",
    JobState.BROKEN: "job_break",
}


def _allowed(source: Iterable[int], target: JobState) -> list[int]:
    return [int(state) for state in source if can_transition(state, target)]


def job_transition_many(
    job_ids: Iterable[int],
    *,
    source: Iterable[int],
    target: JobState,
    failed: bool = False,
    message: str = "",
) -> list[int]:
    """Move each of ``job_ids`` that is in one of ``source`` to ``target``; return the ids moved.

    ``failed`` and ``message`` are the outcome of an end (``target`` completed) and are ignored otherwise.
    A source the transition table refuses for ``target`` moves nothing.
    """
    allowed = _allowed(source, target)
    ids = list(job_ids)
    if not allowed or not ids:
        return []
    name = _STATEMENTS.get(target, "job_move")
    params: dict[str, Any] = {"ids": ids, "allowed": allowed, "now": timezone.now(), "target": int(target)}
    if target == JobState.COMPLETED:
        params.update(failed=failed, message=message)
    return _moved(name, params)


def job_start_defined(definitions: Mapping[int, str | None], *, source: Iterable[int]) -> list[int]:
    """Move each job of ``definitions`` that is in one of ``source`` to started, as ``job_transition_many``
    does, storing with the move the definition given for it (a JSON text; None keeps the job's own): a
    first start then writes its job row once, not once to start it and again for its definition (each
    write of the row is a new version of it, with an entry in each of its indexes). The ids moved."""
    allowed = _allowed(source, JobState.STARTED)
    if not allowed or not definitions:
        return []
    params: dict[str, Any] = {
        "ids": list(definitions),
        "definitions": list(definitions.values()),
        "allowed": allowed,
        "now": timezone.now(),
    }
    return _moved("job_start_defined", params)


def _moved(name: str, params: Mapping[str, Any]) -> list[int]:
    """Run the move ``name`` (a statement of ``transitions.sql`` returning the ids it moved) with
    ``params``; the ids moved."""
    with prepared.cursor() as cursor:
        cursor.execute(sql(name), params)
        return [int(row[0]) for row in cursor.fetchall()]


def job_transition(
    job_id: int, *, source: Iterable[int], target: JobState, failed: bool = False, message: str = ""
) -> bool:
    """Move job ``job_id`` from one of ``source`` to ``target`` if it is there; True when it moved."""
    return bool(job_transition_many([job_id], source=source, target=target, failed=failed, message=message))


# step_end's ``ended`` part moves a job from started to completed: the table must allow that move.
if not can_transition(JobState.STARTED, JobState.COMPLETED):
    raise RuntimeError("started -> completed is not a transition")


def step_end(params: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """Run ``step_end`` (see ``transitions.sql``) with ``params``; its one row, or None when the
    attempt no longer owned its task."""
    with prepared.cursor() as cursor:
        cursor.execute(sql("step_end"), params)
        row = cursor.fetchone()
    return None if row is None else tuple(row)
