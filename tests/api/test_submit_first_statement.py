"""POST /job after an API key the process remembers: the job's insert is the request's first statement,
so it checks the kept connection in place of Django's ``SELECT 1``, and runs again on a new connection
when the server closed the kept one, without ever writing the job twice."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext

from jobs import services
from jobs.models import Job
from logs.models import LogEntry
from tests.foundation.test_key_memory import _post
from tests.sessions import (
    backend_pid,
    close_kept_connection_on_the_server,
    health_check_pending,
    raw_connection,
)

pytestmark = pytest.mark.django_db(transaction=True)


def _remembered(make_client: Any) -> tuple[str, str]:
    client, key = make_client("acme")
    assert _post(client.name, key).status_code == 200  # the key is read once, and remembered
    return client.name, key


def test_the_insert_checks_the_kept_connection_without_a_select_1(make_client):
    name, key = _remembered(make_client)
    health_check_pending()
    with CaptureQueriesContext(connection) as queries:
        response = _post(name, key)
    assert response.status_code == 200
    statements = [q["sql"].lstrip()[:40] for q in queries.captured_queries]
    assert statements[0].startswith("WITH j AS")  # the insert, nothing before it
    assert not any(s.upper().startswith("SELECT 1") for s in statements)
    assert getattr(connection, "health_check_done")  # noqa: B009 (not in Django's type stubs)


def test_a_kept_connection_the_server_closed_is_replaced_and_the_job_written_once(make_client):
    name, key = _remembered(make_client)
    before = close_kept_connection_on_the_server()
    response = _post(name, key)
    assert response.status_code == 200
    assert backend_pid() != before
    job = Job.objects.get(pk=response.json()["id"])
    assert Job.objects.filter(client=job.client).count() == 2
    assert LogEntry.objects.filter(job=job).count() == 1


def test_an_insert_applied_before_its_connection_died_is_found_not_written_again(make_client, monkeypatch):
    name, key = _remembered(make_client)
    real = services._insert_many
    calls: list[int] = []

    def applied_then_lost(rows: Any) -> Any:
        calls.append(len(rows))
        if len(calls) == 1:
            real(rows)  # the server commits the job …
            with raw_connection() as other:  # … and the connection dies before the answer arrives
                other.execute("SELECT pg_terminate_backend(%s)", [backend_pid()])
            raise OperationalError("server closed the connection unexpectedly")
        return real(rows)

    monkeypatch.setattr(services, "_insert_many", applied_then_lost)
    health_check_pending()
    response = _post(name, key)
    assert response.status_code == 200
    assert calls == [1]  # the second run found the job and wrote nothing
    jobs = Job.objects.filter(client__name=name).order_by("id")
    assert jobs.count() == 2 and jobs.last().pk == response.json()["id"]
    assert LogEntry.objects.filter(job_id=response.json()["id"]).count() == 1


def test_an_insert_failing_on_a_working_connection_is_raised_not_run_again(make_client, monkeypatch):
    name, key = _remembered(make_client)
    calls: list[int] = []

    def failing(rows: Any) -> Any:
        calls.append(len(rows))
        raise OperationalError("canceling statement due to statement timeout")

    monkeypatch.setattr(services, "_insert_many", failing)
    health_check_pending()
    response = _post(name, key)
    assert response.status_code == 503  # the project's answer to a database error
    assert calls == [1]
    assert Job.objects.filter(client__name=name).count() == 1
