"""Old and new side by side: during a rolling deploy the previous release's processes publish to the
queues this code consumes, and this code publishes to queues the previous release still consumes.

``PREVIOUS_RELEASE`` is every Celery task of the release before this code, as its code declared them
(name, arguments, the queue its publishers sent it to), read from git at ``PREVIOUS_COMMIT``. Each such
message is published here as that release would have (``send_task`` with its name, arguments and queue)
and run by this code; every message this code publishes, and every task the beat schedules name, must
be one the previous release can run. Renaming a task or changing its arguments needs both for a release:
keep the old name and arguments working, and publish the new form only in the release after.

When a release ships, ``PREVIOUS_COMMIT`` and the table move to it.
"""

from __future__ import annotations

import ast
import base64
import inspect
import json
import subprocess
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from callbacks.models import CallbackDelivery
from clients.models import Client
from jobs.engine import bus
from jobs.models import Job, Task
from jobs.states import JobState, TaskState
from monitoring import broker as redis_queues
from scheduling import beat
from taskengine_site.celery import app
from tests.engine.conftest import Broker

BASE_DIR = Path(__file__).resolve().parents[2]
PREVIOUS_COMMIT = "7f2f748"
TASK_MODULES = ("jobs/tasks.py", "scheduling/tasks.py", "callbacks/tasks.py")

# name -> (argument names, the queue the previous release's publishers sent it to)
PREVIOUS_RELEASE: dict[str, tuple[tuple[str, ...], str]] = {
    "jobs.tasks.run_task": (("task_id",), "work"),
    "jobs.tasks.advance_job": (("job_id",), "controller"),
    "jobs.tasks.dispatch": ((), "controller"),
    "jobs.tasks.reconcile": ((), "scheduler"),
    "scheduling.queue_jobs": ((), "scheduler"),
    "scheduling.promote_job": (("job_id",), "scheduler"),
    "scheduling.semaphore_check": (("job_id",), "scheduler"),
    "scheduling.semaphore_watch": (("job_id",), "scheduler"),
    "scheduling.cleanup": ((), "scheduler"),
    "scheduling.redeliver_callbacks": ((), "scheduler"),
    "callbacks.deliver": (("delivery_id",), "callback"),
}


@pytest.fixture(autouse=True)
def worker_tasks() -> None:
    """The tasks a worker of this code registers when it starts (Celery's autodiscovery)."""
    app.loader.import_default_modules()


def declared_tasks(source: str) -> dict[str, tuple[str, ...]]:
    """``@shared_task(name=...)`` functions of a module's source: name -> argument names."""
    found: dict[str, tuple[str, ...]] = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            if isinstance(decorator, ast.Call) and getattr(decorator.func, "id", "") == "shared_task":
                name = next(k.value for k in decorator.keywords if k.arg == "name")
                found[ast.literal_eval(name)] = tuple(a.arg for a in node.args.args)
    return found


def test_the_table_is_what_the_previous_release_declared() -> None:
    declared: dict[str, tuple[str, ...]] = {}
    for module in TASK_MODULES:
        shown = subprocess.run(
            ["git", "show", f"{PREVIOUS_COMMIT}:{module}"], cwd=BASE_DIR, capture_output=True, text=True
        )
        if shown.returncode != 0:
            pytest.skip(f"git has no {PREVIOUS_COMMIT} here (a shallow clone): {shown.stderr.strip()}")
        declared.update(declared_tasks(shown.stdout))
    assert declared == {name: args for name, (args, _) in PREVIOUS_RELEASE.items()}


def test_this_code_runs_every_task_the_previous_release_sends_with_its_arguments() -> None:
    for name, (args, queue) in PREVIOUS_RELEASE.items():
        assert name in app.tasks, f"{name}: a message of the previous release would find no task"
        run = app.tasks[name].run
        inspect.signature(run).bind(*range(len(args)))  # raises TypeError on a changed signature
        assert queue in bus.QUEUES, f"{name}: nothing here consumes {queue}"


