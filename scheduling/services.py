"""The scheduler: promotion of due jobs, semaphore checks, clean-up and the beat schedules (DESIGN.md §3).

Promotion is ``scheduled → pending`` (a semaphore URL is set) or ``scheduled → queued``, then
``pending → queued`` when the semaphore opens. Every move is a compare-and-set through
``jobs.engine.transitions.job_transition``, so two beat processes running by mistake, or a promote
task arriving twice, still promote a job once.

The periodic sweep (``jobs_promote_due``, every ``schedule_interval`` seconds) is the safety net, not
the clock: ``job_promotion_arm`` publishes a promote task for the job's exact ``run_at`` when that falls
before the next sweep, and a sweep arms every job due before the one after it. A job that becomes
pending is checked at once and then re-checked at growing intervals until the sweep takes over.
"""

from __future__ import annotations

import functools
import logging
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models.functions import Coalesce
from django.utils import timezone

from jobs.engine import bus
from jobs.engine.bus import countdown_ceiling
from jobs.engine.counts import job_counts_compact
from jobs.engine.transitions import job_transition
from jobs.models import Job
from jobs.states import TERMINAL, JobState
from jobs.workflows.registry import cleanup_job
from logs.models import Severity
from logs.services import job_log
from scheduling import beat
from settings_app.services import setting_get_int
from taskengine_site import outbound

logger = logging.getLogger(__name__)

PROGNAME = "scheduler"
SEMAPHORE_TIMEOUT = (2.0, 3.0)
SEMAPHORE_MAX_BYTES = 4096
# Published promote tasks cover the window up to the next sweep plus this margin, so a job due just
# after the next sweep started is not left to the sweep after that.
ARM_MARGIN = timedelta(seconds=5)
SWEEP_BATCH = 500
CLEANUP_BATCH = 500


def _sweep_window() -> timedelta:
    return timedelta(seconds=setting_get_int("schedule_interval")) + ARM_MARGIN


def _request_dispatch() -> None:
    """Ask the controller to start what was just queued (it publishes after the commit)."""
    bus.request_dispatch()


def _publish_promote(job_id: int, run_at: datetime) -> None:
    countdown = max(0.0, (run_at - timezone.now()).total_seconds())
    if countdown > countdown_ceiling():
        return
    bus.send_scheduler(bus.PROMOTE_JOB, job_id, countdown=countdown)


def _publish_semaphore_watch(job_id: int, countdown: float = 0.0) -> None:
    bus.send_scheduler(bus.SEMAPHORE_WATCH, job_id, countdown=countdown)


def job_promotion_arm(*, job_id: int) -> None:
    """Make sure job ``job_id`` is promoted on time: call it after a job becomes ``scheduled`` (or its
    ``run_at`` changes) or ``pending``. Publishes after the commit; a no-op for other states.

    A scheduled job due before the next sweep gets a promote task at its ``run_at``; a pending job
    gets an immediate semaphore check followed by short re-checks.
    """
    job = Job.objects.filter(pk=job_id).values("queue_state", "run_at").first()
    if job is None:
        return
    if job["queue_state"] == JobState.SCHEDULED:
        run_at = job["run_at"]
        if run_at - timezone.now() <= _sweep_window():
            transaction.on_commit(lambda: _publish_promote(job_id, run_at), robust=True)
    elif job["queue_state"] == JobState.PENDING:
        transaction.on_commit(lambda: _publish_semaphore_watch(job_id), robust=True)


def job_promote(*, job_id: int, now: datetime | None = None, dispatch: bool = True) -> bool:
    """Promote one scheduled job whose ``run_at`` has passed: to ``pending`` when it has a semaphore
    URL, else to ``queued``. Returns whether this call moved it (False when it is not due, already
    moved, or gone)."""
    now = now or timezone.now()
    job = Job.objects.filter(pk=job_id).values("queue_state", "run_at", "semaphore_url").first()
    if job is None or job["queue_state"] != JobState.SCHEDULED:
        return False
    if job["run_at"] > now:
        # Early (run_at moved later, or clocks disagree): come back at the right time if that is soon.
        if job["run_at"] - now <= _sweep_window():
            run_at = job["run_at"]
            transaction.on_commit(lambda: _publish_promote(job_id, run_at), robust=True)
        return False
    target = JobState.PENDING if job["semaphore_url"] else JobState.QUEUED
    with transaction.atomic():
        if not job_transition(job_id, source=[JobState.SCHEDULED], target=target):
            return False
        if target == JobState.PENDING:
            job_log(job_id, "run_at has passed; waiting for the semaphore URL to open", progname=PROGNAME)
            transaction.on_commit(lambda: _publish_semaphore_watch(job_id), robust=True)
        else:
            job_log(job_id, "run_at has passed; job queued", progname=PROGNAME)
            if dispatch:
                _request_dispatch()
    return True


