"""GET /metrics in the Prometheus text format (issue 7.3), parsed back with prometheus_client's parser."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client as HttpClient
from prometheus_client.parser import text_string_to_metric_families

from callbacks.models import CallbackDelivery
from jobs.models import Job, Task
from jobs.states import JobState
from tests.engine.conftest import Broker


def scrape(
    http: HttpClient | None = None, **headers: str
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one scrape: ``{(name, sorted labels): value}``."""
    response = (http or HttpClient()).get("/metrics", headers=headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_jobs_per_state_slots_and_queue_depth(
    db: None, submit: Callable[..., Job], broker: Broker, setting: Callable[..., None]
) -> None:
    setting(max_jobs=4, priority_slots=1)
    broker.clear()
    submit("noop")
    submit("noop")
    paused = submit("noop")
    Job.objects.filter(pk=paused.pk).update(queue_state=JobState.PAUSED)
    failed = submit("noop")
    Job.objects.filter(pk=failed.pk).update(queue_state=JobState.COMPLETED, failed=True)

    samples = scrape()
    assert samples[("taskengine_jobs", (("state", "queued"),))] == 2
    assert samples[("taskengine_jobs", (("state", "paused"),))] == 1
    assert samples[("taskengine_jobs", (("state", "completed"),))] == 1
    assert samples[("taskengine_jobs", (("state", "started"),))] == 0
    assert samples[("taskengine_jobs_failed", ())] == 1
    assert samples[("taskengine_slots", (("kind", "max_jobs"),))] == 4
    assert samples[("taskengine_slots", (("kind", "priority_slots"),))] == 1
    # The submissions' dispatch requests, not yet consumed: one message serves them all (jobs.engine.bus).
    assert samples[("taskengine_queue_messages", (("queue", "controller"),))] == 1
    assert samples[("taskengine_queue_messages", (("queue", "work"),))] == 0
    assert samples[("taskengine_redis_up", ())] == 1


def test_durations_retries_and_callback_failures(
    db: None, submit: Callable[..., Job], broker: Broker, setting: Callable[..., None]
) -> None:
    setting(retry_limit=2, retry_delay=0)
    done = submit("noop5")
    failing = submit("fail")
    broker.drain()
    assert Job.objects.get(pk=done.pk).queue_state == JobState.COMPLETED
    assert Job.objects.get(pk=failing.pk).failed is True
    CallbackDelivery.objects.create(
        job=done,
        kind="job",
        event="completed",
        url="https://example.com/hook",
        body="{}",
        webhook_id="w1",
        state=CallbackDelivery.State.FAILED,
        attempts=5,
    )

    samples = scrape()
    job_count = ("taskengine_job_duration_seconds_count", (("outcome", "completed"), ("workflow", "noop5")))
    assert samples[job_count] == 1
    assert (
        samples[("taskengine_job_duration_seconds_count", (("outcome", "failed"), ("workflow", "fail")))] == 1
    )
    inf = (
        "taskengine_job_duration_seconds_bucket",
        (("le", "+Inf"), ("outcome", "completed"), ("workflow", "noop5")),
    )
    assert samples[inf] == 1
    done.refresh_from_db()
    assert done.finished_at is not None and done.started_at is not None
    duration = (done.finished_at - done.started_at).total_seconds()
    assert samples[
        ("taskengine_job_duration_seconds_sum", (("outcome", "completed"), ("workflow", "noop5")))
    ] == (pytest.approx(duration, abs=1e-3))
    assert (
        samples[("taskengine_step_duration_seconds_count", (("outcome", "completed"), ("step", "noop")))] == 5
    )
    assert samples[("taskengine_step_duration_seconds_count", (("outcome", "failed"), ("step", "fail")))] == 1

    attempts = Task.objects.get(job=failing).attempts
    assert attempts == 3  # the first and two retries
    assert samples[("taskengine_task_retries", ())] == 2
    assert samples[("taskengine_tasks_retried", ())] == 1
    assert samples[("taskengine_callback_deliveries", (("state", "failed"),))] == 1
    assert samples[("taskengine_tasks", (("state", "completed"),))] == 5


def test_token_when_set_is_required(db: None, settings: Any) -> None:
    settings.TASKENGINE_METRICS_TOKEN = "s3cret-token"
    http = HttpClient()
    refused = http.get("/metrics")
    assert refused.status_code == 401
    assert refused["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"taskengine_jobs" not in refused.content
    assert http.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert http.get("/metrics", headers={"Authorization": "Basic s3cret-token"}).status_code == 401
    assert ("taskengine_redis_up", ()) in scrape(http, Authorization="Bearer s3cret-token")


def test_head_answers_as_get_without_a_body(db: None, settings: Any) -> None:
    settings.TASKENGINE_METRICS_TOKEN = "s3cret-token"
    http = HttpClient()
    auth = {"Authorization": "Bearer s3cret-token"}
    got, head = http.get("/metrics", headers=auth), http.head("/metrics", headers=auth)
    assert (head.status_code, head["Content-Type"], head.content) == (200, got["Content-Type"], b"")
    assert b"taskengine_jobs" in got.content
    assert http.head("/metrics").status_code == 401
    assert http.post("/metrics", headers=auth).status_code == 405
