"""GET, PUT and PATCH /jobs/<id> and POST /jobs/<id>/rerun, through the real services."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from rest_framework.test import APIClient

from jobs.models import Job
from jobs.states import JobState
from taskengine_site.api import format_timestamp
from tests.api.conftest import DETAIL_FIELDS, TIMESTAMP, assert_job_shape


@pytest.fixture
def queued(api: Any, submit: Any) -> Any:
    response = submit(api, parameters={"content_id": "c-9", "rest_endpoints": []}, priority=4)
    return Job.objects.get(pk=response.json()["id"])


# --- GET ------------------------------------------------------------------------------------------------


def test_detail_has_top_of_queue_and_parameters_in_the_reference_shape(api: Any, queued: Any) -> None:
    response = api.get(f"/jobs/{queued.pk}")

    assert response.status_code == 200
    assert_job_shape(response.json(), DETAIL_FIELDS, queued)


def test_detail_of_an_unknown_or_foreign_job_answers_404(api: Any, job_row: Any, make_client: Any) -> None:
    stranger, _ = make_client()
    theirs = job_row(stranger)

    for job_id in (theirs.pk, theirs.pk + 1000, 2**63 - 1):
        response = api.get(f"/jobs/{job_id}")
        assert response.status_code == 404
        assert list(response.json()) == ["error"]


def test_operator_sees_any_job(operator_api: Any, queued: Any) -> None:
    response = operator_api.get(f"/jobs/{queued.pk}")

    assert response.status_code == 200
    assert response.json()["client"] == queued.client.name


def test_detail_needs_a_key(queued: Any) -> None:
    response = APIClient().get(f"/jobs/{queued.pk}")

    assert response.status_code == 401
    assert response.json() == {"error": "Unauthorised request."}


def test_non_numeric_id_is_a_json_404(api: Any) -> None:
    response = api.get("/jobs/abc")

    assert response.status_code == 404
    assert response.json() == {"error": "Job abc not found."}


@pytest.mark.parametrize(
    ("method", "path", "message"),
    [
        ("get", "/jobs/999999", "Job 999999 not found."),
        ("get", "/jobs/abc", "Job abc not found."),
        ("put", "/jobs/abc", "Job abc not found."),
        ("post", "/jobs/abc/rerun", "Job abc not found."),
        ("post", "/jobs/999999/rerun", "Job 999999 not found."),
        ("get", "/jobs/abc/keys", "Job abc not found."),
        ("get", "/logs/abc", "Job abc not found."),
        ("get", "/logs/999999", "Job 999999 not found."),
        ("get", "/jobs/1/", "Path /jobs/1/ not found."),  # no trailing slashes: not "job 1"
        ("get", "/no/such/path", "Path /no/such/path not found."),
    ],
)
def test_every_404_has_one_shape_naming_what_was_not_found(
    api: Any, method: str, path: str, message: str
) -> None:
    response = getattr(api, method)(path)

    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"error": message}


def test_a_404_shows_at_most_200_characters_of_the_path(api: Any) -> None:
    response = api.get("/" + "x" * 500)

    assert response.status_code == 404
    assert response.json() == {"error": f"Path /{'x' * 199}… not found."}


TASK_FIELDS = [
    "id",
    "name",
    "queue",
    "state",
    "position",
    "attempts",
    "progress",
    "started_at",
    "finished_at",
]


def test_detail_has_no_tasks_unless_asked(api: Any, queued: Any) -> None:
    for query in ("", "?tasks=0", "?tasks=false"):
        response = api.get(f"/jobs/{queued.pk}{query}")
        assert response.status_code == 200
        assert list(response.json()) == DETAIL_FIELDS, query


def test_tasks_of_a_job_not_yet_started_is_an_empty_list(api: Any, queued: Any) -> None:
    response = api.get(f"/jobs/{queued.pk}?tasks=1")

    assert response.status_code == 200
    body = response.json()
    assert list(body) == [*DETAIL_FIELDS, "tasks"]
    assert body["tasks"] == []
    without = api.get(f"/jobs/{queued.pk}").json()
    assert {key: value for key, value in body.items() if key != "tasks"} == without


def test_tasks_list_the_steps_in_order_with_their_progress(
    api: Any, submit: Any, django_capture_on_commit_callbacks: Any, settings: Any
) -> None:
    from jobs.engine import runner
    from jobs.engine.dispatcher import dispatch

    settings.TASKENGINE_CHAIN_SECONDS = 0  # run_task runs the first step only
    from jobs.models import Task
    from jobs.states import TaskState

    job_id = submit(api, workflow="noop5").json()["id"]
    with django_capture_on_commit_callbacks(execute=False):  # no broker: the steps are run by hand
        assert dispatch() == [job_id]
    first = Task.objects.filter(job_id=job_id).order_by("position").first()
    assert first is not None
    with django_capture_on_commit_callbacks(execute=False):
        runner.run_task(first.pk)

    response = api.get(f"/jobs/{job_id}?tasks=true")

    assert response.status_code == 200
    body = response.json()
    assert list(body) == [*DETAIL_FIELDS, "tasks"]
    tasks = body["tasks"]
    rows = list(Task.objects.filter(job_id=job_id).order_by("position"))
    assert [task["id"] for task in tasks] == [row.pk for row in rows]
    assert [task["position"] for task in tasks] == [1, 2, 3, 4, 5]
    for task in tasks:
        assert list(task) == TASK_FIELDS
        assert (task["name"], task["queue"]) == ("noop", "work")
    done = tasks[0]
    assert (done["state"], done["attempts"], done["progress"]) == ("completed", 1, 100.0)
    assert rows[0].started_at is not None and rows[0].finished_at is not None
    assert done["started_at"] == format_timestamp(rows[0].started_at)
    assert done["finished_at"] == format_timestamp(rows[0].finished_at)
    assert TIMESTAMP.match(done["started_at"]) and TIMESTAMP.match(done["finished_at"])
    for waiting, row in zip(tasks[1:], rows[1:], strict=True):
        assert waiting["state"] == TaskState(row.state).label
        assert waiting["state"] in ("pending", "queued")
        assert (waiting["attempts"], waiting["progress"]) == (0, None)
        assert (waiting["started_at"], waiting["finished_at"]) == (None, None)


def test_progress_is_shown_with_at_most_one_decimal(api: Any, submit: Any) -> None:
    from jobs.models import Task
    from tests import factories

    job = Job.objects.get(pk=submit(api, workflow="noop5").json()["id"])
    stored = [31.370715999999277, 99.96, 0.04, 12.0, None]
    for position, progress in enumerate(stored, start=1):
        factories.task(job, position=position, progress=progress)

    tasks = api.get(f"/jobs/{job.pk}?tasks=1").json()["tasks"]

    assert [task["progress"] for task in tasks] == [31.4, 100.0, 0.0, 12.0, None]
    assert Task.objects.get(job=job, position=1).progress == 31.370715999999277  # stored as reported


def test_tasks_follow_the_access_rule(api: Any, operator_api: Any, job_row: Any, make_client: Any) -> None:
    stranger, _ = make_client()
    theirs = job_row(stranger)

    response = api.get(f"/jobs/{theirs.pk}?tasks=1")
    assert response.status_code == 404
    assert list(response.json()) == ["error"]
    assert operator_api.get(f"/jobs/{theirs.pk}?tasks=1").json()["tasks"] == []
    assert APIClient().get(f"/jobs/{theirs.pk}?tasks=1").status_code == 401


def test_a_malformed_tasks_flag_is_a_400(api: Any, queued: Any) -> None:
    response = api.get(f"/jobs/{queued.pk}?tasks=maybe")

    assert response.status_code == 400
    assert "tasks" in response.json()["error"]


# --- PUT / PATCH ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["put", "patch"])
def test_pause_and_resume(api: Any, queued: Any, method: Any) -> None:
    send = getattr(api, method)

    paused = send(f"/jobs/{queued.pk}", {"queue_state": "paused"}, format="json")
    assert paused.status_code == 200
    assert paused.json() == {"id": queued.pk, "result": "Performed updates: queue_state"}
    assert Job.objects.get(pk=queued.pk).queue_state == JobState.PAUSED

    resumed = send(f"/jobs/{queued.pk}", {"queue_state": "queued"}, format="json")
    assert resumed.json() == {"id": queued.pk, "result": "Performed updates: queue_state"}
    assert Job.objects.get(pk=queued.pk).queue_state == JobState.QUEUED


def test_break(api: Any, queued: Any) -> None:
    response = api.put(f"/jobs/{queued.pk}", {"queue_state": "broken"}, format="json")

    assert response.json() == {"id": queued.pk, "result": "Performed updates: queue_state"}
    assert Job.objects.get(pk=queued.pk).queue_state == JobState.BROKEN


def test_the_reference_sample_payload(api: Any, queued: Any) -> None:
    payload = {"client": api.te_client.name, "priority": "2", "run_at": "2040-09-09T14:30:00.000"}

    response = api.put(f"/jobs/{queued.pk}", payload, format="json")

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == queued.pk
    assert body["result"].startswith("Performed updates: ")
    assert set(body["result"].removeprefix("Performed updates: ").split(", ")) == {"priority", "run_at"}
    job = Job.objects.get(pk=queued.pk)
    assert job.priority == 2
    assert job.run_at == datetime(2040, 9, 9, 14, 30, tzinfo=UTC)
    assert job.queue_state == JobState.SCHEDULED


@pytest.mark.parametrize("spelling", ["semaphore_url", "sempahore_url", "semphore_url"])
def test_semaphore_spellings_and_persist(api: Any, queued: Any, spelling: Any) -> None:
    response = api.patch(
        f"/jobs/{queued.pk}", {spelling: "https://example.com/open", "persist": True}, format="json"
    )

    assert response.status_code == 200
    assert set(response.json()["result"].removeprefix("Performed updates: ").split(", ")) == {
        "semaphore_url",
        "persist",
    }
    job = Job.objects.get(pk=queued.pk)
    assert (job.semaphore_url, job.persist) == ("https://example.com/open", True)


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        ({"workflow": "other"}, ["workflow", "cannot be updated"]),
        ({"parameters": {}}, ["parameters", "cannot be updated"]),
        ({"top_of_queue": True}, ["top_of_queue", "cannot be updated"]),
        ({"queue_state": "started"}, ["queue_state"]),
        ({"queue_state": "completed"}, ["queue_state"]),
        ({"priority": 0}, ["priority"]),
        ({"priority": "urgent"}, ["priority"]),
        ({"run_at": "tomorrow"}, ["run_at"]),
        ({"semaphore_url": "file:///etc/passwd"}, ["semaphore_url"]),
        ({"persist": "perhaps"}, ["persist"]),
        ({}, ["nothing to update"]),
        ({"client": "someone-else", "priority": 3}, ["client", "does not match"]),
    ],
)
def test_refused_updates_answer_400_with_id_and_reason_and_change_nothing(
    api: Any, queued: Any, payload: Any, words: Any
) -> None:
    before = Job.objects.values().get(pk=queued.pk)

    response = api.put(f"/jobs/{queued.pk}", payload, format="json")

    assert response.status_code == 400
    body = response.json()
    assert list(body) == ["id", "error"] and body["id"] == queued.pk
    for word in words:
        assert word in body["error"], body["error"]
    assert Job.objects.values().get(pk=queued.pk) == before


def test_transition_the_state_machine_refuses_answers_400_with_id(api: Any, job_row: Any) -> None:
    done = job_row(api.te_client, queue_state=JobState.COMPLETED)

    response = api.put(f"/jobs/{done.pk}", {"queue_state": "paused"}, format="json")

    assert response.status_code == 400
    assert response.json()["id"] == done.pk
    assert "completed" in response.json()["error"]
    assert Job.objects.get(pk=done.pk).queue_state == JobState.COMPLETED


def test_resuming_a_job_that_is_not_paused_is_refused(api: Any, queued: Any) -> None:
    response = api.put(f"/jobs/{queued.pk}", {"queue_state": "queued"}, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "id": queued.pk,
        "error": "cannot change queue_state from queued to queued: it is queued already",
    }


def test_update_of_foreign_or_unknown_job_answers_404_and_changes_nothing(
    api: Any, job_row: Any, make_client: Any
) -> None:
    stranger, _ = make_client()
    theirs = job_row(stranger)

    response = api.put(f"/jobs/{theirs.pk}", {"queue_state": "paused"}, format="json")

    assert response.status_code == 404
    assert Job.objects.get(pk=theirs.pk).queue_state == JobState.QUEUED
    assert api.patch(f"/jobs/{theirs.pk + 1000}", {"priority": 1}, format="json").status_code == 404


def test_operator_may_update_any_job_naming_either_client(operator_api: Any, queued: Any) -> None:
    response = operator_api.put(
        f"/jobs/{queued.pk}", {"client": queued.client.name, "priority": 1}, format="json"
    )

    assert response.json() == {"id": queued.pk, "result": "Performed updates: priority"}
    assert Job.objects.get(pk=queued.pk).priority == 1


def test_update_needs_a_key(queued: Any) -> None:
    response = APIClient().put(f"/jobs/{queued.pk}", {"priority": 1}, format="json")

    assert response.status_code == 401
    assert Job.objects.get(pk=queued.pk).priority == 4


# --- rerun ------------------------------------------------------------------------------------------------


def test_rerun_submits_a_copy_and_breaks_the_original(api: Any, queued: Any) -> None:
    response = api.post(f"/jobs/{queued.pk}/rerun")

    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["id", "result"] and body["result"] == "accepted"
    assert isinstance(body["id"], int) and body["id"] != queued.pk
    new = Job.objects.get(pk=body["id"])
    assert (new.client, new.workflow, new.priority, new.parameters) == (
        queued.client,
        queued.workflow,
        queued.priority,
        queued.parameters,
    )
    assert new.queue_state == JobState.QUEUED
    assert Job.objects.get(pk=queued.pk).queue_state == JobState.BROKEN


def test_rerun_of_a_completed_job(api: Any, job_row: Any) -> None:
    done = job_row(api.te_client, queue_state=JobState.COMPLETED, failed=True)

    response = api.post(f"/jobs/{done.pk}/rerun")

    assert response.status_code == 200
    assert Job.objects.get(pk=done.pk).queue_state == JobState.BROKEN
    assert Job.objects.get(pk=response.json()["id"]).rerun_of_id == done.pk


def test_rerun_of_foreign_or_unknown_job_answers_404_and_creates_nothing(
    api: Any, job_row: Any, make_client: Any
) -> None:
    stranger, _ = make_client()
    theirs = job_row(stranger)

    assert api.post(f"/jobs/{theirs.pk}/rerun").status_code == 404
    assert api.post(f"/jobs/{theirs.pk + 1000}/rerun").status_code == 404
    assert Job.objects.count() == 1
    assert Job.objects.get(pk=theirs.pk).queue_state == JobState.QUEUED


def test_rerun_needs_a_key(queued: Any) -> None:
    response = APIClient().post(f"/jobs/{queued.pk}/rerun")

    assert response.status_code == 401
    assert Job.objects.count() == 1
