"""The release phase (``manage.py release``): a migration that waits for a lock on a busy table fails
fast instead of stalling the API behind it, and the release can be run again once the table is quiet.

It runs as the platform runs it (a process of its own) on a database of its own, migrated to just before
``jobs 0006`` (which drops an index of ``jobs_task`` and so needs the table to itself), while a running
release's transaction reads ``jobs_task``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

BASE_DIR = Path(__file__).resolve().parents[2]
TARGET = ("jobs", "0006_drop_redundant_fk_indexes")


@pytest.fixture
def release_database() -> Iterator[str]:
    parts = urlsplit(os.environ["DATABASE_URL"])
    name = f"te_release_{uuid.uuid4().hex[:8]}"
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def manage(database_url: str, *args: str, **env_vars: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DATABASE_URL=database_url, **env_vars)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def applied(database_url: str) -> bool:
    with psycopg.connect(database_url) as conn:
        return bool(
            conn.execute("SELECT 1 FROM django_migrations WHERE app = %s AND name = %s", TARGET).fetchone()
        )


def test_a_migration_waiting_on_a_busy_table_fails_fast_and_runs_once_the_table_is_quiet(
    release_database: str,
) -> None:
    prepared = manage(release_database, "migrate", "--noinput", "-v0", "jobs", "0005")
    assert prepared.returncode == 0, prepared.stderr
    with psycopg.connect(release_database) as busy:
        busy.execute("SELECT count(*) FROM jobs_task")  # a transaction of the running release, open

        began = time.monotonic()
        blocked = manage(
            release_database, "release", "--no-static", TASKENGINE_MIGRATE_LOCK_TIMEOUT_SECONDS="1"
        )
        took = time.monotonic() - began

        assert blocked.returncode != 0
        assert "waited more than 1 s for a lock" in blocked.stderr, blocked.stderr
        assert "Traceback" not in blocked.stderr
        # Failed on the lock, not after the reader finished: the start of Django and the migrations
        # before it aside, about the timeout.
        assert took < 30
        assert not applied(release_database)
        # The reader was never in the way of anything but that migration.
        busy.execute("SELECT count(*) FROM jobs_task")
    done = manage(release_database, "release", "--no-static", "--lock-timeout", "1")
    assert done.returncode == 0, done.stderr
    assert applied(release_database)
