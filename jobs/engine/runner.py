"""The runner: one attempt of one task, on the worker of the task's queue (DESIGN §4, §5).

The attempt is claimed by compare-and-set (the claim bumps ``attempts`` and notes its time as
``started_at``; the two then fence every later write of this attempt), the step runs outside any
transaction while a heartbeat thread proves it alive, and the outcome is recorded in one transaction
that also moves the job on (next task, or the job's end): there is no hand-over message between a
step's end and the next step's start.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Literal

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from jobs.engine import bus, controller, notify, retry, signals, transitions
from jobs.engine.sql import sql
from jobs.models import Job, Task
from jobs.states import JobState, TaskState
from jobs.workflows.registry import PermanentError, StepCancelled, StepContext, StepInterrupted, get_step
from logs.models import Severity
from logs.services import job_log
from taskengine_site import prepared, shutdown
from taskengine_site.connections import first_statement

logger = logging.getLogger(__name__)

PROGNAME = "worker"


def heartbeat_seconds() -> float:
    """How often a running task proves it is alive (``TASKENGINE_HEARTBEAT_SECONDS``)."""
    return float(settings.TASKENGINE_HEARTBEAT_SECONDS)


def stale_after() -> timedelta:
    """A running attempt whose heartbeat is older than this is presumed dead (its worker was killed):
    ``TASKENGINE_HEARTBEAT_STALE_SECONDS``, several heartbeats so a slow beat is not death."""
    return timedelta(seconds=float(settings.TASKENGINE_HEARTBEAT_STALE_SECONDS))


NO_CLIENT_DEFINITIONS = "No client definitions. Using common definitions."
HANDED_BACK = "'{name}' interrupted by worker shutdown; queued again"


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Claimed:
    """A task this worker has claimed, with what its step needs of the job (one statement reads both)."""

    pk: int
    attempt: int
    job_id: int
    name: str
    position: int
    queue: str
    parameters: Any
    job_parameters: Any
    workflow: str
    common_definition: bool
    client_name: str
    # The claim's time, stored as the task's ``started_at``: with ``attempt``, the fence of every write of
    # this attempt. The number alone can come back: a claim that an asynchronous commit lost in a
    # Postgres crash leaves ``attempts`` as it was, and the next claim takes the same number while this
    # attempt may still be running; the time never repeats.
    claimed_at: datetime
    results: dict[str, Any] = field(default_factory=dict)


def _json(value: Any) -> Any:
    """jsonb as Django's psycopg connection returns it (text), decoded."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def _claim_params(task_id: int, *, log_start: bool, quiet_only: bool) -> dict[str, Any]:
    now = timezone.now()
    params: dict[str, Any] = {
        "worker": worker_name(),
        "now": now,
        "task": task_id,
        "stale": now - stale_after(),
        "quiet_only": quiet_only,
    }
    if log_start:
        params.update(progname=PROGNAME, notice=NO_CLIENT_DEFINITIONS)
    return params


def _claimed(task_id: int, row: Sequence[Any], claimed_at: datetime) -> Claimed:
    attempts, job_id, name, position, queue, parameters, job_parameters, workflow, source, client, earlier = (
        row
    )
    return Claimed(
        pk=task_id,
        attempt=int(attempts),
        job_id=int(job_id),
        name=name,
        position=int(position),
        queue=queue,
        parameters=_json(parameters),
        job_parameters=_json(job_parameters),
        workflow=workflow,
        common_definition=source == "common",
        client_name=client,
        claimed_at=claimed_at,
        # The earlier steps' results, by name in step order (a later step of the same name wins).
        results=_json(earlier) or {},
    )


def _claim(task_id: int, *, log_start: bool = False) -> Claimed | None:
    """Claim task ``task_id`` for one attempt (and write its start's log entries when ``log_start``).

    Claimable: queued, or retrying and due, or running with a stale heartbeat (its worker died) — and
    only while the job is started, so a paused or broken job runs nothing new. None when not claimable.
    """
    params = _claim_params(task_id, log_start=log_start, quiet_only=False)
    with prepared.cursor() as cursor:
        cursor.execute(sql("start_task" if log_start else "claim_task"), params)
        row = cursor.fetchone()
    return None if row is None else _claimed(task_id, row, params["now"])


