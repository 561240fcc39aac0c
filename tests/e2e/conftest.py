"""End-to-end fixtures: real ``celery worker`` and ``celery beat`` processes on this test run's database.

``engine_processes`` (function scope, implies ``transactional_db`` so the processes see committed rows)
starts processes on demand and stops them all at teardown, before pytest-django flushes the tables::

    def test_something(engine_processes):
        worker = engine_processes.start_worker()                       # every queue, concurrency 2
        engine_processes.start_worker(queues=["work"], concurrency=1)  # a second, narrower worker
        engine_processes.start_beat()                                  # django-celery-beat scheduler
        ...
        print(engine_processes.log(worker))                            # its combined output

Each process gets the environment of this run with ``DATABASE_URL`` pointing at the test database
(``test_<name>``), the same ``REDIS_URL``, ``SECRET_KEY`` and ``TASKENGINE_BROKER_PREFIX`` (so its queues
are this run's only), ``TASKENGINE_ALLOW_PRIVATE_URLS=true`` (receivers listen on loopback) and
``TASKENGINE_STORAGE_ROOT`` set to ``engine_processes.storage`` (a fresh folder, also put in Django's
settings for the test process), and a short heartbeat (``TASKENGINE_HEARTBEAT_SECONDS=1``,
``TASKENGINE_HEARTBEAT_STALE_SECONDS=5``: a task is presumed dead after 5 s without one).
``extra_env`` adds or overrides variables per process.

``start_worker`` returns once the worker published its first heartbeat (``monitoring.workers``), so it
consumes its queues when it returns. At teardown the processes get SIGTERM (SIGKILL after 15 s) and
the run's queues are emptied, so no message leaks into the next test. ``wait_until(predicate)``
polls until the predicate returns something truthy and returns it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

from tests.waiting import wait_until

ALL_QUEUES = ("controller", "work", "windows_capture", "callback", "scheduler")
BASE_DIR = Path(__file__).resolve().parents[2]


def database_url() -> str:
    """``DATABASE_URL`` with its database swapped for pytest-django's test database (``test_<name>``).

    Everything else (user, host or unix-socket directory, options) is kept as the run was given it.
    """
    from django.db import connection

    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path="/" + quote(connection.settings_dict["NAME"], safe="")))


@dataclass
class CeleryProcess:
    name: str
    kind: str  # "worker" or "beat"
    popen: subprocess.Popen[bytes]
    log_path: Path
    hostname: str = ""


class EngineProcesses:
    """Starts and stops Celery processes for one test; see the module docstring."""

    def __init__(self, workdir: Path, env: dict[str, str], storage: Path) -> None:
        self.workdir = workdir
        self.env = env
        self.storage = storage
        self.processes: list[CeleryProcess] = []

    def _spawn(
        self, kind: str, name: str, args: list[str], extra_env: dict[str, str] | None
    ) -> CeleryProcess:
        log_path = self.workdir / f"{name}.log"
        env = dict(self.env, **(extra_env or {}))
        popen = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "taskengine_site", *args],
            cwd=BASE_DIR,
            env=env,
            stdout=log_path.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: teardown stops the pool children too
        )
        process = CeleryProcess(name=name, kind=kind, popen=popen, log_path=log_path)
        self.processes.append(process)
        return process

    def start_worker(
        self,
        *,
        queues: Sequence[str] = ALL_QUEUES,
        concurrency: int = 2,
        name: str | None = None,
        pool: str = "prefork",
        extra_env: dict[str, str] | None = None,
        ready_timeout: float = 15.0,
    ) -> CeleryProcess:
        """Start ``celery worker -Q <queues>`` and wait until its heartbeat is in Redis."""
        from monitoring import workers

        name = name or f"worker{len([p for p in self.processes if p.kind == 'worker']) + 1}"
        hostname = f"{name}-{uuid.uuid4().hex[:8]}@e2e"
        process = self._spawn(
            "worker",
            name,
            [
                "worker",
                "-Q",
                ",".join(queues),
                "--concurrency",
                str(concurrency),
                "--pool",
                pool,
                "-n",
                hostname,
                "-l",
                "info",
                "--without-gossip",
                "--without-mingle",
            ],
            extra_env,
        )
        process.hostname = hostname

        def ready() -> bool:
            if process.popen.poll() is not None:
                raise AssertionError(f"celery worker {name} exited:\n{self.log(process)[-3000:]}")
            return any(w.get("hostname") == hostname for w in workers.live_workers())

        try:
            wait_until(ready, timeout=ready_timeout, interval=0.1)
        except AssertionError:
            raise AssertionError(
                f"celery worker {name} sent no heartbeat:\n{self.log(process)[-3000:]}"
            ) from None
        return process

    def start_beat(self, *, extra_env: dict[str, str] | None = None, name: str = "beat") -> CeleryProcess:
        """Start ``celery beat`` with the django-celery-beat database scheduler (``name`` names its log)."""
        process = self._spawn(
            "beat",
            name,
            [
                "beat",
                "-S",
                "django_celery_beat.schedulers:DatabaseScheduler",
                "-l",
                "info",
                "--pidfile=",
                "--schedule",
                str(self.workdir / "beat-schedule"),
            ],
            extra_env,
        )
        wait_until(lambda: "beat: Starting" in self.log(process) or process.popen.poll() is not None)
        if process.popen.poll() is not None:
            raise AssertionError(f"celery beat exited:\n{self.log(process)[-3000:]}")
        return process

    def log(self, process: CeleryProcess) -> str:
        return process.log_path.read_text(errors="replace")

    def stop(self, process: CeleryProcess, *, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        """Stop one process (SIGTERM: warm shutdown; SIGKILL: as if the machine lost it)."""
        if process.popen.poll() is None:
            os.killpg(process.popen.pid, sig)
        try:
            process.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.popen.pid, signal.SIGKILL)
            process.popen.wait(timeout=5)

    def stop_all(self) -> None:
        for process in self.processes:
            if process.popen.poll() is None:
                os.killpg(process.popen.pid, signal.SIGTERM)
        for process in self.processes:
            self.stop(process)


def empty_queues() -> None:
    """Empty this run's queues in Redis, unacknowledged messages included (as a flushed Redis would)."""
    from monitoring import broker as redis_queues

    client = redis_queues.redis_client()
    keys = [key for queue in ALL_QUEUES for key in redis_queues.queue_keys(queue)]
    # kombu keeps unacknowledged messages here; they would be restored into the next test's queues.
    prefix = redis_queues.key_prefix()
    keys += [f"{prefix}unacked", f"{prefix}unacked_index", f"{prefix}unacked_mutex"]
    client.delete(*keys)
    # The engine's dispatch flags live in the cache (jobs.engine.bus); a flushed Redis loses them too.
    from django.core.cache import cache

    from jobs.engine import bus

    cache.delete_many([bus.DISPATCH_PENDING_KEY, bus.DISPATCH_AGAIN_KEY])


@pytest.fixture
def engine_processes(transactional_db: None, tmp_path: Path, settings: Any) -> Iterator[EngineProcesses]:
    """Real Celery processes for this test (see the module docstring)."""
    storage = tmp_path / "storage"
    storage.mkdir()
    settings.TASKENGINE_STORAGE_ROOT = storage
    settings.TASKENGINE_ALLOW_PRIVATE_URLS = True
    # The same heartbeat timing as the workers get below, for engine calls made here.
    settings.TASKENGINE_HEARTBEAT_SECONDS = 1
    settings.TASKENGINE_HEARTBEAT_STALE_SECONDS = 5
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": database_url(),
            "DJANGO_SETTINGS_MODULE": "taskengine_site.settings",
            "TASKENGINE_HEARTBEAT_SECONDS": "1",
            "TASKENGINE_HEARTBEAT_STALE_SECONDS": "5",
            "TASKENGINE_ALLOW_PRIVATE_URLS": "true",
            "TASKENGINE_STORAGE_ROOT": str(storage),
            "PYTHONUNBUFFERED": "1",
        }
    )
    empty_queues()
    processes = EngineProcesses(tmp_path, env, storage)
    try:
        yield processes
    finally:
        processes.stop_all()
        empty_queues()
