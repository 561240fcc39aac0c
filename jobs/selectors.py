"""Read-only queries on jobs for the API: lists, the dashboard, health counts (DESIGN.md §8).

Every function that returns jobs takes the requesting client and applies the access rule of DESIGN.md §7
here, once: a non-operator sees only its own jobs.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Q, QuerySet

from clients.models import Client
from jobs.models import Job
from jobs.states import JobState
from logs.models import LogEntry
from taskengine_site.errors import NotFound

# The dashboard lists are for people; a backlog of thousands is summarised by its head.
DASHBOARD_LIST_LIMIT = 1000

# DESIGN.md §2: the order in which the dispatcher starts queued jobs.
DISPATCH_ORDER = ("-top_of_queue", "priority", "position", "created_at", "id")


def jobs_visible(*, requester: Client | None) -> QuerySet[Job]:
    """Jobs ``requester`` may see; ``None`` (the open listing, TASKENGINE_PUBLIC_JOB_LIST) sees all."""
    queryset = Job.objects.select_related("client")
    if requester is not None and not requester.is_operator:
        queryset = queryset.filter(client=requester)
    return queryset


def job_get(*, requester: Client, job_id: int) -> Job:
    """One job ``requester`` may see; a foreign job is as unknown as a missing one (404, no leak)."""
    job = jobs_visible(requester=requester).filter(pk=job_id).first()
    if job is None:
        raise NotFound(f"Job {job_id} not found.")
    return job


def job_log_entries(*, requester: Client, job_id: int, show_all: bool = False) -> QuerySet[LogEntry]:
    """A visible job's log, ordered by id; entries marked not visible only with ``show_all``."""
    job = job_get(requester=requester, job_id=job_id)
    entries = LogEntry.objects.filter(job=job).order_by("id")
    return entries if show_all else entries.filter(visible=True)


def job_list(*, requester: Client | None) -> QuerySet[Job]:
    """The base of GET /jobs, before jobs.filters.JobFilter narrows, orders and limits it."""
    return jobs_visible(requester=requester)


def dashboard_lists(*, requester: Client) -> dict[str, list[Job]]:
    """Started, queued (in dispatch order) and scheduled (soonest first) jobs."""
    base = jobs_visible(requester=requester)
    return {
        "started": list(
            base.filter(queue_state=JobState.STARTED).order_by("started_at", "id")[:DASHBOARD_LIST_LIMIT]
        ),
        "queued": list(
            base.filter(queue_state=JobState.QUEUED).order_by(*DISPATCH_ORDER)[:DASHBOARD_LIST_LIMIT]
        ),
        "scheduled": list(
            base.filter(queue_state=JobState.SCHEDULED).order_by("run_at", "id")[:DASHBOARD_LIST_LIMIT]
        ),
    }


def job_counts() -> dict[str, int]:
    """Jobs per state name, plus ``failed`` (completed jobs that failed), for GET /health."""
    counts: dict[str, int] = {state.label: 0 for state in JobState}
    rows: Any = Job.objects.order_by().values("queue_state").annotate(n=Count("id"))
    for row in rows:
        counts[JobState(row["queue_state"]).label] = row["n"]
    counts["failed"] = Job.objects.filter(Q(queue_state=JobState.COMPLETED) & Q(failed=True)).count()
    return counts
