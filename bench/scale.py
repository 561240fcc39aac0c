"""Items 3 and 5 of issue 6: GET /jobs with every filter, GET /health and GET /dashboard at 1,000,000 jobs.

    .venv/bin/python -m bench.scale [--rows 1000000] [--requests 200] [--reload]

The database ``te_bench_1m`` is created, migrated and filled once with ``generate_series`` (about a
minute; kept between runs, ``--reload`` refills it): 5 clients, creation times over 90 days, parameters
``{"content_id": "c<n>", "folder": "f<n % 1000>"}``, states like a busy engine's history: 95% completed
(a tenth of them failed), 2% broken, 1% paused, 5,000 queued, 5,000 scheduled, 500 pending, 20 started.

Each endpoint is requested ``--requests`` times in turn by one keep-alive client against gunicorn
(2 workers x 4 threads); p50/p99 are reported, and the CPU time gunicorn and the Postgres backends
spent per request (from /proc: on a shared machine latency mostly tells how busy the cores are). After
a fill, the created_at/id bound is recomputed and the table vacuumed (jobs/migrations/0004). The query
plan (EXPLAIN ANALYZE) of every listing's SQL, captured from Django, is written to
bench/results/plans.txt. For item 5 an engine worker runs and is
stopped with SIGSTOP before /health and /dashboard are measured (its heartbeat ages out meanwhile).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from bench import common

DB = "te_bench_1m"
RESULTS = Path(__file__).resolve().parent / "results"

LISTINGS: list[tuple[str, str]] = [
    ("default", "/jobs"),
    ("limit=1000", "/jobs?limit=1000"),
    ("state=0", "/jobs?state=0"),
    ("state=2", "/jobs?state=2"),
    ("failed=1", "/jobs?failed=1"),
    ("failed=0", "/jobs?failed=0"),
    ("client", "/jobs?client=client3"),
    ("from/to", "/jobs?from=2026-09-10&to=2026-09-20"),
    ("search", "/jobs?search=c123456"),
    ("search folder", "/jobs?search=f777"),
    ("search none", "/jobs?search=nomatch"),
    ("job_ids", "/jobs?job_ids=" + ",".join(str(i) for i in range(1000, 100_000, 1000))),
    ("persist=1", "/jobs?persist=1"),
    ("order_by=run_at asc", "/jobs?order_by=run_at&asc=1"),
    ("order_by=priority", "/jobs?order_by=priority"),
    ("order_by=client", "/jobs?order_by=client"),
    ("state+client", "/jobs?state=2&client=client2"),
    ("failed+client+from", "/jobs?failed=1&client=client1&from=2026-09-01"),
    ("state+search", "/jobs?state=2&search=c4242"),
    ("client+from/to+asc", "/jobs?client=client4&from=2026-10-01&to=2026-10-03&asc=1"),
    ("state=5 order_by=run_at", "/jobs?state=5&order_by=run_at&asc=1"),
]

FILL = """
INSERT INTO jobs_job (client_id, workflow, priority, position, top_of_queue, parameters, queue_state, failed,
    persist, run_at, semaphore_url, workflow_uuid, idempotency_key, definition, rerun_of_id, message,
    created_at, updated_at, started_at, finished_at)
SELECT c.ids[1 + (g %% 5)], 'noop5', 1 + (g %% 10), 1, false,
    jsonb_build_object('content_id', 'c' || g, 'folder', 'f' || (g %% 1000)),
    s.state, s.state = 2 AND g %% 10 = 0, g %% 50 = 0,
    CASE WHEN s.state = 5 THEN now() + (g %% 86400) * interval '1 second' ELSE t.created END,
    NULL, md5(g::text)::uuid, NULL, NULL, NULL, '',
    t.created, t.created, CASE WHEN s.state IN (1, 2) THEN t.created END,
    CASE WHEN s.state = 2 THEN t.created + interval '1 minute' END
