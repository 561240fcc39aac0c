"""The reconciler: Postgres is the truth, Redis only a transport that may lose everything (DESIGN §5).

Run periodically on the ``scheduler`` queue. It re-publishes what Postgres says should be moving but
may have lost its message (a flushed Redis, a killed worker, a message dropped between commit and
publish), then dispatches. Every consumer claims by compare-and-set, so a message re-published while the
original still exists costs one no-op.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from jobs.engine import bus, runner
from jobs.engine.counts import created_skew_compact, job_counts_compact
from jobs.engine.dispatcher import dispatch
from jobs.models import Job, Task
from jobs.states import JobState, TaskState

logger = logging.getLogger(__name__)

# Messages younger than this are presumed still on their way; re-publishing them would be noise.
GRACE = timedelta(seconds=30)


@dataclass
class ReconcileReport:
    republished_tasks: list[int] = field(default_factory=list)
    advanced_jobs: list[int] = field(default_factory=list)
    started_jobs: list[int] = field(default_factory=list)


def reconcile(*, grace: timedelta = GRACE) -> ReconcileReport:
    """Re-publish stuck tasks of started jobs, nudge started jobs with nothing in flight, dispatch."""
    report = ReconcileReport()
    now = timezone.now()
    started = Job.objects.filter(queue_state=JobState.STARTED).values("id")
    stuck = Task.objects.filter(job_id__in=started).filter(
        Q(state=TaskState.QUEUED, updated_at__lt=now - grace)
        | Q(state=TaskState.RETRYING, next_attempt_at__lt=now - min(grace, timedelta(seconds=5)))
        | Q(state=TaskState.RUNNING, heartbeat_at__lt=now - runner.stale_after())
    )
    for task_id, queue in stuck.values_list("id", "queue"):
        # Touch the row so the next sweep waits another grace period for this message.
        Task.objects.filter(pk=task_id, state=TaskState.QUEUED).update(updated_at=now)
        bus.publish_run(task_id, queue)
        report.republished_tasks.append(task_id)

    in_flight = Task.objects.filter(
        job_id=OuterRef("pk"), state__in=[TaskState.QUEUED, TaskState.RUNNING, TaskState.RETRYING]
    )
    idle = Job.objects.filter(queue_state=JobState.STARTED, updated_at__lt=now - grace).filter(
        ~Exists(in_flight)
    )
    for job_id in idle.values_list("id", flat=True):
        bus.publish_advance(job_id)
        report.advanced_jobs.append(job_id)

    report.started_jobs = dispatch()
    # GET /health sums the job counts' delta rows; this run is what keeps them few (at the engine's
    # peak rates a few thousand accumulate between runs, a fraction of a millisecond to sum).
    # Every job insert reads the largest listing-bound note: they are kept few the same way.
    try:
        job_counts_compact()
        created_skew_compact()
    except Exception:
        logger.exception("job counts or listing-bound notes not compacted")
    if report.republished_tasks or report.advanced_jobs:
        logger.warning(
            "reconcile re-published tasks %s and advanced jobs %s",
            report.republished_tasks,
            report.advanced_jobs,
        )
    return report
