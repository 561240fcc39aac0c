"""The Celery application. Queues, routes and reliability options live in settings (CELERY_*)."""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import threading
import warnings
from typing import Any

from billiard.process import current_process
from celery import Celery, bootsteps, platforms, signals
from celery.exceptions import SecurityWarning
from celery.worker.consumer import Consumer as CeleryConsumer
from django.db import close_old_connections

from taskengine_site import shutdown
from taskengine_site.heap import freeze_heap

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "taskengine_site.settings")
logger = logging.getLogger(__name__)

app = Celery("taskengine")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# A worker started as root (a container's default user) warns in ten lines on every start. The danger
# it names is unpickling messages with root's rights; this engine accepts JSON only (CELERY_ACCEPT_CONTENT),
# and with pickle accepted Celery refuses to start as root instead of warning. Running the worker as an
# unprivileged user remains the advice for production (README, Deployment).
warnings.filterwarnings(
    "ignore", message="You're running the worker with superuser", category=SecurityWarning
)


@signals.task_prerun.connect(weak=False, dispatch_uid="taskengine-close-old-connections")
def _close_broken_connections(**_: object) -> None:
    # Celery's Django fixup keeps a worker's connection across tasks (CELERY_DB_REUSE_MAX) without ever
    # checking it: after a PostgreSQL restart a pool process would fail every task on its dead
    # connection ("the connection is closed") until ~2000 tasks later. Django's own check, run around
    # every web request (CONN_HEALTH_CHECKS, CONN_MAX_AGE), runs around every task too: a connection
    # that raised is tested and replaced, a healthy one is kept.
    close_old_connections()
    # In a pool process, a SIGTERM is from now on the notice to stop gracefully (taskengine_site.shutdown).
    shutdown.task_starting()


@signals.worker_process_init.connect(weak=False, dispatch_uid="taskengine-freeze-heap")
def _freeze_heap(**_: object) -> None:
    # Each pool process, once forked and set up: what it loaded is no longer walked by every full
    # garbage collection (taskengine_site.heap explains why that matters).
    freeze_heap()


@signals.worker_process_init.connect(weak=False, dispatch_uid="taskengine-shutdown-notice")
def _listen_for_shutdown(**_: object) -> None:
    # The solo pool sends this signal in the worker's main process, whose SIGTERM stays Celery's.
    if current_process().name != "MainProcess":
        shutdown.pool_process_started()


# How often a worker's event loop drops the time-limit timers of tasks that have ended.
TIMER_PURGE_SECONDS = 60.0


def purge_cancelled_timers(timer: Any) -> int:
    """Remove the cancelled entries from a kombu timer's heap; return how many went.

    The consumer arms a timer at the soft time limit of every task it hands to the pool, and cancels
    it when the task ends; kombu only marks it cancelled and keeps it in its heap until it falls due.
    With the default limit of 6 hours, every message stayed in the consumer's memory for 6 hours
    (about 0.65 kB each: +10.5 % over 90,000 steps in ``bench.memory``, and gigabytes at a steady
    50 messages a second). Celery issues #1129 and #5200 are this.
    """
    queue = timer._queue
    alive = [event for event in queue if not event[2].canceled]
    dropped = len(queue) - len(alive)
    if dropped:
        queue[:] = alive  # in place: the hub's running iterator holds this very list
        heapq.heapify(queue)
    return dropped


class PurgeCancelledTimers(bootsteps.StartStopStep):
    """A worker step: ``purge_cancelled_timers`` on the event loop's timer every minute."""

    requires = ("celery.worker.components:Hub",)

    def start(self, parent: Any) -> None:
        hub = getattr(parent, "hub", None)
        if hub is not None:  # a pool without the event loop (solo, threads) arms no such timers
            hub.call_repeatedly(TIMER_PURGE_SECONDS, purge_cancelled_timers, hub.timer)


app.steps["worker"].add(PurgeCancelledTimers)


class ShutdownNotice(bootsteps.StartStopStep):
    """A worker step that keeps the worker at hand for ``_pass_shutdown_on``.

    SIGTERM starts Celery's warm shutdown: the worker stops consuming at once, lets the pool finish
    its tasks (however long they take) and puts back the messages it had reserved but not started.
    Celery announces it with ``worker_shutting_down`` in the main process; the steps run in the pool
    processes, which learn it from there and give each step the shutdown grace
    (``taskengine_site.shutdown``): the pool is reached through the worker this step remembers.
    """

    requires = ("celery.worker.components:Pool",)
    worker: Any = None

    def start(self, parent: Any) -> None:
        ShutdownNotice.worker = parent


