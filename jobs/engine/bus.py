"""Publishing engine messages to Celery, always after the surrounding transaction commits (DESIGN §5).

Messages name Celery tasks by their registered names so the engine never imports ``jobs.tasks`` (which
imports the engine). Every message carries primary keys only; its consumer re-reads Postgres and claims.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from celery import current_task
from celery.utils.saferepr import saferepr
from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from jobs.engine.sql import sql
from jobs.workflows.registry import QUEUES as STEP_QUEUES
from taskengine_site import prepared, publish, shutdown
from taskengine_site.celery import app

logger = logging.getLogger(__name__)

CONTROLLER_QUEUE = "controller"
CALLBACK_QUEUE = "callback"
SCHEDULER_QUEUE = "scheduler"
# Every queue a worker of this engine consumes (the queue page, /metrics). The Procfile's ``worker``
# consumes the step queues only; its ``control`` process the others, so a dispatch, a promotion or a
# callback never waits behind a long step.
QUEUES = (CONTROLLER_QUEUE, *STEP_QUEUES, CALLBACK_QUEUE, SCHEDULER_QUEUE)
WORKER_QUEUES = STEP_QUEUES
CONTROL_QUEUES = (CONTROLLER_QUEUE, CALLBACK_QUEUE, SCHEDULER_QUEUE)

RUN_TASK = "jobs.tasks.run_task"
RUN_TASKS = "jobs.tasks.run_tasks"
ADVANCE_JOB = "jobs.tasks.advance_job"
DISPATCH = "jobs.tasks.dispatch"
RECONCILE = "jobs.tasks.reconcile"
DELIVER_CALLBACK = "callbacks.deliver"
PROMOTE_JOB = "scheduling.promote_job"
SEMAPHORE_CHECK = "scheduling.semaphore_check"
SEMAPHORE_WATCH = "scheduling.semaphore_watch"

# Set while a dispatch message is on its way and its dispatcher has not started: one such message serves
# every submission until then. The expiry only bounds a flag whose message was lost (a flushed Redis).
DISPATCH_PENDING_KEY = "engine:dispatch-pending"
DISPATCH_PENDING_SECONDS = 10

# A job end that leaves jobs waiting for a slot asks for its dispatch this long after its commit. The job
# ends of those milliseconds free their slots meanwhile and find the flag above set, so one dispatch
# starts a job for each of them. Asked at once, every job end of a backlog cost a dispatch of one job
# (a message, about ten round trips, a commit): 3,000 one-step jobs with max_jobs 1000 took 18.9 s
# against 12.5-13.3 s this way (bench/README.md, sixth pass, item 16). A waiting job waits this much
# longer at most; a submission's dispatch is still asked for at once.
DISPATCH_AFTER_END_SECONDS = 0.02

# A countdown message is held unacknowledged by a worker until it is due; a longer wait is left to a
# periodic sweep (the reconciler for task retries, the redelivery schedule for callbacks).
MAX_COUNTDOWN_SECONDS = 300


def countdown_ceiling() -> float:
    """The longest countdown the broker holds safely: a message unacknowledged past the visibility
    timeout is delivered a second time, so a wait never takes more than 80 % of it."""
    return max(1.0, settings.TASKENGINE_VISIBILITY_TIMEOUT * 0.8)


def _send(name: str, args: list[Any], queue: str, countdown: float | None = None) -> None:
    if shutdown.requested():
        # From a stopping worker: not into the read its own consumer may still have pending.
        shutdown.wait_for_consumer_to_let_go()
    publish.send(name, args, queue, countdown)


def publish_run(task_id: int, queue: str, countdown: float | None = None) -> None:
    """Ask a worker of ``queue`` to run task ``task_id`` once the current transaction commits."""
    transaction.on_commit(lambda: _send(RUN_TASK, [task_id], queue, countdown))


def publish_starts(tasks: Sequence[tuple[int, str]]) -> None:
    """Ask workers to run the first tasks of jobs just started, ``tasks`` (id, queue) in dispatch order,
    once the current transaction commits: the tasks of one queue as messages of up to
    ``TASKENGINE_STARTS_PER_MESSAGE`` tasks each (``run_tasks``; one task alone is a ``run_task``), when
    every worker of the queue runs such messages (``groups_allowed``), else one to a message."""
    if tasks:
        transaction.on_commit(lambda: _send_starts(tasks))


def start_groups(task_ids: Sequence[int], most: int) -> list[list[int]]:
    """``task_ids`` (in dispatch order) as the fewest messages of at most ``most`` tasks, their sizes
    within one of each other; the first task of every message comes before the second of any, so the
    earliest jobs start first, side by side."""
    count = -(-len(task_ids) // max(1, most))
    return [list(task_ids[index::count]) for index in range(count)]


# Whether ``run_tasks`` messages may go to a queue: every worker consuming it runs them (the monitoring
# room registers the answer, read from the workers' heartbeats). Until then, and when it cannot tell:
# never, so a worker of the previous release, which has no such task, never gets one.
def _never(queue: str) -> bool:
    return False


_group_gate: Callable[[str], bool] = _never
_gate_answers: dict[str, tuple[float, bool]] = {}
# How long an answer is used (the workers' heartbeats come every 2 s).
GROUP_GATE_SECONDS = 2.0


def register_group_gate(gate: Callable[[str], bool]) -> None:
    """Set what tells whether every worker of a queue runs ``run_tasks`` messages."""
    global _group_gate
    _group_gate = gate
    _gate_answers.clear()


def groups_allowed(queue: str) -> bool:
    """The gate's answer for ``queue``, asked at most every ``GROUP_GATE_SECONDS``; False if it fails."""
    now = time.monotonic()
    known = _gate_answers.get(queue)
    if known is not None and now - known[0] < GROUP_GATE_SECONDS:
        return known[1]
    try:
        allowed = bool(_group_gate(queue))
    except Exception:
        logger.warning("whether every worker of %s runs run_tasks is unknown", queue, exc_info=True)
        allowed = False
    _gate_answers[queue] = (now, allowed)
    return allowed


