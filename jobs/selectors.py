"""Read-only queries on jobs for the API: lists, the dashboard, health counts (DESIGN.md §8).

Every function that returns jobs takes the requesting client and applies the access rule of DESIGN.md §7
here, once: a non-operator sees only its own jobs.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connection, transaction
from django.db.models import CharField, Func, QuerySet

from clients.models import Client
from jobs.models import Job, Task
from jobs.states import DISPATCH_ORDER, JobState
from logs.models import LogEntry
from taskengine_site.errors import NotFound, not_found_message

# The dashboard lists are for people; a backlog of thousands is summarised by its head.
DASHBOARD_LIST_LIMIT = 1000

# What JobSummarySerializer (the dashboard's lists) shows; any other field would be loaded on access.
SUMMARY_FIELDS = (
    "id",
    "client__name",
    "workflow",
    "priority",
    "position",
    "top_of_queue",
    "created_at",
    "updated_at",
    "started_at",
    "queue_state",
    "failed",
    "run_at",
)

# What JobListItemSerializer (GET /jobs) and JobSummarySerializer (the dashboard) show, read as rows by
# job_rows() and rendered by jobs.api.serializers.render_job_list / render_job_summaries, in their order.
LIST_COLUMNS = (
    "id",
    "client__name",
    "workflow",
    "priority",
    "position",
    "created_at",
    "updated_at",
    "queue_state",
    "parameters",
    "failed",
    "run_at",
)
SUMMARY_COLUMNS = tuple(column for column in LIST_COLUMNS if column != "parameters")

# The timestamp columns job_rows() returns as text, formatted by Postgres.
TIMESTAMP_COLUMNS = frozenset({"created_at", "updated_at", "run_at", "started_at", "finished_at"})


class FormattedTimestamp(Func):  # type: ignore[misc,unused-ignore]
    """taskengine_site.api.format_timestamp in SQL: UTC, milliseconds cut (not rounded), ``Z``; ``FM``
    leaves a year below 1000 unpadded as strftime's ``%Y`` does. tests/api/test_fast_rendering.py holds
    the two to the same text.

    Loading a timestamp costs 10-25 µs here (Django's loader is a Python subclass of psycopg's) and
    formatting it another 5-8 µs: at 3,000 jobs of 3 timestamps that was most of GET /dashboard.
    """

    template = "to_char(%(expressions)s AT TIME ZONE 'UTC', 'FMYYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
    output_field = CharField()


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
        raise NotFound(not_found_message("Job", job_id))
    return job


def job_tasks(*, job: Job) -> QuerySet[Task]:
    """A job's tasks in workflow order (none before the job first starts)."""
    return Task.objects.filter(job=job).order_by("position")


# Parts of GET /jobs/<id> that a higher room reads (``?callbacks=1``: the callbacks room's deliveries),
# registered by that room's AppConfig.ready: name -> reader(job) -> the rows the part renders.
_DETAIL_PARTS: dict[str, Any] = {}


def register_job_detail_part(name: str, reader: Any) -> None:
    """Let a higher room answer part ``name`` of a job's detail (``reader(job)`` returns its rows)."""
    _DETAIL_PARTS[name] = reader


def job_detail_part(*, job: Job, name: str) -> Any:
    """Part ``name`` of a visible job's detail, read by the room that registered it (empty if none)."""
    reader = _DETAIL_PARTS.get(name)
    return [] if reader is None else reader(job)


def job_log_entries(*, requester: Client, job_id: int, show_all: bool = False) -> QuerySet[LogEntry]:
    """A visible job's log, ordered by id; entries marked not visible only with ``show_all``."""
    job = job_get(requester=requester, job_id=job_id)
    entries = LogEntry.objects.filter(job=job).order_by("id")
    return entries if show_all else entries.filter(visible=True)


def job_list(*, requester: Client | None) -> QuerySet[Job]:
    """The base of GET /jobs, before jobs.filters.JobFilter narrows, orders and limits it."""
    return jobs_visible(requester=requester)


