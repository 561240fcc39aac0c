"""Everything the monitoring room shows, read from Postgres (through the apps' selectors and models)
and from Redis (``monitoring.broker``, ``monitoring.workers``). Nothing here writes.

Redis being down raises ``MonitorUnavailable``; Postgres being down raises Django's ``DatabaseError``.
The callers (GET /health, the queue page, /metrics) turn either into a notice, never a crash.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, connection
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, QuerySet, Sum

from callbacks.models import CallbackDelivery
from clients.models import Client
from jobs.engine.bus import QUEUES
from jobs.models import Job, Task
from jobs.selectors import dashboard_lists, job_counts
from jobs.states import JobState, TaskState
from monitoring.broker import MonitorUnavailable, messages_waiting, redis_client
from monitoring.workers import live_workers, step_counters
from settings_app.services import settings_get_ints
from taskengine_site.errors import first_line
from taskengine_site.version import VERSION

# GET /health lists queues and job states in the order the original documents them.
HEALTH_QUEUES = ("windows_capture", "scheduler", "work", "controller", "callback")
HEALTH_JOB_STATES = ("completed", "failed", "pending", "broken", "queued", "started", "scheduled", "paused")
if set(HEALTH_QUEUES) != set(QUEUES):
    raise RuntimeError("GET /health must list every queue the engine has")


def queue_numbers() -> dict[str, dict[str, int]]:
    """Per queue: ``workers`` alive consuming it, tasks ``working`` now, messages ``pending``."""
    numbers = {queue: {"workers": 0, "working": 0, "pending": 0} for queue in QUEUES}
    for worker in live_workers():
        for queue in worker.get("queues", []):
            if queue in numbers:
                numbers[queue]["workers"] += 1
        for queue, count in (worker.get("working") or {}).items():
            if queue in numbers:
                numbers[queue]["working"] += int(count)
    for queue, waiting in messages_waiting().items():
        numbers[queue]["pending"] = waiting
    return numbers


def task_numbers() -> dict[str, int]:
    """``processed`` and ``failed`` step attempts (Redis counters, since Redis last started empty) and
    ``pending`` tasks (Postgres: queued or waiting to retry)."""
    processed, failed = step_counters()
    pending = Task.objects.filter(state__in=[TaskState.QUEUED, TaskState.RETRYING]).count()
    return {"failed": failed, "pending": pending, "processed": processed}


def health_numbers() -> dict[str, Any]:
    """``{"queues": {queue: {workers, working, pending}}, "tasks": {failed, pending, processed}}``."""
    return {"queues": queue_numbers(), "tasks": task_numbers()}


def _empty_numbers() -> dict[str, Any]:
    return {
        "queues": {queue: {"workers": 0, "working": 0, "pending": 0} for queue in HEALTH_QUEUES},
        "tasks": {"failed": 0, "pending": 0, "processed": 0},
        "jobs": {**{name: 0 for name in HEALTH_JOB_STATES}, "max_jobs": 0, "priority_slots": 0},
    }


def check_postgres() -> str:
    """``"OK"``, or the first line of the error that reaching Postgres raised."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        return first_line(exc)
    return "OK"


def check_redis() -> str:
    """``"OK"``, or the first line of the error that reaching Redis raised."""
    try:
        redis_client().ping()
    except Exception as exc:  # any failure to reach Redis is the answer, not a crash
        return first_line(exc)
    return "OK"


def health_report_without_postgres(error: str) -> dict[str, Any]:
    """The /health body when Postgres cannot even authenticate the request: every figure 0."""
    return {"version": VERSION, "databases": {"redis": check_redis(), "postgres": error}, **_empty_numbers()}


def health_report() -> tuple[dict[str, Any], bool]:
    """The /health body and whether every component answered."""
    body: dict[str, Any] = {
        "version": VERSION,
        "databases": {"redis": check_redis(), "postgres": check_postgres()},
    }
    body.update(_empty_numbers())
    healthy = body["databases"]["redis"] == "OK" and body["databases"]["postgres"] == "OK"
    if body["databases"]["postgres"] == "OK":
        try:
            body["jobs"] = {**job_counts(), **settings_get_ints("max_jobs", "priority_slots")}
        except DatabaseError as exc:
            body["databases"]["postgres"], healthy = first_line(exc), False
    if healthy:
        try:
            numbers = health_numbers()
        except MonitorUnavailable as exc:
            body["databases"]["redis"], healthy = str(exc), False
        except DatabaseError as exc:
            body["databases"]["postgres"], healthy = first_line(exc), False
        else:
            body["queues"] = {**body["queues"], **numbers["queues"]}
            body["tasks"] = numbers["tasks"]
    names = (*HEALTH_JOB_STATES, "max_jobs", "priority_slots")
    body["jobs"] = {name: body["jobs"].get(name, 0) for name in names}
    return body, healthy


