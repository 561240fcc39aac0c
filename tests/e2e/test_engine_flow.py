"""End to end with real workers: a workflow runs to completion with the original's log, a rerun runs
again, and the workers' heartbeats reach the health numbers."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable

import pytest
from django.conf import settings
from django.db import transaction

from clients.models import Client
from jobs.models import Job
from jobs.services import job_rerun, job_submit
from jobs.states import JobState, TaskState
from logs.models import LogEntry
from monitoring import selectors
from settings_app.services import setting_set
from tests.e2e.conftest import EngineProcesses

from .conftest import wait_until

pytestmark = pytest.mark.e2e

COMMON = "No client definitions. Using common definitions."


def finished(job_id: int) -> Job | None:
    return Job.objects.filter(pk=job_id, queue_state=JobState.COMPLETED).first()


def test_noop5_completes_with_the_log_sequence(
    engine_processes: EngineProcesses, make_client: Callable[..., tuple[Client, str]]
) -> None:
    engine_processes.start_worker()
    client, _ = make_client()
    job, _ = job_submit(client=client, workflow="noop5", parameters={"content_id": "e2e"})
    job = wait_until(lambda: finished(job.pk), timeout=30)
    assert job.failed is False
    tasks = list(job.tasks.order_by("position"))
    assert [(t.name, t.state, t.attempts) for t in tasks] == [("noop", TaskState.COMPLETED, 1)] * 5
    assert all(t.worker for t in tasks)
    entries = list(
        LogEntry.objects.filter(job=job).order_by("id").values_list("progname", "task_id", "message")
    )
    assert entries[0][:2] == ("api", 0)
    expected = []
    for task in tasks:
        expected += [
            ("worker", task.pk, COMMON),
            ("worker", task.pk, "Task 'noop' started"),
            ("worker", task.pk, "'noop' completed successfully"),
        ]
    expected.append(("controller", tasks[-1].pk, "job has completed successfully"))
    assert entries[1:] == expected
    # Tasks ran one after the other, each after the previous one ended.
    for before, after in itertools.pairwise(tasks):
        assert before.finished_at <= after.started_at


def test_rerun_of_a_completed_job(
    engine_processes: EngineProcesses, make_client: Callable[..., tuple[Client, str]]
) -> None:
    engine_processes.start_worker()
    client, _ = make_client()
    job, _ = job_submit(client=client, workflow="noop", parameters={"content_id": "again"})
    wait_until(lambda: finished(job.pk), timeout=30)
    new = job_rerun(job=job)
    new = wait_until(lambda: finished(new.pk), timeout=30)
    job.refresh_from_db()
    assert job.queue_state == JobState.BROKEN
    assert (new.failed, new.workflow, new.parameters, new.rerun_of_id) == (
        False,
        "noop",
        job.parameters,
        job.pk,
    )
    assert new.tasks.get().state == TaskState.COMPLETED


def test_worker_heartbeats_reach_the_health_numbers(
    engine_processes: EngineProcesses, make_client: Callable[..., tuple[Client, str]]
) -> None:
    engine_processes.start_worker(queues=["controller", "work"], concurrency=1)
    engine_processes.start_worker(queues=["work", "callback", "scheduler"], concurrency=1)
    numbers = selectors.health_numbers()["queues"]
    assert {q: n["workers"] for q, n in numbers.items()} == {
        "controller": 1,
        "work": 2,
        "windows_capture": 0,
        "callback": 1,
        "scheduler": 1,
    }
    # A running step shows as working on its queue, from the workers' own heartbeats.
    client, _ = make_client()
    job, _ = job_submit(client=client, workflow="sleep", parameters={"seconds": 4})
    wait_until(lambda: selectors.health_numbers()["queues"]["work"]["working"] == 1, timeout=10)
    assert selectors.health_numbers()["tasks"]["pending"] == 0
    wait_until(lambda: finished(job.pk), timeout=15)
    wait_until(lambda: selectors.health_numbers()["queues"]["work"]["working"] == 0, timeout=10)
    # A stopped worker withdraws its heartbeat.
    engine_processes.stop(engine_processes.processes[0])
    assert selectors.health_numbers()["queues"]["controller"]["workers"] == 0


def test_starts_several_to_a_message_run_on_a_real_worker(
    engine_processes: EngineProcesses, make_client: Callable[..., tuple[Client, str]]
) -> None:
    # TASKENGINE_STARTS_PER_MESSAGE (the default, as the worker has it): one dispatch starts the twelve
    # jobs, whose first steps go out as the fewest run_tasks messages of at most that many, since the
    # only worker says in its heartbeat that it runs them; it takes each message's queue from its
    # delivery.
    worker = engine_processes.start_worker()
    client, _ = make_client()
    with transaction.atomic():
        setting_set(name="max_jobs", value=20)
        jobs = [job_submit(client=client, workflow="noop", parameters={"n": n})[0] for n in range(12)]
    ids = [job.pk for job in jobs]
    wait_until(
        lambda: Job.objects.filter(pk__in=ids, queue_state=JobState.COMPLETED).count() == 12, timeout=30
    )
    tasks = [job.tasks.get() for job in jobs]
    assert [(t.state, t.attempts) for t in tasks] == [(TaskState.COMPLETED, 1)] * 12
    log = engine_processes.log(worker)
    messages = -(-12 // settings.TASKENGINE_STARTS_PER_MESSAGE)
    assert 1 < settings.TASKENGINE_STARTS_PER_MESSAGE < 12
    assert len(re.findall(r"Task jobs\.tasks\.run_tasks\[[-0-9a-f]+\] received", log)) == messages, log
    assert "Traceback" not in log, log
