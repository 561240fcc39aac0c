"""The access rules of every endpoint in one table: no key, a wrong key, a revoked key, a non-operator."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from clients.models import ApiKey
from clients.services import api_key_revoke
from jobs.models import Job
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


@pytest.mark.parametrize(("method", "path", "payload"), ENDPOINTS)
def test_an_operator_may_use_every_endpoint_on_any_job(
    operator_api: Any, target: Any, method: Any, path: Any, payload: Any
) -> None:
    response = call(operator_api, method, path, payload, target)

    assert response.status_code == 200, response.content