def _send_starts(tasks: Sequence[tuple[int, str]]) -> None:
    by_queue: dict[str, list[int]] = {}
    for task_id, queue in tasks:
        by_queue.setdefault(queue, []).append(task_id)
    for queue, ids in by_queue.items():
        most = settings.TASKENGINE_STARTS_PER_MESSAGE
        if most > 1 and len(ids) > 1 and not groups_allowed(queue):
            most = 1
        groups = start_groups(ids, most)
        # One push for each kind of message.
        _send_each(RUN_TASK, [group for group in groups if len(group) == 1], queue)
        _send_each(RUN_TASKS, [[group] for group in groups if len(group) > 1], queue)


def send_runs(task_ids: Sequence[int], queue: str) -> None:
    """Publish a ``run_task`` message for each of ``task_ids`` on ``queue`` now, in order."""
    _send_each(RUN_TASK, [[task_id] for task_id in task_ids], queue)


def _send_each(name: str, each: list[list[Any]], queue: str) -> None:
    """``_send`` for each argument list of ``each``, in order, in one push."""
    if each:
        shutdown.wait_for_consumer_to_let_go()  # at once unless this process is stopping (``_send``)
        publish.send_each(name, each, queue)


def publish_advance(job_id: int) -> None:
    """Ask the controller to move job ``job_id`` on (next task, or the end) after commit."""
    transaction.on_commit(lambda: _send(ADVANCE_JOB, [job_id], CONTROLLER_QUEUE))


def send_delivery(delivery_id: int, countdown: float | None = None) -> None:
    """Ask the callback sender to deliver ``delivery_id`` now (the caller publishes after its commit)."""
    _send(DELIVER_CALLBACK, [delivery_id], CALLBACK_QUEUE, countdown)


def send_scheduler(name: str, job_id: int, countdown: float | None = None) -> None:
    """Ask the scheduler to run ``name`` (``PROMOTE_JOB``, ``SEMAPHORE_CHECK``, ``SEMAPHORE_WATCH``) for
    job ``job_id`` now (the caller publishes after its commit)."""
    _send(name, [job_id], SCHEDULER_QUEUE, countdown)


def request_dispatch() -> None:
    """Enqueue a dispatch on the controller queue once the current transaction commits."""
    publish_dispatch()


def dispatch_after_job_end() -> None:
    """After a job's end has committed (its slot is free): enqueue a dispatch if a job is waiting, due
    ``DISPATCH_AFTER_END_SECONDS`` later, so the job ends meanwhile share it.

    Read after the commit, so this is race-free: a job queued before this read is seen here, and one
    queued after it requested its own dispatch, which sees this slot free. Without a waiting job, a
    dispatch message per job end (one each, when they come apart) only found nothing to start.
    """
    with prepared.cursor() as cursor:
        # A prepared statement: the ORM's compilation of this query cost more CPU than its execution.
        cursor.execute(sql("queued_job_exists"))
        waiting = cursor.fetchone()[0]
    if waiting:
        publish_dispatch(countdown=DISPATCH_AFTER_END_SECONDS)


def dispatch_soon() -> None:
    """Enqueue a dispatch due ``DISPATCH_AFTER_END_SECONDS`` from now, unless one is on its way, without
    reading whether a job waits (from a thread that uses no database connection; outside any
    transaction)."""
    _send_dispatch_once(DISPATCH_AFTER_END_SECONDS)


def publish_dispatch(countdown: float | None = None) -> None:
    """Ask the controller to fill free slots after commit (``countdown`` seconds after it), unless a
    dispatch is already on its way.

    That dispatch starts after this commit (it clears the flag first, then reads the queued jobs), so it
    sees this transaction's jobs: a burst of submissions costs one message, not one each.
    """
    transaction.on_commit(lambda: _send_dispatch_once(countdown))


def _send_dispatch_once(countdown: float | None = None) -> None:
    try:
        first = cache.add(DISPATCH_PENDING_KEY, 1, timeout=DISPATCH_PENDING_SECONDS)
    except Exception:
        logger.warning("dispatch flag unavailable; publishing anyway", exc_info=True)
        first = True
    if not first:
        return
    try:
        _send(DISPATCH, [], CONTROLLER_QUEUE, countdown)
    except Exception:
        dispatch_starting()  # no message carries the flag: the next submission must publish
        raise