class _Unclaimed(Enum):
    MAY_CALL_BACK = "may call back"


# What ``_claim_quiet`` returns for a task of a job that may call back: it claimed nothing.
MAY_CALL_BACK = _Unclaimed.MAY_CALL_BACK


def _claim_quiet(task_id: int) -> Claimed | Literal[_Unclaimed.MAY_CALL_BACK] | None:
    """``_claim(task_id, log_start=True)`` for a job that cannot call back: one statement whose commit,
    in autocommit, does not wait for its WAL flush (``start_task_quiet`` says why that is safe).

    For a job that may call back nothing is claimed and ``MAY_CALL_BACK`` is returned: its start
    callback is recorded with its claim, in a transaction (``_start``).
    """
    params = _claim_params(task_id, log_start=True, quiet_only=True)
    # Inside a caller's transaction the setting would last until its commit: never weaken that.
    params["async"] = not connection.in_atomic_block

    def claim() -> Any:
        with prepared.cursor() as cursor:
            cursor.execute(sql("start_task_quiet"), params)
            return cursor.fetchone()

    # A message's first statement: it checks the worker's kept connection, instead of a SELECT 1.
    row = first_statement(claim)
    if row is None:
        return None
    if not row[0]:
        return MAY_CALL_BACK
    return _claimed(task_id, row[1:-1], params["now"])


@dataclass
class _Heartbeat:
    """Keeps ``heartbeat_at`` fresh and notices a broken job, from a thread and from the step itself."""

    task_id: int
    job_id: int
    attempt: int
    claimed_at: datetime
    cancelled: threading.Event = field(default_factory=threading.Event)
    last_beat: float = 0.0
    progress: float | None = None
    began: float = field(default_factory=time.monotonic)

    def beat(self, progress: float | None = None) -> None:
        """Refresh ``heartbeat_at`` (and progress) while this attempt still owns the task; notice a
        broken job or a lost claim."""
        now = timezone.now()
        fields: dict[str, Any] = {"heartbeat_at": now, "updated_at": now}
        if progress is not None:
            fields["progress"] = max(0.0, min(100.0, float(progress)))
        owned = Task.objects.filter(
            pk=self.task_id, state=TaskState.RUNNING, attempts=self.attempt, started_at=self.claimed_at
        ).update(**fields)
        state = Job.objects.filter(pk=self.job_id).values_list("queue_state", flat=True).first()
        # Pausing lets the running task finish (DESIGN §1); breaking, or losing the claim, stops it.
        if not owned or state is None or state == JobState.BROKEN:
            self.cancelled.set()
        self.last_beat = time.monotonic()

    def from_step(self, progress: float | None = None) -> None:
        if progress is not None:
            self.progress = progress
        # At most one write a second, however often a step reports; the latest progress goes with it.
        if time.monotonic() - self.last_beat >= 1.0:
            self.beat(self.progress)
        if self.cancelled.is_set():
            raise StepCancelled("the job was broken")
        if shutdown.requested() and self.ends_too_late():
            raise StepInterrupted("the worker is stopping")

    def ends_too_late(self) -> bool:
        """While the worker stops: True when this step cannot end within the grace, judged by the time
        left and, when the step reports progress, by the rate it has made it at (one without progress
        runs until the deadline)."""
        end_by = shutdown.deadline()
        if end_by is None:
            return False
        now = time.monotonic()
        if now >= end_by:
            return True
        progress = self.progress
        # Under 1 % done the rate says little (a tool starting up): the deadline decides until then.
        if progress is None or not 1 <= progress < 100:
            return False
        return now + (now - self.began) * (100 - progress) / progress > end_by


