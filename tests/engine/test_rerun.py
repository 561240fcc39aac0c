"""job_rerun: a new job with the same work; the original broken from any state."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from clients.models import Client
from jobs.engine.dispatcher import dispatch
from jobs.models import Job, WorkflowDefinition
from jobs.services import job_rerun
from jobs.states import JobState, TaskState
from logs.models import LogEntry
from taskengine_site.errors import DomainError
from tests.engine.conftest import Broker


@pytest.mark.parametrize(
    "state",
    [
        JobState.COMPLETED,
        JobState.QUEUED,
        JobState.SCHEDULED,
        JobState.PENDING,
        JobState.PAUSED,
        JobState.BROKEN,
        JobState.STARTED,
    ],
)
def test_rerun_from_any_state(
    submit: Callable[..., Job], broker: Broker, committed: Callable[[], Any], state: JobState
) -> None:
    job = submit("noop5", priority=3, parameters={"content_id": "c9"})
    if state == JobState.STARTED:
        dispatch()
    else:
        Job.objects.filter(pk=job.pk).update(queue_state=state)
    broker.pop_all()
    with committed():
        new = job_rerun(job=job)
    job.refresh_from_db()
    assert job.queue_state == JobState.BROKEN
    assert (new.client_id, new.workflow, new.priority, new.parameters) == (
        job.client_id,
        "noop5",
        3,
        {"content_id": "c9"},
    )
    assert (new.queue_state, new.rerun_of_id) == (JobState.QUEUED, job.pk)
    assert [m.task for m in broker.pop_all()] == ["jobs.tasks.dispatch"]
    if state == JobState.STARTED:
        assert set(job.tasks.values_list("state", flat=True)) == {TaskState.CANCELLED}
    created = json.loads(LogEntry.objects.get(job=new).message)
    assert (created["path"], created["payload"]) == (f"POST /jobs/{job.pk}/rerun", "job_created")
    assert LogEntry.objects.filter(job=job, message=f"job broken: rerun as job {new.pk}").exists()


def test_rerun_of_a_completed_job_runs_again(
    submit: Callable[..., Job], broker: Broker, committed: Callable[[], Any]
) -> None:
    job = submit("noop")
    broker.drain()
    with committed():
        new = job_rerun(job=job)
    broker.drain()
    new.refresh_from_db()
    job.refresh_from_db()
    assert (new.queue_state, new.failed) == (JobState.COMPLETED, False)
    assert job.queue_state == JobState.BROKEN


def test_rerun_refused_when_the_workflow_is_gone(
    te_client: Client, submit: Callable[..., Job], broker: Broker
) -> None:
    WorkflowDefinition.objects.create(client=te_client, name="temp", steps=[{"step": "noop"}])
    job = submit("temp")
    WorkflowDefinition.objects.all().delete()
    with pytest.raises(DomainError) as excinfo:
        job_rerun(job=job)
    assert excinfo.value.job_id == job.pk
    assert "unknown workflow 'temp'" in excinfo.value.message
    assert Job.objects.get(pk=job.pk).queue_state == JobState.QUEUED
    assert Job.objects.count() == 1


def test_reruns_are_found_through_an_index_of_the_jobs_that_are_one(
    submit: Callable[..., Job], broker: Broker, committed: Callable[[], Any]
) -> None:
    """rerun_of_id is indexed only where set (jobs/migrations/0009): no entry for the jobs that are no
    rerun, and the index still answers a job's reruns (and the foreign key's check when it is deleted)."""
    from django.db import connection

    original = submit("noop5")
    submit("noop5")
    with committed():
        rerun = job_rerun(job=original)
    broker.pop_all()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'jobs_job' AND indexdef LIKE %s",
            ["%(rerun_of_id)%"],
        )
        indexes = cursor.fetchall()
        assert [name for name, _ in indexes] == ["job_rerun_of_id"]
        assert indexes[0][1].endswith("WHERE (rerun_of_id IS NOT NULL)")
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN SELECT id FROM jobs_job WHERE rerun_of_id = %s", [original.pk])
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "job_rerun_of_id" in plan, plan
    assert list(Job.objects.filter(rerun_of=original).values_list("pk", flat=True)) == [rerun.pk]
