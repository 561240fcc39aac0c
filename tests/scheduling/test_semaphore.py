"""Semaphore checks: GET with a short timeout, redirects not followed, 2xx/3xx opens (DESIGN §3)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import Job
from jobs.states import JobState
from logs.models import LogEntry
from scheduling import services
from tests import factories


@pytest.fixture
def pending_job(make_client):
    client, _ = make_client()

    def factory(url: str) -> Job:
        due = timezone.now() - timedelta(seconds=1)
        return factories.job(client, queue_state=JobState.PENDING, run_at=due, semaphore_url=url)

    return factory


def state(job: Job) -> int:
    job.refresh_from_db()
    return job.queue_state


def test_503_keeps_the_job_pending_and_200_queues_it(
    pending_job, receiver, allow_loopback, queues, committed
):
    job = pending_job(receiver.url("/gate"))
    receiver.answer("/gate", 503)
    with committed():
        assert not services.job_semaphore_check(job_id=job.pk)
    assert state(job) == JobState.PENDING
    assert queues.pop_all() == []
    closed = LogEntry.objects.get(job_id=job.pk)
    assert (closed.progname, closed.message, closed.visible) == (
        "scheduler",
        "semaphore closed (HTTP 503)",
        False,
    )

    receiver.answer("/gate", 200)
    with committed():
        assert services.job_semaphore_check(job_id=job.pk)
    assert state(job) == JobState.QUEUED
    assert [m.task for m in queues.pop_all()] == ["jobs.tasks.dispatch"]
    opened = LogEntry.objects.filter(job_id=job.pk, visible=True).get()
    assert opened.message == "semaphore open (HTTP 200); job queued"
    assert [r.method for r in receiver.received("/gate")] == ["GET", "GET"]


def test_a_redirect_opens_the_semaphore_without_being_followed(
    pending_job, receiver, allow_loopback, committed
):
    job = pending_job(receiver.url("/gate"))
    receiver.answer("/gate", 302, headers={"Location": receiver.url("/elsewhere")})
    with committed():
        assert services.job_semaphore_check(job_id=job.pk)
    assert state(job) == JobState.QUEUED
    assert [r.path for r in receiver.received()] == ["/gate"]


@pytest.mark.parametrize("status", [404, 500, 429])
def test_error_answers_keep_it_closed(pending_job, receiver, allow_loopback, committed, status):
    job = pending_job(receiver.url("/gate"))
    receiver.answer("/gate", status)
    with committed():
        assert not services.job_semaphore_check(job_id=job.pk)
    assert state(job) == JobState.PENDING


def test_a_slow_semaphore_times_out_and_stays_closed(
    pending_job, receiver, allow_loopback, committed, monkeypatch
):
    monkeypatch.setattr(services, "SEMAPHORE_TIMEOUT", (0.5, 0.3))
    job = pending_job(receiver.url("/slow"))
    receiver.answer("/slow", 200, delay=2)
    with committed():
        assert not services.job_semaphore_check(job_id=job.pk)
    assert state(job) == JobState.PENDING
    assert LogEntry.objects.get(job_id=job.pk).message == "semaphore closed (timed out)"


def test_a_refused_semaphore_url_is_never_contacted(pending_job, receiver, settings, committed):
    settings.TASKENGINE_ALLOW_PRIVATE_URLS = False
    job = pending_job(receiver.url("/gate"))
    with committed():
        assert not services.job_semaphore_check(job_id=job.pk)
    assert state(job) == JobState.PENDING
    assert receiver.received() == []
    assert "url not allowed: 127.0.0.1 is a loopback address" in LogEntry.objects.get(job_id=job.pk).message


def test_the_check_is_a_no_op_unless_the_job_is_pending(pending_job, receiver, allow_loopback, committed):
    job = pending_job(receiver.url("/gate"))
    Job.objects.filter(pk=job.pk).update(queue_state=JobState.PAUSED)
    with committed():
        assert not services.job_semaphore_check(job_id=job.pk)
        assert not services.job_semaphore_check(job_id=999_999_999)
    assert receiver.received() == []


def test_a_closed_new_semaphore_is_rechecked_soon(pending_job, receiver, allow_loopback, queues, committed):
    job = pending_job(receiver.url("/gate"))
    receiver.answer("/gate", 503)
    with committed():
        assert not services.job_semaphore_watch(job_id=job.pk)
    (message,) = queues.pop_all()
    assert (message.queue, message.task, message.args) == (
        "scheduler",
        "scheduling.semaphore_watch",
        [job.pk],
    )
    assert 0.5 < message.countdown <= 1.0


def test_an_old_closed_semaphore_is_left_to_the_sweep(
    pending_job, receiver, allow_loopback, queues, committed
):
    job = pending_job(receiver.url("/gate"))
    Job.objects.filter(pk=job.pk).update(updated_at=timezone.now() - timedelta(minutes=10))
    receiver.answer("/gate", 503)
    with committed():
        assert not services.job_semaphore_watch(job_id=job.pk)
    assert queues.pop_all() == []


def test_the_watch_task_run_by_a_worker_queues_the_job(pending_job, receiver, allow_loopback, queues):
    from tests.callbacks.support import Message

    job = pending_job(receiver.url("/gate"))
    queues.run(Message("scheduler", "scheduling.semaphore_watch", [job.pk], None))
    assert state(job) == JobState.QUEUED
