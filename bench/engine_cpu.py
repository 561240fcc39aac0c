"""The engine's own cost per job, in CPU time: what item 1's wall-clock ratio is made of, measured in a
way that the machine's other load barely moves.

    .venv/bin/python -m bench.engine_cpu [--jobs 300] [--workflow noop5] [--every 3] [--media-parameters]
                                         [--profile 25]

One process submits ``--jobs`` jobs through ``job_submit`` (the service behind ``POST /job``), then plays
the worker: it pops the messages the engine really published to Redis and runs their engine functions
in-process until every job is terminal. It reports, per job: this process's CPU time (``process_time``),
the Postgres backend's CPU time (from ``/proc/<backend pid>/stat``, so only when the server is on this
machine), the statements Django executed, the transactions committed and the messages published.
``--profile N`` prints cProfile's top N functions by cumulative time (the profile slows the run).

Celery's own consumer side (kombu polling, the pool hand-off) is not in these figures: the raw Celery
floor pays it too, once per message, which is why the message count is reported.
"""

from __future__ import annotations

import argparse
import base64
import collections
import cProfile
import json
import os
import pstats
import time
from collections.abc import Callable
from typing import Any

from bench import common


def _backend_cpu(pid: int) -> float | None:
    return common.cpu_seconds([pid]).get(pid)


