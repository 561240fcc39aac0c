"""The Celery application. Queues, routes and reliability options live in settings (CELERY_*)."""

from __future__ import annotations

import os

from celery import Celery, signals
from django.db import close_old_connections

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "taskengine_site.settings")

app = Celery("taskengine")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


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
    # garbage collection (taskengine_site.warmup explains why that matters).
    from taskengine_site.warmup import freeze_heap

    freeze_heap()
