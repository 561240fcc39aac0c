"""What every benchmark needs: its own database and Redis keys, gunicorn and Celery processes, a client.

Environment (all optional):

- ``BENCH_PG`` — the server, default ``postgres://root@127.0.0.1:5432``; each benchmark uses its own
  database on it (``te_bench``, ``te_bench_1m``), created and migrated here.
- ``BENCH_REDIS`` — default ``redis://127.0.0.1:6379/8``; every run uses its own key prefix
  (``TASKENGINE_BROKER_PREFIX=bench-<pid>:``) and deletes its keys at the end (never FLUSHDB).

Processes get the environment the e2e tests give theirs (tests/e2e/conftest.py).
"""

from __future__ import annotations

import http.client
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import psycopg

BASE_DIR = Path(__file__).resolve().parent.parent
ALL_QUEUES = ("controller", "work", "windows_capture", "callback", "scheduler")
PG_SERVER = os.environ.get("BENCH_PG", "postgres://root@127.0.0.1:5432")
REDIS_URL = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/8")
PREFIX = f"bench-{os.getpid()}:"


def database_url(name: str) -> str:
    return f"{PG_SERVER}/{name}"


def base_env(dbname: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": database_url(dbname),
            "REDIS_URL": REDIS_URL,
            "SECRET_KEY": "bench",
            "DJANGO_SETTINGS_MODULE": "taskengine_site.settings",
            "TASKENGINE_BROKER_PREFIX": PREFIX,
            "TASKENGINE_KEY_PREFIX": PREFIX + "cache",
            "TASKENGINE_ALLOW_PRIVATE_URLS": "true",
            "TASKENGINE_STORAGE_ROOT": tempfile.mkdtemp(prefix="te-bench-storage-"),
            "PYTHONUNBUFFERED": "1",
            "DEBUG": "false",
            # The per-client request limit is policy, not capacity; the benchmarks measure capacity.
            "TASKENGINE_RATE_LIMIT": "10000000/minute",
        }
    )
    env.update(extra)
    return env


