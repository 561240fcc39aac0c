"""GET /jobs and GET /dashboard render their jobs by hand (jobs.api.serializers.render_job_list /
render_job_summaries, from rows read by jobs.selectors.job_rows): the bytes must be exactly what the DRF
serializers would give for the same jobs, whatever the jobs hold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rest_framework.renderers import JSONRenderer
from rest_framework.test import APIClient

from clients.models import Client
from jobs import selectors
from jobs.api.serializers import (
    JobListItemSerializer,
    JobSummarySerializer,
    render_job_list,
    render_job_summaries,
)
from jobs.models import Job
from jobs.states import JobState
from settings_app.services import settings_get_ints
from taskengine_site.version import VERSION
from tests import factories

PARAMETERS: list[Any] = [
    {},
    {"content_id": "c-1", "folder": "f/1"},
    {"nested": {"deep": [1, 2.5, None, True, False, {"x": "y"}]}, "list": []},
    {"unicode": "Ünïcødé — 名前 🎬", "escapes": 'quote " backslash \\ newline \n tab \t', "ctrl": "\u0001"},
    {"big": 2**62, "negative": -17, "float": 1e300, "small": 5e-324, "zero": 0.0, "third": 1 / 3},
    {"b": 1, "a": 2, "aa": 3, "": "empty key"},  # jsonb orders keys its own way: both paths read jsonb
    ["a", "list", "of", "parameters"],
    "just a string",
    12345,
]
MOMENTS = [
    datetime(2020, 9, 24, 11, 55, 33, 755_000, tzinfo=UTC),
    datetime(2020, 9, 24, 11, 55, 33, 999_999, tzinfo=UTC),  # milliseconds are cut, not rounded
    datetime(2021, 1, 1, 0, 0, 0, 0, tzinfo=UTC),
    datetime(2019, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    datetime(1, 1, 1, 0, 0, 0, 0, tzinfo=UTC),
    datetime(1999, 6, 30, 22, 0, 0, 500, tzinfo=UTC) + timedelta(hours=5),
]


def rendered(data: Any) -> bytes:
    return bytes(JSONRenderer().render(data))


@pytest.fixture
def varied(make_client: Any, db: Any) -> list[Job]:
    """Jobs of three clients in every state, with every kind of parameters and awkward timestamps."""
    # A name outside today's rule (a row from before it) still renders like any other.
    legacy = Client.objects.create(name="Ünïcode-client-名")
    clients = [make_client("alpha")[0], legacy, make_client("zeta")[0]]
    jobs = []
    for index in range(len(PARAMETERS) * 3):
        state = list(JobState)[index % len(JobState)]
        job = factories.job(
            clients[index % len(clients)],
            workflow=["noop", "noop5", "vodstream ✓"][index % 3],
            priority=1 + index % 10,
            position=[1, -3, 0, 2**31 - 1][index % 4],
            top_of_queue=index % 5 == 0,
            parameters=PARAMETERS[index % len(PARAMETERS)],
            queue_state=state,
            failed=state == JobState.COMPLETED and index % 2 == 0,
            persist=index % 3 == 0,
            run_at=MOMENTS[index % len(MOMENTS)],
            started_at=MOMENTS[(index + 1) % len(MOMENTS)] if index % 4 else None,
        )
        moment = MOMENTS[(index + 2) % len(MOMENTS)]
        Job.objects.filter(pk=job.pk).update(
            created_at=moment, updated_at=MOMENTS[(index + 3) % len(MOMENTS)]
        )
        jobs.append(job)
    return jobs


def test_the_list_rendering_is_the_serializers(varied: list[Job]) -> None:
    querysets = [
        selectors.jobs_visible(requester=None).order_by("-id"),
        selectors.jobs_visible(requester=None).order_by("client__name", "id"),
        selectors.jobs_visible(requester=varied[1].client).order_by("run_at", "id")[:5],
        selectors.jobs_visible(requester=None).filter(queue_state=JobState.COMPLETED).order_by("-id"),
        selectors.jobs_visible(requester=None).filter(id__in=[]),
    ]
    for queryset in querysets:
        fast = render_job_list(selectors.job_rows(queryset, selectors.LIST_COLUMNS))
        slow = JobListItemSerializer(queryset, many=True).data
        assert rendered(fast) == rendered(slow)
        assert [list(item) for item in fast] == [list(item) for item in slow]
    assert len(render_job_list(selectors.job_rows(querysets[0], selectors.LIST_COLUMNS))) == len(varied)


def test_the_summary_rendering_is_the_serializers(varied: list[Job]) -> None:
    for requester in (None, varied[0].client):
        queryset = selectors.jobs_visible(requester=requester).order_by("-id")
        fast = render_job_summaries(selectors.job_rows(queryset, selectors.SUMMARY_COLUMNS))
        slow = JobSummarySerializer(queryset.only(*selectors.SUMMARY_FIELDS), many=True).data
        assert fast and rendered(fast) == rendered(slow)


def test_get_jobs_answers_the_serializers_bytes(varied: list[Job], make_client: Any) -> None:
    operator, key = make_client(operator=True)
    api = APIClient()
    api.credentials(HTTP_CLIENT=operator.name, HTTP_API_KEY=key)
    every = selectors.jobs_visible(requester=None)
    cases = {
        "/jobs?limit=1000": every.order_by("-id"),
        "/jobs?limit=1000&order_by=client&asc=1": every.order_by("client__name", "id"),
        "/jobs?limit=7&order_by=run_at": every.order_by("-run_at", "-id")[:7],
        "/jobs?state=2&limit=1000": every.filter(queue_state=JobState.COMPLETED).order_by("-id"),
        "/jobs?search=%C3%BCn%C3%AF&limit=1000": every.filter(parameters__unicode__icontains="ünï").order_by(
            "-id"
        ),
    }
    for path, expected in cases.items():
        response = api.get(path)
        assert response.status_code == 200, path
        assert response.content == rendered(JobListItemSerializer(expected, many=True).data), path
        assert response.json(), path


def test_get_dashboard_answers_the_serializers_bytes(varied: list[Job], make_client: Any) -> None:
    for operator in (True, False):
        client, key = make_client(operator=operator) if operator else (varied[2].client, None)
        if key is None:
            from clients.services import api_key_issue

            _, key = api_key_issue(client=client)
        api = APIClient()
        api.credentials(HTTP_CLIENT=client.name, HTTP_API_KEY=key)
        response = api.get("/dashboard")
        assert response.status_code == 200
        numbers = settings_get_ints("max_jobs", "priority_slots")
        lists = selectors.dashboard_lists(requester=client)
        expected = {
            "max_jobs": numbers["max_jobs"],
            "priority_slots": numbers["priority_slots"],
            **{name: JobSummarySerializer(jobs, many=True).data for name, jobs in lists.items()},
            "version": VERSION,
        }
        assert response.content == rendered(expected)
        body = response.json()
        assert body["started"] and body["queued"] and body["scheduled"]


def test_timestamps_formatted_by_postgres_are_format_timestamps(varied: list[Job]) -> None:
    """Every moment a timestamp may hold, in several zones, through jobs.selectors.FormattedTimestamp."""
    import random
    from zoneinfo import ZoneInfo

    from taskengine_site.api import format_timestamp

    generator = random.Random(3)
    moments = [
        *MOMENTS,
        datetime(999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(1000, 1, 1, tzinfo=UTC),
    ]
    for _ in range(300):
        seconds = generator.randrange(0, 315_000_000_000)
        moments.append(
            datetime(2, 1, 1, tzinfo=UTC)
            + timedelta(seconds=seconds, microseconds=generator.randrange(10**6))
        )
    zones = [UTC, ZoneInfo("America/New_York"), ZoneInfo("Asia/Kathmandu")]
    job = varied[0]
    for index, moment in enumerate(moments):
        zone = zones[index % len(zones)]
        local = moment.astimezone(zone) if 2 < moment.year < 9998 else moment
        Job.objects.filter(pk=job.pk).update(run_at=local, started_at=None if index % 5 == 0 else local)
        queryset = Job.objects.filter(pk=job.pk)
        assert selectors.job_rows(queryset, ["run_at", "started_at"]) == [
            (format_timestamp(local), None if index % 5 == 0 else format_timestamp(local))
        ], local
