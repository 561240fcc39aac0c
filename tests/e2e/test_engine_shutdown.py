"""End to end: a worker told to stop (SIGTERM, as a platform restart sends it to every process of the
worker) finishes the steps that end within the grace, hands the others back at once, and exits quietly;
another worker, or the same one started again, resumes a handed-back step within seconds.

A worker SIGKILLed before it could hand back is still recovered by the reconciler
(``test_engine_recovery.py``).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest

from clients.models import Client
from jobs.models import Job, Task
from jobs.services import job_submit
from jobs.states import JobState, TaskState
from logs.models import LogEntry
from settings_app.services import setting_set
from tests.e2e.conftest import EngineProcesses, wait_until

pytestmark = pytest.mark.e2e

GRACE = {"TASKENGINE_SHUTDOWN_GRACE_SECONDS": "4"}
HANDED_BACK = "'sleep' interrupted by worker shutdown; queued again"


def running(task: Task) -> Task | None:
    return Task.objects.filter(pk=task.pk, state=TaskState.RUNNING).first()


def step_of(job: Job) -> Task:
    """The job's one task, once the dispatcher has started the job and it runs."""
    return wait_until(lambda: Task.objects.filter(job=job, state=TaskState.RUNNING).first(), timeout=15)


def restarted_at(task: Task) -> float:
    """When the task's current attempt started (its claim), as a POSIX time."""
    fresh = Task.objects.get(pk=task.pk)
    assert fresh.started_at is not None
    return fresh.started_at.timestamp()


def test_a_stopping_worker_finishes_what_fits_the_grace_and_hands_the_rest_back_at_once(
    engine_processes: EngineProcesses, make_client: Callable[..., tuple[Client, str]]
) -> None:
    setting_set(name="max_jobs", value=10)
    client, _ = make_client()
    grace = {"TASKENGINE_SHUTDOWN_GRACE_SECONDS": "10"}
    stopping = engine_processes.start_worker(concurrency=2, name="stopping", extra_env=grace)
    long, _ = job_submit(client=client, workflow="sleep", parameters={"seconds": 40})
    short, _ = job_submit(client=client, workflow="sleep", parameters={"seconds": 10})
    long_task, short_task = step_of(long), step_of(short)
    began = time.monotonic()
    other = engine_processes.start_worker(concurrency=1, name="other")
    # The short step now ends within the grace (10 s); the long one cannot.
    assert time.monotonic() - began < 9, "the second worker took too long to start for this test"

    stopped_at = time.time()
    engine_processes.stop(stopping, sig=signal.SIGTERM, timeout=15)  # the whole process group
    exited_after = time.time() - stopped_at

    short.refresh_from_db()
    assert (short.queue_state, short.failed) == (JobState.COMPLETED, False)
    short_task.refresh_from_db()
    assert (short_task.state, short_task.attempts) == (TaskState.COMPLETED, 1)
    assert exited_after < 10 + 3, "the stopping worker waited for the short step only"
    # The long step was handed back at once, not counted, and runs again on the other worker, claimed
    # within 5 s of the SIGTERM.
    resumed = wait_until(lambda: running(long_task), timeout=10)
    assert resumed.attempts == 1
    assert resumed.worker != short_task.worker
    assert restarted_at(long_task) - stopped_at < 5
    messages = list(LogEntry.objects.filter(job_id=long.pk).order_by("id").values_list("message", flat=True))
    assert messages.count(HANDED_BACK) == 1
    assert messages.count("Task 'sleep' started") == 2
    assert messages.index(HANDED_BACK) < len(messages) - 1
    assert HANDED_BACK not in LogEntry.objects.filter(job_id=short.pk).values_list("message", flat=True)
    # No noise: one line for the handed-back step, no traceback, no lost pool process.
    log = engine_processes.log(stopping)
    assert log.count("interrupted by worker shutdown; queued again") == 1
    for noise in ("Traceback", "WorkerLostError", "ERROR"):
        assert noise not in log, log[-3000:]
    assert other.popen.poll() is None


def test_a_restarted_worker_resumes_a_handed_back_step_within_seconds(
    engine_processes: EngineProcesses, make_client: Callable[..., tuple[Client, str]]
) -> None:
    client, _ = make_client()
    only = engine_processes.start_worker(concurrency=1, name="only", extra_env=GRACE)
    job, _ = job_submit(client=client, workflow="sleep", parameters={"seconds": 30})
    task = step_of(job)
    engine_processes.stop(only, sig=signal.SIGTERM, timeout=10)
    task.refresh_from_db()
    assert (task.state, task.attempts) == (TaskState.QUEUED, 0)

    engine_processes.start_worker(concurrency=1, name="again", extra_env=GRACE)
    up = time.time()  # start_worker returns once the worker's heartbeat is in Redis
    wait_until(lambda: running(task), timeout=10)
    assert restarted_at(task) - up < 5
    task.refresh_from_db()
    assert task.attempts == 1
    # Without waiting for the stale-heartbeat timeout (5 s here, 60 s in production): the step was
    # never presumed dead.
    assert not LogEntry.objects.filter(job_id=job.pk, message__contains="re-published").exists()


def test_a_solo_pool_worker_hands_back_too(
    engine_processes: EngineProcesses, make_client: Callable[..., tuple[Client, str]]
) -> None:
    # The step runs in the worker's own process: the notice is taken there.
    client, _ = make_client()
    solo = engine_processes.start_worker(concurrency=1, name="solo", pool="solo", extra_env=GRACE)
    job, _ = job_submit(client=client, workflow="sleep", parameters={"seconds": 30})
    task = step_of(job)
    began = time.monotonic()
    engine_processes.stop(solo, sig=signal.SIGTERM, timeout=15)
    assert time.monotonic() - began < 4 + 5, engine_processes.log(solo)[-3000:]
    task.refresh_from_db()
    assert (task.state, task.attempts) == (TaskState.QUEUED, 0)
    assert engine_processes.log(solo).count("interrupted by worker shutdown; queued again") == 1


def test_a_worker_whose_main_process_alone_gets_sigterm_tells_its_pool(
    engine_processes: EngineProcesses, make_client: Callable[..., tuple[Client, str]]
) -> None:
    # Docker and Kubernetes signal the container's first process only: the pool learns it from there.
    client, _ = make_client()
    # A grace far from the time a worker takes to stop (2-5 s, more on a loaded machine), so that a step
    # handed back at once and one held until the deadline cannot be confused.
    worker = engine_processes.start_worker(
        concurrency=2, name="main-only", extra_env={"TASKENGINE_SHUTDOWN_GRACE_SECONDS": "20"}
    )
    job, _ = job_submit(client=client, workflow="sleep", parameters={"seconds": 60})
    task = step_of(job)
    began = time.monotonic()
    os.kill(worker.popen.pid, signal.SIGTERM)
    worker.popen.wait(30)
    assert time.monotonic() - began < 12, "handed back at once, not at the 20 s deadline"
    task.refresh_from_db()
    assert (task.state, task.attempts) == (TaskState.QUEUED, 0)
    log = engine_processes.log(worker)
    assert log.count("interrupted by worker shutdown; queued again") == 1
    assert "Traceback" not in log, log[-3000:]
