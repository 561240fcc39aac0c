"""The daily clean-up: terminal jobs older than cleanup_days, not persist, go with their rows."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from callbacks.models import CallbackDelivery
from jobs.models import Job, Task
from jobs.states import JobState
from logs.models import LogEntry
from scheduling import services
from settings_app.services import setting_set
from tests import factories


@pytest.fixture
def old_job(make_client):
    client, _ = make_client()

    def factory(*, state=JobState.COMPLETED, days=31, persist=False, finished=True):
        job = factories.job(client, queue_state=state, persist=persist, tasks=["noop"])
        moment = timezone.now() - timedelta(days=days)
        Job.objects.filter(pk=job.pk).update(updated_at=moment, finished_at=moment if finished else None)
        factories.log_entry(job, "hello")
        CallbackDelivery.objects.create(
            job=job, kind="job", event="completed", url="https://e.com/", body="{}"
        )
        return job

    return factory


def test_old_terminal_jobs_are_deleted_with_their_rows(old_job):
    gone = [old_job(), old_job(state=JobState.BROKEN), old_job(days=400, finished=False)]
    kept = [
        old_job(persist=True),
        old_job(days=29),
        old_job(state=JobState.QUEUED),
        old_job(state=JobState.PAUSED, days=90),
        old_job(state=JobState.STARTED, days=90),
    ]
    assert services.jobs_cleanup() == 3
    assert set(Job.objects.values_list("pk", flat=True)) == {job.pk for job in kept}
    remaining = {job.pk for job in kept}
    assert set(Task.objects.values_list("job_id", flat=True)) == remaining
    assert set(LogEntry.objects.values_list("job_id", flat=True)) == remaining
    assert set(CallbackDelivery.objects.values_list("job_id", flat=True)) == remaining
    assert not Job.objects.filter(pk__in=[job.pk for job in gone]).exists()


def test_cleanup_days_is_read_from_the_setting(old_job, committed):
    job = old_job(days=8)
    assert services.jobs_cleanup() == 0
    with committed():
        setting_set(name="cleanup_days", value=7)
    assert services.jobs_cleanup() == 1
    assert not Job.objects.filter(pk=job.pk).exists()


def test_a_rerun_survives_the_deletion_of_its_original(old_job, make_client):
    original = old_job()
    rerun = factories.job(original.client, rerun_of=original)
    assert services.jobs_cleanup() == 1
    rerun.refresh_from_db()
    assert rerun.rerun_of_id is None


def test_cleanup_works_in_batches(old_job, monkeypatch):
    monkeypatch.setattr(services, "CLEANUP_BATCH", 2)
    for _ in range(5):
        old_job()
    assert services.jobs_cleanup() == 5
    assert Job.objects.count() == 0