app.steps["worker"].add(ShutdownNotice)


# A consumer that lost Redis (restarted, failed over) tries again after these many seconds, then each
# step longer, at most RECONNECT_MAX apart; kombu's own 2, 4, 6 … 30 s left a worker idle for seconds
# after Redis was back, with callbacks and dispatches waiting for it.
RECONNECT_FIRST = 0.25
RECONNECT_STEP = 0.25
RECONNECT_MAX = 2.0


class Consumer(CeleryConsumer):
    """Celery's consumer, reconnecting to the broker within a fraction of a second of its return, and
    surviving the loss of a connection while it held unacknowledged messages."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The same dropped client fails the acknowledgement of a task that ends after the connection was
        # lost (the threads pool acknowledges through the event loop): kombu raises AttributeError where
        # it means "no connection". Counted as a connection error, it is logged and the message is left
        # to the broker (delivered again; every task claims in Postgres first), instead of ending the
        # worker. The consumer's own loop treats it as a lost connection too: it reconnects.
        errors: tuple[type[BaseException], ...] = tuple(getattr(self, "connection_errors", ()))
        self.connection_errors = (*errors, AttributeError)

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        # Celery first collects the lost connection (which drops its transport's client), then closes
        # it; closing a channel that holds unacknowledged messages tries to restore them through that
        # dropped client, and kombu raises AttributeError, which Celery takes for an unrecoverable
        # error: the whole worker exited after a Redis restart (the control process, whose threads
        # hold many messages at once, every few restarts). Those messages stay in Redis's unacked
        # set, which the broker restores later; the reconcilers re-publish what they carried within
        # seconds. The consumer goes on reconnecting.
        try:
            super().on_connection_error_after_connected(exc)
        except AttributeError:
            logger.warning("broker connection lost with messages unacknowledged; reconnecting", exc_info=True)

    def ensure_connected(self, conn: Any) -> Any:
        ensure = conn.ensure_connection

        def quickly(*args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("interval_start", RECONNECT_FIRST)
            kwargs.setdefault("interval_step", RECONNECT_STEP)
            kwargs.setdefault("interval_max", RECONNECT_MAX)
            return ensure(*args, **kwargs)

        conn.ensure_connection = quickly
        return super().ensure_connected(conn)


@signals.worker_shutting_down.connect(weak=False, dispatch_uid="taskengine-shutdown-pass-on")
def _pass_shutdown_on(**_: object) -> None:
    # Run in a signal handler of the main process: it must not raise into whatever the worker was doing.
    from celery.concurrency.prefork import TaskPool as PreforkPool  # loaded by now in a prefork worker

    pool = getattr(ShutdownNotice.worker, "pool", None)
    if pool is None:  # told to stop while starting: nothing runs yet
        return
    if not isinstance(pool, PreforkPool):
        # A pool that runs tasks in this process (solo, threads) takes the notice here. Its consumer
        # reads only once the running task returns: it stops now, as Celery's cold shutdown stops it,
        # or it would take back the very messages this process hands back.
        shutdown.begin()
        consumer = getattr(ShutdownNotice.worker, "consumer", None)
        if consumer is not None and consumer.task_consumer is not None:
            with contextlib.suppress(Exception):
                consumer.task_consumer.cancel()
        return
    try:
        processes = pool.info.get("processes", ())
    except Exception:  # told to stop while starting: the pool has no process yet, nothing runs
        return
    shutdown.tell_pool(pid for pid in processes if pid != os.getpid())


@signals.beat_init.connect(weak=False, dispatch_uid="taskengine-beat-stops-between-ticks")
def _stop_beat_between_ticks(sender: Any, **_: object) -> None:
    """SIGTERM (or Ctrl-C) ends beat after the tick it is in, not inside it.

    Celery's own handler saves the schedule and raises ``SystemExit`` wherever beat happens to be: between
    noting a schedule's run and sending its message, that run is recorded as sent and never sent, and
    the beat started next waits a whole interval for it. Asking the service to stop lets the tick end
    (the message sent and, with ``beat_sync_every = 1``, its run written); the loop then leaves within
    its longest sleep (5 s) and saves the schedule on the way out.
    """

    def stop(signum: int, frame: Any) -> None:
        sender.stop()

    if threading.current_thread() is threading.main_thread():  # not a beat embedded in a worker's thread
        platforms.signals.update(SIGTERM=stop, SIGINT=stop)
