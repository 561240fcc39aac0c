"""Item 2 of issue 6, the CPU side: what one ``POST /job`` costs in-process, by section.

    .venv/bin/python -m bench.submit_cpu [--requests 400] [--without-publish] [--batch N]
                                         [--database te_bench_submit] [--profile N]

Calls the WSGI application the way gunicorn does (same environ, whole middleware stack, a real
Postgres and Redis, one thread), and reports the CPU time (``time.thread_time``, so waiting on
Postgres or Redis is not counted) per request: in total and in the sections that matter, each
measured by wrapping the function. Sections nest (``job_submit`` holds ``insert`` and ``publish``);
those of the DRF view show only for the requests jobs.api.submit hands to it (and for ``--batch``).
Beside it, the CPU of the Postgres backend serving the requests (from /proc, in 10 ms ticks).
``--without-publish`` replaces the dispatch publish by a no-op to show its share. ``--batch N`` sends
``POST /jobs`` with N jobs a request instead (figures per job, and the wall-clock rate of jobs
accepted, Postgres included). ``--profile N`` prints cProfile's top N functions (thread CPU time; the
profile slows the run; ``BENCH_PROFILE_OUT`` keeps the stats, ``BENCH_PROFILE_SORT`` orders them). On
a machine shared with other work the absolute figures move with the load (compare runs made one right
after the other); the shares are steadier.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import time
from collections.abc import Callable
from typing import Any

from bench import common

BODY = json.dumps({"job": {"workflow": "noop"}, "parameters": {"content_id": "bench"}}).encode()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--without-publish", action="store_true")
    parser.add_argument("--batch", type=int, default=0, help="jobs per POST /jobs request (0: POST /job)")
    parser.add_argument("--database", default="te_bench_submit", help="emptied at the start of the run")
    parser.add_argument("--profile", type=int, default=0, help="print the top N functions (cProfile)")
    args = parser.parse_args(argv)

    common.setup_django(args.database)
    common.reset_jobs()
    client, key = common.bench_client()

    from django.db.backends.base.base import BaseDatabaseWrapper
    from rest_framework.request import Request
    from rest_framework.views import APIView

    from clients.authentication import ApiKeyAuthentication
    from jobs import services
    from jobs.api import serializers, submit, views
    from jobs.engine import bus
    from taskengine_site.api import ClientRateThrottle

    if args.without_publish:
        bus._send = lambda *a, **k: None

    # In the order printed (nested sections indented under their parent).
    spent: dict[str, float] = {}

    def wrap(owner: Any, name: str, label: str) -> None:
        inner: Callable[..., Any] = getattr(owner, name)

        def timed(*a: Any, **k: Any) -> Any:
            start = time.thread_time()
            try:
                return inner(*a, **k)
            finally:
                spent[label] += time.thread_time() - start

        spent[label] = 0.0
        setattr(owner, name, timed)

    # A POST /job the plain view answers (jobs.api.submit) shows no DRF section: its own sections are
    # counted under the same labels (each function is reached through one of the two modules only).
    wrap(APIView, "dispatch", "DRF view (requests handed to it)")
    wrap(APIView, "initial", "  drf initial: auth, throttle, permission")
    wrap(ApiKeyAuthentication, "authenticate", "auth (incl. the health check)")
    wrap(submit, "authenticate_headers", "auth (incl. the health check)")
    wrap(submit, "authenticate_remembered", "auth (incl. the health check)")
    wrap(submit, "authenticate_checked", "auth (incl. the health check)")
    wrap(submit, "remembered_client", "auth (incl. the health check)")
    wrap(submit, "remembered_in_use", "auth (incl. the health check)")
    wrap(BaseDatabaseWrapper, "close_if_health_check_failed", "  CONN_HEALTH_CHECKS SELECT 1")
    wrap(ClientRateThrottle, "allow_request", "throttle")
    wrap(submit, "rate_limit_wait_reading", "throttle")  # and the API keys token, same round trip
    wrap(Request, "_parse", "body read + parse")
    wrap(submit, "_plain_body", "body read + parse")
    wrap(views, "plain_submission", "body check: plain")
    wrap(submit, "plain_submission", "body check: plain")
    wrap(serializers.JobSubmitSerializer, "is_valid", "body check: JobSubmitSerializer")
    wrap(views, "job_submit", "job_submit")  # both paths submit through views.submit_checked
    wrap(views, "jobs_submit", "jobs_submit (batch)")
    wrap(services, "_prepare", "  checks (each job)")
    wrap(services, "_insert_many", "  insert job(s) + log entries")
    wrap(bus, "_send", "  dispatch publish (Celery)")

    from taskengine_site.handler import Handler

    app = Handler()  # the web process's handler (taskengine_site/wsgi.py, without its warm-up)
    statuses: list[str] = []
    path, payload = "/job", BODY
    if args.batch:
        item = json.loads(BODY)
        path, payload = "/jobs", json.dumps({"jobs": [item] * args.batch}).encode()
    per_job = max(1, args.batch)

    def one() -> None:
        environ = {
            "REQUEST_METHOD": "POST", "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000", "HTTP_HOST": "127.0.0.1:8000",
            "HTTP_CLIENT": client, "HTTP_API_KEY": key, "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(payload)), "HTTP_USER_AGENT": "bench",
            "wsgi.input": io.BytesIO(payload), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
            "wsgi.version": (1, 0), "wsgi.multithread": True, "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }  # fmt: skip

        def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            statuses.append(status)

        response: Any = app(environ, start_response)
        b"".join(response)
        response.close()

    from django.db import connection

    from bench.engine_cpu import _backend_cpu

    load_before = common.machine()
    profiler = cProfile.Profile(time.thread_time) if args.profile else None
    try:
        for _ in range(50):  # warm-up: imports, connections, the statements built once
            one()
        spent.update(dict.fromkeys(spent, 0.0))
        statuses.clear()
        with connection.cursor() as cursor:  # the warm-up's requests made the connection
            cursor.execute("SELECT pg_backend_pid()")
            backend = int(cursor.fetchone()[0])
        pg_start = _backend_cpu(backend)
        if profiler:
            profiler.enable()
        start, wall = time.thread_time(), time.perf_counter()
        for _ in range(args.requests):
            one()
        total, wall = time.thread_time() - start, time.perf_counter() - wall
        if profiler:
            profiler.disable()
        pg_end = _backend_cpu(backend)
    finally:
        common.redis_cleanup()
    jobs = args.requests * per_job
    per_request = {label: round(1000 * value / jobs, 3) for label, value in spent.items() if value}
    summary = {
        "requests": args.requests,
        "jobs_per_request": per_job,
        "statuses": sorted(set(statuses)),
        "publish": not args.without_publish,
        "cpu_ms_per_job": round(1000 * total / jobs, 3),
        # The Postgres backend serving this thread's connection (from /proc: 10 ms ticks).
        "postgres_cpu_ms_per_job": (
            None if pg_start is None or pg_end is None else round(1000 * (pg_end - pg_start) / jobs, 3)
        ),
        "jobs_per_second": round(jobs / wall, 1),
        "sections_ms": per_request,
        "machine_before": load_before,
        "machine_after": common.machine(),
    }
    for label, value in summary["sections_ms"].items():
        print(f"  {label:42s} {value:7.3f} ms")
    print("submit_cpu " + json.dumps(summary), flush=True)
    if profiler:
        if os.environ.get("BENCH_PROFILE_OUT"):
            profiler.dump_stats(os.environ["BENCH_PROFILE_OUT"])
        pstats.Stats(profiler).sort_stats(os.environ.get("BENCH_PROFILE_SORT", "cumulative")).print_stats(
            args.profile
        )
    return summary


if __name__ == "__main__":
    main()
