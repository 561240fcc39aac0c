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