# A media job's parameters (0.9 kB as JSON): source and destination, renditions, audio, DRM, subtitles.
MEDIA_PARAMETERS: dict[str, Any] = {
    "source": "https://cdn.example.com/customers/acme/ingest/2026/12/07/feature-film-master-2160p-hdr10.mov",
    "destination": "s3://acme-vod-output/packaged/feature-film/2026-12-07/",
    "renditions": [
        {"name": "2160p", "bitrate": 16000000, "width": 3840, "height": 2160},
        {"name": "1080p", "bitrate": 6000000, "width": 1920, "height": 1080},
        {"name": "720p", "bitrate": 3000000, "width": 1280, "height": 720},
        {"name": "480p", "bitrate": 1200000, "width": 854, "height": 480},
    ],
    "audio": [
        {"language": "en", "codec": "aac", "channels": 2},
        {"language": "fr", "codec": "aac", "channels": 2},
    ],
    "drm": {
        "widevine": True,
        "playready": True,
        "fairplay": True,
        "key_id": "9eb4050d-e44b-4802-932e-27d75083e266",
    },
    "subtitles": ["en", "fr", "de", "es"],
    "packaging": "cmaf",
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--workflow", default="noop5")
    parser.add_argument("--profile", type=int, default=0, help="print the top N functions (cProfile)")
    parser.add_argument("--db", default="te_bench_cpu")
    parser.add_argument(
        "--max-jobs",
        type=int,
        default=10000,
        help="the max_jobs setting (below --jobs: jobs wait for slots, and each job end dispatches one)",
    )
    parser.add_argument("--batch", type=int, default=0, help="submit through jobs_submit, N jobs a call")
    parser.add_argument(
        "--starts-per-message",
        type=int,
        default=0,
        help="TASKENGINE_STARTS_PER_MESSAGE for the run (0: the setting as it is)",
    )
    parser.add_argument(
        "--media-parameters",
        action="store_true",
        help="give every job the parameters of a media job (MEDIA_PARAMETERS, 0.9 kB of JSON) instead of {}: "
        "what a job row's writes cost with its parameters' trigram index",
    )
    parser.add_argument(
        "--every",
        type=int,
        default=0,
        help="run the published messages after every N submissions (as when jobs arrive one by one "
        "while the engine works: a dispatch starts a few jobs), instead of once after all of them",
    )
    args = parser.parse_args()
    parameters = dict(MEDIA_PARAMETERS) if args.media_parameters else {}

    common.setup_django(args.db)
    from django.conf import settings

    if args.starts_per_message:
        settings.TASKENGINE_STARTS_PER_MESSAGE = args.starts_per_message
    from jobs.engine import bus

    # This process plays every worker of every queue, and runs run_tasks messages.
    bus.register_group_gate(lambda queue: True)
    common.reset_jobs()
    common.set_setting("max_jobs", args.max_jobs)

    from django.db import connection

    from clients.models import Client
    from jobs import tasks
    from jobs.engine import bus, dispatcher, runner
    from jobs.engine import reconcile as reconciler
    from jobs.models import Job
    from jobs.services import job_submit
    from jobs.states import JobState
    from monitoring import broker as redis_queues

    runner.heartbeat_seconds = lambda: 3600.0  # no heartbeat thread writes
    handlers: dict[str, Callable[..., Any]] = {
        bus.RUN_TASK: runner.run_task,
        bus.ADVANCE_JOB: tasks.advance_job.run,
        bus.DISPATCH: dispatcher.dispatch,
        bus.RECONCILE: reconciler.reconcile,
    }
    redis = redis_queues.redis_client()

    queues = [(queue, key) for queue in redis_queues.QUEUES for key in redis_queues.queue_keys(queue)]
    keys = [key for _, key in queues]
    handlers[bus.RUN_TASKS] = runner.run_tasks

    def pop_all() -> list[tuple[str, list[Any]]]:
        """Every message waiting, oldest first per queue, in one round trip (nothing else publishes to
        this run's queues, so reading and emptying them in one MULTI loses nothing)."""
        pipe = redis.pipeline(transaction=True)
        for key in keys:
            pipe.lrange(key, 0, -1)
        pipe.delete(*keys)
        lists = pipe.execute()[:-1]
        messages = []
        for (queue, _), raws in zip(queues, lists, strict=True):
            for raw in reversed(raws):  # published with LPUSH, consumed from the right
                payload = json.loads(str(raw))
                body = json.loads(base64.b64decode(payload["body"]))
                name, margs = payload["headers"]["task"], list(body[0])
                # run_tasks takes the queue its message came from, as the Celery task reads it.
                messages.append((name, [*margs, queue] if name == bus.RUN_TASKS else margs))
        return messages

    for queue in redis_queues.QUEUES:
        redis.delete(*redis_queues.queue_keys(queue))
    bus.dispatch_starting()  # the settings change above published a dispatch, deleted with the queues
    client = Client.objects.get_or_create(name="cpu-bench")[0]
    statements = 0

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        nonlocal statements
        statements += 1
        return execute(sql, params, many, context)

    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = int(cursor.fetchone()[0])
        cursor.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        commits_before = int(cursor.fetchone()[0])
        cursor.execute("SELECT pg_current_wal_lsn()")
        wal_before = cursor.fetchone()[0]
    redis_commands_before = int(redis.info("stats")["total_commands_processed"])

    # Python CPU by where it was spent: the submissions, and each kind of message run.
    by_part: collections.defaultdict[str, float] = collections.defaultdict(float)
    profiler = cProfile.Profile(time.process_time) if args.profile else None
    messages = 0
    cpu0, pg0, wall0 = time.process_time(), _backend_cpu(backend), time.monotonic()
    with connection.execute_wrapper(count):
        if profiler:
            profiler.enable()

        def drain() -> None:
            nonlocal messages
            while batch := pop_all():
                for name, margs in batch:
                    messages += 1
                    began = time.process_time()
                    handlers[name](*margs)
                    by_part[name.rsplit(".", 1)[-1]] += time.process_time() - began

        if args.batch:
            from jobs.services import SubmitRequest, jobs_submit

            for first in range(0, args.jobs, args.batch):
                size = min(args.batch, args.jobs - first)
                began = time.process_time()
                jobs_submit(client=client, requests=[SubmitRequest(args.workflow, parameters)] * size)
                by_part["submit"] += time.process_time() - began
                if args.every:
                    drain()
        else:
            for number in range(1, args.jobs + 1):
                began = time.process_time()
                job_submit(client=client, workflow=args.workflow, parameters=parameters)
                by_part["submit"] += time.process_time() - began
                if args.every and number % args.every == 0:
                    drain()
        drain()
        if profiler:
            profiler.disable()
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    pg1 = _backend_cpu(backend)
    pg = (pg1 - pg0) if pg0 is not None and pg1 is not None else None

    time.sleep(0.6)  # the backend reports its counters lazily (every 500 ms at most)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        commits = int(cursor.fetchone()[0]) - commits_before
        # Bytes of WAL written meanwhile (by this run alone only on a database server nothing else uses).
        cursor.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", [wal_before])
        wal_bytes = int(cursor.fetchone()[0])
    # Every Redis command (the broker's and the cache's), counted by the server itself.
    redis_commands = int(redis.info("stats")["total_commands_processed"]) - redis_commands_before - 1
    done = Job.objects.filter(queue_state=JobState.COMPLETED, failed=False).count()
    n = args.jobs
    summary = {
        "jobs": n,
        "completed": done,
        "python_cpu_ms_per_job": round(cpu * 1000 / n, 2),
        "python_cpu_ms_per_job_by_part": {k: round(v * 1000 / n, 2) for k, v in sorted(by_part.items())},
        "postgres_cpu_ms_per_job": None if pg is None else round(pg * 1000 / n, 2),
        "statements_per_job": round(statements / n, 1),
        "commits_per_job": round(commits / n, 1),
        "messages_per_job": round(messages / n, 2),
        "wal_bytes_per_job": round(wal_bytes / n),
        "redis_commands_per_job": round(redis_commands / n, 1),
        "workflow": args.workflow,
        "media_parameters": args.media_parameters,
        "batch": args.batch,
        "every": args.every,
        "starts_per_message": settings.TASKENGINE_STARTS_PER_MESSAGE,
        "max_jobs": args.max_jobs,
        "wall_s": round(wall, 2),
        "machine": common.machine(),
    }
    print("engine_cpu " + json.dumps(summary))
    if profiler and os.environ.get("BENCH_PROFILE_OUT"):
        profiler.dump_stats(os.environ["BENCH_PROFILE_OUT"])
    if profiler:
        order = os.environ.get("BENCH_PROFILE_SORT", "cumulative")
        pstats.Stats(profiler).sort_stats(order).print_stats(args.profile)


if __name__ == "__main__":
    main()
