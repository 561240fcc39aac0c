"""Site-wide endpoints: GET / (alive), GET /health, and the JSON answers for errors outside DRF views."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import exceptions, serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from taskengine_site.api import ApiView
from taskengine_site.errors import first_line
from taskengine_site.version import VERSION

QUEUES = ("windows_capture", "scheduler", "work", "controller", "callback")
JOB_STATES = ("completed", "failed", "pending", "broken", "queued", "started", "scheduled", "paused")


class AliveView(APIView):
    """GET / — reachable check; needs no key."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="alive",
        auth=[],
        responses=inline_serializer("Alive", fields={"result": serializers.CharField()}),
        tags=["status"],
    )
    def get(self, request: Request) -> Response:
        return Response({"result": "alive"})


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
                    for name in JOB_STATES
                },
                "max_jobs": serializers.IntegerField(),
                "priority_slots": serializers.IntegerField(),
            },
        ),
    },
)


def _empty_numbers() -> dict[str, Any]:
    return {
        "queues": {queue: {"workers": 0, "working": 0, "pending": 0} for queue in QUEUES},
        "tasks": {"failed": 0, "pending": 0, "processed": 0},
        "jobs": {**{name: 0 for name in JOB_STATES}, "max_jobs": 0, "priority_slots": 0},
    }


def _check_postgres() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        return first_line(exc)
    return "OK"


def _check_redis() -> str:
    from jobs.engine.monitor import redis_client

    try:
        redis_client().ping()
    except Exception as exc:  # any failure to reach Redis is the answer, not a crash
        return first_line(exc)
    return "OK"


def health_report() -> tuple[dict[str, Any], bool]:
    """The /health body and whether every component answered."""
    body: dict[str, Any] = {
        "version": VERSION,
        "databases": {"redis": _check_redis(), "postgres": _check_postgres()},
    }
    body.update(_empty_numbers())
    healthy = body["databases"]["redis"] == "OK" and body["databases"]["postgres"] == "OK"
    if body["databases"]["postgres"] == "OK":
        from jobs.selectors import job_counts
        from settings_app.services import settings_get_ints

        try:
            body["jobs"] = {**job_counts(), **settings_get_ints("max_jobs", "priority_slots")}
        except DatabaseError as exc:
            body["databases"]["postgres"], healthy = first_line(exc), False
    if healthy:
        from jobs.engine.monitor import MonitorUnavailable, health_numbers

        try:
            numbers = health_numbers()
        except MonitorUnavailable as exc:
            body["databases"]["redis"], healthy = str(exc), False
        except DatabaseError as exc:
            body["databases"]["postgres"], healthy = first_line(exc), False
        else:
            body["queues"] = {**body["queues"], **numbers["queues"]}
            body["tasks"] = numbers["tasks"]
    body["jobs"] = {name: body["jobs"].get(name, 0) for name in (*JOB_STATES, "max_jobs", "priority_slots")}
    return body, healthy


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
            body: dict[str, Any] = {
                "version": VERSION,
                "databases": {"redis": _check_redis(), "postgres": str(exc)},
                **_empty_numbers(),
            }
            return Response(body, status=503)
        return super().handle_exception(exc)

    @extend_schema(
        operation_id="health",
        responses={200: HealthSerializer, 503: HealthSerializer},
        tags=["status"],
    )
    def get(self, request: Request) -> Response:
        body, healthy = health_report()
        return Response(body, status=200 if healthy else 503)


class _PostgresDown(exceptions.APIException):
    status_code = 503


# --- Errors outside DRF views (unknown paths, Django's own refusals): JSON like everything else ----------


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return JsonResponse({"error": "Not found."}, status=404)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    # Django's own refusals (too many fields, a disallowed host…) carry a message safe to show.
    if isinstance(exception, RequestDataTooBig):
        return JsonResponse({"error": f"Request body too large: {exception}"}, status=413)
    message = (
        str(exception) if isinstance(exception, SuspiciousOperation) and str(exception) else "Bad request."
    )
    return JsonResponse({"error": message}, status=400)


def forbidden(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return JsonResponse({"error": "Forbidden."}, status=403)


def server_error(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"error": "Internal server error."}, status=500)
