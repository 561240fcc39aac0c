"""End to end: a step that always fails is attempted retry_limit + 1 times, retry_delay apart."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import timedelta

import pytest

from clients.models import Client
from jobs.models import Job
from jobs.services import job_submit
from jobs.states import JobState, TaskState
from logs.models import LogEntry, Severity
from settings_app.services import setting_set
from tests.e2e.conftest import EngineProcesses

from .conftest import wait_until

pytestmark = pytest.mark.e2e


def test_failing_step_makes_three_attempts_then_fails_the_job(
    engine_processes: EngineProcesses, make_client: Callable[..., tuple[Client, str]]
) -> None:
    setting_set(name="retry_limit", value=2)
    setting_set(name="retry_delay", value=1)
    engine_processes.start_worker()
    client, _ = make_client()
    job, _ = job_submit(client=client, workflow="fail", parameters={"message": "always"})
    job = wait_until(
        lambda: Job.objects.filter(pk=job.pk, queue_state=JobState.COMPLETED).first(), timeout=30
    )
    assert job.failed is True
    task = job.tasks.get()
    assert (task.state, task.attempts, task.error) == (TaskState.FAILED, 3, "always")
    starts = list(
        LogEntry.objects.filter(job=job, message="Task 'fail' started")
        .order_by("id")
        .values_list("created_at", flat=True)
    )
    assert len(starts) == 3
    for earlier, later in itertools.pairwise(starts):
        assert later - earlier >= timedelta(seconds=1)
    errors = list(
        LogEntry.objects.filter(job=job, severity=Severity.ERROR)
        .order_by("id")
        .values_list("progname", "message")
    )
    assert errors == [
        ("worker", "'fail' failed (attempt 1 of 3): always. Retrying in 1 seconds."),
        ("worker", "'fail' failed (attempt 2 of 3): always. Retrying in 1 seconds."),
        ("worker", "'fail' failed: always"),
        ("controller", "job has failed: 'fail' failed: always"),
    ]
