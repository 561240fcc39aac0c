"""POST /jobs: a batch of job bodies, each checked as POST /job checks one, answered in order, written in
one transaction and dispatched once."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from jobs.engine.bus import DISPATCH
from jobs.models import Job
from jobs.services import MAX_BATCH
from jobs.states import JobState
from logs.models import LogEntry


def post(api: Any, jobs: Any, **extra: Any) -> Any:
    return api.post("/jobs", {"jobs": jobs}, format="json", **extra)


def body(workflow: str = "noop", **job: Any) -> dict[str, Any]:
    return {"job": {"workflow": workflow, **job}, "parameters": {"content_id": f"c-{workflow}"}}


@pytest.mark.django_db
def test_each_job_is_answered_in_order_with_its_id_or_why_it_was_refused(
    api, queues, django_capture_on_commit_callbacks
):
    items = [
        body("noop", priority=2),
        body("no-such-workflow"),
        body("noop5", priority="11"),
        {"job": {"workflow": "noop"}, "parameters": {"x": float("inf")}},
        {"job": {"workflow": "noop"}, "parameters": {}, "unexpected": 1},
        body("sleep", run_at="2040-01-01T00:00:00.000Z"),
    ]
    # float("inf") is not JSON: send the body as text, as a client would (1e999 parses to infinity).
    raw = json.dumps({"jobs": items}).replace("Infinity", "1e999")
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post("/jobs", raw, content_type="application/json")
    assert response.status_code == 200, response.json()
    answers = response.json()["jobs"]
    assert [a["result"] for a in answers] == [
        "accepted",
        "refused",
        "refused",
        "refused",
        "refused",
        "accepted",
    ]
    assert answers[1] == {"result": "refused", "error": "workflow: unknown workflow 'no-such-workflow'"}
    assert answers[2]["error"] == "job.priority: must be an integer from 1 to 10, got 11"
    assert answers[3]["error"] == "parameters.x: not a finite number"
    assert answers[4]["error"] == "unexpected: unknown field"
    first, last = Job.objects.get(pk=answers[0]["id"]), Job.objects.get(pk=answers[5]["id"])
    assert answers[0]["created"] is True and answers[5]["created"] is True
    assert (first.client, first.workflow, first.priority, first.queue_state) == (
        api.te_client,
        "noop",
        2,
        JobState.QUEUED,
    )
    assert last.queue_state == JobState.SCHEDULED
    assert Job.objects.count() == 2
    # Each job has its creation log entry, naming the batch and holding the item it was made from.
    entry = json.loads(LogEntry.objects.get(job_id=first.pk).message)
    assert (entry["path"], entry["payload"], entry["parameters"]) == ("POST /jobs", "job_created", items[0])
    assert api.te_key not in LogEntry.objects.get(job_id=first.pk).message
    # One dispatch for the whole batch.
    assert [m.task for m in queues.pop_all() if m.task == DISPATCH] == [DISPATCH]


@pytest.mark.django_db
def test_idempotency_keys_are_per_item_within_and_across_batches(api, submit):
    earlier = submit(api, headers={"HTTP_IDEMPOTENCY_KEY": "k-earlier"}).json()["id"]
    items = [
        {**body(), "idempotency_key": "k1"},
        {**body(), "idempotency_key": "k1"},
        {**body(), "idempotency_key": "k-earlier"},
        body(),
    ]
    answers = post(api, items).json()["jobs"]
    assert answers[0]["id"] == answers[1]["id"] and answers[0]["created"] is True
    assert answers[1]["created"] is False
    assert (answers[2]["id"], answers[2]["created"]) == (earlier, False)
    assert answers[3]["created"] is True
    again = post(api, items[:1]).json()["jobs"]
    assert again == [{"id": answers[0]["id"], "result": "accepted", "created": False}]
    assert Job.objects.filter(client=api.te_client).count() == 3


@pytest.mark.django_db
def test_the_jobs_are_written_by_one_statement_whatever_their_number(api):
    def statements(count: int) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert post(api, [body() for _ in range(count)]).status_code == 200
        return sum(1 for q in captured.captured_queries if "INSERT INTO jobs_job" in q["sql"])

    assert statements(3) == statements(200) == 1
    assert Job.objects.count() == 203 and LogEntry.objects.count() == 203


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("envelope", "message"),
    [
        ({"jobs": []}, "jobs: Ensure this field has at least 1 elements."),
        ({"jobs": "noop"}, 'jobs: Expected a list of items but got type "str".'),
        ({"jobs": [{}] * (MAX_BATCH + 1)}, f"jobs: Ensure this field has no more than {MAX_BATCH} elements."),
        ({"jobs": [body()], "extra": 1}, "extra: unknown field"),
        ({}, "jobs: This field is required."),
    ],
)
def test_a_malformed_batch_is_refused_whole(api, envelope, message):
    response = api.post("/jobs", envelope, format="json")
    assert (response.status_code, response.json()) == (400, {"error": message})
    assert Job.objects.count() == 0


@pytest.mark.django_db
def test_a_batch_needs_a_key_even_where_the_list_is_public(settings, api):
    settings.TASKENGINE_PUBLIC_JOB_LIST = True
    response = APIClient().post("/jobs", {"jobs": [body()]}, format="json")
    assert (response.status_code, response.json()) == (401, {"error": "Unauthorised request."})
    assert Job.objects.count() == 0


@pytest.mark.django_db
def test_a_batch_may_be_larger_than_one_job_body_but_not_than_its_own_limit(settings, api):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    settings.TASKENGINE_MAX_BATCH_BODY_BYTES = 64 * 1024
    items = [body() for _ in range(50)]  # about 4 kB: more than one POST /job may send
    response = post(api, items)
    assert response.status_code == 200, response.json()
    big = [{**body(), "parameters": {"pad": "x" * 2000}} for _ in range(40)]
    response = post(api, big)
    assert response.status_code == 413 and "exceeds the limit of 65536 bytes" in response.json()["error"]
    assert Job.objects.count() == 50