def test_the_previous_release_runs_every_message_this_code_publishes() -> None:
    published = {
        bus.RUN_TASK: 1,
        bus.ADVANCE_JOB: 1,
        bus.DISPATCH: 0,
        bus.RECONCILE: 0,
        bus.DELIVER_CALLBACK: 1,
        bus.PROMOTE_JOB: 1,
        bus.SEMAPHORE_CHECK: 1,
        bus.SEMAPHORE_WATCH: 1,
    }
    scheduled = {spec.task: 0 for spec in beat.SCHEDULES}
    # ``bus.RUN_TASKS`` (several starts to a message), which the previous release has not, is published
    # only to a queue whose every live worker says in its heartbeat that it runs it; a worker of the
    # previous release says nothing (tests/engine/test_start_groups.py). Once the previous release has
    # it, this gate can go.
    assert bus.RUN_TASKS not in PREVIOUS_RELEASE
    assert not bus._never("work")
    for name, arity in {**published, **scheduled}.items():
        assert name in PREVIOUS_RELEASE, f"{name}: a worker of the previous release has no such task"
        args, _ = PREVIOUS_RELEASE[name]
        assert len(args) == arity, f"{name}: the previous release takes {args}"
        assert len(inspect.signature(app.tasks[name].run).parameters) == arity


def old_message(name: str, *args: int) -> None:
    """Publish ``name`` as the previous release did: its name, primary keys as arguments, its queue."""
    app.send_task(name, args=list(args), queue=PREVIOUS_RELEASE[name][1])


def run_waiting(broker: Broker) -> list[str]:
    """Run every waiting message with this code's task of that name, as a worker would; their names."""
    client = redis_queues.redis_client()
    ran: list[str] = []
    for _ in range(50):
        raw_messages: list[Any] = []
        for queue in redis_queues.QUEUES:
            for key in redis_queues.queue_keys(queue):
                while (raw := client.rpop(key)) is not None:
                    raw_messages.append(raw)
        if not raw_messages:
            return ran
        for raw in raw_messages:
            payload = json.loads(str(raw))
            args, kwargs, _ = json.loads(base64.b64decode(payload["body"]))
            name = payload["headers"]["task"]
            if name == bus.DISPATCH:
                bus.dispatch_starting()
            with broker._capture(execute=True):
                app.tasks[name](*args, **kwargs)
            ran.append(name)
    raise AssertionError("messages kept coming")


def test_messages_of_the_previous_release_do_their_work_here(
    te_client: Client, submit: Callable[..., Job], broker: Broker, committed: Callable[[], Any]
) -> None:
    # A job the previous release's API accepted: its dispatch message, then its step's, in its form.
    job = submit("noop")
    broker.clear()
    old_message("jobs.tasks.dispatch")
    run_waiting(broker)
    job.refresh_from_db()
    assert job.queue_state == JobState.COMPLETED, "dispatched and run by this code from old messages"

    # A step queued by the previous release.
    second = submit("noop")
    broker.round()  # dispatched here; its run_task message is replaced by the old release's
    broker.clear()
    task = Task.objects.get(job=second)
    assert task.state == TaskState.QUEUED
    old_message("jobs.tasks.run_task", task.pk)
    run_waiting(broker)
    task.refresh_from_db()
    assert (task.state, task.attempts) == (TaskState.COMPLETED, 1)

    # A job whose run_at passed while only the previous release's beat ran.
    with committed():
        scheduled = submit("noop", run_at=timezone.now() + timedelta(seconds=60))
    Job.objects.filter(pk=scheduled.pk).update(run_at=timezone.now())
    broker.clear()
    old_message("scheduling.promote_job", scheduled.pk)
    run_waiting(broker)
    scheduled.refresh_from_db()
    assert scheduled.queue_state == JobState.COMPLETED

    # Its callback deliveries, sent by the previous release's callback queue consumer form.
    delivery = CallbackDelivery.objects.create(
        job=scheduled, kind="job", event="completed", url="http://127.0.0.1:9/", body="{}", webhook_id="w"
    )
    old_message("callbacks.deliver", delivery.pk)
    ran = run_waiting(broker)
    assert "callbacks.deliver" in ran
    delivery.refresh_from_db()
    assert delivery.attempts >= 1

    # Every periodic task the previous release's beat sends, and the rest of its messages.
    for name in (
        "jobs.tasks.reconcile",
        "scheduling.queue_jobs",
        "scheduling.cleanup",
        "scheduling.redeliver_callbacks",
    ):
        old_message(name)
    old_message("jobs.tasks.advance_job", job.pk)
    old_message("scheduling.semaphore_check", job.pk)
    old_message("scheduling.semaphore_watch", job.pk)
    ran = run_waiting(broker)
    assert {
        "jobs.tasks.reconcile",
        "scheduling.queue_jobs",
        "scheduling.cleanup",
        "scheduling.redeliver_callbacks",
        "jobs.tasks.advance_job",
        "scheduling.semaphore_check",
        "scheduling.semaphore_watch",
    } <= set(ran)
