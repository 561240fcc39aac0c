"""With TASKENGINE_CELERY_EVENTS, a real worker publishes every step attempt as a Celery task event, so a
monitor built on ``celery.events.State`` (Flower is one) lists the steps, a failed one as failed."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from clients.models import Client
from jobs.models import Job
from jobs.services import job_submit
from jobs.states import JobState
from taskengine_site.celery import app
from tests.e2e.conftest import EngineProcesses

from .conftest import wait_until

pytestmark = pytest.mark.e2e


class Monitor:
    """What Flower does with a worker's events: a receiver on the broker feeding a ``State``."""

    def __init__(self) -> None:
        self.state = app.events.State()
        self.types: list[str] = []
        self.connection = app.connection_for_read()
        self.receiver = app.events.Receiver(self.connection, handlers={"*": self._on_event})
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _on_event(self, event: dict[str, Any]) -> None:
        self.types.append(event["type"])
        self.state.event(event)

    def _run(self) -> None:
        self.receiver.capture(limit=None, timeout=None, wakeup=False)

    def step_tasks(self) -> list[Any]:
        return [task for _, task in self.state.tasks.items() if (task.name or "").startswith("step:")]

    def close(self) -> None:
        self.receiver.should_stop = True
        self.thread.join(timeout=5)
        self.connection.release()


@pytest.fixture
def monitor() -> Iterator[Monitor]:
    watching = Monitor()
    watching.thread.start()
    yield watching
    watching.close()


def test_every_step_attempt_is_a_task_in_the_monitor(
    engine_processes: EngineProcesses, make_client: Callable[..., tuple[Client, str]], monitor: Monitor
) -> None:
    worker = engine_processes.start_worker(extra_env={"TASKENGINE_CELERY_EVENTS": "true"})
    # Subscribed before any step runs: the worker's own events arrive.
    wait_until(lambda: "worker-online" in monitor.types or "worker-heartbeat" in monitor.types, timeout=20)
    client, _ = make_client()
    good, _ = job_submit(client=client, workflow="noop5", parameters={})
    bad, _ = job_submit(client=client, workflow="fail", parameters={"permanent": True, "message": "no disk"})
    ended = [JobState.COMPLETED] * 2
    wait_until(
        lambda: (
            list(Job.objects.filter(pk__in=[good.pk, bad.pk]).values_list("queue_state", flat=True)) == ended
        ),
        timeout=30,
    )

    def run_tasks() -> list[Any]:
        # One message a job, or one for both when their dispatch grouped them (run_tasks).
        names = ("jobs.tasks.run_task", "jobs.tasks.run_tasks")
        return [t for _, t in list(monitor.state.tasks.items()) if t.name in names]

    def all_six() -> list[Any] | None:
        # A job ends (in Postgres) inside its run_task, before that message's own task-succeeded event
        # is sent: wait for those events too.
        found = monitor.step_tasks()
        runs = run_tasks()
        done = len(found) == 6 and runs and all(run.state == "SUCCESS" for run in runs)
        return found if done else None

    steps = wait_until(all_six, timeout=10)
    log = engine_processes.log(worker)
    assert "step event not sent" not in log, log[-3000:]
    # Celery's own task events are on too: the run_task messages that ran the steps.
    runs = run_tasks()
    assert runs and all(run.state == "SUCCESS" for run in runs), [run.state for run in runs]
    by_job: dict[int, list[Any]] = {}
    for step in steps:
        by_job.setdefault(step.job_id, []).append(step)
    assert sorted(by_job) == [good.pk, bad.pk]

    succeeded = by_job[good.pk]
    tasks = {task.pk: task for task in good.tasks.all()}
    assert sorted(step.task_id for step in succeeded) == sorted(tasks)
    for step in succeeded:
        assert (step.name, step.state, step.step) == ("step:noop", "SUCCESS", "noop"), log[-2000:]
        expected = f"{{'job_id': {good.pk}, 'task_id': {step.task_id}, 'attempt': 1}}"
        assert (step.attempt, step.kwargs) == (1, expected)
        assert step.runtime is not None and step.runtime >= 0 and step.duration == step.runtime
        assert step.started and step.succeeded and step.started <= step.succeeded
        assert step.worker is not None and step.worker.hostname == worker.hostname
        assert step.parent_id  # the run_task message that ran it
    # Five steps chained in one run_task message: five tasks in the monitor, one parent.
    assert len({step.parent_id for step in succeeded}) == 1

    (failed,) = by_job[bad.pk]
    assert (failed.name, failed.state, failed.exception, failed.permanent) == (
        "step:fail",
        "FAILURE",
        "no disk",
        True,
    )
    assert failed.task_id == bad.tasks.get().pk and failed.runtime is not None
