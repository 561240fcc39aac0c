"""GET /health and GET /dashboard."""

from __future__ import annotations

import socket
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.db import connections
from django.utils import timezone
from rest_framework.test import APIClient

from jobs.models import Job
from jobs.states import JobState
from settings_app.services import setting_set
from taskengine_site.version import VERSION
from tests.api.conftest import SUMMARY_FIELDS, assert_job_shape

QUEUES = {"windows_capture", "scheduler", "work", "controller", "callback"}
JOB_KEYS = ["completed", "failed", "pending", "broken", "queued", "started", "scheduled", "paused"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_health_shape(body: Any) -> Any:
    assert list(body) == ["version", "databases", "queues", "tasks", "jobs"]
    assert body["version"] == VERSION
    assert set(body["databases"]) == {"redis", "postgres"}
    assert set(body["queues"]) == QUEUES
    for figures in body["queues"].values():
        assert list(figures) == ["workers", "working", "pending"]
        assert all(isinstance(value, int) for value in figures.values())
    assert list(body["tasks"]) == ["failed", "pending", "processed"]
    assert list(body["jobs"]) == [*JOB_KEYS, "max_jobs", "priority_slots"]
    assert all(isinstance(value, int) for value in [*body["tasks"].values(), *body["jobs"].values()])


# --- /health --------------------------------------------------------------------------------------------


def test_health_reports_ok_and_counts_jobs_per_state(api: Any, job_row: Any, make_client: Any) -> None:
    other, _ = make_client()
    for state in JobState:
        job_row(other, queue_state=state)
    job_row(other, queue_state=JobState.COMPLETED, failed=True)
    job_row(other, queue_state=JobState.BROKEN, failed=True)
    setting_set(name="max_jobs", value="8")
    setting_set(name="priority_slots", value=3)

    response = api.get("/health")

    assert response.status_code == 200
    body = response.json()
    assert_health_shape(body)
    assert body["databases"] == {"redis": "OK", "postgres": "OK"}
    assert body["jobs"] == {
        "completed": 2,
        "failed": 1,
        "pending": 1,
        "broken": 2,
        "queued": 1,
        "started": 1,
        "scheduled": 1,
        "paused": 1,
        "max_jobs": 8,
        "priority_slots": 3,
    }


def test_health_needs_a_key(db: Any) -> None:
    response = APIClient().get("/health")

    assert response.status_code == 401
    assert response.json() == {"error": "Unauthorised request."}


def test_health_answers_503_naming_redis_when_it_is_down(api: Any, monkeypatch: Any) -> None:
    from monitoring import broker

    dead = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1, socket_timeout=1)
    monkeypatch.setattr(broker, "_client", dead)

    response = api.get("/health")

    assert response.status_code == 503
    body = response.json()
    assert_health_shape(body)
    assert body["databases"]["postgres"] == "OK"
    assert body["databases"]["redis"] != "OK" and "refused" in body["databases"]["redis"].lower()


@pytest.mark.django_db(transaction=True)
def test_health_answers_503_naming_postgres_when_it_is_down(make_client: Any) -> None:
    client, key = make_client()
    api = APIClient()
    api.credentials(HTTP_CLIENT=client.name, HTTP_API_KEY=key)
    connection = connections["default"]
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update(HOST="127.0.0.1", PORT=str(free_port()))
    try:
        response = api.get("/health")
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)

    assert response.status_code == 503
    body = response.json()
    assert_health_shape(body)
    assert body["databases"]["redis"] == "OK"
    assert body["databases"]["postgres"] != "OK" and body["databases"]["postgres"]
    # Nothing but the failure is told before the client is known.
    assert set(body["jobs"].values()) == {0}


# --- /dashboard -----------------------------------------------------------------------------------------


def test_dashboard_shape_lists_and_dispatch_order(api: Any, job_row: Any) -> None:
    client = api.te_client
    now = timezone.now()
    started = job_row(client, queue_state=JobState.STARTED, started_at=now)
    late = job_row(client, queue_state=JobState.QUEUED, priority=5, position=1)
    urgent = job_row(client, queue_state=JobState.QUEUED, priority=2, position=1)
    pushed = job_row(client, queue_state=JobState.QUEUED, priority=9, top_of_queue=True)
    behind = job_row(client, queue_state=JobState.QUEUED, priority=5, position=2)
    early = job_row(client, queue_state=JobState.QUEUED, priority=5, position=1)
    Job.objects.filter(pk=early.pk).update(created_at=now - timedelta(hours=1))
    soon = job_row(client, queue_state=JobState.SCHEDULED, run_at=now + timedelta(hours=1))
    later = job_row(client, queue_state=JobState.SCHEDULED, run_at=now + timedelta(days=1))
    job_row(client, queue_state=JobState.COMPLETED)
    setting_set(name="max_jobs", value=4)

    response = api.get("/dashboard")

    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["max_jobs", "priority_slots", "started", "queued", "scheduled", "version"]
    assert (body["max_jobs"], body["priority_slots"], body["version"]) == (4, 0, VERSION)
    assert [job["id"] for job in body["started"]] == [started.pk]
    assert [job["id"] for job in body["queued"]] == [pushed.pk, urgent.pk, early.pk, late.pk, behind.pk]
    assert [job["id"] for job in body["scheduled"]] == [soon.pk, later.pk]
    assert_job_shape(body["started"][0], SUMMARY_FIELDS, Job.objects.get(pk=started.pk))
    assert_job_shape(body["queued"][0], SUMMARY_FIELDS, Job.objects.get(pk=pushed.pk))


def test_dashboard_lists_only_own_jobs_for_a_non_operator(
    api: Any, operator_api: Any, job_row: Any, make_client: Any
) -> None:
    stranger, _ = make_client()
    mine = job_row(api.te_client)
    theirs = job_row(stranger)

    own = api.get("/dashboard").json()
    every = operator_api.get("/dashboard").json()

    assert [job["id"] for job in own["queued"]] == [mine.pk]
    assert {job["id"] for job in every["queued"]} == {mine.pk, theirs.pk}


def test_dashboard_needs_a_key(db: Any) -> None:
    response = APIClient().get("/dashboard")

    assert response.status_code == 401
    assert response.json() == {"error": "Unauthorised request."}
