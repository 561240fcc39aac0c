"""Helpers for engine unit tests: real Postgres, real Redis, engine functions called in-process.

``broker`` reads the messages the engine really published to Redis (kombu's lists, under this test run's
key prefix) and ``broker.drain()`` executes them in-process, like a worker would, until none is left.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from clients.models import Client
from jobs import tasks
from jobs.engine import bus, dispatcher, reconcile, runner
from jobs.engine.bus import ADVANCE_JOB, DISPATCH, RECONCILE, RUN_TASK, RUN_TASKS
from jobs.models import Job
from monitoring import broker as redis_queues


@dataclass
class Message:
    queue: str
    task: str
    args: list[Any]
    eta: str | None


class Broker:
    """The engine's Redis queues, read and executed in-process."""

    def __init__(self, capture: Callable[..., Any]) -> None:
        self._capture = capture
        self.executed: list[Message] = []
        # Messages ``drain(skip=...)`` took off the queues without running them.
        self.held: list[Message] = []

    def clear(self) -> None:
        client = redis_queues.redis_client()
        for queue in redis_queues.QUEUES:
            client.delete(*redis_queues.queue_keys(queue))
        bus.dispatch_starting()  # a cleared dispatch message no longer holds back the next one

    def pop_all(self) -> list[Message]:
        """Take every waiting message, oldest first."""
        client = redis_queues.redis_client()
        messages: list[Message] = []
        for queue in redis_queues.QUEUES:
            for key in redis_queues.queue_keys(queue):
                while (raw := client.rpop(key)) is not None:
                    payload = json.loads(str(raw))
                    body = json.loads(base64.b64decode(payload["body"]))
                    headers = payload["headers"]
                    messages.append(Message(queue, headers["task"], list(body[0]), headers.get("eta")))
        if any(message.task == DISPATCH for message in messages):
            bus.dispatch_starting()  # taken off the queue, run or not: the next one must be published
        return messages

    def run(self, message: Message) -> None:
        handlers: dict[str, Callable[..., Any]] = {
            RUN_TASK: runner.run_task,
            RUN_TASKS: lambda task_ids: runner.run_tasks(task_ids, message.queue),
            ADVANCE_JOB: tasks.advance_job.run,
            DISPATCH: dispatcher.dispatch,
            RECONCILE: reconcile.reconcile,
        }
        with self._capture(execute=True):
            handlers[message.task](*message.args)
        self.executed.append(message)

    def round(self) -> list[Message]:
        """Execute the messages waiting now (not those they publish)."""
        messages = self.pop_all()
        for message in messages:
            self.run(message)
        return messages

    def drain(self, *, limit: int = 500, skip: Callable[[Message], bool] | None = None) -> list[Message]:
        """Execute waiting messages (and those they publish) until the queues are empty."""
        done: list[Message] = []
        for _ in range(limit):
            messages: list[Message] = []
            for message in self.pop_all():
                (self.held if skip and skip(message) else messages).append(message)
            if not messages:
                return done
            for message in messages:
                self.run(message)
                done.append(message)
        raise AssertionError("the engine kept publishing messages")


@pytest.fixture
def broker(
    db: None, django_capture_on_commit_callbacks: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Broker]:
    # The heartbeat thread has its own connection, which cannot see this test's uncommitted rows.
    monkeypatch.setattr(runner, "heartbeat_seconds", lambda: 3600.0)
    b = Broker(django_capture_on_commit_callbacks)
    b.clear()
    yield b
    b.clear()


@pytest.fixture
def committed(django_capture_on_commit_callbacks: Any) -> Callable[[], Any]:
    """``with committed(): ...`` runs the on-commit hooks (publications) registered inside it."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.fixture
def te_client(make_client: Callable[..., tuple[Client, str]]) -> Client:
    client, _key = make_client()
    return client


@pytest.fixture
def setting(committed: Callable[[], Any]) -> Callable[..., None]:
    """``setting(max_jobs=2, ...)``: store engine settings through the service."""
    from settings_app.services import setting_set

    def apply(**values: int) -> None:
        with committed():
            for name, value in values.items():
                setting_set(name=name, value=value)

    return apply


@pytest.fixture
def submit(te_client: Client, committed: Callable[[], Any]) -> Callable[..., Job]:
    """``submit(workflow="noop", priority=5, parameters=None, **kw) -> Job`` through ``job_submit``."""
    from jobs.services import job_submit

    def factory(
        workflow: str = "noop",
        *,
        parameters: dict[str, Any] | None = None,
        client: Client | None = None,
        **kw: Any,
    ) -> Job:
        with committed():
            job, created = job_submit(
                client=client or te_client, workflow=workflow, parameters=parameters or {}, **kw
            )
        assert created
        return job

    return factory


def json_log(job_id: int) -> list[tuple[str, int, str, int]]:
    """A job's log as (progname, task_id, message, severity) in order."""
    from logs.models import LogEntry

    return list(
        LogEntry.objects.filter(job_id=job_id)
        .order_by("id")
        .values_list("progname", "task_id", "message", "severity")
    )
