"""GET /metrics: the engine in the Prometheus text format, computed at scrape time.

Every figure is read when Prometheus scrapes, from Postgres (the system of record) and Redis (queue
lengths, worker heartbeats, attempt counters), instead of being counted in the web process: gunicorn runs
several processes, each would count only what it saw, and Redis may lose everything at any moment, while
the rows are there. So:

- job and task counts per state are gauges (rows come and go with the clean-up);
- ``taskengine_job_duration_seconds``, ``taskengine_step_duration_seconds`` and
  ``taskengine_callback_latency_seconds`` (a job's end, or a task's event, to its callback receiver's
  2xx; label ``kind``: job or task) are histograms over the jobs, tasks and deliveries that *finished
  in the last* ``DURATION_WINDOW`` (a sliding window, not a cumulative counter):
  ``histogram_quantile(0.95, taskengine_job_duration_seconds_bucket)`` is the p95 of the last hour; do
  not wrap them in ``rate()``;
- queue depth, workers and running steps come from Redis (``monitoring.selectors``); when Redis is down
  ``taskengine_redis_up`` is 0 and those series are absent, the Postgres ones are still served;
- ``taskengine_step_attempts_total`` / ``taskengine_step_attempts_failed_total`` are the workers' Redis
  counters (they restart at 0 when Redis is emptied, which Prometheus treats as a counter reset).

When ``TASKENGINE_METRICS_TOKEN`` is set the endpoint requires ``Authorization: Bearer <token>``;
unset, it is open like most exporters (put it behind the network boundary then).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_safe
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from callbacks.models import CallbackDelivery
from jobs.selectors import job_counts
from jobs.states import JobState, TaskState
from monitoring import selectors
from monitoring.broker import MonitorUnavailable
from settings_app.services import settings_get_ints

DURATION_WINDOW = timedelta(hours=1)
# Seconds. Jobs run from sub-second no-op chains to hour-long media captures.
JOB_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)
STEP_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
# Seconds from an event (a job's end) to its receiver's 2xx: sub-second when all is well, the retry
# back-off's steps (5 s, 15 s, 1 min, …) when a receiver failed.
CALLBACK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800, 3600)


def metrics_token() -> str:
    """The bearer token /metrics requires, or "" when it is open."""
    return str(settings.TASKENGINE_METRICS_TOKEN)


def _authorised(request: HttpRequest) -> bool:
    token = metrics_token()
    if not token:
        return True
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    # Constant-time comparison: the token is a secret, its prefix must not leak through timing.
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def _duration_histogram(
    name: str,
    documentation: str,
    queryset: QuerySet[Any],
    label_fields: tuple[str, ...],
    label_names: tuple[str, ...],
    buckets: tuple[float, ...],
    rename: dict[str, dict[Any, str]],
) -> HistogramMetricFamily:
    """One histogram family from finished rows, bucketed by Postgres in a single grouped query."""
    family = HistogramMetricFamily(name, documentation, labels=list(label_names))
    for row in selectors.duration_rows(queryset, label_fields, buckets):
        labels = [rename.get(field, {}).get(row[field], str(row[field])) for field in label_fields]
        cumulative = [(str(float(bound)), float(row[f"le_{i}"])) for i, bound in enumerate(buckets)]
        cumulative.append(("+Inf", float(row["total"])))
        seconds = row["seconds"].total_seconds() if row["seconds"] is not None else 0.0
        family.add_metric(labels, cumulative, max(0.0, seconds))
    return family


def _callback_latency_histogram(since: Any) -> HistogramMetricFamily:
    family = HistogramMetricFamily(
        "taskengine_callback_latency_seconds",
        "Event (a job's end, a task's start or end) to the callback receiver's 2xx, for the callbacks "
        "delivered in the last hour (sliding window).",
        labels=["kind"],
    )
    for row in selectors.delivery_latency_rows(since, CALLBACK_BUCKETS):
        cumulative = [(str(float(bound)), float(row[f"le_{i}"])) for i, bound in enumerate(CALLBACK_BUCKETS)]
        cumulative.append(("+Inf", float(row["total"])))
        seconds = row["seconds"].total_seconds() if row["seconds"] is not None else 0.0
        family.add_metric([str(row["kind"])], cumulative, max(0.0, seconds))
    return family


class EngineCollector(Collector):
    """Reads the figures at collection time (see the module docstring)."""

    def collect(self) -> Iterator[Any]:
        jobs = GaugeMetricFamily("taskengine_jobs", "Jobs per queue_state.", labels=["state"])
        counts = job_counts()
        for state in JobState:
            jobs.add_metric([state.label], counts.get(state.label, 0))
        yield jobs
        yield GaugeMetricFamily(
            "taskengine_jobs_failed", "Completed jobs that failed.", value=counts.get("failed", 0)
        )

        tasks = GaugeMetricFamily(
            "taskengine_tasks", "Tasks (steps of started jobs) per state.", labels=["state"]
        )
        by_state = selectors.task_state_counts()
        for task_state in TaskState:
            tasks.add_metric([task_state.label], by_state.get(task_state.value, 0))
        yield tasks

        numbers = settings_get_ints("max_jobs", "priority_slots", "priority_threshold")
        slots = GaugeMetricFamily("taskengine_slots", "Concurrency settings.", labels=["kind"])
        slots.add_metric(["max_jobs"], numbers["max_jobs"])
        slots.add_metric(["priority_slots"], numbers["priority_slots"])
        yield slots

        since = timezone.now() - DURATION_WINDOW
        yield _duration_histogram(
            "taskengine_job_duration_seconds",
            "Start-to-end time of the jobs that completed in the last hour (sliding window).",
            selectors.jobs_finished_since(since),
            ("workflow", "failed"),
            ("workflow", "outcome"),
            JOB_BUCKETS,
            {"failed": {True: "failed", False: "completed"}},
        )
        yield _duration_histogram(
            "taskengine_step_duration_seconds",
            "Run time of the last attempt of the steps that ended in the last hour (sliding window).",
            selectors.steps_finished_since(since),
            ("name", "state"),
            ("step", "outcome"),
            STEP_BUCKETS,
            {"state": {TaskState.COMPLETED.value: "completed", TaskState.FAILED.value: "failed"}},
        )

        retried = selectors.retry_counts()
        yield GaugeMetricFamily(
            "taskengine_task_retries",
            "Retry attempts (attempts beyond the first) of the tasks in the database.",
            value=retried["retries"],
        )
        yield GaugeMetricFamily(
            "taskengine_tasks_retried",
            "Tasks in the database that needed more than one attempt.",
            value=retried["tasks"],
        )

        callbacks = GaugeMetricFamily(
            "taskengine_callback_deliveries",
            "Callback deliveries in the database per state (failed: retries exhausted or URL refused).",
            labels=["state"],
        )
        by_delivery = selectors.delivery_state_counts()
        for delivery_state in CallbackDelivery.State:
            callbacks.add_metric([delivery_state.label], by_delivery.get(delivery_state.value, 0))
        yield callbacks
        yield _callback_latency_histogram(since)

        yield from self._redis_figures()

    def _redis_figures(self) -> Iterator[Any]:
        try:
            numbers = selectors.health_numbers()
        except MonitorUnavailable:
            yield GaugeMetricFamily("taskengine_redis_up", "1 when Redis answered this scrape.", value=0)
            return
        yield GaugeMetricFamily("taskengine_redis_up", "1 when Redis answered this scrape.", value=1)
        depth = GaugeMetricFamily(
            "taskengine_queue_messages", "Messages waiting in each Celery queue.", labels=["queue"]
        )
        workers = GaugeMetricFamily(
            "taskengine_queue_workers", "Live workers consuming each queue (heartbeats).", labels=["queue"]
        )
        working = GaugeMetricFamily(
            "taskengine_queue_working", "Tasks of each queue being executed now.", labels=["queue"]
        )
        for queue, figures in sorted(numbers["queues"].items()):
            depth.add_metric([queue], figures["pending"])
            workers.add_metric([queue], figures["workers"])
            working.add_metric([queue], figures["working"])
        yield from (depth, workers, working)
        yield CounterMetricFamily(
            "taskengine_step_attempts",
            "Step attempts finished (Redis counter; restarts when Redis is emptied).",
            value=numbers["tasks"]["processed"],
        )
        yield CounterMetricFamily(
            "taskengine_step_attempts_failed",
            "Step attempts that failed, retried or not (Redis counter).",
            value=numbers["tasks"]["failed"],
        )


@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics (Prometheus text format 0.0.4)."""
    if not _authorised(request):
        response = HttpResponse("Unauthorised: send Authorization: Bearer <token>.\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        response["Content-Type"] = "text/plain; charset=utf-8"
        return response
    # A registry per scrape: the collector holds no state between scrapes, so processes cannot disagree.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector())
    # The classic 0.0.4 text format: every Prometheus version reads it, and the names here need nothing newer.
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_PLAIN_0_0_4)
