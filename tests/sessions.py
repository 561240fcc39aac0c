"""A second Postgres session for tests of concurrency: another request's, another sender's."""

from __future__ import annotations

from typing import Any


def raw_connection() -> Any:
    """A second, independent Postgres session on the test database, in autocommit (``BEGIN`` to hold
    a transaction open)."""
    import psycopg
    from django.db import connection

    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    return psycopg.connect(**params, autocommit=True)


def backend_pid() -> int:
    """The Postgres backend serving Django's default connection now."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def health_check_pending() -> None:
    """Django's connection as a web request or a worker's next message finds it: kept from an earlier
    one, its health check due (Django's close_old_connections, which Celery's task_prerun hook runs)."""
    from django.db import connection

    connection.ensure_connection()
    db: Any = connection  # Django's own attributes, not in its type stubs
    db.health_check_enabled = True
    db.health_check_done = False


def close_kept_connection_on_the_server() -> int:
    """What a database restart or an idle timeout does to a kept connection: its backend is terminated
    from another session while its health check is due. Returns the terminated backend's pid."""
    before = backend_pid()
    health_check_pending()
    with raw_connection() as other:
        other.execute("SELECT pg_terminate_backend(%s)", [before])
    return before
