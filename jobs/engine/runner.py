"""The runner: one attempt of one task, on the worker of the task's queue (DESIGN §4, §5).

The attempt is claimed by compare-and-set (the claim bumps ``attempts``, which then fences every later
write of this attempt), the step runs outside any transaction while a heartbeat thread proves it alive,
and the outcome is recorded and handed to the controller after commit.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from jobs.engine import bus, notify, retry
from jobs.models import Job, Task
from jobs.states import JobState, TaskState
from jobs.workflows.registry import PermanentError, StepCancelled, StepContext, get_step
from logs.models import LogEntry, Severity
from logs.services import job_log

logger = logging.getLogger(__name__)

PROGNAME = "worker"


def heartbeat_seconds() -> float:
    """How often a running task proves it is alive (``TASKENGINE_HEARTBEAT_SECONDS``, default 5)."""
    return float(getattr(settings, "TASKENGINE_HEARTBEAT_SECONDS", 5.0))


def stale_after() -> timedelta:
    """A running attempt whose heartbeat is older than this is presumed dead (its worker was killed):
    ``TASKENGINE_HEARTBEAT_STALE_SECONDS``, default 60, several heartbeats so a slow beat is not death."""
    return timedelta(seconds=float(getattr(settings, "TASKENGINE_HEARTBEAT_STALE_SECONDS", 60.0)))


NO_CLIENT_DEFINITIONS = "No client definitions. Using common definitions."


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def claim(task_id: int) -> int | None:
    """Claim task ``task_id`` for one attempt; return the attempt number, or None if not claimable.

    Claimable: queued, or retrying and due, or running with a stale heartbeat (its worker died) — and
    only while the job is started, so a paused or broken job runs nothing new.
    """
    if not _claim_update(task_id):
        return None
    return int(Task.objects.filter(pk=task_id).values_list("attempts", flat=True).get())


def _claim_update(task_id: int) -> bool:
    """The compare-and-set of ``claim``: True when this call moved the task to running."""
    now = timezone.now()
    claimable = (
        Q(state=TaskState.QUEUED)
        | Q(state=TaskState.RETRYING, next_attempt_at__lte=now)
        | Q(state=TaskState.RUNNING, heartbeat_at__lt=now - stale_after())
    )
    started_jobs = Job.objects.filter(queue_state=JobState.STARTED).values("id")
    updated = Task.objects.filter(claimable, pk=task_id, job_id__in=started_jobs).update(
        state=TaskState.RUNNING,
        attempts=F("attempts") + 1,
        worker=worker_name(),
        heartbeat_at=now,
        started_at=now,
        next_attempt_at=None,
        updated_at=now,
    )
    return updated == 1


@dataclass
class _Heartbeat:
    """Keeps ``heartbeat_at`` fresh and notices a broken job, from a thread and from the step itself."""

    task_id: int
    job_id: int
    attempt: int
    cancelled: threading.Event = field(default_factory=threading.Event)
    stopped: threading.Event = field(default_factory=threading.Event)
    last_beat: float = 0.0
    progress: float | None = None

    def beat(self, progress: float | None = None) -> None:
        """Refresh ``heartbeat_at`` (and progress) while this attempt still owns the task; notice a
        broken job or a lost claim."""
        now = timezone.now()
        fields: dict[str, Any] = {"heartbeat_at": now, "updated_at": now}
        if progress is not None:
            fields["progress"] = max(0.0, min(100.0, float(progress)))
        owned = Task.objects.filter(pk=self.task_id, state=TaskState.RUNNING, attempts=self.attempt).update(
            **fields
        )
        state = Job.objects.filter(pk=self.job_id).values_list("queue_state", flat=True).first()
        # Pausing lets the running task finish (DESIGN §1); breaking, or losing the claim, stops it.
        if not owned or state is None or state == JobState.BROKEN:
            self.cancelled.set()
        self.last_beat = time.monotonic()

    def from_step(self, progress: float | None = None) -> None:
        if progress is not None:
            self.progress = progress
        # At most one write a second, however often a step reports; the latest progress goes with it.
        if time.monotonic() - self.last_beat >= 1.0:
            self.beat(self.progress)
        if self.cancelled.is_set():
            raise StepCancelled("the job was broken")

    def loop(self) -> None:
        try:
            while not self.stopped.wait(heartbeat_seconds()):
                try:
                    self.beat(self.progress)
                except Exception:
                    logger.exception("heartbeat of task %s failed", self.task_id)
        finally:
            connection.close()


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value


def run_task(task_id: int) -> None:
    """Run one attempt of task ``task_id`` if it can be claimed; a duplicate delivery is a no-op."""
    # One transaction for the claim and the start's records: one commit (one WAL flush) instead of
    # one per statement. It commits before the step runs, which runs outside any transaction.
    with transaction.atomic():
        if not _claim_update(task_id):
            return
        # The claim bumped ``attempts`` and the row is locked by it until the commit.
        task = Task.objects.select_related("job__client").get(pk=task_id)
        attempt = task.attempts
        job = task.job
        definition = job.definition if isinstance(job.definition, dict) else {}
        entries = []
        if definition.get("source") == "common":
            entries.append(_log_entry(job.pk, task.pk, NO_CLIENT_DEFINITIONS))
        entries.append(_log_entry(job.pk, task.pk, f"Task '{task.name}' started"))
        LogEntry.objects.bulk_create(entries)
        if attempt == 1:
            notify.task_event(task.pk, "start", parameters=job.parameters)

        results: dict[str, Any] = {}
        if task.position > 1:  # the first step has no earlier results to read
            for name, earlier in (
                Task.objects.filter(job_id=job.pk, position__lt=task.position, state=TaskState.COMPLETED)
                .order_by("position")
                .values_list("name", "result")
            ):
                results[name] = earlier

    heartbeat = _Heartbeat(task_id=task.pk, job_id=job.pk, attempt=attempt)

    def log(message: str, severity: int = Severity.INFO) -> None:
        job_log(job.pk, message, progname=PROGNAME, severity=severity, task_id=task.pk)

    ctx = StepContext(
        job_id=job.pk,
        task_id=task.pk,
        client_name=job.client.name,
        workflow=job.workflow,
        job_parameters=job.parameters if isinstance(job.parameters, dict) else {},
        step_parameters=task.parameters if isinstance(task.parameters, dict) else {},
        results=results,
        log=log,
        heartbeat=heartbeat.from_step,
        storage_root=settings.TASKENGINE_STORAGE_ROOT,
        attempt=attempt,
    )
    thread = threading.Thread(target=heartbeat.loop, name=f"heartbeat-{task.pk}", daemon=True)
    thread.start()
    outcome: str
    error = ""
    result: Any = None
    try:
        result = get_step(task.name).fn(ctx)
        outcome = "completed"
    except StepCancelled:
        outcome = "cancelled"
    except PermanentError as exc:
        outcome, error = "permanent", str(exc) or type(exc).__name__
    except Exception as exc:
        # Any other error (including Celery's soft time limit) may pass on another attempt.
        outcome, error = "transient", str(exc) or type(exc).__name__
    finally:
        heartbeat.stopped.set()
        thread.join(timeout=heartbeat_seconds() + 5)
    if not connection.in_atomic_block:
        # A long step may have outlived the server's idle timeout: re-check the connection first.
        close_old_connections()
    _record(task, attempt, outcome, error, _jsonable(result), parameters=job.parameters)


def _log_entry(job_id: int, task_id: int, message: str) -> LogEntry:
    """An INFO entry of this worker, as ``job_log`` writes it (several are inserted in one statement)."""
    return LogEntry(
        job_id=job_id, message=message, progname=PROGNAME, severity=Severity.INFO, task_id=task_id
    )


def _record(
    task: Task, attempt: int, outcome: str, error: str, result: Any, *, parameters: Any = notify.UNKNOWN
) -> None:
    now = timezone.now()
    mine = Task.objects.filter(pk=task.pk, state=TaskState.RUNNING, attempts=attempt)
    from jobs.engine import monitor

    with transaction.atomic():
        if outcome == "completed":
            if not mine.update(
                state=TaskState.COMPLETED, result=result, progress=100.0, finished_at=now, updated_at=now
            ):
                return  # the claim was lost (presumed dead and re-run): the other attempt reports
            job_log(task.job_id, f"'{task.name}' completed successfully", progname=PROGNAME, task_id=task.pk)
            notify.task_event(task.pk, "complete", parameters=parameters)
            bus.publish_advance(task.job_id)
            transaction.on_commit(lambda: monitor.count_processed(failed=False))
            return
        if outcome == "cancelled":
            broken = Job.objects.filter(pk=task.job_id, queue_state=JobState.BROKEN).exists()
            if mine.update(
                state=TaskState.CANCELLED if broken else TaskState.PENDING, finished_at=now, updated_at=now
            ):
                job_log(
                    task.job_id,
                    f"'{task.name}' cancelled: the job was broken",
                    progname=PROGNAME,
                    severity=Severity.WARN,
                    task_id=task.pk,
                )
            return
        decision = retry.decide(attempt=attempt, permanent=outcome == "permanent")
        if decision.retry:
            if not mine.update(
                state=TaskState.RETRYING,
                error=error,
                next_attempt_at=now + timedelta(seconds=decision.delay),
                finished_at=now,
                updated_at=now,
            ):
                return
            job_log(
                task.job_id,
                f"'{task.name}' failed (attempt {attempt} of {decision.limit + 1}): {error}. "
                f"Retrying in {decision.delay} seconds.",
                progname=PROGNAME,
                severity=Severity.ERROR,
                task_id=task.pk,
            )
            if decision.use_countdown:
                bus.publish_run(task.pk, task.queue, countdown=decision.delay)
        else:
            if not mine.update(state=TaskState.FAILED, error=error, finished_at=now, updated_at=now):
                return
            job_log(
                task.job_id,
                f"'{task.name}' failed: {error}",
                progname=PROGNAME,
                severity=Severity.ERROR,
                task_id=task.pk,
            )
            notify.task_event(task.pk, "fail", error, parameters=parameters)
            bus.publish_advance(task.job_id)
        transaction.on_commit(lambda: monitor.count_processed(failed=True))
