"""The job counts of GET /health: the read only reads; the reconciler and the clean-up fold the deltas."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from jobs.engine import reconcile
from jobs.models import Job
from jobs.selectors import job_counts
from jobs.states import JobState
from scheduling.services import jobs_cleanup


def _delta_rows() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM jobs_job_state_count")
        return int(cursor.fetchone()[0])


def _jobs(client: Any, count: int, *, state: JobState = JobState.QUEUED) -> list[Job]:
    now = timezone.now()
    jobs = [Job(client=client, workflow="noop", queue_state=state, run_at=now) for _ in range(count)]
    return Job.objects.bulk_create(jobs)


def test_reading_the_counts_writes_nothing(te_client: Any) -> None:
    for job in _jobs(te_client, 300):
        Job.objects.filter(pk=job.pk).update(queue_state=JobState.PAUSED)
    before = _delta_rows()
    assert before > 500
    with CaptureQueriesContext(connection) as captured:
        counts = job_counts()
    assert (counts["queued"], counts["paused"]) == (0, 300)
    assert [query["sql"].split()[0] for query in captured.captured_queries] == ["SELECT"]
    assert _delta_rows() == before


def test_the_reconciler_folds_the_deltas(te_client: Any, broker: Any) -> None:
    for job in _jobs(te_client, 50):
        Job.objects.filter(pk=job.pk).update(queue_state=JobState.PAUSED)
    counts = job_counts()
    reconcile.reconcile()
    assert _delta_rows() == 1  # one row per (state, failed): only paused jobs are left
    assert job_counts() == counts


def test_the_clean_up_folds_what_it_deleted(te_client: Any) -> None:
    jobs = _jobs(te_client, 20, state=JobState.COMPLETED)
    Job.objects.filter(pk__in=[job.pk for job in jobs]).update(
        finished_at=timezone.now() - timedelta(days=90)
    )
    assert jobs_cleanup() == 20
    assert _delta_rows() == 0
    assert job_counts()["completed"] == 0
