"""A stopping worker (DESIGN §5): steps that end within the grace finish, the others are handed back.

The notice a pool process gets from its worker (``taskengine_site.shutdown``) is given here in-process by
``shutdown.begin()``, from inside a step, as when it arrives mid-step; the engine then runs as in a
worker (``broker.drain()``).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from callbacks.models import CallbackDelivery
from clients.models import Client
from jobs.engine import runner
from jobs.models import Job, WorkflowDefinition
from jobs.states import JobState, TaskState
from jobs.workflows.registry import StepContext, step
from logs.models import Severity
from taskengine_site import shutdown
from tests.engine.conftest import Broker, json_log

HANDED_BACK = "'{}' interrupted by worker shutdown; queued again"


@pytest.fixture(autouse=True)
def stopping(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    settings.TASKENGINE_SHUTDOWN_GRACE_SECONDS = 3
    # No consumer of this process holds a read on the queues: nothing to wait for before publishing.
    monkeypatch.setattr(shutdown, "CONSUMER_LETS_GO_SECONDS", 0.0)
    shutdown.reset()
    yield
    shutdown.reset()


def notice_then_sleep(ctx: StepContext, seconds: float, *, beat: bool = True) -> dict[str, float]:
    """The worker is told to stop just after the step began; the step then needs ``seconds`` more."""
    shutdown.begin()
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        time.sleep(0.05)
        if beat:
            ctx.heartbeat(100.0 * min(1.0, (time.monotonic() - began) / seconds))
    return {"slept": seconds}


@step("test_stop_long")
def _long(ctx: StepContext) -> Any:
    return notice_then_sleep(ctx, 60)


@step("test_stop_short")
def _short(ctx: StepContext) -> Any:
    return notice_then_sleep(ctx, 0.5)


@step("test_stop_silent")
def _silent(ctx: StepContext) -> Any:
    # Reports no progress and never looks at its heartbeat: only the deadline can stop it.
    return notice_then_sleep(ctx, 60, beat=False)


_runs: dict[int, int] = {}


@step("test_stop_once")
def _once(ctx: StepContext) -> Any:
    # Its first run meets a stopping worker; the next one does not.
    _runs[ctx.task_id] = _runs.get(ctx.task_id, 0) + 1
    if _runs[ctx.task_id] == 1:
        return notice_then_sleep(ctx, 60)
    return {"attempt": ctx.attempt}


@step("test_stop_swallows")
def _swallows(ctx: StepContext) -> Any:
    try:
        return notice_then_sleep(ctx, 60)
    except Exception:  # a step's own error handling must not turn the interruption into a failure
        return "swallowed"


def workflow(client: Client, name: str, *steps: str) -> None:
    WorkflowDefinition.objects.create(client=client, name=name, steps=[{"step": s} for s in steps])


def run_messages(broker: Broker) -> list[str]:
    """The step messages waiting (callback deliveries aside)."""
    return [f"{m.task}:{m.args[0]}" for m in broker.pop_all() if m.task == "jobs.tasks.run_task"]


def test_a_step_that_cannot_end_in_the_grace_is_handed_back_at_once_and_not_counted(
    te_client: Client, submit: Callable[..., Job], broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    workflow(te_client, "long", "test_stop_long")
    job = submit("long", parameters={"rest_endpoints": ["https://example.com/cb"]})
    began = time.monotonic()
    broker.round()  # the dispatch
    broker.round()  # the step: interrupted, handed back
    assert time.monotonic() - began < 2.5, "handed back at once, not at the deadline"
    task = job.tasks.get()
    assert (task.state, task.attempts, task.worker, task.heartbeat_at, task.progress) == (
        TaskState.QUEUED,
        0,
        "",
        None,
        None,
    )
    # Queued again at once: its message is on its queue for the next worker.
    assert run_messages(broker) == [f"jobs.tasks.run_task:{task.pk}"]
    log = json_log(job.pk)
    assert log[-1] == ("worker", task.pk, HANDED_BACK.format("test_stop_long"), Severity.WARN)
    assert [m for _, _, m, _ in log].count(HANDED_BACK.format("test_stop_long")) == 1
    job.refresh_from_db()
    assert (job.queue_state, job.failed) == (JobState.STARTED, False)
    # Not a failure: no error, no retry, no "fail" callback; one line in the worker's log, no traceback.
    assert (task.error, task.next_attempt_at) == ("", None)
    assert not CallbackDelivery.objects.filter(job_id=job.pk, event="fail").exists()
    [record] = [r for r in caplog.records if "interrupted by worker shutdown" in r.getMessage()]
    assert record.exc_info is None and record.levelname == "WARNING"


def test_the_next_worker_runs_the_handed_back_step_as_its_first_attempt(
    te_client: Client, submit: Callable[..., Job], broker: Broker
) -> None:
    workflow(te_client, "once", "test_stop_once")
    job = submit("once")
    broker.round()
    broker.round()
    shutdown.reset()  # the step's next run is on a worker that is not stopping
    broker.drain()
    task = job.tasks.get()
    job.refresh_from_db()
    assert (task.state, task.attempts, task.result) == (TaskState.COMPLETED, 1, {"attempt": 1})
    assert (job.queue_state, job.failed) == (JobState.COMPLETED, False)


def test_a_step_that_ends_within_the_grace_finishes_and_its_successor_goes_to_the_broker(
    te_client: Client, submit: Callable[..., Job], broker: Broker
) -> None:
    workflow(te_client, "short", "test_stop_short", "noop")
    job = submit("short")
    broker.round()
    broker.round()
    first, second = job.tasks.order_by("position")
    assert (first.state, first.attempts, first.result) == (TaskState.COMPLETED, 1, {"slept": 0.5})
    # A stopping worker claims nothing more, not even the next step of the same job on its own queue.
    assert (second.state, second.attempts) == (TaskState.QUEUED, 0)
    assert run_messages(broker) == [f"jobs.tasks.run_task:{second.pk}"]


def test_a_step_that_never_beats_is_interrupted_at_the_deadline(
    te_client: Client, submit: Callable[..., Job], broker: Broker, settings: Any
) -> None:
    settings.TASKENGINE_SHUTDOWN_GRACE_SECONDS = 1
    workflow(te_client, "silent", "test_stop_silent")
    job = submit("silent")
    broker.round()
    began = time.monotonic()
    broker.round()
    assert 0.9 < time.monotonic() - began < 5
    task = job.tasks.get()
    assert (task.state, task.attempts) == (TaskState.QUEUED, 0)
    assert json_log(job.pk)[-1][2] == HANDED_BACK.format("test_stop_silent")
    # The timer was the deadline's alone: nothing of it is left behind.
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_step_catching_exception_cannot_swallow_the_interruption(
    te_client: Client, submit: Callable[..., Job], broker: Broker
) -> None:
    workflow(te_client, "swallow", "test_stop_swallows")
    job = submit("swallow")
    broker.round()
    broker.round()
    task = job.tasks.get()
    assert (task.state, task.attempts, task.result) == (TaskState.QUEUED, 0, None)


def test_a_message_reaching_a_stopping_worker_is_passed_on_unclaimed(
    submit: Callable[..., Job], broker: Broker
) -> None:
    job = submit("noop")
    broker.round()  # the dispatch queues the step
    shutdown.begin()
    [message] = broker.round()
    task = job.tasks.get()
    assert (task.state, task.attempts) == (TaskState.QUEUED, 0)
    assert run_messages(broker) == [f"jobs.tasks.run_task:{task.pk}"] == [f"{message.task}:{message.args[0]}"]


def test_the_retry_budget_is_untouched_by_hand_backs(
    te_client: Client, submit: Callable[..., Job], broker: Broker
) -> None:
    workflow(te_client, "long", "test_stop_long")
    job = submit("long")
    broker.round()
    for _ in range(5):  # more hand-backs than the retry limit allows failures
        broker.round()
        assert job.tasks.get().attempts == 0
    job.refresh_from_db()
    assert (job.queue_state, job.failed) == (JobState.STARTED, False)
    assert job.tasks.get().state == TaskState.QUEUED


def test_a_paused_job_gets_its_step_back_for_when_it_is_resumed(
    te_client: Client, submit: Callable[..., Job], broker: Broker, committed: Callable[[], Any]
) -> None:
    from jobs.services import job_update

    @step("test_stop_paused")
    def _paused(ctx: StepContext) -> Any:
        job_update(job=Job.objects.get(pk=ctx.job_id), changes={"queue_state": "paused"})
        return notice_then_sleep(ctx, 60)

    workflow(te_client, "paused", "test_stop_paused")
    job = submit("paused")
    broker.round()
    broker.round()
    task = job.tasks.get()
    assert (task.state, task.attempts) == (TaskState.PENDING, 0)
    assert run_messages(broker) == []
    assert json_log(job.pk)[-1][2] == "'test_stop_paused' interrupted by worker shutdown; runs when resumed"


def test_a_hand_back_after_the_claim_was_lost_changes_nothing(
    te_client: Client, submit: Callable[..., Job], broker: Broker
) -> None:
    @step("test_stop_claim_lost")
    def _lost(ctx: StepContext) -> Any:
        # Another worker took the task over (the reconciler thought this one dead): attempt 2 owns it.
        from jobs.models import Task

        Task.objects.filter(pk=ctx.task_id).update(attempts=2)
        return notice_then_sleep(ctx, 60)

    workflow(te_client, "lost", "test_stop_claim_lost")
    job = submit("lost")
    broker.round()
    broker.round()
    task = job.tasks.get()
    assert (task.state, task.attempts) == (TaskState.RUNNING, 2)
    assert HANDED_BACK.format("test_stop_claim_lost") not in [m for _, _, m, _ in json_log(job.pk)]
    assert run_messages(broker) == []


def test_the_deadline_interrupts_nothing_but_a_step(monkeypatch: pytest.MonkeyPatch) -> None:
    # Between steps (a worker recording a result, or idle) the deadline passes without a trace.
    monkeypatch.setattr(runner, "_step_thread", 0)
    runner._interrupt_at_deadline()


def test_a_monitor_sees_a_handed_back_step_rejected_for_requeue_not_failed(
    te_client: Client,
    submit: Callable[..., Job],
    broker: Broker,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from jobs.engine import bus
    from taskengine_site.celery import app

    sent: list[tuple[str, dict[str, Any]]] = []

    class Recorder:
        def send(self, kind: str, **fields: Any) -> None:
            sent.append((kind, fields))

    monkeypatch.setattr(app.events, "Dispatcher", lambda *args, **kwargs: Recorder())
    monkeypatch.setattr(bus, "_step_dispatcher", None)
    settings.TASKENGINE_CELERY_EVENTS = True
    workflow(te_client, "long", "test_stop_long")
    submit("long")
    broker.round()
    broker.round()
    assert [kind for kind, _ in sent] == ["task-received", "task-started", "task-rejected"]
    assert sent[-1][1]["requeue"] is True
