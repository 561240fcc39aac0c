"""GET /logs/<job id>."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from logs.models import Severity
from logs.services import job_log
from tests.api.conftest import parse_timestamp

LOG_FIELDS = [
    "id",
    "job_id",
    "severity",
    "severity_description",
    "progname",
    "message",
    "created_at",
    "updated_at",
    "task_id",
    "visible",
]


def test_logs_in_the_reference_shape_ordered_by_id_visible_only(api: Any, submit: Any) -> None:
    job_id = submit(api).json()["id"]
    job_log(job_id, "Task 'noop' started", progname="worker", task_id=24100)
    job_log(job_id, "internal detail", progname="worker", task_id=24100, visible=False)
    job_log(job_id, "boom", progname="controller", severity=Severity.ERROR, task_id=24100)

    response = api.get(f"/logs/{job_id}")

    assert response.status_code == 200
    entries = response.json()
    assert [entry["message"] for entry in entries][1:] == ["Task 'noop' started", "boom"]
    assert [entry["id"] for entry in entries] == sorted(entry["id"] for entry in entries)
    first = entries[0]
    assert list(first) == LOG_FIELDS
    assert (first["job_id"], first["task_id"], first["progname"]) == (job_id, 0, "api")
    assert (first["severity"], first["severity_description"], first["visible"]) == (1, "INFO", True)
    assert '"payload": "job_created"' in first["message"]
    parse_timestamp(first["created_at"])
    parse_timestamp(first["updated_at"])
    assert (entries[2]["severity"], entries[2]["severity_description"]) == (3, "ERROR")
    assert entries[1]["task_id"] == 24100


def test_show_all_includes_hidden_entries(api: Any, submit: Any) -> None:
    job_id = submit(api).json()["id"]
    job_log(job_id, "internal detail", progname="worker", visible=False)

    everything = api.get(f"/logs/{job_id}?show_all=1").json()
    visible = api.get(f"/logs/{job_id}?show_all=0").json()

    assert [entry["message"] for entry in everything][1:] == ["internal detail"]
    assert everything[1]["visible"] is False
    assert len(visible) == 1


@pytest.mark.parametrize("value", ["maybe", "2", "%25s%25d"])
def test_malformed_show_all_answers_400_with_the_job_id(api: Any, submit: Any, value: Any) -> None:
    job_id = submit(api).json()["id"]

    response = api.get(f"/logs/{job_id}?show_all={value}")

    assert response.status_code == 400
    body = response.json()
    assert body["id"] == job_id
    assert body["error"].startswith("show_all: must be 1 or 0")


def test_logs_of_foreign_or_unknown_job_answer_404(api: Any, job_row: Any, make_client: Any) -> None:
    stranger, _ = make_client()
    theirs = job_row(stranger)
    job_log(theirs.pk, "secret", progname="worker")

    for job_id in (theirs.pk, theirs.pk + 1000):
        response = api.get(f"/logs/{job_id}?show_all=1")
        assert response.status_code == 404
        assert "secret" not in response.content.decode()


def test_operator_reads_any_log(operator_api: Any, job_row: Any, make_client: Any) -> None:
    stranger, _ = make_client()
    theirs = job_row(stranger)
    job_log(theirs.pk, "visible to operators", progname="worker")

    response = operator_api.get(f"/logs/{theirs.pk}")

    assert [entry["message"] for entry in response.json()] == ["visible to operators"]


def test_logs_need_a_key(api: Any, submit: Any) -> None:
    job_id = submit(api).json()["id"]

    response = APIClient().get(f"/logs/{job_id}")

    assert response.status_code == 401
    assert response.json() == {"error": "Unauthorised request."}