class _Beater:
    """One thread per process beats for the step running now (``watch``/``unwatch`` around each step).

    A step's first beat is due ``heartbeat_seconds()`` after it starts (or after a beat of its own),
    as when each step had its own thread; starting and joining a thread per step cost more than a
    no-op step. The thread's database connection (its own) is closed between steps and after a failed
    beat, so the next beat reconnects (after a database restart, say).
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._current: _Heartbeat | None = None
        self._beating: _Heartbeat | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._since = 0.0

    def watch(self, heartbeat: _Heartbeat) -> None:
        with self._changed:
            self._current = heartbeat
            self._since = time.monotonic()
            # A pool process forked from a parent that had the thread has none of its own.
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)
                self._thread.start()
            self._changed.notify()

    def unwatch(self, heartbeat: _Heartbeat) -> None:
        with self._changed:
            if self._current is heartbeat:
                self._current = None
                self._changed.notify()

    def settle(self, heartbeat: _Heartbeat) -> None:
        """After ``unwatch``: wait for a beat of ``heartbeat`` the thread may have begun, so no write of
        its attempt follows (a released attempt's number is given to the next claim)."""
        with self._changed:
            while self._beating is heartbeat:
                self._changed.wait()

    def _loop(self) -> None:
        while True:
            with self._changed:
                current = self._current
                if current is not None:
                    due = max(current.last_beat, self._since) + heartbeat_seconds() - time.monotonic()
                    if due > 0:
                        self._changed.wait(due)
                        continue
            if current is None:
                # Between steps the thread holds no database connection (one that a beat opened is
                # closed here, as each step's own thread used to close its own).
                connection.close()
                with self._changed:
                    if self._current is None:
                        self._changed.wait()
                continue
            with self._changed:
                if self._current is not current:
                    continue
                self._beating = current
            try:
                current.beat(current.progress)
            except Exception:
                logger.exception("heartbeat of task %s failed", current.task_id)
                current.last_beat = time.monotonic()
                connection.close()
            finally:
                with self._changed:
                    self._beating = None
                    self._changed.notify_all()


_beater = _Beater()


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value


def chain_seconds() -> float:
    """How long a worker keeps running a job's next steps itself (``TASKENGINE_CHAIN_SECONDS``)."""
    return float(settings.TASKENGINE_CHAIN_SECONDS)


@dataclass
class _Tally:
    """Step attempts recorded by this message's steps, counted in Redis once when the message ends."""

    processed: int = 0
    failures: int = 0

    def completed(self) -> None:
        self.processed += 1

    def failed(self) -> None:
        self.processed += 1
        self.failures += 1

    def flush(self) -> None:
        processed, failures = self.processed, self.failures
        self.processed = self.failures = 0
        if processed or failures:
            signals.steps_finished.send(sender=None, processed=processed, failed=failures)


_tally = _Tally()


def run_task(task_id: int) -> None:
    """Run task ``task_id`` (one attempt, if it can be claimed), then the job's next steps on this queue.

    A duplicate delivery is a no-op. When a step completes, the transaction that records it also moves
    the job on; a next step on the same queue is then claimed in that same transaction and run here at
    once instead of through the broker, for as long as this message has run less than
    ``chain_seconds()``: a job of short steps costs one broker round trip, not one per step. Celery's
    soft time limit is per message, so a step run this way has at most ``chain_seconds()`` less of it.
    """
    if shutdown.requested():
        _pass_on(task_id)
        return
    try:
        _run_chain(task_id, time.monotonic() + chain_seconds())
    finally:
        # After the counts' own on_commit hooks (at once in a worker, which runs outside a transaction).
        transaction.on_commit(_tally.flush)


def _run_chain(task_id: int, deadline: float) -> None:
    """One attempt of ``task_id`` if it can be claimed, then its job's next steps while ``deadline`` has
    not passed (``run_task``)."""
    # A job that cannot call back: the claim and the start's log lines are one statement in
    # autocommit. Otherwise one transaction for the claim and the start's records (the start
    # callback among them): one commit instead of one per statement. Either commits before the
    # step runs, which runs outside any transaction.
    task = _claim_quiet(task_id)
    if task is MAY_CALL_BACK:
        with transaction.atomic():
            task = _start(task_id)
    while task is not None:
        task = _run_attempt(task, chain_until=deadline)


# The tasks of a message of several (``run_tasks``) start here only this soon after the message does;
# those not started by then are published one to a message, for any worker of their queue.
GROUP_HANDOFF_SECONDS = 0.05


class _Group:
    """The tasks of a ``run_tasks`` message not started yet; taken one by one by the process running
    the message, or all at once, to be published one to a message, by its hand-off timer. Also the job
    ends of its tasks whose freed slot has not been offered yet (``_slot_hook``)."""

    def __init__(self, task_ids: Sequence[int], queue: str) -> None:
        self._waiting = list(task_ids)
        self._queue = queue
        self._lock = threading.Lock()
        self._until = time.monotonic() + GROUP_HANDOFF_SECONDS
        self._ends = 0
        self._finished = False

    def ended(self) -> None:
        """A job of this message ended (committed): counted, or checked at once after the message."""
        with self._lock:
            if not self._finished:
                self._ends += 1
                return
        bus.dispatch_after_job_end()

    def take_ends(self, *, finish: bool = False) -> int:
        """The job ends not checked yet (and, with ``finish``, later ones are checked one by one)."""
        with self._lock:
            ends, self._ends = self._ends, 0
            self._finished = self._finished or finish
        return ends

    def next(self) -> int | None:
        """The next task to run here, or None: none left, or the hand-off is due (what is left is then
        published)."""
        with self._lock:
            if not self._waiting:
                return None
            if time.monotonic() < self._until and not shutdown.requested():
                return self._waiting.pop(0)
        self.hand_off()
        return None

    def hand_off(self) -> None:
        """Publish every task not started yet, one to a message (the form every release runs)."""
        with self._lock:
            waiting, self._waiting = self._waiting, []
        if waiting:
            bus.send_runs(waiting, self._queue)

    def on_time(self) -> None:
        """The hand-off timer: the tasks not started go to other workers, and the slots of jobs ended
        so far are offered now rather than after a step that may run long (a dispatch is asked for
        without reading whether a job waits: the timer's thread does not use the database)."""
        self.hand_off()
        if self.take_ends():
            bus.dispatch_soon()


# The run_tasks message this process is running, if any.
_group: _Group | None = None


def _slot_hook() -> Callable[[], None]:
    """What a job's end runs once it has committed (its slot is free), for ``transaction.on_commit``.
    Outside a ``run_tasks`` message: ask for a dispatch if a job waits (``bus.dispatch_after_job_end``).
    Inside one, that check is made once for the message's job ends, when it has run its tasks (or by its
    hand-off timer): one read for the message instead of one a job."""
    return bus.dispatch_after_job_end if _group is None else _group.ended


def run_tasks(task_ids: Sequence[int], queue: str | None) -> None:
    """Run the first tasks of several jobs a dispatch started, one after the other (a ``run_tasks``
    message of ``queue``; ``TASKENGINE_STARTS_PER_MESSAGE``), each as ``run_task`` runs it, with its
    job's next steps.

    One message for several jobs spares the broker and the worker's pool a message each. So that no
    task waits behind a long step while another worker is free, a task starts here only within
    ``GROUP_HANDOFF_SECONDS`` of the message's start: those left then are published one to a message,
    by a timer if a step is still running. A task started here has at most that much less of Celery's
    soft time limit, which is per message. A stopping worker passes them all on.
    """
    if queue is None:  # a delivery that names no queue: the tasks' own (a dispatch groups them by queue)
        queue = Task.objects.filter(pk__in=task_ids).values_list("queue", flat=True).first() or ""
    global _group
    group = _group = _Group(task_ids, queue)
    timer = threading.Timer(GROUP_HANDOFF_SECONDS, group.on_time)
    timer.daemon = True
    timer.start()
    try:
        task_id = group.next()
        while task_id is not None:
            _run_chain(task_id, time.monotonic() + chain_seconds())
            task_id = group.next()
    finally:
        _group = None
        timer.cancel()
        group.hand_off()  # after an error, the tasks not started yet go to other messages
        if group.take_ends(finish=True):
            bus.dispatch_after_job_end()
        transaction.on_commit(_tally.flush)


def _pass_on(task_id: int) -> None:
    """A message that reached this process after it was told to stop goes back to the broker for another
    worker: claiming it here would start a step the shutdown grace may not cover."""
    queue = Task.objects.filter(pk=task_id).values_list("queue", flat=True).first()
    if queue is not None:
        bus.publish_run(task_id, queue)


# The thread running a step now (0: none), so the shutdown deadline interrupts a step and nothing else.
_step_thread = 0


def _interrupt_at_deadline() -> None:
    """Run by ``shutdown`` in the main thread when the grace has run out: a step still running there is
    interrupted and handed back, even one that never beats its heartbeat."""
    if _step_thread and _step_thread == threading.get_ident():
        raise StepInterrupted("the shutdown grace ran out")


shutdown.on_deadline(_interrupt_at_deadline)


def _start(task_id: int) -> Claimed | None:
    """Claim task ``task_id`` and write its start's records, in the caller's transaction."""
    task = _claim(task_id, log_start=True)
    if task is None:
        return None
    # The claim bumped ``attempts`` and the row is locked by it until the commit.
    if task.attempt == 1:
        notify.task_event(task.pk, "start", parameters=task.job_parameters)
    return task


def _run_attempt(task: Claimed, *, chain_until: float) -> Claimed | None:
    """Run one claimed attempt and record it; returns the job's next task when this worker claimed it."""
    attempt = task.attempt
    results = task.results
    heartbeat = _Heartbeat(task_id=task.pk, job_id=task.job_id, attempt=attempt, claimed_at=task.claimed_at)
    job_id = task.job_id

    def log(message: str, severity: int = Severity.INFO) -> None:
        job_log(job_id, message, progname=PROGNAME, severity=severity, task_id=task.pk)

    ctx = StepContext(
        job_id=job_id,
        task_id=task.pk,
        client_name=task.client_name,
        workflow=task.workflow,
        job_parameters=task.job_parameters if isinstance(task.job_parameters, dict) else {},
        step_parameters=task.parameters if isinstance(task.parameters, dict) else {},
        results=results,
        log=log,
        heartbeat=heartbeat.from_step,
        storage_root=settings.TASKENGINE_STORAGE_ROOT,
        attempt=attempt,
    )
    _beater.watch(heartbeat)
    events = settings.TASKENGINE_CELERY_EVENTS  # a monitor's view of the steps (bus), off by default
    event_id = (
        bus.step_started(task_id=task.pk, attempt=attempt, job_id=job_id, step=task.name, queue=task.queue)
        if events
        else ""
    )
    began = time.monotonic()
    outcome: str
    error = ""
    result: Any = None
    global _step_thread
    try:
        try:
            _step_thread = threading.get_ident()
            result = get_step(task.name).fn(ctx)
        finally:
            _step_thread = 0
        outcome = "completed"
    except StepInterrupted:
        outcome = "interrupted"
    except StepCancelled:
        outcome = "cancelled"
    except PermanentError as exc:
        outcome, error = "permanent", str(exc) or type(exc).__name__
    except Exception as exc:
        # Any other error (including Celery's soft time limit) may pass on another attempt.
        outcome, error = "transient", str(exc) or type(exc).__name__
    finally:
        _beater.unwatch(heartbeat)
    if events:
        bus.step_ended(
            event_id,
            task_id=task.pk,
            job_id=job_id,
            step=task.name,
            outcome=outcome,
            duration=time.monotonic() - began,
            result=result,
            error=error,
        )
    if not connection.in_atomic_block and (outcome != "completed" or time.monotonic() - began >= 1.0):
        # A long step may have outlived the server's idle timeout, a failed one may have broken the
        # connection: re-check it first (a ``SELECT 1``, which a short step that completed is spared).
        close_old_connections()
    # A stopping worker claims nothing more: the job's next step goes through the broker.
    hold = task.queue if time.monotonic() < chain_until and not shutdown.requested() else None
    if outcome == "completed":
        return _complete(task, attempt, _jsonable(result), hold_queue=hold)
    if outcome == "interrupted":
        _beater.settle(heartbeat)
        _hand_back(task, attempt)
        return None
    _record(task, attempt, outcome, error)
    return None


def _complete(task: Claimed, attempt: int, result: Any, *, hold_queue: str | None) -> Claimed | None:
    """Record a completed step and move its job on (the ``step_end`` statement, in autocommit for a job
    without callback URLs: one round trip instead of six); return the job's next step when this worker
    claimed it (same queue, while ``hold_queue`` is given).

    A job without callback URLs costs one round trip in autocommit. For one with them, the statement
    and the callback deliveries it causes (this step's ``complete``, the next step's ``start``, the
    job's end) are recorded in one transaction, so none is lost or sent for a step end that rolled back.
    """
    encoded = json.dumps(result)
    now = timezone.now()
    parameters = task.job_parameters
    deliveries = transaction.atomic() if notify.may_call_back(parameters) else nullcontext()
    with deliveries:
        row = transitions.step_end(
            {
                "job": task.job_id,
                "task": task.pk,
                "attempt": attempt,
                "started": task.claimed_at,
                "result": encoded,
                "now": now,
                "hold": hold_queue,
                "worker": worker_name(),
                "progname": PROGNAME,
                "controller": controller.PROGNAME,
                "message": f"'{task.name}' completed successfully",
                "notice": NO_CLIENT_DEFINITIONS,
                "end_message": controller.JOB_COMPLETED,
            },
        )
        if row is None:
            return None  # the claim was lost (presumed dead and re-run): the other attempt reports
        job_state, ended, next_id, next_state, attempts, name, position, queue, step_parameters = row
        notify.task_event(task.pk, "complete", parameters=parameters)
        if next_state == TaskState.RUNNING and attempts == 1:
            notify.task_event(int(next_id), "start", parameters=parameters)
        if ended:
            notify.job_finished(task.job_id, parameters=parameters)
    transaction.on_commit(_tally.completed)
    if ended:
        transaction.on_commit(_slot_hook())
        return None
    if next_id is None:
        # Not the simple case (an earlier step not completed, the next one not pending): the general
        # path decides; when it ends the job, its slot is free.
        if job_state == JobState.STARTED and controller.advance(task.job_id):
            freed = _slot_hook()
            freed()
        return None
    if next_state != TaskState.RUNNING:
        bus.publish_run(int(next_id), queue)
        return None
    return Claimed(
        pk=int(next_id),
        attempt=int(attempts),
        job_id=task.job_id,
        name=name,
        position=int(position),
        queue=queue,
        parameters=_json(step_parameters),
        job_parameters=task.job_parameters,
        workflow=task.workflow,
        common_definition=task.common_definition,
        client_name=task.client_name,
        claimed_at=now,  # step_end's claim of the next step stores its ``now`` as ``started_at``
        # What the claim's query would read: the earlier results in step order, this one last.
        results={**task.results, task.name: json.loads(encoded)},
    )


def _record(task: Claimed, attempt: int, outcome: str, error: str) -> None:
    """Record the end of an attempt that did not complete (``cancelled``, ``transient`` or ``permanent``)
    and, when the task failed for good, move the job on in the same transaction."""
    now = timezone.now()
    progress = controller.Progress()
    with transaction.atomic():
        job_state: int | None = None
        if outcome != "cancelled":
            # Job row first, task rows second: the order of every writer (job_update, the controller),
            # so a pause or break waits for this commit instead of deadlocking with it.
            job_state = (
                Job.objects.select_for_update()
                .filter(pk=task.job_id)
                .values_list("queue_state", flat=True)
                .first()
            )
        if outcome == "cancelled":
            broken = Job.objects.filter(pk=task.job_id, queue_state=JobState.BROKEN).exists()
            if _owned(task, attempt).update(
                state=TaskState.CANCELLED if broken else TaskState.PENDING, finished_at=now, updated_at=now
            ):
                _log(task, f"'{task.name}' cancelled: the job was broken", Severity.WARN)
            return
        else:
            mine = _owned(task, attempt)
            decision = retry.decide(attempt=attempt, permanent=outcome == "permanent")
            if decision.retry:
                if not mine.update(
                    state=TaskState.RETRYING,
                    error=error,
                    next_attempt_at=now + timedelta(seconds=decision.delay),
                    finished_at=now,
                    updated_at=now,
                ):
                    return
                _log(
                    task,
                    f"'{task.name}' failed (attempt {attempt} of {decision.limit + 1}): {error}. "
                    f"Retrying in {decision.delay} seconds.",
                    Severity.ERROR,
                )
                if decision.use_countdown:
                    bus.publish_run(task.pk, task.queue, countdown=decision.delay)
            else:
                if not mine.update(state=TaskState.FAILED, error=error, finished_at=now, updated_at=now):
                    return
                _log(task, f"'{task.name}' failed: {error}", Severity.ERROR)
                notify.task_event(task.pk, "fail", error, parameters=task.job_parameters)
                if job_state == JobState.STARTED:
                    progress = controller.move_on(Job.objects.get(pk=task.job_id))
            transaction.on_commit(_tally.failed)
    if progress.ended:
        transaction.on_commit(_slot_hook())


def _hand_back(task: Claimed, attempt: int) -> None:
    """Give back an attempt that the worker's shutdown interrupted (DESIGN §5): neither a failure nor a
    retry, so ``attempts`` returns to what it was before the claim and the retry budget is untouched;
    the task is queued again at once (on a started job) and the job's log says why.

    ``attempts`` (with ``started_at``) fences every write of an attempt, and the next claim will reuse
    this number: that is safe because the step has stopped (its children with it) and its heartbeat has
    settled, so nothing of this attempt writes again (and the next claim's time differs anyway).
    """
    now = timezone.now()
    with transaction.atomic():
        # Job row first, task row second: the lock order of every writer (see _record).
        job_state = (
            Job.objects.select_for_update()
            .filter(pk=task.job_id)
            .values_list("queue_state", flat=True)
            .first()
        )
        if job_state == JobState.STARTED:
            state, message = TaskState.QUEUED, HANDED_BACK.format(name=task.name)
        elif job_state == JobState.BROKEN:
            state, message = (
                TaskState.CANCELLED,
                f"'{task.name}' interrupted by worker shutdown; the job was broken",
            )
        else:
            # Paused: resuming the job runs it from its first unfinished task.
            state, message = (
                TaskState.PENDING,
                f"'{task.name}' interrupted by worker shutdown; runs when resumed",
            )
        released = _owned(task, attempt).update(
            state=state,
            attempts=F("attempts") - 1,
            worker="",
            heartbeat_at=None,
            started_at=None,
            progress=None,
            finished_at=now if state == TaskState.CANCELLED else None,
            updated_at=now,
        )
        if not released:
            return  # the claim was lost meanwhile (presumed dead and claimed again)
        _log(task, message, Severity.WARN)
    logger.warning("task %s of job %s: %s", task.pk, task.job_id, message)
    if state == TaskState.QUEUED:
        try:
            bus.publish_run(task.pk, task.queue)
        except Exception as exc:
            # Postgres says queued: the reconciler publishes it again.
            logger.warning("task %s queued again but not published (%s); the reconciler will", task.pk, exc)


def _log(task: Claimed, message: str, severity: int) -> None:
    """A line about ``task`` in its job's log, from the worker."""
    job_log(task.job_id, message, progname=PROGNAME, severity=severity, task_id=task.pk)


def _owned(task: Claimed, attempt: int) -> QuerySet[Task]:
    """The task's row while this attempt still owns it (the fence of every write of an attempt)."""
    return Task.objects.filter(
        pk=task.pk, state=TaskState.RUNNING, attempts=attempt, started_at=task.claimed_at
    )
