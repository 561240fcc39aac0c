"""GET /jobs?search= reads jobs_job_search (jobs.models.JobSearchText, migration 0010): each job's parameters
as JSON text, kept in step with jobs_job by triggers whatever writes the jobs, and never written again by
a change of a job's state (what moved the parameters' trigram index off jobs_job)."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from jobs.engine.transitions import job_transition
from jobs.models import Job, JobSearchText
from jobs.services import SubmitRequest, job_submit, jobs_submit
from jobs.states import JobState

pytestmark = pytest.mark.django_db


def _texts() -> dict[int, str]:
    return dict(JobSearchText.objects.values_list("job_id", "text"))


def _parameters_texts() -> dict[int, str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, parameters::text FROM jobs_job")
        return dict(cursor.fetchall())


def test_every_way_a_job_is_written_keeps_its_search_text(make_client: Any) -> None:
    client, _ = make_client("acme")
    one, _ = job_submit(client=client, workflow="noop", parameters={"content_id": "c1", "deep": {"f": "x9"}})
    batch = jobs_submit(
        client=client,
        requests=[SubmitRequest("noop", {"content_id": f"b{n}"}) for n in range(3)],
    )
    now = timezone.now()
    orm = Job.objects.create(client=client, workflow="noop", parameters={"content_id": "orm"}, run_at=now)
    bulk = Job.objects.bulk_create(
        [
            Job(client=client, workflow="noop", parameters={"content_id": f"b{n}"}, run_at=now)
            for n in range(2)
        ]
    )
    ids = {one.pk, orm.pk, *(b.job_id for b in batch), *(b.pk for b in bulk)}
    assert len(ids) == 7
    assert _texts() == _parameters_texts() and set(_texts()) == ids

    orm.parameters = {"content_id": "changed"}
    orm.save()
    one.priority = 2
    one.save()  # an UPDATE that sets parameters unchanged
    assert _texts()[orm.pk] == '{"content_id": "changed"}'
    assert _texts() == _parameters_texts()

    Job.objects.filter(pk__in=[orm.pk, bulk[0].pk]).delete()
    assert set(_texts()) == ids - {orm.pk, bulk[0].pk}
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the test's transaction holds deferred checks
        cursor.execute("TRUNCATE jobs_job CASCADE")
    assert _texts() == {}


def test_a_change_of_state_does_not_write_the_search_text_again(make_client: Any) -> None:
    client, _ = make_client("acme")
    job, _ = job_submit(client=client, workflow="noop", parameters={"content_id": "c1"})

    def version() -> tuple[str, str]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT s.xmin::text, s.ctid::text FROM jobs_job_search AS s WHERE s.job_id = %s", [job.pk]
            )
            return cursor.fetchone()

    before = version()
    assert job_transition(job.pk, source=[JobState.QUEUED], target=JobState.PAUSED)
    assert job_transition(job.pk, source=[JobState.PAUSED], target=JobState.QUEUED)
    assert Job.objects.get(pk=job.pk).queue_state == JobState.QUEUED
    assert version() == before  # the same row version: nothing written


def test_the_migration_fills_the_text_of_jobs_it_finds(make_client: Any) -> None:
    client, _ = make_client("acme")
    kept, _ = job_submit(client=client, workflow="noop", parameters={"content_id": "kept"})
    missing, _ = job_submit(client=client, workflow="noop", parameters={"content_id": "missing"})
    JobSearchText.objects.filter(job_id=missing.pk).delete()  # as a job from before migration 0010
    fill = importlib.import_module("jobs.migrations.0010_job_search_text").FILL
    with connection.cursor() as cursor:
        cursor.execute(fill)
        cursor.execute(fill)  # again: the jobs it finds there are left as they are
    assert _texts() == _parameters_texts() and set(_texts()) == {kept.pk, missing.pk}


def test_search_finds_a_job_by_any_value_through_the_table(api: Any) -> None:
    client = api.te_client
    first, _ = job_submit(
        client=client, workflow="noop", parameters={"content_id": "alpha-17", "n": {"f": "Zeta"}}
    )
    second, _ = job_submit(client=client, workflow="noop", parameters={"content_id": "beta-18"})

    def found(term: str) -> list[int]:
        response = api.get(f"/jobs?search={term}")
        assert response.status_code == 200, response.content
        return [job["id"] for job in response.json()]

    assert found("ALPHA-1") == [first.pk]
    assert found("zeta") == [first.pk]
    assert found("a-1") == [second.pk, first.pk]
    Job.objects.filter(pk=second.pk).update(parameters={"content_id": "gamma"})
    assert found("beta") == [] and found("gamm") == [second.pk]
