"""Hot statements as server-side prepared statements (bench/README.md, items 1 and 2).

Django binds parameters on the client and never prepares (its default keeps connection poolers working),
so PostgreSQL parses and plans every statement again. For the few statements run once per step (the
claim, the completion and the job's next move) or per request (the API key lookup, the job's insert),
planning cost as much as the execution or more: 0.4 ms against 0.2 ms for ``runner._STEP_SQL``. Run
through ``cursor()``, they are bound on the server and prepared on their first use on a connection
(psycopg keeps the prepared statements per connection, keyed by the query and its parameter types),
then only executed.

The cursor is still Django's: its execute wrappers, its error translation and the connection's type
adapters apply. ``TASKENGINE_PREPARED_STATEMENTS=false`` turns this off, for a pooler that does not
carry prepared statements across server connections (PgBouncer before 1.21, or without
``max_prepared_statements``). Only SQL built once (from constants and model metadata) goes through it:
each distinct text is a prepared statement kept for the connection's life.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.backends.utils import CursorWrapper
from django.utils.asyncio import async_unsafe
from psycopg import Cursor
from psycopg.abc import Params, Query

# Django connects with ``prepare_threshold=None``, which makes psycopg prepare nothing, even when asked.
# A threshold no query reaches prepares only what is asked for: these statements (Django's own cursors
# bind on the client, and psycopg never prepares those).
_ONLY_WHEN_ASKED = 2**62


class _PreparingCursor(Cursor[Any]):
    """psycopg's server-binding cursor, asked to prepare every statement it runs."""

    def execute(
        self,
        query: Query,
        params: Params | None = None,
        *,
        prepare: bool | None = None,
        binary: bool | None = None,
    ) -> _PreparingCursor:
        return super().execute(query, params, prepare=True, binary=binary)  # type: ignore[arg-type]


@contextmanager
def cursor() -> Iterator[CursorWrapper]:
    """Django's cursor on the default connection, with statements prepared on the server.

    The psycopg cursor is kept with the connection and used again by the next call (one that runs
    while another is open gets its own): making one, and the client-side cursor Django's
    ``connection.cursor()`` makes for it to replace, cost more CPU than running a prepared statement.
    The wrapper around it is made the way ``connection.cursor()`` makes one (the health check, the
    connection, the thread check, Django's error translation and execute wrappers).
    """
    # Where queries are logged (DEBUG, or a test capturing them), the plain cursor: Django's log
    # shows its statements with their values, where a prepared one would show nothing.
    if not settings.TASKENGINE_PREPARED_STATEMENTS or connection.queries_logged:
        with connection.cursor() as wrapper:
            yield wrapper
        return
    db: Any = connections[DEFAULT_DB_ALIAS]  # Django's own attributes, not all in its type stubs
    kept = _open(db)
    try:
        yield kept
    finally:
        if db.__dict__.get(_KEPT) is kept:
            db.__dict__[_BUSY] = False
        else:  # one opened while another was in use: its own, closed as Django's would be
            kept.cursor.close()


_KEPT, _BUSY = "_taskengine_prepared_cursor", "_taskengine_prepared_cursor_busy"


@async_unsafe
def _open(db: Any) -> CursorWrapper:
    """``db.cursor()``'s steps, around the connection's kept preparing cursor when it is free."""
    db.close_if_health_check_failed()
    db.ensure_connection()
    raw = db.connection
    kept: CursorWrapper | None = db.__dict__.get(_KEPT)
    if (
        kept is not None
        and not db.__dict__.get(_BUSY)
        and kept.cursor.connection is raw
        and not kept.cursor.closed
    ):
        db.validate_thread_sharing()
        db.__dict__[_BUSY] = True
        return kept
    if raw.prepare_threshold is None:
        raw.prepare_threshold = _ONLY_WHEN_ASKED
    with db.wrap_database_errors:
        wrapper: CursorWrapper = db._prepare_cursor(_PreparingCursor(raw))
    if kept is None or not db.__dict__.get(_BUSY):
        db.__dict__[_KEPT], db.__dict__[_BUSY] = wrapper, True
    return wrapper
