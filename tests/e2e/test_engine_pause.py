"""End to end: a started job paused between two steps runs nothing more and frees its slot; resumed,
it finishes from the next step without running any step twice."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.utils import timezone

from clients.models import Client
from jobs.models import Job, WorkflowDefinition
from jobs.services import job_submit, job_update
from jobs.states import JobState, TaskState
from settings_app.services import setting_set
from tests.e2e.conftest import EngineProcesses

from .conftest import wait_until

pytestmark = pytest.mark.e2e


def test_pause_between_steps_then_resume(
    engine_processes: EngineProcesses, make_client: Callable[..., tuple[Client, str]]
) -> None:
    setting_set(name="max_jobs", value=1)
    client, _ = make_client()
    WorkflowDefinition.objects.create(
        client=client,
        name="three_naps",
        steps=[{"step": "sleep", "parameters": {"seconds": 1.5}}] * 3,
    )
    engine_processes.start_worker(concurrency=2)
    job, _ = job_submit(client=client, workflow="three_naps", parameters={})
    first = wait_until(
        lambda: (
            job.tasks.filter(position=1, state=TaskState.RUNNING).first()
            if Job.objects.filter(pk=job.pk, queue_state=JobState.STARTED).exists()
            else None
        ),
        timeout=15,
    )
    job_update(job=job, changes={"queue_state": "paused"})
    assert job.queue_state == JobState.PAUSED
    # The slot is free at once: another job starts while the paused one's step is still running.
    other, _ = job_submit(client=client, workflow="noop", parameters={})
    wait_until(lambda: Job.objects.filter(pk=other.pk, queue_state=JobState.COMPLETED).exists(), timeout=15)
    first.refresh_from_db()
    assert first.state == TaskState.RUNNING
    # The running step finishes; nothing after it starts. The statement that records a step's end also
    # decides the next one, so once the first is completed the others' states are what it decided.
    wait_until(lambda: job.tasks.get(position=1).state == TaskState.COMPLETED, timeout=15)
    assert list(job.tasks.order_by("position").values_list("state", "attempts")) == [
        (TaskState.COMPLETED, 1),
        (TaskState.PENDING, 0),
        (TaskState.PENDING, 0),
    ]
    assert Job.objects.get(pk=job.pk).queue_state == JobState.PAUSED

    resumed_at = timezone.now()
    job_update(job=job, changes={"queue_state": "queued"})
    job = wait_until(
        lambda: Job.objects.filter(pk=job.pk, queue_state=JobState.COMPLETED).first(), timeout=20
    )
    assert job.failed is False
    tasks = list(job.tasks.order_by("position"))
    assert [(t.state, t.attempts) for t in tasks] == [(TaskState.COMPLETED, 1)] * 3
    # Resumed from the next step: the second step started after the resume, not while the job was paused.
    assert tasks[1].started_at is not None and tasks[1].started_at >= resumed_at > tasks[0].finished_at


def test_pause_while_the_step_runs_on_and_resume_before_it_ends(
    engine_processes: EngineProcesses, make_client: Callable[..., tuple[Client, str]]
) -> None:
    """Resumed while the step from before the pause still runs: that step is not run a second time."""
    client, _ = make_client()
    WorkflowDefinition.objects.create(
        client=client,
        name="nap_then_noop",
        steps=[{"step": "sleep", "parameters": {"seconds": 2}}, "noop"],
    )
    engine_processes.start_worker(concurrency=2)
    job, _ = job_submit(client=client, workflow="nap_then_noop", parameters={})
    wait_until(lambda: job.tasks.filter(position=1, state=TaskState.RUNNING).exists(), timeout=15)
    job_update(job=job, changes={"queue_state": "paused"})
    job_update(job=job, changes={"queue_state": "queued"})
    job = wait_until(
        lambda: Job.objects.filter(pk=job.pk, queue_state=JobState.COMPLETED).first(), timeout=20
    )
    assert job.failed is False
    assert list(job.tasks.order_by("position").values_list("state", "attempts")) == [
        (TaskState.COMPLETED, 1),
        (TaskState.COMPLETED, 1),
    ]