def ensure_database(dbname: str) -> bool:
    """Create ``dbname`` when missing; return True when it was created."""
    with psycopg.connect(database_url("postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [dbname]).fetchone()
        if exists:
            return False
        conn.execute(f'CREATE DATABASE "{dbname}"')
        return True


def setup_django(dbname: str) -> dict[str, str]:
    """Point this process at ``dbname`` (created and migrated) and set Django up; return the env."""
    env = base_env(dbname)
    ensure_database(dbname)
    os.environ.update(env)
    sys.path.insert(0, str(BASE_DIR))
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=BASE_DIR, env=env, check=True
    )
    import django

    django.setup()
    return env


def reset_jobs(history: int = 0) -> None:
    """Empty the job tables of the bench database (not the 1M one); with ``history``, fill them with that
    many finished jobs of a client of their own (``HISTORY_SQL``) and VACUUM ANALYZE them."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE logs_logentry, jobs_task, jobs_job RESTART IDENTITY CASCADE")
        if not history:
            return
        cursor.execute(
            "INSERT INTO clients_client (name, is_operator, is_active, webhook_secret, created_at)"
            " VALUES ('bench-history', false, true, '', now()) ON CONFLICT (name) DO NOTHING"
        )
        for statement in HISTORY_SQL:
            cursor.execute(statement, {"rows": history})
        cursor.execute("SELECT jobs_job_created_skew_recompute()")
    from jobs.engine.counts import job_counts_compact

    job_counts_compact()
    with connection.cursor() as cursor:
        for table in ("jobs_job", "jobs_task", "logs_logentry", "jobs_job_state_count"):
            cursor.execute(f"VACUUM (ANALYZE) {table}")


# A running engine's tables hold the jobs it finished before: a day of completed five-step jobs, each with
# its tasks and three log entries. Empty tables mislead the planner: a worker's first statements, planned
# while the tables hold a page or two, get generic plans that scan whole tables (the task rows of every
# job, for each step's end), kept by that connection until an autoanalyze, a minute or more later, so a
# benchmark's first round paid twice the Postgres CPU of its second (bench/README.md, issue 16).
HISTORY_SQL = (
    """
INSERT INTO jobs_job (client_id, workflow, priority, position, top_of_queue, parameters, queue_state, failed,
    persist, run_at, semaphore_url, workflow_uuid, idempotency_key, definition, rerun_of_id, message,
    created_at, updated_at, started_at, finished_at)
SELECT c.id, 'noop5', 5, 1, false, jsonb_build_object('content_id', 'h' || g), 2, false, false, t.created,
    NULL, md5('history' || g)::uuid, NULL, NULL, NULL, 'Workflow complete.', t.created, t.created, t.created,
    t.created + interval '1 second'
FROM generate_series(1, %(rows)s) AS g,
LATERAL (SELECT now() - interval '1 day' + (g::float / %(rows)s) * interval '23 hours' AS created) AS t,
(SELECT id FROM clients_client WHERE name = 'bench-history') AS c
""",
    """
INSERT INTO jobs_task (job_id, position, name, queue, parameters, state, attempts, result, error, progress,
    worker, heartbeat_at, next_attempt_at, created_at, updated_at, started_at, finished_at)
SELECT j.id, p.position, 'noop', 'work', '{}', 3, 1, 'null', '', 100.0, 'bench', j.created_at, NULL,
    j.created_at, j.finished_at, j.created_at, j.finished_at
FROM jobs_job AS j CROSS JOIN generate_series(0, 4) AS p(position)
""",
    """
INSERT INTO logs_logentry (job_id, task_id, severity, progname, message, visible, created_at, updated_at)
SELECT j.id, 0, 1, 'api', 'Workflow complete.', true, j.created_at, j.created_at
FROM jobs_job AS j CROSS JOIN generate_series(1, 3)
""",
)


def set_setting(name: str, value: int) -> None:
    from settings_app.services import setting_set

    setting_set(name=name, value=value)


def bench_client(name: str = "bench", operator: bool = True) -> tuple[str, str]:
    """A client and a fresh API key: (name, key)."""
    from clients.models import Client
    from clients.services import api_key_issue, client_create

    client = Client.objects.filter(name=name).first()
    if client is None:
        client, key = client_create(name=name, is_operator=operator)
        return name, key
    _, key = api_key_issue(client=client)
    return name, key


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Processes:
    """Spawned processes (each in its own process group), stopped together at the end."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        self.logdir = Path(tempfile.mkdtemp(prefix="te-bench-logs-"))

    def spawn(self, name: str, args: Sequence[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = self.logdir / f"{name}.log"
        popen = subprocess.Popen(
            list(args),
            cwd=BASE_DIR,
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append((name, popen, log))
        return popen

    def log(self, name: str) -> str:
        for n, _, log in self.procs:
            if n == name:
                return log.read_text(errors="replace")
        return ""

    def celery_worker(
        self,
        name: str,
        env: dict[str, str],
        *,
        app: str = "taskengine_site",
        queues: Sequence[str] = ALL_QUEUES,
        concurrency: int = 2,
        host: str = "bench",
        pool: str = "prefork",
    ) -> subprocess.Popen[bytes]:
        hostname = f"{name}-{os.getpid()}@{host}"
        popen = self.spawn(
            name,
            [
                sys.executable, "-m", "celery", "-A", app, "worker", "-Q", ",".join(queues),
                "--concurrency", str(concurrency), "--pool", pool, "-n", hostname, "-l", "warning",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ],
            env,
        )  # fmt: skip
        return popen

    def gunicorn(
        self,
        env: dict[str, str],
        port: int,
        *,
        workers: int = 2,
        threads: int = 4,
        app: str = "taskengine_site.wsgi",
    ) -> subprocess.Popen[bytes]:
        popen = self.spawn(
            "web",
            [
                sys.executable, "-m", "gunicorn", app, "--bind", f"127.0.0.1:{port}",
                "--workers", str(workers), "--threads", str(threads), "--log-level", "warning",
                "--no-control-socket",  # its default path is one per user, shared by every instance
            ],
            env,
        )  # fmt: skip
        wait_until(lambda: _port_open(port), timeout=30, what="gunicorn to listen")
        return popen

    def stop_all(self) -> None:
        for _, popen, _ in self.procs:
            if popen.poll() is None:
                try:
                    os.killpg(popen.pid, signal.SIGCONT)
                    os.killpg(popen.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for _, popen, _ in self.procs:
            try:
                popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(popen.pid, signal.SIGKILL)
                popen.wait(timeout=5)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_until(
    predicate: Callable[[], Any], *, timeout: float, interval: float = 0.05, what: str = ""
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


def wait_worker_ready(prefix: str, count: int = 1, timeout: float = 30) -> None:
    """Wait until ``count`` engine workers published their heartbeat (jobs.engine.monitor)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    wait_until(
        lambda: client.zcard(f"{prefix}taskengine:workers") >= count, timeout=timeout, what="worker heartbeat"
    )


def redis_cleanup(prefix: str = PREFIX) -> None:
    """Delete this run's keys (and only them)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i : i + 500])


class Api:
    """A keep-alive HTTP client of one gunicorn (one connection per thread)."""

    def __init__(self, port: int, client: str, key: str) -> None:
        self.port = port
        self.headers = {"client": client, "api-key": key, "Content-Type": "application/json"}
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        payload = None if body is None else json.dumps(body)
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                self.conn.request(method, path, body=payload, headers=self.headers)
                response = self.conn.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: Iterable[int]) -> dict[int, float]:
    """User + system CPU seconds of each of these processes still alive (all its threads), from /proc."""
    spent = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        spent[pid] = (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime
    return spent


def machine() -> str:
    load = os.getloadavg()
    return f"nproc={os.cpu_count()} load={load[0]:.2f},{load[1]:.2f},{load[2]:.2f}"
