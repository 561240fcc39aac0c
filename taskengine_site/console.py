"""The operators' live queue page (/queue/, staff only) and its JSON variant (/queue/data).

Built on the same selector as GET /dashboard (``jobs.selectors.dashboard_lists``) and the same worker
figures as GET /health (``jobs.engine.monitor.health_numbers``); the page fetches the JSON every few
seconds and redraws itself. Redis being down shows as a notice, the Postgres figures are still served.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.views.decorators.http import require_GET

from clients.models import Client
from taskengine_site.errors import first_line

REFRESH_SECONDS = 3


def _slots(started: int, started_priority: int, max_jobs: int, priority_slots: int) -> dict[str, int]:
    """Slot use by the rule of DESIGN.md §2: priority jobs fill the reserved slots first."""
    reserved = min(priority_slots, max_jobs)
    return {
        "max_jobs": max_jobs,
        "used": started,
        "free": max(0, max_jobs - started),
        "reserved": reserved,
        "reserved_used": min(started_priority, reserved),
    }


def queue_snapshot() -> dict[str, Any]:
    """Everything the page shows, JSON-able: the three lists, slots, workers per queue."""
    from jobs.api.serializers import JobSummarySerializer
    from jobs.engine.monitor import MonitorUnavailable, health_numbers
    from jobs.models import Job
    from jobs.selectors import dashboard_lists
    from jobs.states import JobState
    from settings_app.services import settings_get_ints

    # Staff see every job, as an operator client does; an unsaved operator stands in for the requester
    # so the selector's access rule stays the single place that decides visibility.
    staff = Client(name="staff-console", is_operator=True)
    lists = dashboard_lists(requester=staff)
    settings = settings_get_ints("max_jobs", "priority_slots", "priority_threshold")
    started = Job.objects.filter(queue_state=JobState.STARTED)
    started_priority = started.filter(priority__lte=settings["priority_threshold"]).count()
    snapshot: dict[str, Any] = {
        "slots": _slots(started.count(), started_priority, settings["max_jobs"], settings["priority_slots"]),
        "priority_threshold": settings["priority_threshold"],
        **{name: JobSummarySerializer(jobs, many=True).data for name, jobs in lists.items()},
        "queues": {},
        "tasks": None,
        "redis": "OK",
    }
    try:
        numbers = health_numbers()
    except MonitorUnavailable as exc:
        snapshot["redis"] = str(exc)
    except Exception as exc:  # anything else from Redis (a timeout mid-pipeline): a notice, not a 500
        snapshot["redis"] = first_line(exc)
    else:
        snapshot["queues"] = numbers["queues"]
        snapshot["tasks"] = numbers["tasks"]
    return snapshot


@require_GET
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


@require_GET
@staff_member_required
def queue_data(request: HttpRequest) -> HttpResponse:
    """GET /queue/data: the snapshot as JSON, for the page's refresh."""
    response = JsonResponse(queue_snapshot())
    response["Cache-Control"] = "no-store"
    return response
