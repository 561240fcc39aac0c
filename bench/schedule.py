"""Item 4 of issue 6: scheduling lag of 500 jobs due at spread times over a minute.

    .venv/bin/python -m bench.schedule [--jobs 500] [--spread 60]

500 ``noop`` jobs are submitted through ``POST /job`` with ``run_at`` spread evenly over ``--spread``
seconds, starting 15 s after submission began; one engine worker (every queue, prefork 2) and
``celery beat`` (django-celery-beat, the sweep every ``schedule_interval`` = 60 s) run. The lag of a job
is ``started_at - run_at`` from its row. Side by side, in the same run and on the same Redis, the
floor: 500 raw Celery tasks with ``eta`` at the same times (bench/rawcelery.py), whose lag is the time
their body ran minus the eta.
"""

from __future__ import annotations

import argparse
import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from bench import common


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--spread", type=float, default=60)
    parser.add_argument("--lead", type=float, default=15)
    args = parser.parse_args(argv)

    env = common.setup_django("te_bench")
    import redis as redislib

    from bench import rawcelery
    from jobs.models import Job
    from jobs.states import JobState

    redis = redislib.Redis.from_url(common.REDIS_URL)
    common.reset_jobs()
    common.set_setting("max_jobs", 1000)
    client, key = common.bench_client()
    procs = common.Processes()
    port = common.free_port()
    load_before = common.machine()
    try:
        procs.gunicorn(env, port)
        procs.celery_worker("worker", env)
        procs.celery_worker("raw-worker", env, app="bench.rawcelery", queues=["raw"], concurrency=1)
        procs.spawn(
            "beat",
            [common.sys.executable, "-m", "celery", "-A", "taskengine_site", "beat", "-S",
             "django_celery_beat.schedulers:DatabaseScheduler", "-l", "warning", "--pidfile=",
             "--schedule", str(procs.logdir / "beat-schedule")],
            env,
        )  # fmt: skip
        common.wait_worker_ready(common.PREFIX)
        base = datetime.now(UTC) + timedelta(seconds=args.lead)
        due = [base + timedelta(seconds=args.spread * i / args.jobs) for i in range(args.jobs)]
        ids: list[int] = []
        lock = threading.Lock()

        def submit(part: list[datetime]) -> None:
            api = common.Api(port, client, key)
            for run_at in part:
                stamp = run_at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{run_at.microsecond // 1000:03d}Z"
                status, body = api.request(
                    "POST", "/job", {"job": {"workflow": "noop", "run_at": stamp}, "parameters": {}}
                )
                assert status == 200, body
                with lock:
                    ids.append(json.loads(body)["id"])

        threads = [threading.Thread(target=submit, args=(due[i::4],)) for i in range(4)]
        for t in threads:
            t.start()
        for run_at in due:  # the floor: raw Celery eta tasks at the same times
            rawcelery.eta_probe.apply_async(args=(run_at.timestamp(),), eta=run_at)
        for t in threads:
            t.join()
        submitted = datetime.now(UTC)
        if submitted > base:
            print(f"  warning: submitted {(submitted - base).total_seconds():.1f} s after the first run_at")
        jobs = Job.objects.filter(pk__in=ids)
        common.wait_until(
            lambda: jobs.filter(started_at__isnull=False).count() == args.jobs,
            timeout=args.lead + args.spread + 120,
            interval=0.5,
            what="every job started",
        )
        common.wait_until(
            lambda: redis.llen(common.PREFIX + "raw:eta") >= args.jobs, timeout=60, what="raw eta tasks"
        )
        lags = [(s - r).total_seconds() for s, r in jobs.values_list("started_at", "run_at") if s is not None]
        raw = [float(x) for x in redis.lrange(common.PREFIX + "raw:eta", 0, -1)]
        early = jobs.filter(queue_state=JobState.SCHEDULED).count()
    finally:
        procs.stop_all()
        common.redis_cleanup()
    summary = {
        "jobs": args.jobs,
        "engine_lag_p50_s": round(common.pct(lags, 50), 3),
        "engine_lag_p99_s": round(common.pct(lags, 99), 3),
        "engine_lag_max_s": round(max(lags), 3),
        "engine_lag_min_s": round(min(lags), 3),
        "celery_eta_lag_p50_s": round(common.pct(raw, 50), 3),
        "celery_eta_lag_p99_s": round(common.pct(raw, 99), 3),
        "still_scheduled": early,
        "machine_before": load_before,
        "machine_after": common.machine(),
    }
    print("schedule " + json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