FROM generate_series(1, %(rows)s) AS g,
LATERAL (SELECT now() - interval '90 days' + (g::float / %(rows)s) * interval '90 days' AS created) AS t,
LATERAL (SELECT CASE
    WHEN g > %(rows)s - 20 THEN 1
    WHEN g > %(rows)s - 5020 THEN 0
    WHEN g > %(rows)s - 10020 THEN 5
    WHEN g > %(rows)s - 10520 THEN 3
    WHEN g %% 100 < 2 THEN 4
    WHEN g %% 100 = 2 THEN 6
    ELSE 2 END AS state) AS s,
(SELECT array_agg(id ORDER BY name) AS ids FROM clients_client WHERE name LIKE 'client%%') AS c
"""


def load(rows: int, reload: bool) -> None:
    from django.db import connection

    from clients.models import Client
    from jobs.engine.counts import job_counts_compact

    for i in range(5):
        if not Client.objects.filter(name=f"client{i}").exists():
            Client.objects.create(name=f"client{i}")
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM jobs_job")
        have = cursor.fetchone()[0]
        if have == rows and not reload:
            return
        print(f"loading {rows} jobs into {DB} …", flush=True)
        started = time.monotonic()
        cursor.execute("TRUNCATE logs_logentry, jobs_task, jobs_job RESTART IDENTITY CASCADE")
        cursor.execute(FILL, {"rows": rows})
        # The fill inserts 90 days of history in one statement, so the insert trigger records a created_at
        # up to 90 days behind the clock; rows inserted as they were created would not. The exact figure
        # for the loaded rows is what a live engine's history would give (jobs/migrations/0004).
        cursor.execute("SELECT jobs_job_created_skew_recompute()")
        print(f"created_at runs at most {cursor.fetchone()[0]} against id", flush=True)
    # A live table is vacuumed by autovacuum as it grows; one bulk fill is not yet (index-only scans need
    # the visibility map). The counts' million delta rows are folded first, as /health would; the folded
    # rows land on the table's last page, so only VACUUM FULL gives back the 5,000 empty pages before them
    # that /health's scan would read (a live engine never has a million deltas at once).
    job_counts_compact()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM (ANALYZE) jobs_job")
        # The search text's table (migration 0010): vacuuming also merges its trigram index's pending
        # list, which a bulk fill leaves long and every search would otherwise read through.
        cursor.execute("VACUUM (ANALYZE) jobs_job_search")
        cursor.execute("VACUUM (FULL, ANALYZE) jobs_job_state_count")
    print(f"loaded in {time.monotonic() - started:.0f} s", flush=True)


def capture_plans(client_name: str) -> str:
    """EXPLAIN ANALYZE of the SQL each listing runs (through the real filter and view code)."""
    from django.db import connection
    from django.test import Client as HttpClient
    from django.test.utils import CaptureQueriesContext

    from clients.models import Client
    from clients.services import api_key_issue

    operator = Client.objects.get(name=client_name)
    _, key = api_key_issue(client=operator)
    http = HttpClient(HTTP_CLIENT=client_name, HTTP_API_KEY=key)
    out: list[str] = []
    for label, path in [*LISTINGS, ("dashboard", "/dashboard"), ("health", "/health")]:
        with CaptureQueriesContext(connection) as captured:
            response = http.get(path, HTTP_HOST="127.0.0.1")
        out.append(f"## {label}: GET {path[:120]} -> {response.status_code}, {len(captured)} queries\n")
        for query in captured.captured_queries:
            sql = query["sql"]
            if not sql.lstrip().upper().startswith("SELECT") or "jobs_job" not in sql:
                continue
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) " + sql)
                plan = "\n".join(row[0] for row in cursor.fetchall())
            out.append(f"```\n{sql[:600]}\n{plan}\n```\n")
    return "\n".join(out)


def _cpu_ms(pids: list[int]) -> dict[int, float]:
    """User + system CPU time (ms) of each of these processes still alive, from /proc."""
    return {pid: seconds * 1000 for pid, seconds in common.cpu_seconds(pids).items()}


def server_pids(web_group: int, dbname: str | None = None) -> list[int]:
    """gunicorn's processes (its process group) and the Postgres backends serving ``dbname`` (this
    benchmark's database by default)."""
    from django.db import connection

    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == web_group:
                    pids.append(int(entry.name))
            except OSError:
                continue
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [dbname or DB]
        )
        pids += [row[0] for row in cursor.fetchall()]
    return pids


