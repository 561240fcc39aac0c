"""Test support shared by the scheduling, callback, step, security and e2e tests of this part.

- ``Receiver``: a real HTTP server on 127.0.0.1 in a thread that records every request and answers
  what the test tells it to (per path: status, body, headers, delay).
- ``Queues``: the messages really published to Redis (kombu's lists under this run's key prefix),
  read back and, when a test wants, executed in-process as a worker would.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class Receiver:
    """A local HTTP server: ``url(path)``, ``answer(path, status, ...)``, ``requests``."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.answers: dict[str, Answer] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                with receiver._lock:
                    receiver.requests.append(
                        Received(self.command, self.path, dict(self.headers.items()), body, time.time())
                    )
                    answer = receiver.answers.get(path, Answer())
                if answer.delay:
                    time.sleep(answer.delay)
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(answer.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # Closing must not wait for a handler still sleeping through a "slow server" answer.
        self.server.block_on_close = False
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, path: str, status: int = 200, body: bytes = b"ok", **kwargs: Any) -> None:
        with self._lock:
            self.answers[path] = Answer(status=status, body=body, **kwargs)

    def received(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path.split("?", 1)[0] == path]

    def wait_for(self, count: int, path: str | None = None, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.received(path)
            if len(got) >= count:
                return got
            time.sleep(0.02)
        raise AssertionError(
            f"expected {count} requests to {path or 'any path'}, got {len(self.received(path))}"
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def allow_loopback(settings):
    """The receiver listens on 127.0.0.1, which the outbound guard refuses unless this flag is on."""
    settings.TASKENGINE_ALLOW_PRIVATE_URLS = True
    return settings


@dataclass
class Message:
    queue: str
    task: str
    args: list[Any]
    eta: str | None
    countdown: float | None = None


class Queues:
    """The Celery messages published to Redis under this test run's prefix."""

    def __init__(self, capture: Callable[..., Any]) -> None:
        self._capture = capture

    def clear(self) -> None:
        from jobs.engine import monitor

        client = monitor.redis_client()
        for queue in monitor.QUEUES:
            client.delete(*monitor.queue_keys(queue))

    def pop_all(self, queue: str | None = None) -> list[Message]:
        from jobs.engine import monitor

        client = monitor.redis_client()
        messages: list[Message] = []
        for name in [queue] if queue else list(monitor.QUEUES):
            for key in monitor.queue_keys(name):
                while (raw := client.rpop(key)) is not None:
                    payload = json.loads(str(raw))
                    body = json.loads(base64.b64decode(payload["body"]))
                    headers = payload["headers"]
                    countdown = None
                    if headers.get("eta"):
                        from datetime import datetime

                        eta = datetime.fromisoformat(headers["eta"])
                        countdown = eta.timestamp() - time.time()
                    messages.append(
                        Message(name, headers["task"], list(body[0]), headers.get("eta"), countdown)
                    )
        return messages

    def run(self, message: Message) -> None:
        """Execute one message in-process, its on-commit publications included."""
        from taskengine_site.celery import app

        task = app.tasks[message.task]
        with self._capture(execute=True):
            task.run(*message.args)


@pytest.fixture
def queues(db, django_capture_on_commit_callbacks) -> Iterator[Queues]:
    import taskengine_site.celery  # noqa: F401  (registers the tasks)

    q = Queues(django_capture_on_commit_callbacks)
    q.clear()
    yield q
    q.clear()


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    """``with committed(): ...`` runs the on-commit hooks (publications) registered inside it."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


class EngineProcesses:
    """Real ``celery worker`` and ``celery beat`` processes on this test run's database and Redis prefix.

    Used by this part's end-to-end tests when ``tests/e2e/conftest.py`` offers nothing they need.
    """

    QUEUES = "controller,work,windows_capture,callback,scheduler"

    def __init__(self, workdir: Any, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.procs: dict[str, Any] = {}

    def _spawn(self, name: str, args: list[str]) -> None:
        import subprocess
        import sys
        from pathlib import Path

        base = Path(__file__).resolve().parents[2]
        log = (self.workdir / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "taskengine_site", *args],
            cwd=base,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def start(self, *, beat: bool = True, concurrency: int = 3) -> None:
        node = f"e2e-{os.getpid()}-{time.monotonic_ns()}@localhost"
        self._spawn(
            "worker",
            [
                "worker",
                "-Q",
                self.QUEUES,
                "--concurrency",
                str(concurrency),
                "-l",
                "info",
                "-n",
                node,
                "--without-gossip",
                "--without-mingle",
            ],
        )
        if beat:
            self._spawn(
                "beat",
                [
                    "beat",
                    "-S",
                    "django_celery_beat.schedulers:DatabaseScheduler",
                    "-l",
                    "info",
                    "--pidfile=",
                ],
            )
        deadline = time.monotonic() + 60
        while " ready." not in self.log("worker"):
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise AssertionError(f"celery {name} exited:\n{self.log(name)[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the worker did not become ready:\n{self.log('worker')[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        import signal

        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except Exception:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


def database_url() -> str:
    """The URL of the database this test run uses (pytest-django's test database)."""
    from urllib.parse import quote

    from django.db import connection

    db = connection.settings_dict
    auth = quote(db["USER"] or "", safe="")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"], safe="")
    host = db.get("HOST") or "localhost"
    if host.startswith("/"):
        return f"postgres://{auth}@/{db['NAME']}?host={quote(host, safe='')}"
    return f"postgres://{auth}@{host}:{db.get('PORT') or 5432}/{db['NAME']}"


@pytest.fixture
def engine(transactional_db, tmp_path, settings) -> Iterator[EngineProcesses]:
    """Start a worker and beat (``engine.start()``) with private URLs allowed and a storage root in
    ``tmp_path / "storage"``; stopped before the database is flushed."""
    storage = tmp_path / "storage"
    storage.mkdir()
    settings.TASKENGINE_STORAGE_ROOT = storage
    settings.TASKENGINE_ALLOW_PRIVATE_URLS = True
    from django.conf import settings as django_settings

    from jobs.engine import monitor

    env = dict(os.environ)
    env.update(
        {
            # The processes must use the very queues and keys this process uses, whatever the
            # environment says (the settings may have been read before a conftest changed it).
            "TASKENGINE_BROKER_PREFIX": monitor.key_prefix(),
            "TASKENGINE_KEY_PREFIX": str(django_settings.CACHES["default"].get("KEY_PREFIX", "")),
            "DATABASE_URL": database_url(),
            "TASKENGINE_ALLOW_PRIVATE_URLS": "true",
            "TASKENGINE_STORAGE_ROOT": str(storage),
            "CONN_MAX_AGE": "0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    client = monitor.redis_client()
    for queue in monitor.QUEUES:
        client.delete(*monitor.queue_keys(queue))  # nothing left over from earlier tests
    processes = EngineProcesses(tmp_path, env)
    processes.storage = storage  # type: ignore[attr-defined]
    try:
        yield processes
    finally:
        processes.stop()


def wait_until(predicate: Callable[[], Any], *, timeout: float = 20.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out waiting")
