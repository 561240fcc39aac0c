"""The monitoring room's pages: GET /health, the operators' live queue page (/queue/, staff only) and
its JSON variant (/queue/data). /metrics is ``monitoring.metrics``.

The queue page is built on the same selector as GET /dashboard (``jobs.selectors.dashboard_lists``) and
the same worker figures as GET /health; the page fetches the JSON every few seconds and redraws itself.
Redis being down shows as a notice, the Postgres figures are still served.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.views.decorators.http import require_safe
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import exceptions, serializers
from rest_framework.request import Request
from rest_framework.response import Response

from jobs.api.serializers import JobSummarySerializer
from monitoring import selectors
from monitoring.broker import MonitorUnavailable
from taskengine_site.api import ApiView
from taskengine_site.errors import first_line

REFRESH_SECONDS = 3

_Queue = inline_serializer(
    "HealthQueue",
    fields={
        "workers": serializers.IntegerField(),
        "working": serializers.IntegerField(),
        "pending": serializers.IntegerField(),
    },
)

HealthSerializer = inline_serializer(
    "Health",
    fields={
        "version": serializers.CharField(),
        "databases": inline_serializer(
            "HealthDatabases",
            fields={
                "redis": serializers.CharField(help_text='"OK" or the error'),
                "postgres": serializers.CharField(help_text='"OK" or the error'),
            },
        ),
        "queues": serializers.DictField(child=_Queue, help_text="Per Celery queue."),
        "tasks": inline_serializer(
            "HealthTasks",
            fields={
                "failed": serializers.IntegerField(),
                "pending": serializers.IntegerField(),
                "processed": serializers.IntegerField(),
            },
        ),
        "jobs": inline_serializer(
            "HealthJobs",
            fields={
                **{
                    name: serializers.IntegerField(
                        help_text="Completed jobs that failed." if name == "failed" else f"Jobs {name}."
                    )
                    for name in selectors.HEALTH_JOB_STATES
                },
                "max_jobs": serializers.IntegerField(),
                "priority_slots": serializers.IntegerField(),
            },
        ),
    },
)


class HealthView(ApiView):
    """GET /health: 200 when Redis and Postgres answer, else 503 with the same shape naming the failure."""

    def perform_authentication(self, request: Request) -> None:
        # Authentication reads Postgres; when it is down the answer is the health report naming that,
        # not the generic database error. No figures are given before the client is known.
        try:
            super().perform_authentication(request)
        except DatabaseError as exc:
            raise _PostgresDown(first_line(exc)) from None

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, _PostgresDown):
            return Response(selectors.health_report_without_postgres(str(exc)), status=503)
        return super().handle_exception(exc)

    @extend_schema(
        operation_id="health",
        responses={200: HealthSerializer, 503: HealthSerializer},
        tags=["status"],
    )
    def get(self, request: Request) -> Response:
        body, healthy = selectors.health_report()
        return Response(body, status=200 if healthy else 503)


class _PostgresDown(exceptions.APIException):
    status_code = 503


# --- Errors outside DRF views (unknown paths, Django's own refusals): JSON like everything else ----------


def queue_snapshot() -> dict[str, Any]:
    """Everything the queue page shows, JSON-able: the three lists, slots, workers per queue."""
    lists, use = selectors.queue_lists()
    snapshot: dict[str, Any] = {
        **use,
        **{name: JobSummarySerializer(jobs, many=True).data for name, jobs in lists.items()},
        "queues": {},
        "tasks": None,
        "redis": "OK",
    }
    try:
        numbers = selectors.health_numbers()
    except MonitorUnavailable as exc:
        snapshot["redis"] = str(exc)
    except Exception as exc:  # anything else from Redis (a timeout mid-pipeline): a notice, not a 500
        snapshot["redis"] = first_line(exc)
    else:
        snapshot["queues"] = numbers["queues"]
        snapshot["tasks"] = numbers["tasks"]
    return snapshot


@require_safe
@staff_member_required
def queue_page(request: HttpRequest) -> HttpResponse:
    """GET /queue/: the page (rendered with the data once, then refreshed by its script)."""
    context = {
        **admin.site.each_context(request),
        "title": "Queue",
        "snapshot": queue_snapshot(),
        "refresh_seconds": REFRESH_SECONDS,
    }
    return TemplateResponse(request, "console/queue.html", context)


@require_safe
@staff_member_required
def queue_data(request: HttpRequest) -> HttpResponse:
    """GET /queue/data: the snapshot as JSON, for the page's refresh."""
    response = JsonResponse(queue_snapshot())
    response["Cache-Control"] = "no-store"
    return response