@contextlib.contextmanager
def listing_snapshot(*, enabled: bool = True) -> Iterator[None]:
    """One snapshot for every statement of a listing (GET /jobs may take a few: jobs.filters).

    A read-only REPEATABLE READ transaction, so the statements together answer exactly what one query
    would. Inside a transaction already (tests, callers), its isolation stays as it is. Not ``enabled``:
    nothing (three round trips saved for a listing of one statement).
    """
    if not enabled or connection.in_atomic_block:
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


def job_rows(queryset: QuerySet[Job], columns: Sequence[str]) -> list[tuple[Any, ...]]:
    """``queryset.values_list(*columns)`` as a list, timestamps already rendered as the API shows them.

    For the listings that render hundreds of rows (GET /jobs?limit=1000, GET /dashboard): the same rows
    in the same order, JSON columns decoded as JSONField does, and each timestamp column (TIMESTAMP_COLUMNS)
    as the text format_timestamp would give, or None.
    """
    stamps = [column for column in columns if column in TIMESTAMP_COLUMNS]
    formatted = {f"{column}_text": FormattedTimestamp(column) for column in stamps}
    selected = [f"{column}_text" if column in TIMESTAMP_COLUMNS else column for column in columns]
    try:
        sql, params = queryset.annotate(**formatted).values_list(*selected).query.sql_with_params()
    except EmptyResultSet:  # e.g. ``id__in=[]``: the ORM returns nothing without asking the database
        return []
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows: list[tuple[Any, ...]] = cursor.fetchall()
    for index, column in enumerate(columns):
        if column == "parameters":
            rows = _decode_json(rows, index)
    return rows


def _decode_json(rows: list[tuple[Any, ...]], index: int) -> list[tuple[Any, ...]]:
    """Decode column ``index`` of each row as JSONField.from_db_value does (text that is not JSON stays)."""
    loads = json.loads
    decoded = []
    for row in rows:
        value = row[index]
        if isinstance(value, str):
            try:
                value = loads(value)
            except json.JSONDecodeError:
                decoded.append(row)
                continue
            row = (*row[:index], value, *row[index + 1 :])
        decoded.append(row)
    return decoded


def _dashboard_querysets(*, requester: Client) -> dict[str, QuerySet[Job]]:
    base = jobs_visible(requester=requester)
    return {
        "started": base.filter(queue_state=JobState.STARTED).order_by("started_at", "id")[
            :DASHBOARD_LIST_LIMIT
        ],
        "queued": base.filter(queue_state=JobState.QUEUED).order_by(*DISPATCH_ORDER)[:DASHBOARD_LIST_LIMIT],
        "scheduled": base.filter(queue_state=JobState.SCHEDULED).order_by("run_at", "id")[
            :DASHBOARD_LIST_LIMIT
        ],
    }


def dashboard_lists(*, requester: Client) -> dict[str, list[Job]]:
    """Started, queued (in dispatch order) and scheduled (soonest first) jobs.

    Only the columns the summaries show are read (up to 3,000 rows: the JSON columns would dominate).
    """
    return {
        name: list(queryset.only(*SUMMARY_FIELDS))
        for name, queryset in _dashboard_querysets(requester=requester).items()
    }


def dashboard_rows(*, requester: Client) -> dict[str, list[tuple[Any, ...]]]:
    """The lists of :func:`dashboard_lists` as rows of ``SUMMARY_COLUMNS`` (for GET /dashboard)."""
    return {
        name: job_rows(queryset, SUMMARY_COLUMNS)
        for name, queryset in _dashboard_querysets(requester=requester).items()
    }


def job_counts() -> dict[str, int]:
    """Jobs per state name, plus ``failed`` (completed jobs that failed), for GET /health.

    Read from the trigger-maintained ``jobs_job_state_count`` instead of counting the jobs table, so it
    costs the same at a million jobs as at ten. Its delta rows are folded by the reconciler every run
    (``jobs.engine.counts.job_counts_compact``), so this sums the few rows since (about 0.1 ms a thousand).
    """
    counts: dict[str, int] = {state.label: 0 for state in JobState}
    counts["failed"] = 0
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT queue_state, failed, sum(n) FROM jobs_job_state_count GROUP BY queue_state, failed"
        )
        rows = cursor.fetchall()
    for queue_state, failed, n in rows:
        counts[JobState(queue_state).label] += int(n)
        if failed and queue_state == JobState.COMPLETED:
            counts["failed"] += int(n)
    return counts
