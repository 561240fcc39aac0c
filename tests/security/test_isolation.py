"""Issue 5 item 7: two clients, every endpoint tried by one on the other's ids and lists: nothing leaks.

Client B's jobs carry a marker in their parameters and logs. Client A calls every endpoint with B's ids
and with filters aimed at B; every answer is collected and searched for B's ids, name and marker, and B's
rows are compared before and after.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from rest_framework.test import APIClient

from jobs.models import Job
from jobs.states import JobState
from logs.models import LogEntry
from tests import factories

MARKER = "b-private-marker"


def authed(client: Any, key: str) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_CLIENT=client.name, HTTP_API_KEY=key)
    return api


@pytest.fixture
def world(make_client: Any) -> Any:
    a, a_key = make_client("client-a")
    b, b_key = make_client("client-b")
    api_a, api_b = authed(a, a_key), authed(b, b_key)
    b_ids = []
    for workflow in ("noop", "sleep"):
        response = api_b.post(
            "/job",
            {"job": {"workflow": workflow}, "parameters": {"content_id": f"{MARKER}-{workflow}"}},
            format="json",
            HTTP_IDEMPOTENCY_KEY=f"key-{workflow}",
        )
        b_ids.append(response.json()["id"])
    # States only the engine reaches, as rows.
    for state in (JobState.STARTED, JobState.COMPLETED, JobState.SCHEDULED, JobState.PAUSED):
        job = factories.job(
            b,
            queue_state=state,
            run_at=Job.objects.get(pk=b_ids[0]).run_at,
            parameters={"content_id": f"{MARKER}-{state.label}"},
            failed=state == JobState.COMPLETED,
        )
        factories.log_entry(job, f"{MARKER} log line", visible=False)
        b_ids.append(job.pk)
    a_job = api_a.post(
        "/job", {"job": {"workflow": "noop"}, "parameters": {"content_id": "a-1"}}, format="json"
    )
    return {"a": a, "b": b, "api_a": api_a, "b_ids": b_ids, "a_id": a_job.json()["id"]}


def snapshot(client: Any) -> Any:
    jobs = list(Job.objects.filter(client=client).order_by("id").values())
    logs = list(LogEntry.objects.filter(job__client=client).order_by("id").values())
    return jobs, logs


def test_no_endpoint_leaks_another_clients_jobs_or_logs(world: Any) -> None:
    api_a, b, b_ids = world["api_a"], world["b"], world["b_ids"]
    before = snapshot(b)
    answers: list[tuple[str, Any]] = []

    def record(label: str, response: Any) -> Any:
        answers.append((label, response))
        return response

    for job_id in b_ids:
        for label, response in [
            ("GET /jobs/<id>", api_a.get(f"/jobs/{job_id}")),
            ("PUT /jobs/<id>", api_a.put(f"/jobs/{job_id}", {"queue_state": "broken"}, format="json")),
            (
                "PATCH /jobs/<id>",
                api_a.patch(f"/jobs/{job_id}", {"priority": 1, "persist": True}, format="json"),
            ),
            ("PUT client", api_a.put(f"/jobs/{job_id}", {"client": b.name, "priority": 1}, format="json")),
            ("POST rerun", api_a.post(f"/jobs/{job_id}/rerun")),
            ("GET /logs/<id>", api_a.get(f"/logs/{job_id}")),
            ("GET /logs/<id> all", api_a.get(f"/logs/{job_id}?show_all=1")),
        ]:
            record(label, response)
            assert response.status_code == 404, (label, job_id, response.content)
            assert response.json() == {"error": f"Job {job_id} not found."}

    everything = ",".join(str(job_id) for job_id in b_ids)
    list_queries = [
        "",
        "?limit=1000",
        f"?client={b.name}",
        f"?job_ids={everything}",
        f"?search={MARKER}",
        "?state=1",
        "?state=2&failed=1",
        "?persist=0&asc=1&order_by=client",
    ]
    for query in list_queries:
        response = record(f"GET /jobs{query}", api_a.get(f"/jobs{query}"))
        assert response.status_code == 200
        assert {job["id"] for job in response.json()} <= {world["a_id"]}

    dashboard = record("GET /dashboard", api_a.get("/dashboard")).json()
    assert {job["id"] for name in ("started", "queued", "scheduled") for job in dashboard[name]} == {
        world["a_id"]
    }

    # Submitting in B's name, or reusing B's idempotency key, gives A nothing of B's.
    as_b = record(
        "POST /job as b",
        api_a.post("/job", {"client": b.name, "job": {"workflow": "noop"}, "parameters": {}}, format="json"),
    )
    assert as_b.status_code == 400
    reused = record(
        "POST /job b's key",
        api_a.post(
            "/job",
            {"job": {"workflow": "noop"}, "parameters": {}},
            format="json",
            HTTP_IDEMPOTENCY_KEY="key-noop",
        ),
    )
    assert reused.status_code == 200 and reused.json()["id"] not in b_ids
    assert Job.objects.get(pk=reused.json()["id"]).client == world["a"]

    for label, response in [
        ("GET /settings", api_a.get("/settings")),
        ("POST /settings", api_a.post("/settings", {"name": "max_jobs", "setting": 0}, format="json")),
        (
            "PUT /scheduler",
            api_a.put("/scheduler", {"schedule": "queue_scheduled_jobs", "active": False}, format="json"),
        ),
    ]:
        record(label, response)
        assert response.status_code == 403

    for label, response in answers:
        text = response.content.decode()
        assert MARKER not in text, label
        assert b.name not in text, label
        body = json.loads(text)
        found = _ids_in(body)
        assert not (found & set(b_ids)), (label, found)

    assert snapshot(b) == before


def _ids_in(body: Any) -> set[int]:
    ids: set[int] = set()
    stack = [body]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key in ("id", "job_id") and isinstance(value, int):
                    ids.add(value)
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
    return ids


def test_operator_sees_both_clients(world: Any, operator_api: Any) -> None:
    response = operator_api.get("/jobs?limit=100")

    assert {job["id"] for job in response.json()} == {*world["b_ids"], world["a_id"]}
    assert operator_api.get(f"/logs/{world['b_ids'][-1]}?show_all=1").json()[0]["message"].startswith(MARKER)
