"""GET /jobs: every query parameter alone and combined, malformed values, ordering, access."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rest_framework.test import APIClient

from jobs.models import Job
from jobs.states import JobState
from tests.api.conftest import LIST_FIELDS, assert_job_shape


def ids(response: Any) -> Any:
    assert response.status_code == 200, response.content
    return [item["id"] for item in response.json()]


@pytest.fixture
def jobs(api: Any, job_row: Any) -> Any:
    """Seven jobs of the api client, one per state, created a day apart (oldest first)."""
    client = api.te_client
    start = datetime(2020, 9, 20, 12, tzinfo=UTC)
    rows = []
    for day, state in enumerate(JobState):
        job = job_row(
            client,
            queue_state=state,
            failed=(state == JobState.COMPLETED),
            persist=(day % 2 == 0),
            priority=10 - day,
            parameters={"content_id": f"content-{day}", "nested": {"folder": f"folder-{day}"}},
        )
        # created_at is auto_now_add: set it afterwards to place each job on its own day.
        Job.objects.filter(pk=job.pk).update(created_at=start + timedelta(days=day))
        job.refresh_from_db()
        rows.append(job)
    return rows


def test_default_is_the_last_ten_jobs_newest_first_in_the_reference_shape(api: Any, job_row: Any) -> None:
    made = [job_row(api.te_client) for _ in range(12)]

    response = api.get("/jobs")

    assert ids(response) == [job.pk for job in reversed(made)][:10]
    first = response.json()[0]
    assert_job_shape(first, LIST_FIELDS, made[-1])


def test_limit(api: Any, jobs: Any) -> None:
    assert len(ids(api.get("/jobs?limit=3"))) == 3
    assert len(ids(api.get("/jobs?limit=100"))) == 7


def test_limit_is_capped(api: Any, job_row: Any, monkeypatch: Any) -> None:
    from jobs import filters

    monkeypatch.setattr(filters, "MAX_LIMIT", 4)
    for _ in range(6):
        job_row(api.te_client)

    assert len(ids(api.get("/jobs?limit=5000"))) == 4


def test_order_by_and_asc(api: Any, jobs: Any) -> None:
    by_priority = ids(api.get("/jobs?order_by=priority&asc=1&limit=100"))
    assert by_priority == [job.pk for job in sorted(jobs, key=lambda j: j.priority)]
    descending = ids(api.get("/jobs?order_by=priority&asc=0&limit=100"))
    assert descending == list(reversed(by_priority))
    oldest_first = ids(api.get("/jobs?asc=1&limit=100"))
    assert oldest_first == [job.pk for job in jobs]
    by_created = ids(api.get("/jobs?order_by=created_at&limit=2"))
    assert by_created == [jobs[-1].pk, jobs[-2].pk]


@pytest.mark.parametrize("state", list(JobState))
def test_state(api: Any, jobs: Any, state: Any) -> None:
    assert ids(api.get(f"/jobs?state={state.value}")) == [jobs[state.value].pk]


def test_from_and_to_on_created_at(api: Any, jobs: Any) -> None:
    assert ids(api.get("/jobs?from=2020-09-24T00:00:00.000Z&limit=100")) == [j.pk for j in reversed(jobs[4:])]
    assert ids(api.get("/jobs?to=2020-09-21T12:00:00.000&limit=100")) == [jobs[1].pk, jobs[0].pk]
    # A bare date in "to" takes in that whole day.
    assert ids(api.get("/jobs?to=2020-09-21&limit=100")) == [jobs[1].pk, jobs[0].pk]
    assert ids(api.get("/jobs?from=2020-09-22&to=2020-09-23&limit=100")) == [jobs[3].pk, jobs[2].pk]
    assert ids(api.get("/jobs?from=2020-09-22T14:00:00%2B02:00&to=2020-09-22T12:00:00Z")) == [jobs[2].pk]


def test_failed_alone_and_with_a_state(api: Any, jobs: Any, job_row: Any) -> None:
    # A broken job that had failed before is not "failed" in the reference's sense: only state 2 is.
    job_row(api.te_client, queue_state=JobState.BROKEN, failed=True)
    completed = jobs[JobState.COMPLETED]

    assert ids(api.get("/jobs?failed=1")) == [completed.pk]
    assert ids(api.get("/jobs?failed=1&state=2")) == [completed.pk]
    assert ids(api.get("/jobs?failed=1&state=0")) == []
    assert ids(api.get("/jobs?failed=1&state=4")) == []
    assert completed.pk not in ids(api.get("/jobs?failed=0&limit=100"))
    assert ids(api.get("/jobs?failed=0&state=0")) == [jobs[0].pk]


def test_search_inside_parameters(api: Any, jobs: Any) -> None:
    assert ids(api.get("/jobs?search=content-3")) == [jobs[3].pk]
    assert ids(api.get("/jobs?search=FOLDER-5")) == [jobs[5].pk]
    assert ids(api.get("/jobs?search=content-")) == [job.pk for job in reversed(jobs)]
    assert ids(api.get("/jobs?search=100%25")) == []


def test_job_ids(api: Any, jobs: Any) -> None:
    wanted = f"{jobs[1].pk},{jobs[4].pk}"
    assert ids(api.get(f"/jobs?job_ids={wanted}")) == [jobs[4].pk, jobs[1].pk]
    assert ids(api.get(f"/jobs?job_ids={jobs[2].pk}")) == [jobs[2].pk]


def test_client_filter(api: Any, jobs: Any, operator_api: Any, job_row: Any) -> None:
    other = job_row(operator_api.te_client)

    assert ids(operator_api.get(f"/jobs?client={api.te_client.name}&limit=100")) == [
        j.pk for j in reversed(jobs)
    ]
    assert ids(operator_api.get(f"/jobs?client={operator_api.te_client.name}")) == [other.pk]
    assert ids(operator_api.get("/jobs?client=nobody")) == []


def test_persist(api: Any, jobs: Any) -> None:
    assert ids(api.get("/jobs?persist=1&limit=100")) == [j.pk for j in reversed(jobs) if j.persist]
    assert ids(api.get("/jobs?persist=0&limit=100")) == [j.pk for j in reversed(jobs) if not j.persist]
    assert ids(api.get("/jobs?persist=true&limit=100")) == ids(api.get("/jobs?persist=1&limit=100"))


def test_parameters_combined(api: Any, jobs: Any) -> None:
    query = (
        f"/jobs?client={api.te_client.name}&persist=1&from=2020-09-21&to=2020-09-26"
        f"&search=content&order_by=priority&asc=1&limit=2&job_ids={','.join(str(j.pk) for j in jobs)}"
    )
    # persist jobs are days 0, 2, 4, 6; from/to keep 2 and 4 (and 6 is the 26th); ordered by priority up.
    assert ids(api.get(query)) == [jobs[6].pk, jobs[4].pk]
    assert ids(api.get("/jobs?state=2&failed=1&persist=1&search=content-2")) == [jobs[2].pk]
    assert ids(api.get("/jobs?state=5&persist=0")) == [jobs[5].pk]
    assert ids(api.get("/jobs?state=5&persist=1")) == []


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("limit=-5", "limit"),
        ("order_by=parameters", "order_by"),
        ("order_by=client__api_keys", "order_by"),
        ("asc=2", "asc"),
        ("state=7", "state"),
        ("state=queued", "state"),
        ("from=yesterday", "from"),
        ("to=2020-13-01", "to"),
        ("failed=yes", "failed"),
        ("job_ids=1,a", "job_ids"),
        ("job_ids=1,,2", "job_ids"),
        ("job_ids=99999999999999999999", "job_ids"),
        ("persist=2", "persist"),
        ("search=" + "x" * 201, "search"),
        ("client=%00", "client"),
    ],
)
def test_malformed_values_answer_400_naming_the_parameter(api: Any, query: Any, name: Any) -> None:
    response = api.get(f"/jobs?{query}")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error.startswith(f"{name}: "), error


def test_without_a_key_answers_401(db: Any, job_row: Any, make_client: Any) -> None:
    client, _ = make_client()
    job_row(client)

    response = APIClient().get("/jobs")

    assert response.status_code == 401
    assert response.json() == {"error": "Unauthorised request."}


def test_wrong_key_answers_401(api: Any) -> None:
    wrong = APIClient()
    wrong.credentials(HTTP_CLIENT=api.te_client.name, HTTP_API_KEY="te_000000000000_nope")

    response = wrong.get("/jobs")

    assert response.status_code == 401
    assert response.json() == {"error": "Unauthorised request."}


def test_public_job_list_setting_opens_the_listing(
    db: Any, job_row: Any, make_client: Any, settings: Any
) -> None:
    settings.TASKENGINE_PUBLIC_JOB_LIST = True
    first, _ = make_client()
    second, _ = make_client()
    a, b = job_row(first), job_row(second)

    response = APIClient().get("/jobs")

    assert ids(response) == [b.pk, a.pk]


def test_non_operator_sees_only_its_own_jobs_operator_sees_all(
    api: Any, operator_api: Any, job_row: Any, make_client: Any
) -> None:
    stranger, _ = make_client()
    mine = job_row(api.te_client)
    theirs = job_row(stranger)

    assert ids(api.get("/jobs")) == [mine.pk]
    assert ids(api.get(f"/jobs?client={stranger.name}")) == []
    assert ids(api.get(f"/jobs?job_ids={theirs.pk}")) == []
    assert ids(operator_api.get("/jobs")) == [theirs.pk, mine.pk]


def test_offsets_postgres_cannot_take_are_converted_to_utc(api: Any, jobs: Any) -> None:
    # Found by schemathesis: "-22:24" is valid ISO 8601 but beyond Postgres' ±15:59.
    response = api.get("/jobs?from=0554-10-23T03:18:17-22:24&to=2020-09-20T13:00:00%2B23:00&limit=100")

    assert ids(response) == []
    assert ids(api.get("/jobs?from=2020-09-25T13:00:00-23:00&limit=100")) == [jobs[6].pk]


@pytest.mark.parametrize(
    "name", ["limit", "order_by", "asc", "state", "from", "to", "failed", "job_ids", "persist"]
)
def test_percent_signs_in_malformed_values_are_reported_not_crashing(api: Any, name: Any) -> None:
    # Found by schemathesis: a value such as "%s" inside an error message broke django-filter's formatting.
    response = api.get(f"/jobs?{name}=%25s%25d%25")

    assert response.status_code == 400
    assert response.json()["error"].startswith(f"{name}: ")
