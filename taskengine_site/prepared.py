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
from django.db import connection
from django.db.backends.utils import CursorWrapper
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
    """Django's cursor on the default connection, with statements prepared on the server."""
    with connection.cursor() as wrapper:
        # Where queries are logged (DEBUG, or a test capturing them), the plain cursor: Django's log
        # shows its statements with their values, where a prepared one would show nothing.
        if not settings.TASKENGINE_PREPARED_STATEMENTS or connection.queries_logged:
            yield wrapper
            return
        client_side = wrapper.cursor
        raw = connection.connection
        if raw.prepare_threshold is None:
            raw.prepare_threshold = _ONLY_WHEN_ASKED
        wrapper.cursor = _PreparingCursor(raw)
        try:
            yield wrapper
        finally:
            wrapper.cursor.close()
            wrapper.cursor = client_side
