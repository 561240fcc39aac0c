"""POST /job: the documented body, every refusal (400 naming the field, nothing created), idempotency."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from rest_framework.test import APIClient

from jobs.models import Job
from jobs.states import JobState
from logs.models import LogEntry


def test_submission_answers_accepted_with_an_integer_id_and_creates_the_job(api: Any, submit: Any) -> None:
    response = submit(api, parameters={"content_id": "abc", "folder": "f1"}, priority="3")

    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["id", "result"]
    assert isinstance(body["id"], int) and body["result"] == "accepted"
    job = Job.objects.get(pk=body["id"])
    assert job.client == api.te_client
    assert job.workflow == "noop"
    assert job.priority == 3
    assert job.parameters == {"content_id": "abc", "folder": "f1"}
    assert job.queue_state == JobState.QUEUED
    assert job.persist is False


def test_submission_writes_the_creation_log_entry_with_masked_key(api: Any, submit: Any) -> None:
    job_id = submit(api).json()["id"]

    entry = LogEntry.objects.get(job_id=job_id)
    assert (entry.progname, entry.task_id, entry.severity) == ("api", 0, 1)
    message = json.loads(entry.message)
    assert message["path"] == "POST /job"
    assert message["payload"] == "job_created"
    assert message["parameters"]["job"] == {"workflow": "noop"}
    assert api.te_key not in entry.message
    assert message["headers"]["HTTP_API_KEY"].endswith(api.te_key[-4:])
    assert set(message["headers"]["HTTP_API_KEY"][:-4]) == {"*"}


def test_a_job_without_run_at_is_due_when_it_was_created(api: Any, submit: Any) -> None:
    job_id = submit(api).json()["id"]

    job = Job.objects.get(pk=job_id)
    assert job.run_at == job.created_at == job.updated_at
    shown = api.get(f"/jobs/{job_id}").json()
    assert shown["run_at"] == shown["created_at"]
    # The creation log entry has the same instant: the submission's.
    assert LogEntry.objects.get(job_id=job_id).created_at == job.created_at

    # So do the jobs of a batch.
    answers = api.post(
        "/jobs", {"jobs": [{"job": {"workflow": "noop"}, "parameters": {}}] * 2}, format="json"
    )
    for answer in answers.json()["jobs"]:
        job = Job.objects.get(pk=answer["id"])
        assert job.run_at == job.created_at


def test_run_at_in_the_future_schedules_the_job_and_accepts_z_and_offsets(api: Any, submit: Any) -> None:
    plain = submit(api, run_at="2040-06-06T10:00:00.000").json()["id"]
    zulu = submit(api, run_at="2040-06-06T10:00:00.000Z").json()["id"]
    offset = submit(api, run_at="2040-06-06T12:00:00.000+02:00").json()["id"]

    # Postgres refuses offsets beyond ±15:59; the API stores UTC, so any ISO offset is taken.
    far = submit(api, run_at="2040-06-06T23:00:00.000+13:00").json()["id"]
    farther = submit(api, run_at="2040-06-05T12:00:00-22:00").json()["id"]

    expected = datetime(2040, 6, 6, 10, tzinfo=UTC)
    for job_id in (plain, zulu, offset, far, farther):
        job = Job.objects.get(pk=job_id)
        assert job.run_at == expected
        assert job.queue_state == JobState.SCHEDULED


@pytest.mark.parametrize("spelling", ["semaphore_url", "sempahore_url", "semphore_url"])
def test_each_semaphore_spelling_is_stored_as_semaphore_url(api: Any, submit: Any, spelling: Any) -> None:
    job_id = submit(api, **{spelling: "https://example.com/ready"}).json()["id"]

    job = Job.objects.get(pk=job_id)
    assert job.semaphore_url == "https://example.com/ready"
    assert job.queue_state == JobState.PENDING


def test_persist_and_integer_priority_are_stored(api: Any, submit: Any) -> None:
    job_id = submit(api, persist=True, priority=10).json()["id"]

    job = Job.objects.get(pk=job_id)
    assert (job.persist, job.priority) == (True, 10)


def test_body_client_may_be_left_out(api: Any) -> None:
    response = api.post("/job", {"job": {"workflow": "noop"}, "parameters": {}}, format="json")

    assert response.status_code == 200
    assert Job.objects.get(pk=response.json()["id"]).parameters == {}


INVALID = [
    ({"job": {"workflow": "noop"}, "parameters": []}, "parameters"),
    ({"job": {"workflow": "noop"}, "parameters": "x"}, "parameters"),
    ({"parameters": {}}, "job"),
    ({"job": "noop", "parameters": {}}, "job"),
    ({"job": {}, "parameters": {}}, "job.workflow"),
    ({"job": {"workflow": 5}, "parameters": {}}, "job.workflow"),
    ({"job": {"workflow": "no-such-workflow"}, "parameters": {}}, "workflow"),
    ({"job": {"workflow": "noop", "priority": 0}}, "job.priority"),
    ({"job": {"workflow": "noop", "priority": 11}}, "job.priority"),
    ({"job": {"workflow": "noop", "priority": "high"}}, "job.priority"),
    ({"job": {"workflow": "noop", "priority": True}}, "job.priority"),
    ({"job": {"workflow": "noop", "priority": 2.5}}, "job.priority"),
    ({"job": {"workflow": "noop", "run_at": "2040-06-06 10:00"}}, "job.run_at"),
    ({"job": {"workflow": "noop", "run_at": "2040-13-06T10:00:00.000"}}, "job.run_at"),
    ({"job": {"workflow": "noop", "run_at": 12}}, "job.run_at"),
    ({"job": {"workflow": "noop", "semaphore_url": "ftp://example.com/x"}}, "job.semaphore_url"),
    ({"job": {"workflow": "noop", "semaphore_url": "not a url"}}, "job.semaphore_url"),
    ({"job": {"workflow": "noop", "semaphore_url": "http://127.0.0.1/x"}}, "semaphore_url"),
    (
        {
            "job": {
                "workflow": "noop",
                "semaphore_url": "https://a.example",
                "semphore_url": "https://b.example",
            }
        },
        "job.semaphore_url",
    ),
    ({"job": {"workflow": "noop", "persist": "maybe"}}, "job.persist"),
    ({"job": {"workflow": "noop", "position": 1}}, "job.position"),
    ({"job": {"workflow": "noop"}, "extra": 1}, "extra"),
    (
        {"job": {"workflow": "noop"}, "parameters": {"rest_endpoints": "https://example.com"}},
        "rest_endpoints",
    ),
    ({"job": {"workflow": "noop"}, "parameters": {"rest_endpoints": ["gopher://x"]}}, "rest_endpoints[0]"),
    (
        {"job": {"workflow": "noop"}, "parameters": {"rest_endpoints": ["http://169.254.169.254/"]}},
        "rest_endpoints[0]",
    ),
    ([{"job": {"workflow": "noop"}}], "expected a dictionary"),
]


@pytest.mark.parametrize(("body", "field"), INVALID)
def test_invalid_input_answers_400_naming_the_field_and_creates_nothing(
    api: Any, settings: Any, body: Any, field: Any
) -> None:
    settings.TASKENGINE_ALLOW_PRIVATE_URLS = False

    response = api.post("/job", body, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert field.lower() in error.lower(), error
    assert Job.objects.count() == 0
    assert LogEntry.objects.count() == 0


def test_body_client_must_match_the_header(api: Any, make_client: Any) -> None:
    other, _ = make_client()

    response = api.post("/job", {"client": other.name, "job": {"workflow": "noop"}}, format="json")

    assert response.status_code == 400
    assert response.json() == {"error": "client: does not match the client header"}
    assert Job.objects.count() == 0


def test_malformed_json_answers_400(api: Any) -> None:
    response = api.post("/job", data='{"job": ', content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"].startswith("Malformed request body")


def test_idempotency_key_returns_the_first_job(api: Any, submit: Any) -> None:
    headers = {"HTTP_IDEMPOTENCY_KEY": "order-42"}
    first = submit(api, headers=headers)
    second = submit(api, headers=headers)

    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert Job.objects.count() == 1
    assert Job.objects.get().idempotency_key == "order-42"


def test_idempotency_keys_are_per_client(api: Any, submit: Any, make_client: Any) -> None:
    other, key = make_client()
    other_api: Any = APIClient()
    other_api.credentials(HTTP_CLIENT=other.name, HTTP_API_KEY=key)
    other_api.te_client = other
    headers = {"HTTP_IDEMPOTENCY_KEY": "same"}

    mine = submit(api, headers=headers).json()["id"]
    theirs = submit(other_api, headers=headers).json()["id"]

    assert mine != theirs
    assert Job.objects.get(pk=theirs).client == other


def test_overlong_idempotency_key_is_refused(api: Any, submit: Any) -> None:
    response = submit(api, headers={"HTTP_IDEMPOTENCY_KEY": "k" * 201})

    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["error"]
    assert Job.objects.count() == 0


def test_submission_without_or_with_a_wrong_key_answers_401(api: Any, submit: Any) -> None:
    anonymous = APIClient()
    wrong = APIClient()
    wrong.credentials(HTTP_CLIENT=api.te_client.name, HTTP_API_KEY=api.te_key[:-1] + "x")
    body = {"job": {"workflow": "noop"}, "parameters": {}}

    for client in (anonymous, wrong):
        response = client.post("/job", body, format="json")
        assert response.status_code == 401
        assert response.json() == {"error": "Unauthorised request."}
    assert Job.objects.count() == 0


def test_get_on_job_is_not_allowed(api: Any) -> None:
    response = api.get("/job")

    assert response.status_code == 405
    assert "error" in response.json()
