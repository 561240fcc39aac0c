"""Writing a job's log. Every engine and API component logs through ``job_log``."""

from __future__ import annotations

from logs.models import LogEntry, Severity


def job_log(
    job_id: int,
    message: str,
    *,
    progname: str,
    severity: int = Severity.INFO,
    task_id: int = 0,
    visible: bool = True,
) -> LogEntry:
    """Append one entry to a job's log (``task_id`` 0 for job-level entries)."""
    return LogEntry.objects.create(
        job_id=job_id, message=message, progname=progname, severity=severity, task_id=task_id, visible=visible
    )
