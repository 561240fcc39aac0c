"""What each part of a job row costs Postgres: its triggers, its indexes and its foreign keys, one at a time.

    .venv/bin/python -m bench.row_cost [--jobs 2000] [--rounds 3] [--media-parameters] [--only WORDS]
                                       [--db te_bench_rowcost]

A job row is written at its submission (``insert_job``, with its creation log entry, as ``POST /job``
writes it) and again at every change of its state (queued, started, completed for a one-step job; each
such update changes an indexed column, so it is never a HOT update and writes every index of the row
again). For the schema as migrated, then for the schema without each trigger, each index (but the unique
ones: the primary keys, and the one the insert's ``ON CONFLICT`` names) and each foreign key of
``jobs_job`` and of the log entry, in turn, this runs ``--jobs`` submissions through the engine's own
insert (``jobs.services._insert_many``) and two state changes of each job (``UPDATE … SET
queue_state``), on one connection, and reports per job: the Postgres backend's CPU time (from
``/proc/<pid>/stat``, so the server must be on this machine) and the bytes of WAL, for the insert and for
the two updates. What a part costs is the schema's figure minus the figure without it, round by round
(the median of those differences); each round measures every variant, so a change of the machine's load
meets them all. The client's own CPU is not counted.

Each variant starts from empty job tables and a warm-up of 200 jobs (statements prepared, caches
filled). What is taken away is put back before the next variant (indexes and constraints from their
definitions in the catalogue); the database is created afresh at the start of every run, so a run cut
short leaves nothing wrong for the next one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass
from typing import Any

from bench import common

WARM_UP = 200


@dataclass(frozen=True)
class Variant:
    """A schema without one part: ``off`` takes it away, ``on`` puts it back (SQL statements)."""

    name: str
    off: tuple[str, ...] = ()
    on: tuple[str, ...] = ()


def _variants(cursor: Any) -> list[Variant]:
    """The schema as it is, then without each user trigger, each secondary index and each foreign key
    of jobs_job and logs_logentry (read from the catalogue, so a new one is measured too)."""
    variants = [Variant("as migrated")]
    cursor.execute(
        "SELECT tgrelid::regclass::text, tgname FROM pg_trigger"
        " WHERE tgrelid IN ('jobs_job'::regclass, 'logs_logentry'::regclass) AND NOT tgisinternal"
        " AND tgtype & 1 = 1 ORDER BY 1, 2"  # row-level triggers (a TRUNCATE trigger never fires here)
    )
    for table, trigger in cursor.fetchall():
        variants.append(
            Variant(
                f"without trigger {trigger}",
                (f'ALTER TABLE {table} DISABLE TRIGGER "{trigger}"',),
                (f'ALTER TABLE {table} ENABLE TRIGGER "{trigger}"',),
            )
        )
    cursor.execute(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index AS i"
        " WHERE i.indrelid IN ('jobs_job'::regclass, 'logs_logentry'::regclass) AND NOT i.indisunique"
        " AND NOT EXISTS (SELECT 1 FROM pg_constraint AS c WHERE c.conindid = i.indexrelid) ORDER BY 1"
    )
    for index, definition in cursor.fetchall():
        variants.append(Variant(f"without index {index}", (f'DROP INDEX "{index}"',), (definition,)))
    cursor.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid IN ('jobs_job'::regclass, 'logs_logentry'::regclass) AND contype = 'f' ORDER BY 1, 2"
    )
    for table, constraint, definition in cursor.fetchall():
        variants.append(
            Variant(
                f"without foreign key {constraint}",
                (f'ALTER TABLE {table} DROP CONSTRAINT "{constraint}"',),
                (f'ALTER TABLE {table} ADD CONSTRAINT "{constraint}" {definition}',),
            )
        )
    return variants


def _measure(jobs: int, parameters: dict[str, Any], client: Any) -> dict[str, float]:
    """Submit ``jobs`` jobs and move each through two states; the backend's CPU and the WAL, per job."""
    from django.db import connection
    from django.utils import timezone

    from jobs.services import SubmitRequest, _insert_many, _prepare
    from jobs.states import JobState
    from taskengine_site import prepared

    wanted = SubmitRequest("noop", parameters)

    def submit(count: int) -> list[int]:
        """Jobs and their creation log entries as ``job_submit`` makes and inserts one."""
        ids: list[int] = []
        for _ in range(count):
            job, entry = _prepare(client, wanted, timezone.now())
            ids.extend(_insert_many([(job, entry)]).values())
        return ids

    def move(ids: list[int], state: int) -> None:
        with prepared.cursor() as cursor:
            for job_id in ids:
                cursor.execute(
                    "UPDATE jobs_job SET queue_state = %s, updated_at = now() WHERE id = %s", [state, job_id]
                )

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE logs_logentry, jobs_task, jobs_job RESTART IDENTITY CASCADE")
        cursor.execute("SELECT pg_backend_pid()")
        backend = int(cursor.fetchone()[0])
    warm = submit(WARM_UP)
    move(warm, JobState.STARTED)
    move(warm, JobState.COMPLETED)

    def mark() -> tuple[float, int]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')")
            wal = int(cursor.fetchone()[0])
        return common.cpu_seconds([backend])[backend], wal

    cpu0, wal0 = mark()
    ids = submit(jobs)
    cpu1, wal1 = mark()
    move(ids, JobState.STARTED)
    move(ids, JobState.COMPLETED)
    cpu2, wal2 = mark()
    return {
        "insert_us": (cpu1 - cpu0) / jobs * 1e6,
        "updates_us": (cpu2 - cpu1) / jobs * 1e6,
        "insert_wal": (wal1 - wal0) / jobs,
        "updates_wal": (wal2 - wal1) / jobs,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--media-parameters",
        action="store_true",
        help="a media job's parameters (bench.engine_cpu.MEDIA_PARAMETERS, 0.9 kB of JSON) instead of {}",
    )
    parser.add_argument(
        "--only",
        default="",
        help="measure only the variants whose name contains one of these comma-separated words (and the "
        "schema as migrated); '-': the schema as migrated alone",
    )
    parser.add_argument("--db", default="te_bench_rowcost", help="dropped and created afresh at the start")
    args = parser.parse_args(argv)

    import psycopg

    with psycopg.connect(common.database_url("postgres"), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')
    common.setup_django(args.db)
    from django.db import connection

    from bench.engine_cpu import MEDIA_PARAMETERS
    from clients.models import Client

    parameters = dict(MEDIA_PARAMETERS) if args.media_parameters else {}
    client = Client.objects.get_or_create(name="row-cost")[0]
    with connection.cursor() as cursor:
        variants = _variants(cursor)
    if args.only:
        words = [word for word in args.only.split(",") if word and word != "-"]
        variants = [v for v in variants if v.name == "as migrated" or any(w in v.name for w in words)]
    load_before = common.machine()
    figures: dict[str, list[dict[str, float]]] = {variant.name: [] for variant in variants}
    started = time.monotonic()
    for _ in range(args.rounds):
        for variant in variants:
            with connection.cursor() as cursor:
                for statement in variant.off:
                    cursor.execute(statement)
            try:
                figures[variant.name].append(_measure(args.jobs, parameters, client))
            finally:
                with connection.cursor() as cursor:
                    for statement in variant.on:
                        cursor.execute(statement)
                # A prepared statement planned without the part would keep its plan: start afresh.
                connection.close()
    base = figures["as migrated"]
    rows = []
    for variant in variants:
        runs = figures[variant.name]
        row: dict[str, Any] = {"variant": variant.name}
        for key in runs[0]:
            row[key] = round(statistics.median(run[key] for run in runs), 1)
        # What the part costs: the schema's figure minus this one's, round by round, then the median.
        for key in ("insert_us", "updates_us"):
            row[f"part_{key}"] = round(
                statistics.median(a[key] - b[key] for a, b in zip(base, runs, strict=True)), 1
            )
        rows.append(row)
    print(f"{'':52s} {'insert µs':>10s} {'2 updates µs':>13s} {'insert WAL':>11s} {'updates WAL':>12s}")
    for row in rows:
        print(
            f"{row['variant'][:52]:52s} {row['insert_us']:10.1f} {row['updates_us']:13.1f}"
            f" {row['insert_wal']:11.0f} {row['updates_wal']:12.0f}"
            + (
                ""
                if row["variant"] == "as migrated"
                else f"   part: {row['part_insert_us']:+.1f} / {row['part_updates_us']:+.1f} µs"
            )
        )
    summary = {
        "jobs": args.jobs,
        "rounds": args.rounds,
        "media_parameters": args.media_parameters,
        "variants": rows,
        "seconds": round(time.monotonic() - started, 1),
        "machine_before": load_before,
        "machine_after": common.machine(),
    }
    print("row_cost " + json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
