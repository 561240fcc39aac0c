"""Runner and controller, driven in-process from the messages the engine really publishes."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import OperationalError, connection
from django.utils import timezone

from clients.models import Client
from jobs.engine import controller, reconcile, runner
from jobs.engine.bus import RUN_TASK
from jobs.engine.dispatcher import dispatch
from jobs.models import Job, Task, WorkflowDefinition
from jobs.states import JobState, TaskState
from jobs.workflows.registry import StepContext, step
from logs.models import LogEntry, Severity
from taskengine_site import prepared
from tests.engine.conftest import Broker, Message
from tests.sessions import backend_pid, close_kept_connection_on_the_server, health_check_pending

from .conftest import json_log

COMMON = "No client definitions. Using common definitions."


@step("test_pause_own_job")
def _pause_own_job(ctx: StepContext) -> str:
    from jobs.services import job_update

    job_update(job=Job.objects.get(pk=ctx.job_id), changes={"queue_state": "paused"})
    ctx.heartbeat()  # a pause lets the running step finish
    return "finished"


@step("test_break_own_job")
def _break_own_job(ctx: StepContext) -> str:
    from jobs.services import job_update

    job_update(job=Job.objects.get(pk=ctx.job_id), changes={"queue_state": "broken"})
    ctx.heartbeat(50)
    return "not reached"


@step("test_echo_results")
def _echo_results(ctx: StepContext) -> dict[str, Any]:
    ctx.log("echoing", severity=Severity.DEBUG)
    return {"seen": sorted(ctx.results), "param": ctx.param("x"), "attempt": ctx.attempt}


def own_workflow(client: Client, name: str, steps: Any) -> None:
    WorkflowDefinition.objects.create(client=client, name=name, steps=steps)


def test_noop5_completes_with_the_log_of_the_original(submit: Callable[..., Job], broker: Broker) -> None:
    job = submit("noop5")
    broker.drain()
    job.refresh_from_db()
    assert (job.queue_state, job.failed) == (JobState.COMPLETED, False)
    assert job.finished_at is not None
    assert job.definition is not None and job.definition["source"] == "common"
    assert [s["step"] for s in job.definition["steps"]] == ["noop"] * 5
    tasks = list(job.tasks.order_by("position"))
    assert [t.state for t in tasks] == [TaskState.COMPLETED] * 5
    assert all(t.attempts == 1 and t.result == {"noop": True} for t in tasks)
    expected = [("api", 0)]
    lines = json_log(job.pk)
    for task in tasks:
        expected += [("worker", task.pk)] * 3
    expected.append(("controller", tasks[-1].pk))  # the job's end, under its last step
    assert [(p, t) for p, t, _, _ in lines] == expected
    messages = [m for _, _, m, _ in lines[1:]]
    assert messages == [COMMON, "Task 'noop' started", "'noop' completed successfully"] * 5 + [
        "job has completed successfully"
    ]
    # The worker that ran the first step ran the next four itself (same queue, well within
    # TASKENGINE_CHAIN_SECONDS): one run message, and no hand-over to the controller.
    runs = [m for m in broker.executed if m.task == "jobs.tasks.run_task"]
    assert [(m.queue, m.args) for m in runs] == [("work", [tasks[0].pk])]
    assert not [m for m in broker.executed if m.task == "jobs.tasks.advance_job"]


def test_without_chaining_every_step_is_a_message_and_none_is_a_hand_over(
    submit: Callable[..., Job], broker: Broker, settings: Any
) -> None:
    settings.TASKENGINE_CHAIN_SECONDS = 0
    job = submit("noop5")
    broker.drain()
    job.refresh_from_db()
    assert (job.queue_state, job.failed) == (JobState.COMPLETED, False)
    tasks = list(job.tasks.order_by("position"))
    runs = [m for m in broker.executed if m.task == "jobs.tasks.run_task"]
    assert [(m.queue, m.args) for m in runs] == [("work", [t.pk]) for t in tasks]
    # A dispatch started the job; no hand-over message, and no dispatch when it ended: no job was waiting.
    others = [m.task for m in broker.executed if m.task != "jobs.tasks.run_task"]
    assert others == ["jobs.tasks.dispatch"]


def test_a_job_end_dispatches_only_when_a_job_waits(
    submit: Callable[..., Job], setting: Callable[..., None], broker: Broker
) -> None:
    setting(max_jobs=1)
    first = submit("noop")
    second = submit("noop")
    broker.drain()
    for job in (first, second):
        job.refresh_from_db()
        assert (job.queue_state, job.failed) == (JobState.COMPLETED, False)
    # The submissions' dispatch started the first; its end found the second waiting and asked for one
    # more; the second's end found nothing waiting.
    tasks = [m.task.rsplit(".", 1)[1] for m in broker.executed]
    assert tasks == ["dispatch", "run_task", "dispatch", "run_task"]


def test_a_step_on_another_queue_goes_through_the_broker(
    te_client: Client, submit: Callable[..., Job], broker: Broker
) -> None:
    own_workflow(
        te_client,
        "hop",
        [{"step": "noop"}, {"step": "noop", "queue": "windows_capture"}, {"step": "noop"}],
    )
    job = submit("hop")
    broker.drain()
    job.refresh_from_db()
    assert (job.queue_state, job.failed) == (JobState.COMPLETED, False)
    tasks = list(job.tasks.order_by("position"))
    runs = [(m.queue, m.args) for m in broker.executed if m.task == "jobs.tasks.run_task"]
    assert runs == [("work", [tasks[0].pk]), ("windows_capture", [tasks[1].pk]), ("work", [tasks[2].pk])]


def test_a_client_definition_is_used_without_the_common_notice(
    te_client: Client, submit: Callable[..., Job], broker: Broker
) -> None:
    own_workflow(te_client, "noop", [{"step": "test_echo_results", "parameters": {"x": 7}}, {"step": "noop"}])
    job = submit("noop")
    broker.drain()
    job.refresh_from_db()
    assert job.queue_state == JobState.COMPLETED and not job.failed
    assert job.definition is not None and job.definition["source"] == "client"
    messages = [m for _, _, m, _ in json_log(job.pk)]
    assert COMMON not in messages
    assert "echoing" in messages
    first = job.tasks.get(position=1)
    assert first.result == {"seen": [], "param": 7, "attempt": 1}


def test_steps_see_earlier_results(te_client: Client, submit: Callable[..., Job], broker: Broker) -> None:
    own_workflow(te_client, "two", [{"step": "noop"}, {"step": "test_echo_results"}])
    job = submit("two", parameters={"x": "from job"})
    broker.drain()
    assert job.tasks.get(position=2).result == {"seen": ["noop"], "param": "from job", "attempt": 1}


def test_transient_failure_is_retried_retry_limit_times(
    submit: Callable[..., Job], setting: Callable[..., None], broker: Broker
) -> None:
    setting(retry_limit=2, retry_delay=0)
    job = submit("fail", parameters={"message": "disk on fire"})
    broker.drain()
    job.refresh_from_db()
    assert (job.queue_state, job.failed) == (JobState.COMPLETED, True)
    task = job.tasks.get()
    assert (task.state, task.attempts, task.error) == (TaskState.FAILED, 3, "disk on fire")
    lines = json_log(job.pk)
    assert [m for _, _, m, _ in lines].count("Task 'fail' started") == 3
    errors = [(p, m) for p, _, m, s in lines if s == Severity.ERROR]
    assert errors == [
        ("worker", "'fail' failed (attempt 1 of 3): disk on fire. Retrying in 0 seconds."),
        ("worker", "'fail' failed (attempt 2 of 3): disk on fire. Retrying in 0 seconds."),
        ("worker", "'fail' failed: disk on fire"),
        ("controller", "job has failed: 'fail' failed: disk on fire"),
    ]
    # The job's end is logged under the task that ended it.
    assert lines[-1][:2] == ("controller", task.pk)


def test_permanent_failure_fails_at_once(
    submit: Callable[..., Job], setting: Callable[..., None], broker: Broker
) -> None:
    setting(retry_limit=5, retry_delay=0)
    job = submit("fail", parameters={"permanent": True, "message": "bad input"})
    broker.drain()
    job.refresh_from_db()
    assert (job.queue_state, job.failed, job.message) == (
        JobState.COMPLETED,
        True,
        "'fail' failed: bad input",
    )
    assert job.tasks.get().attempts == 1


def test_a_failure_stops_the_workflow_and_cancels_the_rest(
    te_client: Client, submit: Callable[..., Job], setting: Callable[..., None], broker: Broker
) -> None:
    setting(retry_limit=0)
    own_workflow(te_client, "failfirst", [{"step": "fail"}, {"step": "noop"}])
    job = submit("failfirst")
    broker.drain()
    assert list(job.tasks.order_by("position").values_list("state", flat=True)) == [
        TaskState.FAILED,
        TaskState.CANCELLED,
    ]


def test_retry_waits_for_retry_delay(
    submit: Callable[..., Job], setting: Callable[..., None], broker: Broker
) -> None:
    setting(retry_limit=1, retry_delay=30)
    job = submit("fail")
    broker.drain(skip=lambda m: m.eta is not None)
    task = job.tasks.get()
    assert (task.state, task.attempts) == (TaskState.RETRYING, 1)
    assert task.next_attempt_at is not None and task.finished_at is not None
    assert task.next_attempt_at - task.finished_at == timedelta(seconds=30)
    retry_message = broker.held
    assert [(m.task, m.args) for m in retry_message] == [("jobs.tasks.run_task", [task.pk])]
    # Delivered early (it cannot be, but a re-published copy could): refused, nothing runs.
    broker.run(retry_message[0])
    task.refresh_from_db()
    assert (task.state, task.attempts) == (TaskState.RETRYING, 1)
    # Once due, the reconciler republishes it (the countdown message could have been lost).
    Task.objects.filter(pk=task.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=10))
    broker.run(broker_message("jobs.tasks.reconcile"))
    broker.drain()
    task.refresh_from_db()
    assert (task.state, task.attempts) == (TaskState.FAILED, 2)


def test_retry_settings_are_read_when_the_failure_happens(
    submit: Callable[..., Job], setting: Callable[..., None], broker: Broker
) -> None:
    setting(retry_limit=3, retry_delay=0)
    job = submit("fail")
    broker.round()  # dispatch only
    run = [m for m in broker.pop_all() if m.task == "jobs.tasks.run_task"]
    broker.run(run[0])
    assert job.tasks.get().state == TaskState.RETRYING
    setting(retry_limit=1)
    broker.drain()
    assert job.tasks.get().attempts == 2


def test_a_long_retry_delay_is_left_to_the_reconciler(
    submit: Callable[..., Job], setting: Callable[..., None], broker: Broker
) -> None:
    setting(retry_limit=1, retry_delay=3600)
    job = submit("fail")
    broker.drain()
    task = job.tasks.get()
    assert task.state == TaskState.RETRYING
    assert [m for m in broker.executed if m.eta] == []  # no countdown held for an hour


def test_duplicate_delivery_is_a_no_op(submit: Callable[..., Job], broker: Broker) -> None:
    job = submit("noop")
    with broker._capture(execute=True):
        dispatch()
    task = job.tasks.get()
    runner.run_task(task.pk)
    runner.run_task(task.pk)
    task.refresh_from_db()
    assert task.attempts == 1
    assert [m for _, _, m, _ in json_log(job.pk)].count("Task 'noop' started") == 1
    controller.advance(job.pk)
    controller.advance(job.pk)
    job.refresh_from_db()
    assert job.queue_state == JobState.COMPLETED
    assert [m for _, _, m, _ in json_log(job.pk)].count("job has completed successfully") == 1


def test_messages_about_missing_rows_are_no_ops(submit: Callable[..., Job], broker: Broker) -> None:
    job = submit("noop")
    broker.pop_all()
    rows_before = (Job.objects.values().get(pk=job.pk), list(LogEntry.objects.values()))
    runner.run_task(999_999)
    controller.advance(999_999)
    # Nothing was written, published or logged, and the job that does exist was left alone.
    assert (Job.objects.values().get(pk=job.pk), list(LogEntry.objects.values())) == rows_before
    assert Task.objects.count() == 0
    assert broker.pop_all() == []


def test_a_paused_job_runs_nothing_new(submit: Callable[..., Job], broker: Broker) -> None:
    job = submit("noop")
    with broker._capture(execute=True):
        dispatch()
    Job.objects.filter(pk=job.pk).update(queue_state=JobState.PAUSED)
    broker.drain()
    task = job.tasks.get()
    assert (task.state, task.attempts) == (TaskState.QUEUED, 0)


def test_pause_during_a_step_lets_it_finish_and_resume_goes_on(
    te_client: Client, submit: Callable[..., Job], broker: Broker, committed: Callable[[], Any]
) -> None:
    from jobs.services import job_update

    own_workflow(te_client, "pausing", [{"step": "test_pause_own_job"}, {"step": "noop"}])
    job = submit("pausing")
    broker.drain()
    job.refresh_from_db()
    first, second = job.tasks.order_by("position")
    assert job.queue_state == JobState.PAUSED
    assert (first.state, first.result) == (TaskState.COMPLETED, "finished")
    assert (second.state, second.attempts) == (TaskState.PENDING, 0)
    with committed():
        job_update(job=job, changes={"queue_state": "queued"})
    broker.drain()
    job.refresh_from_db()
    assert (job.queue_state, job.failed) == (JobState.COMPLETED, False)
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.attempts, second.attempts, second.state) == (1, 1, TaskState.COMPLETED)


def test_break_during_a_step_cancels_it(
    te_client: Client, submit: Callable[..., Job], broker: Broker
) -> None:
    own_workflow(te_client, "breaking", [{"step": "test_break_own_job"}, {"step": "noop"}])
    job = submit("breaking")
    broker.drain()
    job.refresh_from_db()
    assert job.queue_state == JobState.BROKEN
    assert set(job.tasks.values_list("state", flat=True)) == {TaskState.CANCELLED}
    assert ("worker", "'test_break_own_job' cancelled: the job was broken") in [
        (p, m) for p, _, m, _ in json_log(job.pk)
    ]


def test_unknown_workflow_at_start_fails_the_job(
    te_client: Client, submit: Callable[..., Job], broker: Broker
) -> None:
    own_workflow(te_client, "gone", [{"step": "noop"}])
    job = submit("gone")
    WorkflowDefinition.objects.filter(client=te_client, name="gone").delete()
    broker.drain()
    job.refresh_from_db()
    assert (job.queue_state, job.failed, job.message) == (JobState.COMPLETED, True, "unknown workflow 'gone'")


def test_sleep_step_sleeps_and_records_progress(
    te_client: Client, submit: Callable[..., Job], broker: Broker
) -> None:
    own_workflow(te_client, "nap", [{"step": "sleep", "parameters": {"seconds": 0.6}}])
    job = submit("nap")
    began = time.monotonic()
    broker.drain()
    assert time.monotonic() - began >= 0.6
    task = job.tasks.get()
    assert (task.state, task.result, task.progress) == (TaskState.COMPLETED, {"slept": 0.6}, 100.0)


@pytest.mark.parametrize("seconds", ["soon", -1])
def test_sleep_step_refuses_a_bad_duration(submit: Callable[..., Job], broker: Broker, seconds: Any) -> None:
    job = submit("sleep", parameters={"seconds": seconds})
    broker.drain()
    job.refresh_from_db()
    assert job.failed and job.tasks.get().attempts == 1
    assert "sleep: seconds must be" in job.message


def broker_message(task: str) -> Message:
    from .conftest import Message

    return Message("scheduler", task, [], None)


def test_reconcile_recovers_lost_messages(
    submit: Callable[..., Job], setting: Callable[..., None], broker: Broker
) -> None:
    setting(max_jobs=1)
    first = submit("noop5")
    second = submit("noop")
    broker.clear()  # Redis flushed: the dispatch requests are gone
    report = reconcile.reconcile(grace=timedelta(0))
    assert report.started_jobs == [first.pk]
    broker.clear()  # and again: the first task's message is gone
    with broker._capture(execute=True):
        report = reconcile.reconcile(grace=timedelta(0))
    assert report.republished_tasks == [first.tasks.get(position=1).pk]
    broker.drain()
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.queue_state == second.queue_state == JobState.COMPLETED
    assert not first.failed and not second.failed
    assert all(t.attempts == 1 for t in first.tasks.all())


def test_reconcile_recovers_a_lost_hand_over(submit: Callable[..., Job], broker: Broker) -> None:
    """A started job with nothing in flight (a step's end recorded, the next step never queued: a lost
    message in the old hand-over, or a row fixed by hand) is moved on by the reconciler."""
    job = submit("noop5")
    broker.round()  # dispatch
    broker.clear()  # the first step's run message is lost ...
    first = job.tasks.get(position=1)
    # ... and its end was recorded without moving the job on.
    Task.objects.filter(pk=first.pk).update(state=TaskState.COMPLETED, attempts=1, result={"noop": True})
    Job.objects.filter(pk=job.pk).update(updated_at=timezone.now() - timedelta(minutes=5))
    with broker._capture(execute=True):
        report = reconcile.reconcile()
    assert report.advanced_jobs == [job.pk]
    broker.drain()
    job.refresh_from_db()
    assert job.queue_state == JobState.COMPLETED and not job.failed


def test_reconcile_reruns_a_chained_step_whose_worker_died(
    submit: Callable[..., Job], broker: Broker
) -> None:
    """The worker claimed the next step in the transaction that recorded the first, then died before
    running it: nothing was published for it, and the reconciler re-runs it once its heartbeat is stale."""
    job = submit("noop5")
    broker.round()
    run = next(m for m in broker.pop_all() if m.task == "jobs.tasks.run_task")
    first = job.tasks.get(position=1)
    assert run.args == [first.pk]
    mine = runner._claim(first.pk)
    assert mine is not None
    with broker._capture(execute=True):
        claimed = runner._complete(mine, 1, {"noop": True}, hold_queue="work")
    second = job.tasks.get(position=2)
    assert claimed is not None and claimed.pk == second.pk
    assert (second.state, second.attempts) == (TaskState.RUNNING, 1)
    assert broker.pop_all() == []  # nothing was published for it
    with broker._capture(execute=True):
        assert reconcile.reconcile().republished_tasks == []  # its heartbeat is fresh
    stale = timezone.now() - runner.stale_after() - timedelta(seconds=1)
    Task.objects.filter(pk=second.pk).update(heartbeat_at=stale)
    with broker._capture(execute=True):
        assert reconcile.reconcile().republished_tasks == [second.pk]
    broker.drain()
    job.refresh_from_db()
    assert job.queue_state == JobState.COMPLETED and not job.failed
    assert job.tasks.get(position=2).attempts == 2


def test_reconcile_reruns_a_task_whose_worker_died(submit: Callable[..., Job], broker: Broker) -> None:
    job = submit("noop")
    broker.round()
    broker.clear()
    task = job.tasks.get()
    stale = timezone.now() - runner.stale_after() - timedelta(seconds=1)
    # Claimed by a worker that was then killed: running, heartbeat stale, message gone.
    Task.objects.filter(pk=task.pk).update(state=TaskState.RUNNING, attempts=1, heartbeat_at=stale)
    fresh = Task.objects.filter(pk=task.pk, state=TaskState.RUNNING)
    with broker._capture(execute=True):
        assert reconcile.reconcile().republished_tasks == [task.pk]
    broker.drain()
    task.refresh_from_db()
    assert (task.state, task.attempts) == (TaskState.COMPLETED, 2)
    # The presumed-dead attempt finishing late changes nothing: its claim (attempt 1) was superseded.
    assert not fresh.exists()
    late = runner.Claimed(
        pk=task.pk,
        attempt=1,
        job_id=job.pk,
        name=task.name,
        position=task.position,
        queue=task.queue,
        parameters={},
        job_parameters={},
        workflow="noop",
        common_definition=True,
        client_name="",
        claimed_at=stale,
    )
    assert runner._complete(late, 1, {"late": True}, hold_queue="work") is None
    task.refresh_from_db()
    assert task.result == {"noop": True}


def test_reconcile_leaves_a_live_task_alone(submit: Callable[..., Job], broker: Broker) -> None:
    job = submit("noop")
    broker.round()
    task = job.tasks.get()
    Task.objects.filter(pk=task.pk).update(
        state=TaskState.RUNNING, attempts=1, heartbeat_at=timezone.now(), updated_at=timezone.now()
    )
    assert reconcile.reconcile(grace=timedelta(0)).republished_tasks == []


def test_a_client_definition_naming_a_missing_step_fails_only_that_job(
    te_client: Client, submit: Callable[..., Job], setting: Callable[..., None], broker: Broker
) -> None:
    setting(max_jobs=5)
    own_workflow(te_client, "stale", [{"step": "noop"}])
    bad = submit("stale")
    good = submit("noop")
    # Edited behind the admin's back: the step it names is gone.
    WorkflowDefinition.objects.filter(name="stale").update(steps=[{"step": "removed_step"}])
    broker.drain()
    bad.refresh_from_db()
    good.refresh_from_db()
    assert (bad.queue_state, bad.failed) == (JobState.COMPLETED, True)
    assert bad.message == "invalid workflow definition 'stale': step 0: unknown step 'removed_step'"
    assert (good.queue_state, good.failed) == (JobState.COMPLETED, False)


def test_a_job_that_cannot_start_does_not_block_the_others(
    submit: Callable[..., Job], setting: Callable[..., None], broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    setting(max_jobs=5)
    bad = submit("noop")
    good = submit("noop")
    real_start, real_start_queued = controller.start_job, controller.start_queued

    def start(job_id: int, **kw: Any) -> bool:
        if job_id == bad.pk:
            raise RuntimeError("database hiccup")
        return real_start(job_id, **kw)

    def start_queued(job_ids: list[int], **kw: Any) -> tuple[list[int], list[int]]:
        # The jobs start together first: the hiccup undoes that, and they start one at a time.
        started = real_start_queued(job_ids, **kw)
        if bad.pk in job_ids:
            raise RuntimeError("database hiccup")
        return started

    monkeypatch.setattr(controller, "start_job", start)
    monkeypatch.setattr(controller, "start_queued", start_queued)
    broker.drain()
    bad.refresh_from_db()
    good.refresh_from_db()
    assert (bad.queue_state, bad.failed, bad.message) == (
        JobState.COMPLETED,
        True,
        "could not start: database hiccup",
    )
    assert bad.tasks.count() == 0
    assert (good.queue_state, good.failed) == (JobState.COMPLETED, False)


def test_jobs_start_together_in_a_fixed_number_of_statements(
    submit: Callable[..., Job], setting: Callable[..., None], broker: Broker
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    setting(max_jobs=50)
    statements = []
    for n in (2, 12):
        jobs = [submit("noop5") for _ in range(n)]
        with CaptureQueriesContext(connection) as captured, broker._capture(execute=True):
            assert sorted(dispatch()) == sorted(job.pk for job in jobs)
        statements.append(len(captured))
        for job in jobs:
            job.refresh_from_db()
            assert job.queue_state == JobState.STARTED
            assert job.definition is not None and len(job.definition["steps"]) == 5
            tasks = list(job.tasks.order_by("position"))
            assert [t.state for t in tasks] == [TaskState.QUEUED] + [TaskState.PENDING] * 4
            assert [t.position for t in tasks] == [1, 2, 3, 4, 5]
        # Each job's first task, and nothing else, is published.
        runs = [m.args for m in broker.pop_all() if m.task == "jobs.tasks.run_task"]
        assert sorted(runs) == sorted([job.tasks.get(position=1).pk] for job in jobs)
    assert statements[0] == statements[1]


@step("test_silent_wait")
def _silent_wait(ctx: StepContext) -> float:
    # Never calls ctx.heartbeat: the runner's own thread must keep the task alive.
    time.sleep(1.2)
    return time.time()


def test_the_heartbeat_thread_keeps_a_silent_step_alive(
    transactional_db: None, make_client: Callable[..., tuple[Client, str]], settings: Any
) -> None:
    from jobs.services import job_submit

    settings.TASKENGINE_HEARTBEAT_SECONDS = 0.2
    client, _ = make_client()
    own_workflow(client, "silent", [{"step": "test_silent_wait"}])
    job, _ = job_submit(client=client, workflow="silent", parameters={})
    dispatch()
    task = job.tasks.get()
    runner.run_task(task.pk)
    task.refresh_from_db()
    assert task.state == TaskState.COMPLETED
    assert task.started_at is not None and task.heartbeat_at is not None
    # Beaten by the thread while the step slept, not only at the claim.
    assert (task.heartbeat_at - task.started_at).total_seconds() >= 0.8


def _run_task_message(submit: Callable[..., Job], broker: Broker) -> tuple[Job, Message]:
    job = submit("noop")
    broker.drain(skip=lambda m: m.task == RUN_TASK)
    (message,) = broker.held
    return job, message


@pytest.mark.django_db(transaction=True)
def test_a_steps_claim_checks_the_kept_connection_without_a_select_1(
    submit: Callable[..., Job], broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    job, message = _run_task_message(submit, broker)
    checks: list[bool] = []

    def is_usable() -> bool:
        checks.append(True)
        return True

    monkeypatch.setattr(connection, "is_usable", is_usable)
    health_check_pending()
    broker.run(message)
    assert checks == []  # the claim ran on the kept connection, no SELECT 1 before it
    job.refresh_from_db()
    assert (job.queue_state, job.failed) == (JobState.COMPLETED, False)


@pytest.mark.django_db(transaction=True)
def test_a_steps_claim_on_a_connection_the_server_closed_runs_on_a_new_one(
    submit: Callable[..., Job], broker: Broker
) -> None:
    job, message = _run_task_message(submit, broker)
    before = close_kept_connection_on_the_server()

    broker.run(message)

    job.refresh_from_db()
    assert (job.queue_state, job.failed) == (JobState.COMPLETED, False)
    task = Task.objects.get(job=job)
    assert (task.state, task.attempts) == (TaskState.COMPLETED, 1)
    assert backend_pid() != before


@pytest.mark.django_db(transaction=True)
def test_a_claim_failing_on_a_working_connection_is_raised_not_run_again(
    submit: Callable[..., Job], broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    job, message = _run_task_message(submit, broker)
    calls: list[dict[str, Any]] = []

    class Failing:
        def execute(self, sql: str, params: dict[str, Any]) -> None:
            calls.append(params)
            raise OperationalError("canceling statement due to statement timeout")

    @contextlib.contextmanager
    def failing_cursor() -> Iterator[Failing]:
        yield Failing()

    monkeypatch.setattr(prepared, "cursor", failing_cursor)
    health_check_pending()
    with pytest.raises(OperationalError):
        broker.run(message)
    assert len(calls) == 1
    assert Task.objects.get(job=job).state == TaskState.QUEUED