def dispatch_starting() -> None:
    """Called by the dispatcher before it reads the queued jobs: later submissions publish again."""
    try:
        cache.delete(DISPATCH_PENDING_KEY)
    except Exception:
        logger.warning("dispatch flag not cleared (it expires by itself)", exc_info=True)


# A dispatcher that found the lock taken leaves this for the one holding it (see dispatcher.dispatch).
DISPATCH_AGAIN_KEY = "engine:dispatch-again"


def dispatch_again() -> None:
    """Ask the dispatcher holding the lock to run once more after its commit."""
    try:
        cache.set(DISPATCH_AGAIN_KEY, 1, timeout=DISPATCH_PENDING_SECONDS)
    except Exception:
        logger.warning("dispatch note unavailable; publishing a dispatch instead", exc_info=True)
        _send(DISPATCH, [], CONTROLLER_QUEUE)


def take_dispatch_again() -> bool:
    """True (once) when another dispatcher asked for one more run while this one held the lock."""
    try:
        return bool(cache.delete(DISPATCH_AGAIN_KEY))
    except Exception:
        logger.warning("dispatch note unreadable", exc_info=True)
        return False


# --- The steps as Celery events, for Flower (TASKENGINE_CELERY_EVENTS) --------------------------------
# A worker runs a job's steps inside ``run_task`` messages, several to a message when it chains them, and
# a failed step is recorded, not raised: Celery's own task events show one successful ``run_task``. Each
# step attempt is therefore published as a task of its own, ``step:<name>``, through Celery's event
# dispatcher (received and started when it starts, then succeeded, failed or revoked), with the job id,
# the task id, the attempt and the duration; its parent is the ``run_task`` message that ran it. Flower
# (and any monitor built on ``celery.events.State``) lists them as tasks. Nothing here reads Postgres.

_step_dispatcher: tuple[int, Any] | None = None  # (pid, EventDispatcher): one per process, after a fork


def _send_step_events(*events: tuple[str, dict[str, Any]]) -> None:
    global _step_dispatcher
    try:
        if _step_dispatcher is None or _step_dispatcher[0] != os.getpid():
            request = getattr(current_task, "request", None)
            hostname = getattr(request, "hostname", None) or f"celery@{socket.gethostname()}"
            dispatcher = app.events.Dispatcher(
                app.connection_for_write(), hostname=hostname, enabled=True, buffer_while_offline=False
            )
            _step_dispatcher = (os.getpid(), dispatcher)
        for kind, fields in events:
            _step_dispatcher[1].send(kind, **fields)
    except Exception:
        # A monitor's view must never cost a step: the event is dropped, the next one reconnects.
        _step_dispatcher = None
        logger.warning("step event not sent", exc_info=True)


def step_started(*, task_id: int, attempt: int, job_id: int, step: str, queue: str) -> str:
    """Publish that an attempt of a step started (``task-received`` and ``task-started``); return the
    attempt's event id, which ``step_ended`` takes (a fresh one: task ids start again with a new
    database, a monitor's memory does not)."""
    request = getattr(current_task, "request", None)
    parent = getattr(request, "id", None)
    event_id = str(uuid.uuid4())
    fields = {"uuid": event_id, "job_id": job_id, "task_id": task_id, "step": step}
    received = {
        **fields,
        "name": f"step:{step}",
        "args": "()",
        "kwargs": saferepr({"job_id": job_id, "task_id": task_id, "attempt": attempt}),
        "retries": attempt - 1,
        "root_id": getattr(request, "root_id", None) or parent,
        "parent_id": parent,
        "routing_key": queue,
        "attempt": attempt,
    }
    _send_step_events(("task-received", received), ("task-started", fields))
    return event_id


def step_ended(
    event_id: str,
    *,
    task_id: int,
    job_id: int,
    step: str,
    outcome: str,
    duration: float,
    result: Any,
    error: str,
) -> None:
    """Publish how an attempt of a step ended: ``completed`` as ``task-succeeded``, ``cancelled`` (its job
    was broken) as ``task-revoked``, ``interrupted`` (handed back by a stopping worker, queued again) as
    ``task-rejected`` with ``requeue``, ``permanent`` and ``transient`` failures as ``task-failed`` (a
    transient one may be retried: the next attempt is another event task)."""
    fields = {"uuid": event_id, "job_id": job_id, "task_id": task_id, "step": step, "duration": duration}
    fields["runtime"] = duration
    if outcome == "completed":
        event = ("task-succeeded", {**fields, "result": saferepr(result, 1024)})
    elif outcome == "cancelled":
        event = ("task-revoked", {**fields, "terminated": True, "signum": None, "expired": False})
    elif outcome == "interrupted":
        event = ("task-rejected", {**fields, "requeue": True})
    else:
        failure = {"exception": error, "traceback": "", "permanent": outcome == "permanent"}
        event = ("task-failed", {**fields, **failure})
    _send_step_events(event)
