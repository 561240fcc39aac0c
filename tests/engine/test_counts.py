"""The job counts of GET /health: the read only reads; the reconciler and the clean-up fold the deltas."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from jobs.engine import reconcile
from jobs.models import Job
from jobs.selectors import job_counts
from jobs.states import JobState
from scheduling.services import jobs_cleanup
from tests import factories


def _delta_rows() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM jobs_job_state_count")
        return int(cursor.fetchone()[0])


def _paused_jobs(client: Any, count: int) -> None:
    """``count`` jobs made queued, then paused: three delta rows each."""
    ids = [factories.job(client).pk for _ in range(count)]
    Job.objects.filter(pk__in=ids).update(queue_state=JobState.PAUSED)


def test_reading_the_counts_writes_nothing(te_client: Any) -> None:
    _paused_jobs(te_client, 300)
    before = _delta_rows()
    assert before > 500
    with CaptureQueriesContext(connection) as captured:
        counts = job_counts()
    assert (counts["queued"], counts["paused"]) == (0, 300)
    assert [query["sql"].split()[0] for query in captured.captured_queries] == ["SELECT"]
    assert _delta_rows() == before


def test_the_reconciler_folds_the_deltas(te_client: Any, broker: Any) -> None:
    _paused_jobs(te_client, 50)
    counts = job_counts()
    reconcile.reconcile()
    assert _delta_rows() == 1  # one row per (state, failed): only paused jobs are left
    assert job_counts() == counts


def test_the_clean_up_folds_what_it_deleted(te_client: Any) -> None:
    long_ago = timezone.now() - timedelta(days=90)
    for _ in range(20):
        factories.job(te_client, queue_state=JobState.COMPLETED, finished_at=long_ago)
    assert jobs_cleanup() == 20
    assert _delta_rows() == 0
    assert job_counts()["completed"] == 0


@pytest.mark.django_db
def test_the_reconciler_keeps_only_the_largest_listing_bound_note_of_each_kind():
    from django.db import connection

    from jobs.engine import reconcile

    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM jobs_job_created_skew")
        cursor.execute(
            "INSERT INTO jobs_job_created_skew VALUES ('stale', 0.1), ('stale', 0.3), ('stale', 0.2),"
            " ('ahead', 0.05), ('ahead', 0.01), ('exact', 1.5), ('unbounded', NULL)"
        )
        cursor.execute("SELECT jobs_job_created_skew()")
        before = cursor.fetchone()[0]
    reconcile.reconcile()
    with connection.cursor() as cursor:
        cursor.execute("SELECT kind, seconds FROM jobs_job_created_skew ORDER BY kind")
        kept = cursor.fetchall()
        cursor.execute("SELECT jobs_job_created_skew()")
        after = cursor.fetchone()[0]
    assert kept == [("ahead", 0.05), ("exact", 1.5), ("stale", 0.3), ("unbounded", None)]
    assert before is None and after is None  # the bound read from the notes is the same
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM jobs_job_created_skew WHERE kind = 'unbounded'")
        cursor.execute("SELECT extract(epoch FROM jobs_job_created_skew())")
        assert float(cursor.fetchone()[0]) == pytest.approx(1.5)
