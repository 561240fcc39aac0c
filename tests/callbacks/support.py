"""Test support shared by the scheduling, callback, step, security and e2e tests of this part.

- ``Receiver``: a real HTTP server on 127.0.0.1 in a thread that records every request and answers
  what the test tells it to (per path: status, body, headers, delay).
- ``Queues``: the messages really published to Redis (kombu's lists under this run's key prefix),
  read back and, when a test wants, executed in-process as a worker would.

The end-to-end tests start their processes with ``engine_processes`` from tests/e2e/conftest.py.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.waiting import wait_until  # noqa: F401  (re-exported: tests use support.wait_until)


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
        from monitoring import broker as redis_queues

        client = redis_queues.redis_client()
        for queue in redis_queues.QUEUES:
            client.delete(*redis_queues.queue_keys(queue))

    def pop_all(self, queue: str | None = None) -> list[Message]:
        from monitoring import broker as redis_queues

        client = redis_queues.redis_client()
        messages: list[Message] = []
        for name in [queue] if queue else list(redis_queues.QUEUES):
            for key in redis_queues.queue_keys(name):
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
        if any(message.task == "jobs.tasks.dispatch" for message in messages):
            from jobs.engine import bus

            bus.dispatch_starting()  # taken off the queue, run or not: the next one must be published
        return messages

    def run(self, message: Message) -> None:
        """Execute one message in-process, its on-commit publications included."""
        from taskengine_site.celery import app

        task = app.tasks[message.task]
        with self._capture(execute=True):
            task.run(*message.args)


@pytest.fixture
def queues(db, django_capture_on_commit_callbacks) -> Iterator[Queues]:
    # Workers find the task modules by autodiscovery; this process imports them to run their messages.
    import callbacks.tasks  # noqa: F401
    import jobs.tasks  # noqa: F401
    import scheduling.tasks  # noqa: F401

    q = Queues(django_capture_on_commit_callbacks)
    q.clear()
    yield q
    q.clear()


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    """``with committed(): ...`` runs the on-commit hooks (publications) registered inside it."""
    return lambda: django_capture_on_commit_callbacks(execute=True)