# --- the queue page ---------------------------------------------------------------------------------


def slots(started: int, started_priority: int, max_jobs: int, priority_slots: int) -> dict[str, int]:
    """Slot use by the rule of DESIGN.md §2: priority jobs fill the reserved slots first."""
    reserved = min(priority_slots, max_jobs)
    return {
        "max_jobs": max_jobs,
        "used": started,
        "free": max(0, max_jobs - started),
        "reserved": reserved,
        "reserved_used": min(started_priority, reserved),
    }


def queue_lists() -> tuple[dict[str, list[Job]], dict[str, Any]]:
    """Every job list of the queue page (started, queued in dispatch order, scheduled) and slot use."""
    # Staff see every job, as an operator client does; an unsaved operator stands in for the requester
    # so the selector's access rule stays the single place that decides visibility.
    staff = Client(name="staff-console", is_operator=True)
    lists = dashboard_lists(requester=staff)
    numbers = settings_get_ints("max_jobs", "priority_slots", "priority_threshold")
    started = Job.objects.filter(queue_state=JobState.STARTED)
    started_priority = started.filter(priority__lte=numbers["priority_threshold"]).count()
    use = {
        "slots": slots(started.count(), started_priority, numbers["max_jobs"], numbers["priority_slots"]),
        "priority_threshold": numbers["priority_threshold"],
    }
    return lists, use


# --- /metrics -----------------------------------------------------------------------------------------


def duration_rows(
    queryset: QuerySet[Any], label_fields: tuple[str, ...], buckets: tuple[float, ...]
) -> list[dict[str, Any]]:
    """Finished rows of ``queryset`` grouped by ``label_fields``: ``total``, ``seconds`` (their summed
    run time) and ``le_<i>`` (how many ran at most ``buckets[i]`` seconds), in one grouped query."""
    duration = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
    counts = {
        f"le_{index}": Count("id", filter=Q(duration__lte=timedelta(seconds=bound)))
        for index, bound in enumerate(buckets)
    }
    return list(
        queryset.filter(started_at__isnull=False, finished_at__isnull=False)
        .annotate(duration=duration)
        .order_by()
        .values(*label_fields)
        .annotate(total=Count("id"), seconds=Sum("duration"), **counts)
    )


def jobs_finished_since(since: datetime) -> QuerySet[Job]:
    return Job.objects.filter(queue_state=JobState.COMPLETED, finished_at__gte=since)


def steps_finished_since(since: datetime) -> QuerySet[Task]:
    return Task.objects.filter(state__in=[TaskState.COMPLETED, TaskState.FAILED], finished_at__gte=since)


def task_state_counts() -> dict[int, int]:
    return dict(Task.objects.order_by().values_list("state").annotate(n=Count("id")))


def retry_counts() -> dict[str, int]:
    """``tasks`` that needed more than one attempt and the ``retries`` (attempts beyond the first)."""
    retried = Task.objects.filter(attempts__gt=1).aggregate(tasks=Count("id"), retries=Sum(F("attempts") - 1))
    return {"tasks": retried["tasks"] or 0, "retries": retried["retries"] or 0}


def delivery_latency_rows(since: datetime, buckets: tuple[float, ...]) -> list[dict[str, Any]]:
    """Callback deliveries sent since ``since``, grouped by ``kind``: ``total``, ``seconds`` (their summed
    latency, event -> the receiver's 2xx) and ``le_<i>`` (how many took at most ``buckets[i]``)."""
    latency = ExpressionWrapper(F("sent_at") - F("created_at"), output_field=DurationField())
    counts = {
        f"le_{index}": Count("id", filter=Q(latency__lte=timedelta(seconds=bound)))
        for index, bound in enumerate(buckets)
    }
    rows = (
        CallbackDelivery.objects.filter(state=CallbackDelivery.State.SENT, sent_at__gte=since)
        .annotate(latency=latency)
        .order_by()
        .values("kind")
        .annotate(total=Count("id"), seconds=Sum("latency"), **counts)
    )
    return [dict(row) for row in rows]


def delivery_state_counts() -> dict[int, int]:
    return dict(CallbackDelivery.objects.order_by().values_list("state").annotate(n=Count("id")))
