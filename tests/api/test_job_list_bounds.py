"""GET /jobs with from/to adds an id bound implied by created_at (jobs/migrations/0004_listing_bounds.py):
the rows must be exactly those of the created_at filters alone, however far created_at runs against id."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.db.models import QuerySet

from jobs.models import Job

START = datetime(2026, 3, 1, tzinfo=UTC)


def skew() -> timedelta | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT jobs_job_created_skew()")
        value: timedelta | None = cursor.fetchone()[0]
    return value


def recompute() -> timedelta | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT jobs_job_created_skew_recompute()")
        value: timedelta | None = cursor.fetchone()[0]
    return value


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def expected(frm: datetime | None, to: datetime | None, asc: bool, limit: int) -> list[int]:
    queryset: QuerySet[Job] = Job.objects.all()
    if frm is not None:
        queryset = queryset.filter(created_at__gte=frm)
    if to is not None:
        queryset = queryset.filter(created_at__lte=to)
    return list(queryset.order_by("id" if asc else "-id").values_list("id", flat=True)[:limit])


def check_windows(api: Any, moments: list[datetime]) -> int:
    """Every window between the given moments, both orders, two limits: the API answers the plain filter."""
    checked = 0
    edges: list[datetime | None] = [None, *moments]
    for frm, to in itertools.product(edges, edges):
        if frm is not None and to is not None and frm > to:
            continue
        for asc, limit in itertools.product((False, True), (1, 3, 100)):
            query = f"limit={limit}&asc={int(asc)}"
            if frm is not None:
                query += f"&from={stamp(frm)}"
            if to is not None:
                query += f"&to={stamp(to)}"
            response = api.get(f"/jobs?{query}")
            assert response.status_code == 200, response.content
            assert [job["id"] for job in response.json()] == expected(frm, to, asc, limit), query
            checked += 1
    return checked


@pytest.fixture
def operator(operator_api: Any) -> Any:
    return operator_api


def test_jobs_inserted_as_usual_keep_a_small_known_skew(operator: Any, job_row: Any) -> None:
    for _ in range(5):
        job_row(operator.te_client)
    measured = skew()
    assert measured is not None and measured < timedelta(seconds=30)


def test_changing_created_at_makes_the_skew_unknown_until_recomputed(operator: Any, job_row: Any) -> None:
    jobs = [job_row(operator.te_client) for _ in range(4)]
    Job.objects.filter(pk=jobs[0].pk).update(created_at=jobs[-1].created_at + timedelta(hours=5))
    assert skew() is None
    job_row(operator.te_client)  # later inserts do not make it known again
    assert skew() is None

    exact = recompute()
    assert exact is not None and timedelta(hours=5) <= exact < timedelta(hours=5, seconds=30)
    assert skew() == exact


def test_windows_over_jobs_created_out_of_id_order(operator: Any, job_row: Any) -> None:
    generator = random.Random(6)
    jobs = [job_row(operator.te_client) for _ in range(30)]
    moments = []
    for index, job in enumerate(jobs):
        # Mostly increasing with the id, with jumps back and forth of up to two days.
        moment = START + timedelta(hours=4 * index) + timedelta(minutes=generator.randint(-2880, 2880))
        Job.objects.filter(pk=job.pk).update(created_at=moment)
        moments.append(moment)
    assert skew() is None
    probes = [*sorted(generator.sample(moments, 6)), START - timedelta(days=9), START + timedelta(days=30)]
    assert check_windows(operator, sorted(probes)) > 100  # without bounds (skew unknown)

    exact = recompute()
    assert exact is not None and exact > timedelta(hours=4)
    assert check_windows(operator, sorted(probes)) > 100  # with the exact bound


def test_windows_with_late_inserts_recorded_by_the_trigger(operator: Any, job_row: Any) -> None:
    """Rows inserted with a created_at far behind the clock (a slow request), ids still from the sequence."""
    for index in range(12):
        job_row(operator.te_client)
        Job.objects.filter(pk=Job.objects.order_by("-id").first().pk).update(  # type: ignore[union-attr]
            created_at=START + timedelta(hours=index)
        )
    assert recompute() is not None
    late = [START + timedelta(hours=3, minutes=30), START + timedelta(hours=1)]
    with connection.cursor() as cursor:
        for moment in late:
            cursor.execute(
                "INSERT INTO jobs_job (client_id, workflow, priority, position, top_of_queue, parameters,"
                " queue_state, failed, persist, run_at, workflow_uuid, message, created_at, updated_at)"
                " VALUES (%s, 'noop', 5, 1, false, '{}', 0, false, false, now(), gen_random_uuid(), '',"
                " %s, now())",
                [operator.te_client.pk, moment],
            )
    measured = skew()
    assert measured is not None and measured > timedelta(days=200)  # the late rows are recorded as stale
    probes = [START + timedelta(hours=hours, minutes=15) for hours in (0, 1, 3, 5, 11)]
    assert check_windows(operator, probes) > 100


def test_windows_with_a_row_created_ahead_of_its_statement(operator: Any, job_row: Any) -> None:
    """A created_at after its statement's start (a client clock ahead of the database's) is recorded as
    ``ahead``; inserts as the application makes them (created_at read before the statement) record none."""
    for _ in range(3):
        job_row(operator.te_client)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM jobs_job_created_skew WHERE kind = 'ahead'")
        assert cursor.fetchone()[0] == 0
        cursor.execute(
            "INSERT INTO jobs_job (client_id, workflow, priority, position, top_of_queue, parameters,"
            " queue_state, failed, persist, run_at, workflow_uuid, message, created_at, updated_at)"
            " VALUES (%s, 'noop', 5, 1, false, '{}', 0, false, false, now(), gen_random_uuid(), '',"
            " statement_timestamp() + interval '2 hours', now())",
            [operator.te_client.pk],
        )
        cursor.execute("SELECT seconds FROM jobs_job_created_skew WHERE kind = 'ahead'")
        assert [row[0] for row in cursor.fetchall()] == [7200.0]
    for _ in range(3):
        job_row(operator.te_client)
    measured = skew()
    assert measured is not None and measured >= timedelta(hours=2)
    # Whole seconds: the API's timestamps carry milliseconds, the rows' microseconds.
    moments = sorted(
        moment.replace(microsecond=0) for moment in Job.objects.values_list("created_at", flat=True)
    )
    probes = [moments[0], moments[0] + timedelta(seconds=1), moments[-1] - timedelta(minutes=1), moments[-1]]
    assert check_windows(operator, probes) > 50


def test_an_insert_with_an_id_not_from_the_sequence_makes_the_skew_unknown(
    operator: Any, job_row: Any
) -> None:
    job_row(operator.te_client)
    assert skew() is not None
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO jobs_job (id, client_id, workflow, priority, position, top_of_queue, parameters,"
            " queue_state, failed, persist, run_at, workflow_uuid, message, created_at, updated_at)"
            " VALUES (900000001, %s, 'noop', 5, 1, false, '{}', 0, false, false, now(), gen_random_uuid(),"
            " '', %s, now())",
            [operator.te_client.pk, START],
        )
    assert skew() is None


def test_a_multi_row_insert_draws_each_id_before_its_row_is_checked(operator: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO jobs_job (client_id, workflow, priority, position, top_of_queue, parameters,"
            " queue_state, failed, persist, run_at, workflow_uuid, message, created_at, updated_at)"
            " SELECT %s, 'noop', 5, 1, false, '{}', 0, false, false, now(), gen_random_uuid(), '',"
            " now(), now() FROM generate_series(1, 50)",
            [operator.te_client.pk],
        )
    measured = skew()
    assert measured is not None and measured < timedelta(seconds=30)


def test_the_bound_is_in_the_query_only_on_the_side_the_order_starts(operator: Any) -> None:
    from django.test.utils import CaptureQueriesContext

    for query, present in (
        ("to=2026-03-02", True),
        ("to=2026-03-02&asc=1", False),
        ("from=2026-03-02&asc=1", True),
        ("from=2026-03-02", False),
        ("to=2026-03-02&order_by=priority", False),
    ):
        with CaptureQueriesContext(connection) as captured:
            assert operator.get(f"/jobs?{query}").status_code == 200
        listing = [q["sql"] for q in captured.captured_queries if 'FROM "jobs_job"' in q["sql"]]
        assert any("jobs_job_created_skew()" in sql for sql in listing) is present, query
