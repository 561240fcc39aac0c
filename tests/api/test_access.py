"""The access rules of every endpoint in one table: no key, a wrong key, a revoked key, a non-operator."""

from __future__ import annotations

from typing import Any

import pytest
from django_celery_beat.models import PeriodicTask
from rest_framework.test import APIClient

from clients.models import ApiKey
from clients.services import api_key_revoke
from jobs.models import Job
from jobs.states import JobState
from settings_app.models import Setting

UNAUTHORISED = {"error": "Unauthorised request."}

ENDPOINTS = [
    ("get", "/health", None),
    ("get", "/dashboard", None),
    ("post", "/job", {"job": {"workflow": "noop"}, "parameters": {}}),
    ("get", "/jobs", None),
    ("get", "/jobs/{id}", None),
    ("put", "/jobs/{id}", {"priority": 1}),
    ("patch", "/jobs/{id}", {"priority": 1}),
    ("post", "/jobs/{id}/rerun", None),
    ("get", "/logs/{id}", None),
    ("get", "/schedules", None),
    ("put", "/scheduler", {"schedule": "queue_scheduled_jobs", "active": False}),
    ("get", "/settings", None),
    ("post", "/settings", {"name": "max_jobs", "setting": 9}),
]


@pytest.fixture
def target(api: Any, submit: Any) -> Any:
    return submit(api).json()["id"]


def call(client: Any, method: Any, path: Any, payload: Any, job_id: Any) -> Any:
    return getattr(client, method)(path.format(id=job_id), payload, format="json")


def assert_untouched(job_id: Any) -> Any:
    job = Job.objects.get(pk=job_id)
    assert (job.priority, job.queue_state) == (5, 0)
    assert Job.objects.count() == 1
    assert Setting.objects.count() == 0


@pytest.mark.parametrize(("method", "path", "payload"), ENDPOINTS)
def test_no_key_answers_401_and_changes_nothing(target: Any, method: Any, path: Any, payload: Any) -> None:
    response = call(APIClient(), method, path, payload, target)

    assert response.status_code == 401
    assert response.json() == UNAUTHORISED
    assert_untouched(target)


@pytest.mark.parametrize(("method", "path", "payload"), ENDPOINTS)
def test_wrong_key_answers_401_and_changes_nothing(
    api: Any, target: Any, method: Any, path: Any, payload: Any
) -> None:
    wrong = APIClient()
    wrong.credentials(HTTP_CLIENT=api.te_client.name, HTTP_API_KEY=api.te_key[:-4] + "abcd")

    response = call(wrong, method, path, payload, target)

    assert response.status_code == 401
    assert response.json() == UNAUTHORISED
    assert_untouched(target)


@pytest.mark.parametrize(("method", "path", "payload"), ENDPOINTS)
def test_key_of_another_client_answers_401(
    api: Any, target: Any, make_client: Any, method: Any, path: Any, payload: Any
) -> None:
    _other, other_key = make_client()
    mixed = APIClient()
    mixed.credentials(HTTP_CLIENT=api.te_client.name, HTTP_API_KEY=other_key)

    response = call(mixed, method, path, payload, target)

    assert response.status_code == 401
    assert_untouched(target)


def test_revoked_key_answers_401(api: Any, target: Any) -> None:
    api_key_revoke(api_key=ApiKey.objects.get(client=api.te_client))

    response = api.get(f"/jobs/{target}")

    assert response.status_code == 401
    assert response.json() == UNAUTHORISED


@pytest.mark.parametrize(
    ("method", "path", "payload"), [e for e in ENDPOINTS if e[1] in ("/scheduler", "/settings")]
)
def test_operator_only_endpoints_answer_403_to_a_client(
    api: Any, target: Any, method: Any, path: Any, payload: Any
) -> None:
    response = call(api, method, path, payload, target)

    assert response.status_code == 403
    assert response.json() == {"error": "Forbidden: this needs an operator client."}
    assert_untouched(target)


def _did(method: str, path: str, body: Any, job_id: int) -> None:
    """What each endpoint answered and changed, for an operator acting on another client's job."""
    job = Job.objects.get(pk=job_id)
    if (method, path) == ("get", "/health"):
        assert body["databases"] == {"redis": "OK", "postgres": "OK"}
    elif (method, path) == ("get", "/dashboard"):
        assert [j["id"] for j in body["queued"]] == [job_id]
    elif (method, path) == ("post", "/job"):
        assert body["result"] == "accepted"
        assert Job.objects.get(pk=body["id"]).client.is_operator
    elif (method, path) == ("get", "/jobs"):
        assert [j["id"] for j in body] == [job_id]
    elif (method, path) == ("get", "/jobs/{id}"):
        assert (body["id"], body["client"], body["queue_state"]) == (job_id, job.client.name, "queued")
    elif method in ("put", "patch") and path == "/jobs/{id}":
        assert body == {"id": job_id, "result": "Performed updates: priority"}
        assert job.priority == 1
    elif (method, path) == ("post", "/jobs/{id}/rerun"):
        assert body["result"] == "accepted"
        assert job.queue_state == JobState.BROKEN
        assert Job.objects.get(pk=body["id"]).rerun_of_id == job_id
    elif (method, path) == ("get", "/logs/{id}"):
        assert body and {entry["job_id"] for entry in body} == {job_id}
    elif (method, path) == ("get", "/schedules"):
        assert "queue_scheduled_jobs" in body["schedules"]
    elif (method, path) == ("put", "/scheduler"):
        assert "queue_scheduled_jobs" not in body["schedules"]
        assert not PeriodicTask.objects.get(name="queue_scheduled_jobs").enabled
    elif (method, path) == ("get", "/settings"):
        assert body["settings"]["max_jobs"]["value"] == 2
    elif (method, path) == ("post", "/settings"):
        assert body == {"result": "ok", "message": "max_jobs setting created"}
        assert Setting.objects.get(name="max_jobs").value == "9"  # stored as text, typed by the registry
    else:
        raise AssertionError(f"no effect written down for {method.upper()} {path}")


@pytest.mark.parametrize(("method", "path", "payload"), ENDPOINTS)
def test_an_operator_may_use_every_endpoint_on_any_job(
    operator_api: Any, target: Any, method: Any, path: Any, payload: Any
) -> None:
    response = call(operator_api, method, path, payload, target)

    assert response.status_code == 200, response.content
    _did(method, path, response.json(), target)
