"""The Celery application. Queues, routes and reliability options live in settings (CELERY_*)."""

from __future__ import annotations

import heapq
import os
import warnings
from typing import Any

from celery import Celery, bootsteps, signals
from celery.exceptions import SecurityWarning
from django.db import close_old_connections

from taskengine_site.heap import freeze_heap

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "taskengine_site.settings")

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


@signals.worker_process_init.connect(weak=False, dispatch_uid="taskengine-freeze-heap")
def _freeze_heap(**_: object) -> None:
    # Each pool process, once forked and set up: what it loaded is no longer walked by every full
    # garbage collection (taskengine_site.heap explains why that matters).
    freeze_heap()


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
