"""Hot statements are prepared on the server once per connection (taskengine_site/prepared.py)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from taskengine_site import prepared

pytestmark = pytest.mark.django_db


@pytest.fixture
def tag() -> str:
    """A text of this test's own: the connection (and what it prepared) outlives the test."""
    return f"test_prepared_{uuid.uuid4().hex}"


def _sql(tag: str) -> str:
    return f"SELECT %(a)s::int + 41 AS answer -- {tag}"


def _prepared_here(tag: str) -> list[tuple[str, int]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT statement, generic_plans + custom_plans FROM pg_prepared_statements "
            "WHERE statement LIKE %s",
            [f"%{tag}%"],
        )
        return [(str(s), int(n)) for s, n in cursor.fetchall()]


def test_a_statement_is_prepared_once_and_executed_each_time(settings: Any, tag: str) -> None:
    settings.TASKENGINE_PREPARED_STATEMENTS = True
    for i in range(3):
        with prepared.cursor() as cursor:
            cursor.execute(_sql(tag), {"a": i})
            assert cursor.fetchone() == (41 + i,)
    (statement, runs), *others = _prepared_here(tag)
    assert others == []
    assert "$1" in statement and runs == 3


def test_turned_off_nothing_is_prepared(settings: Any, tag: str) -> None:
    settings.TASKENGINE_PREPARED_STATEMENTS = False
    with prepared.cursor() as cursor:
        cursor.execute(_sql(tag), {"a": 1})
        assert cursor.fetchone() == (42,)
    assert _prepared_here(tag) == []


def test_where_queries_are_logged_the_plain_cursor_logs_the_values(settings: Any, tag: str) -> None:
    settings.TASKENGINE_PREPARED_STATEMENTS = True
    with CaptureQueriesContext(connection) as captured, prepared.cursor() as cursor:
        cursor.execute(_sql(tag), {"a": 1})
        assert cursor.fetchone() == (42,)
    assert [q["sql"] for q in captured.captured_queries] == [f"SELECT 1::int + 41 AS answer -- {tag}"]
    assert _prepared_here(tag) == []


def test_orm_queries_on_the_same_connection_are_not_prepared(settings: Any, tag: str) -> None:
    from jobs.models import Job

    settings.TASKENGINE_PREPARED_STATEMENTS = True
    with prepared.cursor() as cursor:
        cursor.execute(_sql(tag), {"a": 1})
    for _ in range(10):  # beyond psycopg's usual threshold of 5
        list(Job.objects.filter(pk=0))
    with connection.cursor() as cursor:
        # The ORM's query names its columns as "jobs_job"."id"; no SQL of the project's own does.
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s", ['%"jobs_job"."id"%']
        )
        assert cursor.fetchone() == (0,)
    assert len(_prepared_here(tag)) == 1
