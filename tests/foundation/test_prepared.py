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


def test_the_cursor_is_kept_for_the_next_statement_and_a_nested_one_gets_its_own(
    settings: Any, tag: str
) -> None:
    settings.TASKENGINE_PREPARED_STATEMENTS = True
    with prepared.cursor() as first:
        first.execute(_sql(tag), {"a": 1})
        with prepared.cursor() as nested:
            assert nested.cursor is not first.cursor
            nested.execute(_sql(tag), {"a": 2})
            assert nested.fetchone() == (43,)
        inner = nested.cursor
        assert first.fetchone() == (42,)  # the outer statement's rows are its own
    assert inner.closed and not first.cursor.closed
    with prepared.cursor() as again:
        assert again.cursor is first.cursor
        again.execute(_sql(tag), {"a": 3})
        assert again.fetchone() == (44,)


@pytest.mark.django_db(transaction=True)  # the connection is closed: not inside a test's transaction
def test_a_new_connection_gets_a_new_cursor_and_wrappers_see_every_statement(settings: Any, tag: str) -> None:
    settings.TASKENGINE_PREPARED_STATEMENTS = True
    with prepared.cursor() as before:
        before.execute(_sql(tag), {"a": 1})
    old = before.cursor
    connection.close()
    seen: list[str] = []

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        seen.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper), prepared.cursor() as after:
        assert after.cursor is not old
        after.execute(_sql(tag), {"a": 1})
        assert after.fetchone() == (42,)
    assert seen == [_sql(tag)]
    assert _prepared_here(tag) == [(_prepared_here(tag)[0][0], 1)]  # prepared anew on the new connection


def test_an_error_is_djangos_and_the_kept_cursor_still_works(settings: Any, tag: str) -> None:
    from django.db import DataError, transaction

    settings.TASKENGINE_PREPARED_STATEMENTS = True
    with pytest.raises(DataError), transaction.atomic(), prepared.cursor() as cursor:
        cursor.execute(_sql(tag), {"a": "not a number"})
    with prepared.cursor() as cursor:
        cursor.execute(_sql(tag), {"a": 1})
        assert cursor.fetchone() == (42,)