def job_semaphore_check(*, job_id: int) -> bool:
    """GET a pending job's semaphore URL (short timeout, no redirects); 2xx or 3xx opens it and the
    job is queued. Returns whether this call queued the job."""
    job = Job.objects.filter(pk=job_id).values("queue_state", "semaphore_url").first()
    if job is None or job["queue_state"] != JobState.PENDING:
        return False
    url = job["semaphore_url"]
    if not url:
        opened, detail = True, "no semaphore URL"
    else:
        try:
            response = outbound.request(
                "GET", url, timeout=SEMAPHORE_TIMEOUT, max_bytes=SEMAPHORE_MAX_BYTES, allow_redirects=False
            )
            opened, detail = 200 <= response.status_code < 400, f"HTTP {response.status_code}"
        except outbound.UrlRefused as exc:
            opened, detail = False, exc.message
        except outbound.OutboundError as exc:
            opened, detail = False, str(exc)
    if not opened:
        # Checked on every sweep: kept out of the default log view so it does not drown the rest.
        job_log(
            job_id,
            f"semaphore closed ({detail})",
            progname=PROGNAME,
            severity=Severity.DEBUG,
            visible=False,
        )
        return False
    with transaction.atomic():
        if not job_transition(job_id, source=[JobState.PENDING], target=JobState.QUEUED):
            return False
        job_log(job_id, f"semaphore open ({detail}); job queued", progname=PROGNAME)
        _request_dispatch()
    return True


def job_semaphore_watch(*, job_id: int) -> bool:
    """Check a newly pending job's semaphore now and, while it stays closed, again after a delay that
    grows with the time the job has been pending, until the sweep's own interval is reached."""
    if job_semaphore_check(job_id=job_id):
        return True
    job = Job.objects.filter(pk=job_id).values("queue_state", "updated_at").first()
    if job is None or job["queue_state"] != JobState.PENDING:
        return False
    pending_for = (timezone.now() - job["updated_at"]).total_seconds()
    delay = max(1.0, pending_for / 2)
    if delay < setting_get_int("schedule_interval"):
        transaction.on_commit(lambda: _publish_semaphore_watch(job_id, delay), robust=True)
    return False


def jobs_promote_due(*, now: datetime | None = None) -> dict[str, int]:
    """The sweep (``QueueJobs``): promote every scheduled job whose ``run_at`` has passed, publish a
    semaphore check for every pending job, and arm promote tasks for jobs due before the next sweep.
    Returns the counts."""
    now = now or timezone.now()
    # Selected before promoting: a job this sweep makes pending gets its own immediate check.
    pending = list(
        Job.objects.filter(queue_state=JobState.PENDING, run_at__lte=now)
        .order_by("run_at", "id")
        .values_list("pk", flat=True)[:SWEEP_BATCH]
    )
    if pending:

        def publish_checks() -> None:
            for job_id in pending:
                bus.send_scheduler(bus.SEMAPHORE_CHECK, job_id)

        transaction.on_commit(publish_checks, robust=True)

    promoted = 0
    due = (
        Job.objects.filter(queue_state=JobState.SCHEDULED, run_at__lte=now)
        .order_by("run_at", "id")
        .values_list("pk", flat=True)
    )
    while True:
        # Batches keep memory flat; a promoted (or concurrently promoted) job leaves the selection.
        batch = list(due[:SWEEP_BATCH])
        for job_id in batch:
            if job_promote(job_id=job_id, now=now, dispatch=False):
                promoted += 1
        if len(batch) < SWEEP_BATCH:
            break
    if promoted:
        _request_dispatch()

    upcoming = list(
        Job.objects.filter(queue_state=JobState.SCHEDULED, run_at__gt=now, run_at__lte=now + _sweep_window())
        .order_by("run_at", "id")
        .values_list("pk", "run_at")[:SWEEP_BATCH]
    )
    for job_id, run_at in upcoming:
        transaction.on_commit(functools.partial(_publish_promote, job_id, run_at), robust=True)
    if promoted:
        logger.info("scheduler: promoted %d due jobs", promoted)
    return {"promoted": promoted, "semaphores": len(pending), "armed": len(upcoming)}


def jobs_cleanup(*, now: datetime | None = None) -> int:
    """Delete terminal jobs that ended more than ``cleanup_days`` ago and are not ``persist``, with
    their tasks, logs and callback deliveries. Returns the number of jobs deleted."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=setting_get_int("cleanup_days"))
    old = (
        Job.objects.filter(queue_state__in=TERMINAL, persist=False)
        .annotate(ended_at=Coalesce("finished_at", "updated_at"))
        .filter(ended_at__lt=cutoff)
    )
    deleted = 0
    while True:
        # Small batches keep each transaction (and its locks) short on a large table.
        ids = list(old.order_by("id").values_list("pk", flat=True)[:CLEANUP_BATCH])
        if not ids:
            break
        with transaction.atomic():
            # Re-checked in the DELETE: an operator may have set persist since the SELECT.
            counts = Job.objects.filter(pk__in=ids, persist=False, queue_state__in=TERMINAL).delete()[1]
        # Each deleted job left a delta row for GET /health to sum: fold them batch by batch.
        job_counts_compact()
        for job_id in ids:
            # What the apps keep per job outside the database (the media app's staged files).
            cleanup_job(job_id)
        deleted += counts.get("jobs.Job", 0)
        if len(ids) < CLEANUP_BATCH:
            break
    if deleted:
        logger.info("cleanup: deleted %d jobs older than %s", deleted, cutoff.isoformat())
    return deleted


def schedules_list() -> dict[str, Any]:
    """The enabled beat schedules in the documented ``GET /schedules`` shape:
    ``{"result": "ok", "schedules": {name: {"class", "every", "queue", "description"}}}``."""
    return {"result": "ok", "schedules": beat.enabled_schedules()}


def schedule_set_active(*, name: str, active: bool) -> list[str]:
    """Enable or disable the beat schedule ``name``; return the names of the enabled schedules.

    Raises ``DomainError`` for an unknown name.
    """
    return beat.schedule_set_enabled(name=name, enabled=active)
