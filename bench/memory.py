"""Item 6 of issue 6: a worker's resident memory after N steps against after N/10 steps.

    .venv/bin/python -m bench.memory [--first 10000] [--second 100000]

One engine worker (every queue, prefork 2) runs ``noop5`` jobs submitted with ``jobs.services.job_submit``
in batches of 200 (the API is not what is measured here). RSS (VmRSS) of the worker's main process and
of each pool process is read from /proc after ``--first`` and after ``--second`` steps; the figure is the
growth of the pool processes' total between the two points. ``--max-tasks-per-child`` is not set: the
pool processes live for the whole run (``ps`` shows the same pids at both points, checked here).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench import common

BATCH = 200


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out.extend(int(x) for x in text)
    return sorted(out)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first", type=int, default=10_000)
    parser.add_argument("--second", type=int, default=100_000)
    args = parser.parse_args(argv)

    env = common.setup_django("te_bench_memory")
    from clients.models import Client
    from jobs.models import Job
    from jobs.services import job_submit
    from jobs.states import JobState

    common.reset_jobs()
    common.set_setting("max_jobs", 1000)
    name, _ = common.bench_client()
    client = Client.objects.get(name=name)
    procs = common.Processes()
    load_before = common.machine()
    points: dict[str, Any] = {}
    steps = 0
    started = time.monotonic()
    try:
        worker = procs.celery_worker("worker", env)
        common.wait_worker_ready(common.PREFIX)
        for target in (args.first, args.second):
            while steps < target:
                batch = min(BATCH, (target - steps) // 5) or 1
                ids = [job_submit(client=client, workflow="noop5", parameters={})[0].pk for _ in range(batch)]
                common.wait_until(
                    lambda ids=ids: (  # type: ignore[misc]
                        Job.objects.filter(pk__in=ids, queue_state=JobState.COMPLETED).count() == len(ids)
                    ),
                    timeout=600,
                    interval=0.2,
                    what="a batch",
                )
                steps += 5 * len(ids)
            time.sleep(1)
            pool = children(worker.pid)
            points[str(target)] = {
                "steps": steps,
                "main_kb": rss_kb(worker.pid),
                "pool_pids": pool,
                "pool_kb": [rss_kb(p) for p in pool],
                "elapsed_s": round(time.monotonic() - started, 1),
            }
            print(f"  after {steps} steps: {points[str(target)]}", flush=True)
    finally:
        procs.stop_all()
        common.redis_cleanup()
    first, second = points[str(args.first)], points[str(args.second)]
    growth = (sum(second["pool_kb"]) - sum(first["pool_kb"])) / sum(first["pool_kb"]) * 100
    summary = {
        "first_steps": first["steps"],
        "second_steps": second["steps"],
        "pool_kb_first": sum(first["pool_kb"]),
        "pool_kb_second": sum(second["pool_kb"]),
        "pool_growth_pct": round(growth, 1),
        "main_kb_first": first["main_kb"],
        "main_kb_second": second["main_kb"],
        "same_pool_processes": first["pool_pids"] == second["pool_pids"],
        "machine_before": load_before,
        "machine_after": common.machine(),
    }
    print("memory " + json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