def measure(api: common.Api, path: str, n: int, web_group: int | None = None) -> dict[str, Any]:
    """p50/p99 as the client sees it, and the server's CPU per request (gunicorn + Postgres backends):
    on a shared machine the latency mostly tells how busy the cores are, the CPU time what a request
    costs."""
    times: list[float] = []
    errors = 0
    before = _cpu_ms(server_pids(web_group)) if web_group is not None else {}
    for _ in range(n):
        t = time.monotonic()
        status, _ = api.request("GET", path)
        times.append((time.monotonic() - t) * 1000)
        errors += status != 200
    result: dict[str, Any] = {
        "p50_ms": round(common.pct(times, 50), 1),
        "p99_ms": round(common.pct(times, 99), 1),
        "errors": errors,
    }
    if web_group is not None:
        # A backend that started during the run counts whole; one that ended is lost (counts low).
        after = _cpu_ms(server_pids(web_group) + list(before))
        spent = sum(total - before.get(pid, 0.0) for pid, total in after.items())
        result["server_cpu_ms"] = round(spent / n, 2)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--reload", action="store_true")
    parser.add_argument("--plans", default=str(RESULTS / "plans.txt"))
    args = parser.parse_args(argv)

    env = common.setup_django(DB)
    load(args.rows, args.reload)
    client, key = common.bench_client("bench-operator")
    RESULTS.mkdir(exist_ok=True)
    Path(args.plans).write_text(
        f"# Query plans at {args.rows} jobs ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n"
        + capture_plans(client)
    )
    procs = common.Processes()
    port = common.free_port()
    load_before = common.machine()
    results: dict[str, Any] = {}
    try:
        web = procs.gunicorn(env, port)
        api = common.Api(port, client, key)
        for _, path in LISTINGS:  # warm-up: caches, connections, imports
            api.request("GET", path)
        for label, path in LISTINGS:
            results[label] = measure(api, path, args.requests, web.pid)
            print(f"  {label}: {results[label]}", flush=True)
        worker = procs.celery_worker("worker", env)
        common.wait_worker_ready(common.PREFIX)
        os.killpg(worker.pid, signal.SIGSTOP)
        try:
            for label, path in (("health", "/health"), ("dashboard", "/dashboard")):
                api.request("GET", path)
                results[label] = measure(api, path, args.requests, web.pid)
                print(f"  {label} (worker stopped): {results[label]}", flush=True)
        finally:
            os.killpg(worker.pid, signal.SIGCONT)
    finally:
        procs.stop_all()
        common.redis_cleanup()
    listing = {k: v for k, v in results.items() if k not in ("health", "dashboard")}
    worst = max(listing, key=lambda k: listing[k]["p99_ms"])
    summary = {
        "rows": args.rows,
        "listings": len(listing),
        "listing_worst_p99_ms": listing[worst]["p99_ms"],
        "listing_worst": worst,
        "listing_errors": sum(v["errors"] for v in listing.values()),
        "health_p99_ms": results["health"]["p99_ms"],
        "dashboard_p99_ms": results["dashboard"]["p99_ms"],
        "machine_before": load_before,
        "machine_after": common.machine(),
    }
    (RESULTS / "scale.json").write_text(json.dumps(results, indent=1))
    print("scale " + json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
