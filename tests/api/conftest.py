"""Helpers for the API tests: jobs made through the real services, or as rows for states only the
engine reaches (started, completed…), and a checker for the reference's timestamp format."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.callbacks.support import queues  # noqa: F401  (the broker's queues, read in-process)

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")

# The reference's examples, field by field (task-engine-api.md).
SUMMARY_FIELDS = [
    "id",
    "client",
    "workflow",
    "priority",
    "position",
    "created_at",
    "updated_at",
    "queue_state",
    "failed",
    "run_at",
]
LIST_FIELDS = [
    "id",
    "client",
    "workflow",
    "priority",
    "position",
    "created_at",
    "updated_at",
    "queue_state",
    "parameters",
    "failed",
    "run_at",
]
DETAIL_FIELDS = [
    "id",
    "client",
    "workflow",
    "priority",
    "position",
    "top_of_queue",
    "parameters",
    "created_at",
    "updated_at",
    "queue_state",
    "failed",
    "run_at",
]


def parse_timestamp(text: str) -> datetime:
    assert TIMESTAMP.match(text), f"not a reference timestamp: {text!r}"
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def assert_job_shape(body: dict[str, Any], fields: list[str], job: Any) -> None:
    """``body`` renders ``job`` with exactly ``fields`` in that order, typed as the reference shows."""
    from jobs.states import JobState

    assert list(body) == fields
    assert body["id"] == job.pk and isinstance(body["id"], int)
    assert body["client"] == job.client.name
    assert body["workflow"] == job.workflow
    assert body["priority"] == job.priority and isinstance(body["priority"], int)
    assert body["position"] == job.position and isinstance(body["position"], int)
    assert body["queue_state"] == JobState(job.queue_state).label
    assert body["failed"] is job.failed
    for name in ("created_at", "updated_at", "run_at"):
        rendered = parse_timestamp(body[name])
        actual = getattr(job, name)
        assert rendered == actual.replace(microsecond=actual.microsecond // 1000 * 1000)
    if "parameters" in fields:
        assert body["parameters"] == job.parameters
    if "top_of_queue" in fields:
        assert body["top_of_queue"] is job.top_of_queue


@pytest.fixture
def job_row(db: Any) -> Any:
    """``job_row(client, **fields)``: a Job row in any state, for read endpoints (tests.factories.job),
    with a content_id of its own."""
    from jobs.models import Job
    from tests import factories

    def factory(client: Any, **fields: Any) -> Job:
        fields.setdefault("parameters", {"content_id": f"content-{Job.objects.count() + 1}"})
        return factories.job(client, **fields)

    return factory


@pytest.fixture
def submit() -> Any:
    """``submit(api, workflow="noop", parameters=..., **job_fields) -> response`` through POST /job."""

    def post(
        api: Any,
        workflow: str = "noop",
        parameters: Any = None,
        headers: Any = None,
        **job: Any,
    ) -> Any:
        body = {
            "client": api.te_client.name,
            "job": {"workflow": workflow, **job},
            "parameters": {"content_id": "c-1"} if parameters is None else parameters,
        }
        return api.post("/job", body, format="json", **(headers or {}))

    return post
