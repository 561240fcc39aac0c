"""job_update: every allowed transition and its effects, every refused one (DESIGN §1)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from jobs.engine.dispatcher import dispatch
from jobs.models import Job, Task
from jobs.services import job_update
from jobs.states import JobState, TaskState
from taskengine_site.errors import DomainError
from tests.engine.conftest import Broker

FUTURE = timedelta(hours=2)


@pytest.fixture
def job_in(submit: Callable[..., Job], broker: Broker, committed: Callable[[], Any]) -> Callable[..., Job]:
    """``job_in(state, **submit_kwargs)``: a job in ``state`` (started ones really started)."""

    def factory(state: JobState, workflow: str = "noop5", **kwargs: Any) -> Job:
        job = submit(workflow, **kwargs)
        if state == JobState.STARTED:
            assert dispatch() == [job.pk]
        elif state != JobState.QUEUED:
            Job.objects.filter(pk=job.pk).update(queue_state=state)
        broker.pop_all()
        job.refresh_from_db()
        return job

    return factory


def update(job: Job, committed: Callable[[], Any], **changes: Any) -> list[str]:
    with committed():
        return job_update(job=job, changes=changes)


def refused(job: Job, message: str, **changes: Any) -> None:
    before = Job.objects.filter(pk=job.pk).values().get()
    with pytest.raises(DomainError) as excinfo:
        job_update(job=job, changes=changes)
    assert excinfo.value.job_id == job.pk
    assert message in excinfo.value.message
    assert Job.objects.filter(pk=job.pk).values().get() == before


@pytest.mark.parametrize("state", [JobState.QUEUED, JobState.SCHEDULED, JobState.PENDING])
def test_pause_a_waiting_job(
    job_in: Callable[..., Job], committed: Callable[[], Any], broker: Broker, state: JobState
) -> None:
    job = job_in(state)
    assert update(job, committed, queue_state="paused") == ["queue_state"]
    assert job.queue_state == JobState.PAUSED
    assert broker.pop_all() == []  # it held no slot


def test_pause_a_started_job_frees_its_slot(
    job_in: Callable[..., Job],
    committed: Callable[[], Any],
    broker: Broker,
    submit: Callable[..., Job],
    setting: Callable[..., None],
) -> None:
    setting(max_jobs=1)
    job = job_in(JobState.STARTED)
    waiting = submit("noop")
    assert dispatch() == []
    broker.pop_all()
    update(job, committed, queue_state="paused")
    assert job.queue_state == JobState.PAUSED
    assert [m.task for m in broker.pop_all()] == ["jobs.tasks.dispatch"]
    assert dispatch() == [waiting.pk]
    # Its tasks are kept for the resume: the first one still queued, none cancelled.
    assert list(job.tasks.values_list("state", flat=True)) == [TaskState.QUEUED] + [TaskState.PENDING] * 4


def test_resume_a_paused_job(
    job_in: Callable[..., Job], committed: Callable[[], Any], broker: Broker
) -> None:
    job = job_in(JobState.PAUSED)
    assert update(job, committed, queue_state="queued") == ["queue_state"]
    assert job.queue_state == JobState.QUEUED
    assert [m.task for m in broker.pop_all()] == ["jobs.tasks.dispatch"]


def test_resume_a_job_paused_before_its_time_waits_again(
    job_in: Callable[..., Job], committed: Callable[[], Any]
) -> None:
    job = job_in(JobState.PAUSED, run_at=timezone.now() + FUTURE)
    update(job, committed, queue_state="queued")
    assert job.queue_state == JobState.SCHEDULED


@pytest.mark.parametrize(
    "state", [JobState.QUEUED, JobState.SCHEDULED, JobState.PENDING, JobState.PAUSED, JobState.STARTED]
)
def test_break_any_non_terminal_job(
    job_in: Callable[..., Job], committed: Callable[[], Any], broker: Broker, state: JobState
) -> None:
    job = job_in(state)
    assert update(job, committed, queue_state="broken") == ["queue_state"]
    assert job.queue_state == JobState.BROKEN
    assert job.finished_at is not None
    if state == JobState.STARTED:
        assert set(job.tasks.values_list("state", flat=True)) == {TaskState.CANCELLED}
        assert "jobs.tasks.dispatch" in [m.task for m in broker.pop_all()]


def test_run_at_in_the_future_schedules_a_queued_job(
    job_in: Callable[..., Job], committed: Callable[[], Any]
) -> None:
    job = job_in(JobState.QUEUED)
    when = timezone.now() + FUTURE
    assert update(job, committed, run_at=when) == ["run_at"]
    assert (job.queue_state, job.run_at) == (JobState.SCHEDULED, when)


def test_run_at_in_the_past_queues_a_scheduled_job(
    job_in: Callable[..., Job], committed: Callable[[], Any], broker: Broker
) -> None:
    job = job_in(JobState.SCHEDULED, run_at=timezone.now() + FUTURE)
    update(job, committed, run_at=timezone.now() - timedelta(seconds=1))
    assert job.queue_state == JobState.QUEUED
    assert [m.task for m in broker.pop_all()] == ["jobs.tasks.dispatch"]


def test_run_at_in_the_past_makes_a_scheduled_job_with_a_semaphore_pending(
    job_in: Callable[..., Job], committed: Callable[[], Any]
) -> None:
    job = job_in(JobState.SCHEDULED, run_at=timezone.now() + FUTURE, semaphore_url="https://s.example/")
    update(job, committed, run_at=timezone.now())
    assert job.queue_state == JobState.PENDING


def test_new_run_at_of_a_scheduled_job(job_in: Callable[..., Job], committed: Callable[[], Any]) -> None:
    job = job_in(JobState.SCHEDULED, run_at=timezone.now() + FUTURE)
    later = timezone.now() + 2 * FUTURE
    update(job, committed, run_at=later)
    assert (job.queue_state, job.run_at) == (JobState.SCHEDULED, later)


def test_run_at_in_the_future_schedules_a_pending_job(
    job_in: Callable[..., Job], committed: Callable[[], Any]
) -> None:
    job = job_in(JobState.PENDING, semaphore_url="https://s.example/")
    update(job, committed, run_at=timezone.now() + FUTURE)
    assert job.queue_state == JobState.SCHEDULED


def test_run_at_of_a_paused_job_waits_for_the_resume(
    job_in: Callable[..., Job], committed: Callable[[], Any]
) -> None:
    job = job_in(JobState.PAUSED)
    when = timezone.now() + FUTURE
    update(job, committed, run_at=when)
    assert (job.queue_state, job.run_at) == (JobState.PAUSED, when)


def test_semaphore_on_a_queued_job_makes_it_pending(
    job_in: Callable[..., Job], committed: Callable[[], Any]
) -> None:
    job = job_in(JobState.QUEUED)
    assert update(job, committed, semaphore_url="https://s.example/open") == ["semaphore_url"]
    assert (job.queue_state, job.semaphore_url) == (JobState.PENDING, "https://s.example/open")


def test_removing_the_semaphore_of_a_pending_job_queues_it(
    job_in: Callable[..., Job], committed: Callable[[], Any], broker: Broker
) -> None:
    job = job_in(JobState.PENDING, semaphore_url="https://s.example/")
    update(job, committed, semaphore_url=None)
    assert (job.queue_state, job.semaphore_url) == (JobState.QUEUED, None)
    assert [m.task for m in broker.pop_all()] == ["jobs.tasks.dispatch"]


def test_priority_and_top_of_queue_of_a_queued_job_request_a_dispatch(
    job_in: Callable[..., Job], committed: Callable[[], Any], broker: Broker
) -> None:
    job = job_in(JobState.QUEUED)
    assert update(job, committed, priority="2", top_of_queue=True) == ["priority", "top_of_queue"]
    assert (job.priority, job.top_of_queue, job.queue_state) == (2, True, JobState.QUEUED)
    assert [m.task for m in broker.pop_all()] == ["jobs.tasks.dispatch"]


def test_persist_of_a_terminal_job(job_in: Callable[..., Job], committed: Callable[[], Any]) -> None:
    job = job_in(JobState.COMPLETED)
    assert update(job, committed, persist=True) == ["persist"]
    assert job.persist is True


def test_several_changes_at_once(job_in: Callable[..., Job], committed: Callable[[], Any]) -> None:
    job = job_in(JobState.QUEUED)
    performed = update(job, committed, queue_state="paused", priority=1, persist=True)
    assert performed == ["queue_state", "persist", "priority"]
    assert (job.queue_state, job.priority, job.persist) == (JobState.PAUSED, 1, True)


@pytest.mark.parametrize(
    ("state", "target", "message"),
    [
        (JobState.COMPLETED, "paused", "cannot change queue_state from completed to paused"),
        (JobState.COMPLETED, "queued", "cannot change queue_state from completed to queued"),
        (JobState.COMPLETED, "broken", "cannot change queue_state from completed to broken: rerun the job"),
        (JobState.BROKEN, "paused", "cannot change queue_state from broken to paused"),
        (JobState.BROKEN, "queued", "cannot change queue_state from broken to queued"),
        (JobState.BROKEN, "broken", "it is broken already"),
        (JobState.PAUSED, "paused", "it is paused already"),
        (JobState.QUEUED, "queued", "it is queued already"),
        (JobState.STARTED, "queued", "only a paused job can be resumed"),
        (JobState.SCHEDULED, "queued", "only a paused job can be resumed"),
        (JobState.PENDING, "queued", "only a paused job can be resumed"),
        (JobState.QUEUED, "started", "can only be set to paused, broken or queued"),
        (JobState.QUEUED, "completed", "can only be set to paused, broken or queued"),
        (JobState.QUEUED, "bogus", "queue_state: unknown state 'bogus'"),
        (JobState.QUEUED, 1, "queue_state: unknown state 1"),
    ],
)
def test_refused_queue_state_changes(
    job_in: Callable[..., Job], state: JobState, target: Any, message: str
) -> None:
    refused(job_in(state), message, queue_state=target)


@pytest.mark.parametrize(
    ("state", "changes", "message"),
    [
        (JobState.STARTED, {"run_at": timezone.now()}, "cannot change run_at of a started job"),
        (
            JobState.STARTED,
            {"semaphore_url": "https://s.example/"},
            "cannot change semaphore_url of a started",
        ),
        (JobState.COMPLETED, {"priority": 3}, "cannot change priority of a completed job"),
        (JobState.BROKEN, {"run_at": timezone.now()}, "cannot change run_at of a broken job"),
        (JobState.COMPLETED, {"top_of_queue": True}, "cannot change top_of_queue of a completed job"),
        (JobState.QUEUED, {"priority": 11}, "priority: must be an integer between 1 and 10"),
        (JobState.QUEUED, {"persist": "yes"}, "persist: must be true or false"),
        (JobState.QUEUED, {"run_at": "tomorrow"}, "run_at: must be a date and time in UTC"),
        (JobState.QUEUED, {"semaphore_url": "nope"}, "semaphore_url: must be an http(s) URL"),
        (JobState.QUEUED, {"workflow": "noop"}, "cannot update workflow"),
        (JobState.QUEUED, {}, "nothing to update"),
        # All or nothing: the valid priority is not applied when the state change is refused.
        (JobState.COMPLETED, {"persist": True, "queue_state": "paused"}, "from completed to paused"),
        (JobState.QUEUED, {"priority": 2, "queue_state": "bogus"}, "unknown state"),
    ],
)
def test_refused_field_changes(
    job_in: Callable[..., Job], state: JobState, changes: dict[str, Any], message: str
) -> None:
    refused(job_in(state), message, **changes)


def test_a_paused_started_job_resumes_from_its_first_unfinished_task(
    job_in: Callable[..., Job], committed: Callable[[], Any], broker: Broker
) -> None:
    job = job_in(JobState.STARTED, workflow="noop5")
    tasks = list(job.tasks.order_by("position"))
    Task.objects.filter(pk__in=[t.pk for t in tasks[:2]]).update(state=TaskState.COMPLETED)
    Task.objects.filter(pk=tasks[2].pk).update(state=TaskState.PENDING)
    update(job, committed, queue_state="paused")
    update(job, committed, queue_state="queued")
    broker.pop_all()
    with committed():
        assert dispatch() == [job.pk]
    published = broker.pop_all()
    assert [(m.task, m.args) for m in published] == [("jobs.tasks.run_task", [tasks[2].pk])]
    assert Task.objects.filter(job=job).count() == 5  # no second set of tasks


def test_a_new_semaphore_of_a_pending_job_is_checked(
    job_in: Callable[..., Job], committed: Callable[[], Any], broker: Broker
) -> None:
    job = job_in(JobState.PENDING, semaphore_url="https://s.example/old")
    update(job, committed, semaphore_url="https://s.example/new")
    assert (job.queue_state, job.semaphore_url) == (JobState.PENDING, "https://s.example/new")
    assert [(m.queue, m.task, m.args) for m in broker.pop_all()] == [
        ("scheduler", "scheduling.semaphore_watch", [job.pk])
    ]


def test_a_scheduled_job_is_armed_for_promotion(submit: Callable[..., Job], broker: Broker) -> None:
    # Due before the scheduler's next sweep: the scheduler arms a promotion at its run_at.
    job = submit("noop", run_at=timezone.now() + timedelta(seconds=2))
    assert job.queue_state == JobState.SCHEDULED
    messages = broker.pop_all()
    assert [(m.queue, m.task, m.args) for m in messages] == [
        ("scheduler", "scheduling.promote_job", [job.pk])
    ]
    assert messages[0].eta is not None
