"""End to end, with real worker and beat processes: a job due in 3 s starts within 1 s of its run_at,
and a job behind a closed semaphore stays pending until the semaphore opens, then runs."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import Job
from jobs.services import job_submit
from jobs.states import JobState
from logs.models import LogEntry
from tests.callbacks import support

pytestmark = pytest.mark.e2e

receiver = support.receiver


def state_of(job_id: int) -> int:
    return Job.objects.values_list("queue_state", flat=True).get(pk=job_id)


def test_a_job_due_in_three_seconds_starts_within_a_second_of_run_at(engine_processes, make_client):
    engine_processes.start_worker(concurrency=3)
    engine_processes.start_beat()
    client, _ = make_client()
    run_at = timezone.now() + timedelta(seconds=3)
    job, _ = job_submit(client=client, workflow="noop", parameters={"content_id": "soon"}, run_at=run_at)
    assert job.queue_state == JobState.SCHEDULED
    support.wait_until(lambda: state_of(job.pk) != JobState.SCHEDULED, timeout=10)
    job = support.wait_until(
        lambda: Job.objects.filter(pk=job.pk, started_at__isnull=False).first(), timeout=10
    )
    assert run_at <= job.started_at <= run_at + timedelta(seconds=1), job.started_at - run_at
    support.wait_until(lambda: state_of(job.pk) == JobState.COMPLETED, timeout=10)
    promoted = LogEntry.objects.get(job_id=job.pk, progname="scheduler")
    assert promoted.message == "run_at has passed; job queued"
    assert run_at <= promoted.created_at <= run_at + timedelta(seconds=1)


def test_a_closed_semaphore_holds_the_job_until_it_opens(engine_processes, make_client, receiver):
    engine_processes.start_worker(concurrency=3)
    engine_processes.start_beat()
    receiver.answer("/gate", 503)
    client, _ = make_client()
    job, _ = job_submit(client=client, workflow="noop", parameters={}, semaphore_url=receiver.url("/gate"))
    assert job.queue_state == JobState.PENDING
    receiver.wait_for(3, "/gate", timeout=15)  # checked again and again while closed
    assert state_of(job.pk) == JobState.PENDING
    receiver.answer("/gate", 200)
    opened_at = timezone.now()
    support.wait_until(lambda: state_of(job.pk) == JobState.COMPLETED, timeout=15)
    job.refresh_from_db()
    assert not job.failed
    assert job.started_at is not None and job.started_at >= opened_at
    assert [r.method for r in receiver.received("/gate")] == ["GET"] * len(receiver.received("/gate"))
    messages = list(
        LogEntry.objects.filter(job_id=job.pk, progname="scheduler", visible=True).values_list(
            "message", flat=True
        )
    )
    assert messages == ["semaphore open (HTTP 200); job queued"]


def test_two_beat_processes_still_promote_each_job_once(engine_processes, make_client):
    """Two beats running by mistake, sweeping every second, plus each job's own promote task."""
    from settings_app.services import setting_set

    setting_set(name="schedule_interval", value=1)
    engine_processes.start_worker(concurrency=3)
    engine_processes.start_beat()
    second = engine_processes._spawn(
        "beat",
        "beat2",
        ["beat", "-S", "django_celery_beat.schedulers:DatabaseScheduler", "-l", "info", "--pidfile="],
        None,
    )
    support.wait_until(lambda: "beat: Starting" in engine_processes.log(second))
    client, _ = make_client()
    run_at = timezone.now() + timedelta(seconds=2)
    jobs = [
        job_submit(
            client=client, workflow="noop", parameters={}, run_at=run_at + timedelta(milliseconds=50 * i)
        )[0]
        for i in range(20)
    ]
    ids = [job.pk for job in jobs]
    support.wait_until(
        lambda: Job.objects.filter(pk__in=ids, queue_state=JobState.COMPLETED).count() == len(ids), timeout=40
    )
    for job_id in ids:
        assert list(
            LogEntry.objects.filter(job_id=job_id, progname="scheduler").values_list("message", flat=True)
        ) == ["run_at has passed; job queued"]
    # Both beats really swept: each sent queue_scheduled_jobs more than once.
    for process in engine_processes.processes:
        if process.kind == "beat":
            assert engine_processes.log(process).count("Sending due task queue_scheduled_jobs") >= 2
