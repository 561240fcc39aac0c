"""Promotion of due jobs (scheduled → pending → queued), arming for the exact run_at, and the sweep."""

from __future__ import annotations

import functools
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from jobs.models import Job
from jobs.states import JobState
from logs.models import LogEntry
from scheduling import services
from settings_app.services import setting_set
from tests import factories


@pytest.fixture
def make_job(make_client):
    """``make_job(**fields)``: a scheduled job of one client (tests.factories.job)."""
    client, _ = make_client()
    return functools.partial(factories.job, client, queue_state=JobState.SCHEDULED)


def scheduler_log(job_id: int) -> list[str]:
    return list(
        LogEntry.objects.filter(job_id=job_id, progname="scheduler")
        .order_by("id")
        .values_list("message", flat=True)
    )


def test_a_due_job_without_semaphore_is_queued_and_dispatch_requested(make_job, queues, committed):
    job = make_job(run_at=timezone.now() - timedelta(seconds=1))
    with committed():
        assert services.job_promote(job_id=job.pk)
    job.refresh_from_db()
    assert job.queue_state == JobState.QUEUED
    assert scheduler_log(job.pk) == ["run_at has passed; job queued"]
    assert [(m.queue, m.task) for m in queues.pop_all()] == [("controller", "jobs.tasks.dispatch")]


def test_a_due_job_with_a_semaphore_becomes_pending_and_is_checked_at_once(make_job, queues, committed):
    job = make_job(run_at=timezone.now() - timedelta(seconds=1), semaphore_url="https://example.com/sem")
    with committed():
        assert services.job_promote(job_id=job.pk)
    job.refresh_from_db()
    assert job.queue_state == JobState.PENDING
    assert scheduler_log(job.pk) == ["run_at has passed; waiting for the semaphore URL to open"]
    messages = queues.pop_all()
    assert [(m.queue, m.task, m.args) for m in messages] == [
        ("scheduler", "scheduling.semaphore_watch", [job.pk])
    ]


def test_promotion_is_a_no_op_for_a_job_not_due_or_already_moved(make_job, queues, committed):
    later = make_job(run_at=timezone.now() + timedelta(hours=2))
    queued = make_job(queue_state=JobState.QUEUED)
    paused = make_job(queue_state=JobState.PAUSED, run_at=timezone.now() - timedelta(seconds=5))
    with committed():
        assert not services.job_promote(job_id=later.pk)
        assert not services.job_promote(job_id=queued.pk)
        assert not services.job_promote(job_id=paused.pk)
        assert not services.job_promote(job_id=999_999_999)
    assert {j.queue_state for j in Job.objects.filter(pk__in=[later.pk, paused.pk])} == {
        JobState.SCHEDULED,
        JobState.PAUSED,
    }
    assert queues.pop_all() == []
    assert LogEntry.objects.count() == 0


def test_an_early_promote_message_comes_back_at_run_at(make_job, queues, committed):
    run_at = timezone.now() + timedelta(seconds=20)
    job = make_job(run_at=run_at)
    with committed():
        assert not services.job_promote(job_id=job.pk)
    (message,) = queues.pop_all()
    assert (message.queue, message.task, message.args) == ("scheduler", "scheduling.promote_job", [job.pk])
    assert 18 < message.countdown <= 20


def test_arming_publishes_a_promote_task_at_run_at_only_within_the_sweep_window(make_job, queues, committed):
    soon = make_job(run_at=timezone.now() + timedelta(seconds=3))
    far = make_job(run_at=timezone.now() + timedelta(minutes=30))
    with committed():
        services.job_promotion_arm(job_id=soon.pk)
        services.job_promotion_arm(job_id=far.pk)
    (message,) = queues.pop_all()
    assert (message.task, message.args) == ("scheduling.promote_job", [soon.pk])
    assert 2 < message.countdown <= 3
    assert message.countdown < 3600  # never beyond the broker's visibility timeout


def test_the_window_follows_the_schedule_interval(make_job, queues, committed):
    with committed():
        setting_set(name="schedule_interval", value=600)
    queues.clear()
    job = make_job(run_at=timezone.now() + timedelta(minutes=5))
    with committed():
        services.job_promotion_arm(job_id=job.pk)
    assert [m.args for m in queues.pop_all()] == [[job.pk]]


def test_submitting_a_job_due_in_three_seconds_arms_its_promotion(make_client, queues, committed):
    from jobs.services import job_submit

    client, _ = make_client()
    with committed():
        job, _ = job_submit(
            client=client, workflow="noop", parameters={}, run_at=timezone.now() + timedelta(seconds=3)
        )
    assert job.queue_state == JobState.SCHEDULED
    messages = [m for m in queues.pop_all() if m.task == "scheduling.promote_job"]
    assert [m.args for m in messages] == [[job.pk]]


def test_the_sweep_promotes_due_jobs_checks_semaphores_and_arms_upcoming(make_job, queues, committed):
    now = timezone.now()
    due = [make_job(run_at=now - timedelta(seconds=s)) for s in (1, 30, 3600)]
    gated = make_job(run_at=now - timedelta(seconds=1), semaphore_url="https://example.com/s")
    pending = make_job(
        queue_state=JobState.PENDING, run_at=now - timedelta(minutes=5), semaphore_url="https://e.com/"
    )
    upcoming = make_job(run_at=now + timedelta(seconds=30))
    far = make_job(run_at=now + timedelta(hours=1))
    with committed():
        counts = services.jobs_promote_due(now=now)
    assert counts == {"promoted": 4, "semaphores": 1, "armed": 1}
    states = dict(Job.objects.values_list("pk", "queue_state"))
    assert [states[j.pk] for j in due] == [JobState.QUEUED] * 3
    assert states[gated.pk] == JobState.PENDING
    assert states[pending.pk] == JobState.PENDING
    assert states[upcoming.pk] == JobState.SCHEDULED
    assert states[far.pk] == JobState.SCHEDULED
    published = sorted((m.task, tuple(m.args)) for m in queues.pop_all())
    assert published == sorted(
        [
            ("jobs.tasks.dispatch", ()),
            ("scheduling.semaphore_watch", (gated.pk,)),
            ("scheduling.semaphore_check", (pending.pk,)),
            ("scheduling.promote_job", (upcoming.pk,)),
        ]
    )


@pytest.mark.django_db(transaction=True)
def test_two_sweeps_at_once_promote_each_job_once(make_job):
    """Two beat processes running by mistake: every promotion still happens exactly once."""
    jobs = [make_job(run_at=timezone.now() - timedelta(seconds=1)) for _ in range(60)]
    barrier = threading.Barrier(2)
    results: list[dict[str, int]] = []
    errors: list[BaseException] = []

    def sweep():
        try:
            barrier.wait()
            results.append(services.jobs_promote_due())
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(r["promoted"] for r in results) == len(jobs)
    assert set(Job.objects.values_list("queue_state", flat=True)) == {JobState.QUEUED}
    for job in jobs:
        assert scheduler_log(job.pk) == ["run_at has passed; job queued"]


def test_tasks_are_published_on_the_scheduler_and_callback_queues(queues):
    from jobs.engine import bus
    from scheduling import tasks

    tasks.publish(tasks.queue_jobs)
    tasks.publish(tasks.promote_job, 1)
    bus.send_delivery(1)
    assert sorted((m.queue, m.task) for m in queues.pop_all()) == [
        ("callback", "callbacks.deliver"),
        ("scheduler", "scheduling.promote_job"),
        ("scheduler", "scheduling.queue_jobs"),
    ]
