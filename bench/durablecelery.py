"""A second floor: raw Celery (bench/rawcelery.py) plus the least a job engine on Postgres must write.

Every job is a row of its own table, inserted (and committed, durably) before its first task is
published; each task marks its step started (committed without waiting for the WAL flush, as the
engine's claim of a job without callbacks is) and then ended (committed durably, as the engine's step
end is); the last step's end marks the job done. So a job of S steps costs one INSERT and 2 x S UPDATEs
of one table with only its primary key, each in autocommit, from a connection per process with
prepared statements: no ORM, no log lines, no listing indexes, no triggers, no dispatcher and no slot
rule. Everything else is rawcelery's: the same worker options, the same chains through Redis.

What it answers (bench/README.md, "The durable floor"): how much of the engine's distance from raw
Celery any engine that keeps its jobs in Postgres pays, and how much is the engine's own.

    celery -A bench.durablecelery worker -Q durable --concurrency 2 --pool prefork
"""

from __future__ import annotations

import os
import time
from typing import Any

import psycopg
import redis

from bench.rawcelery import PREFIX, REDIS_URL, floor_app

# The floor's own database (bench.e2e creates it): its jobs never mix with the engine's tables.
DATABASE_URL = os.environ.get("BENCH_DURABLE_DB", "")

app = floor_app("durablebench", "durable")

SCHEMA = """
CREATE TABLE IF NOT EXISTS floor_job (
    id bigserial PRIMARY KEY,
    state smallint NOT NULL,
    step smallint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL,
    started_at timestamptz,
    finished_at timestamptz
)
"""
INSERT = "INSERT INTO floor_job (state, created_at) VALUES (0, now()) RETURNING id"
# The claim: its commit does not wait for the WAL flush (the setting lasts for this statement's own
# transaction only), as the engine's start_task_quiet.
STARTED = (
    "UPDATE floor_job SET state = 1, step = %s, started_at = now()"
    " FROM (SELECT set_config('synchronous_commit', 'off', true)) AS quiet WHERE id = %s"
)
ENDED = "UPDATE floor_job SET state = CASE WHEN %s THEN 2 ELSE 1 END, finished_at = now() WHERE id = %s"

_state: dict[str, Any] = {}


def _connection() -> psycopg.Connection[Any]:
    """This process's connection (made after the fork), in autocommit, preparing every statement."""
    conn = _state.get("pid") == os.getpid() and _state.get("conn")
    if not conn:
        conn = psycopg.connect(DATABASE_URL, autocommit=True, prepare_threshold=0)
        _state.update(pid=os.getpid(), conn=conn)
    return conn


def _redis() -> redis.Redis:
    client = _state.get("redis")
    if client is None or _state.get("redis_pid") != os.getpid():
        client = redis.Redis.from_url(REDIS_URL)
        _state.update(redis=client, redis_pid=os.getpid())
    return client


def reset() -> None:
    """Create the table when missing, and empty it."""
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute("TRUNCATE floor_job RESTART IDENTITY")


@app.task(name="bench.durable_noop")
def noop(job_id: int, step: int, last: bool = False) -> None:
    conn = _connection()
    conn.execute(STARTED, [step, job_id])
    conn.execute(ENDED, [last, job_id])
    if last:
        client = _redis()
        client.incr(PREFIX + "durable:done")
        client.set(PREFIX + "durable:last", repr(time.time()))


def submit(n: int, steps: int = 5) -> None:
    """``n`` jobs: each inserted and committed, then its chain of ``steps`` tasks published."""
    from celery import chain

    conn = _connection()
    for _ in range(n):
        row = conn.execute(INSERT).fetchone()
        assert row is not None
        job_id = int(row[0])
        chain(*(noop.si(job_id, s, s == steps) for s in range(1, steps + 1))).apply_async()


def counts() -> dict[int, int]:
    """Jobs per state (0 submitted, 1 started, 2 done): the run's check that every row was written."""
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        return {int(s): int(c) for s, c in conn.execute("SELECT state, count(*) FROM floor_job GROUP BY 1")}
