"""Hand-off to the callback sender (DESIGN §6), through the engine's signals (``jobs.engine.signals``).

The callbacks app receives them, records the deliveries in the caller's transaction and sends them
after commit on the ``callback`` queue; it never raises, so a callback problem can never fail or delay
a job. The engine does not import that app.

A caller that already holds the job's ``parameters`` passes them: a job without ``rest_endpoints`` (most
jobs) then costs no query and no signal at all. A job's parameters never change after submission, so
the copy the caller read is the truth.
"""

from __future__ import annotations

from typing import Any

from jobs.engine import signals

UNKNOWN: Any = object()


def may_call_back(parameters: Any) -> bool:
    """False only when ``parameters`` certainly name no callback URL (the receiver decides the rest)."""
    if parameters is UNKNOWN:
        return True
    if parameters is None:
        return False
    if not isinstance(parameters, dict):
        return True
    return bool(parameters.get("rest_endpoints"))


def task_event(task_id: int, event: str, message: str = "", *, parameters: Any = UNKNOWN) -> None:
    """Announce a task ``start``, ``complete`` or ``fail`` to the job's callback URLs."""
    if may_call_back(parameters):
        signals.task_event.send(sender=None, task_id=task_id, event=event, message=message)


def job_finished(job_id: int, *, parameters: Any = UNKNOWN) -> None:
    """Announce the end of job ``job_id`` (completed or failed) to its callback URLs."""
    if may_call_back(parameters):
        signals.job_finished.send(sender=None, job_id=job_id)
