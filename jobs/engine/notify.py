"""Hand-off to the callback sender (``jobs.callbacks``, DESIGN §6).

``jobs.callbacks`` records the deliveries in the caller's transaction and sends them after commit on the
``callback`` queue; it never raises, so a callback problem can never fail or delay a job.
"""

from __future__ import annotations

from jobs import callbacks


def task_event(task_id: int, event: str, message: str = "") -> None:
    """Announce a task ``start``, ``complete`` or ``fail`` to the job's callback URLs."""
    callbacks.task_event(task_id, event, message)


def job_finished(job_id: int) -> None:
    """Announce the end of job ``job_id`` (completed or failed) to its callback URLs."""
    callbacks.job_finished(job_id)
