"""Issue 16 item 3: the scale-out model checked with workers spread as if over two hosts.

    .venv/bin/python -m bench.scale_out [--jobs 600] [--max-jobs 8] [--step-seconds 0.05]

Four Celery worker processes (``--workers``), each with its own node name, two on ``host-a`` and two on
``host-b`` (all on this machine, the only one there is), consume every queue of one database and one
Redis, as a deployment of two worker machines would. ``--jobs`` jobs of three ``sleep`` steps
(``--step-seconds`` each) are submitted in batches through ``jobs_submit`` (the service behind POST
/jobs) with ``max_jobs`` at ``--max-jobs``, so the dispatcher keeps the slots full and every worker
competes for the same steps. Then, from the rows alone:

- no job started twice: every task ran one attempt, and its job's log has one start line per task;
- ``max_jobs`` never exceeded: the largest number of jobs whose ``started_at``..``finished_at`` overlap
  (exact from the rows) and the largest number of started jobs seen by polling every 20 ms;
- throughput per worker process: steps each pid ran, and steps per second.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import Counter
from typing import Any

from bench import common


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=600)
    parser.add_argument("--max-jobs", type=int, default=8)
    parser.add_argument("--step-seconds", type=float, default=0.05)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args(argv)

    env = common.setup_django("te_bench_scale_out")
    common.reset_jobs()
    common.set_setting("max_jobs", args.max_jobs)
    common.set_setting("priority_slots", 0)
    client_name, _ = common.bench_client()

    from django.db import connection, transaction

    from clients.models import Client
    from jobs.models import Job, Task
    from jobs.services import SubmitRequest, jobs_submit
    from jobs.states import JobState
    from logs.models import LogEntry
    from monitoring import workers as heartbeats

    procs = common.Processes()
    load_before = common.machine()
    seen_started = [0]
    stop = threading.Event()
    try:
        for i in range(args.workers):
            host = "host-a" if i < args.workers // 2 else "host-b"
            procs.celery_worker(f"w{i + 1}", env, concurrency=args.concurrency, host=host)
        common.wait_until(
            lambda: len(heartbeats.live_workers()) >= args.workers, timeout=90, what="the workers' heartbeats"
        )
        client = Client.objects.get(name=client_name)
        parameters = {"seconds": args.step_seconds}
        definition = [{"step": "sleep", "parameters": parameters}] * 3
        from jobs.models import WorkflowDefinition

        WorkflowDefinition.objects.update_or_create(
            client=client, name="sleep3", defaults={"steps": definition}
        )

        def poll() -> None:
            from django.db import connections

            while not stop.wait(0.02):
                started = Job.objects.filter(queue_state=JobState.STARTED).count()
                seen_started[0] = max(seen_started[0], started)
            connections.close_all()

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        start = time.monotonic()
        for first in range(0, args.jobs, 500):
            wanted = [
                SubmitRequest("sleep3", {"content_id": f"s{first + i}"})
                for i in range(min(500, args.jobs - first))
            ]
            with transaction.atomic():
                outcomes = jobs_submit(client=client, requests=wanted)
            assert all(o.error is None for o in outcomes), outcomes[:3]
        common.wait_until(
            lambda: Job.objects.exclude(queue_state=JobState.COMPLETED).count() == 0,
            timeout=1800,
            interval=0.2,
            what="every job",
        )
        elapsed = time.monotonic() - start
    finally:
        stop.set()
        procs.stop_all()
        common.redis_cleanup()

    failed = Job.objects.filter(failed=True).count()
    retried = Task.objects.filter(attempts__gt=1).count()
    starts = Counter(
        LogEntry.objects.filter(message__startswith="Task '", message__endswith="' started").values_list(
            "task_id", flat=True
        )
    )
    started_twice = sum(1 for count in starts.values() if count > 1)
    with connection.cursor() as cursor:
        # The most jobs running at once, exactly: each start +1, each end -1, in time order.
        cursor.execute(
            "SELECT max(running) FROM (SELECT sum(delta) OVER (ORDER BY at, delta) AS running FROM ("
            " SELECT started_at AS at, 1 AS delta FROM jobs_job UNION ALL"
            " SELECT finished_at, -1 FROM jobs_job) AS events) AS overlap"
        )
        overlap = int(cursor.fetchone()[0] or 0)
    per_worker = Counter(Task.objects.values_list("worker", flat=True))
    steps = sum(per_worker.values())
    summary = {
        "jobs": args.jobs,
        "workers": args.workers,
        "concurrency": args.concurrency,
        "max_jobs": args.max_jobs,
        "failed": failed,
        "tasks_retried": retried,
        "tasks_started_twice": started_twice,
        "max_running_from_rows": overlap,
        "max_started_polled": seen_started[0],
        "max_jobs_exceeded": max(overlap, seen_started[0]) > args.max_jobs,
        "seconds": round(elapsed, 2),
        "steps_per_second": round(steps / elapsed, 1),
        "steps_per_worker_process": {worker: count for worker, count in sorted(per_worker.items())},
        "steps_per_second_per_process": {
            worker: round(count / elapsed, 1) for worker, count in sorted(per_worker.items())
        },
        "machine_before": load_before,
        "machine_after": common.machine(),
    }
    print("scale_out " + json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
