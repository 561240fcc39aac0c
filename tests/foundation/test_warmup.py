"""A web process loads, at start, what its first request would otherwise wait for, and a web or Celery
process takes what it loaded out of the garbage collector's full collections (taskengine_site.warmup)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from celery import signals

ROOT = Path(__file__).resolve().parents[2]

LAZY = ["celery.app.amqp", "jobs.api.views", "taskengine_site.cache", "taskengine_site.urls"]
PROBE = f"""
import gc, json, sys
lazy = {LAZY!r}
before = [m for m in lazy if m in sys.modules]
import taskengine_site.wsgi
from taskengine_site.celery import app
after = [m for m in lazy if m in sys.modules]
print(json.dumps(dict(before=before, after=after, frozen=gc.get_freeze_count(), finalized=app.finalized)))
"""


def test_the_wsgi_module_loads_the_first_requests_imports_and_freezes_them():
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "taskengine_site.settings"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["before"] == []
    assert seen["after"] == LAZY
    assert seen["finalized"] is True
    # Django, DRF, Celery and the project: tens of thousands of objects, none walked by a full collection.
    assert seen["frozen"] > 20_000


def test_each_celery_pool_process_freezes_its_heap_once_set_up():
    import gc

    from taskengine_site import celery as celery_module

    # Connected under its dispatch_uid (Celery keys receivers by it).
    keys = [lookup for lookup, _ in signals.worker_process_init.receivers]
    assert any("taskengine-freeze-heap" in repr(key) for key in keys)
    frozen = gc.get_freeze_count()
    try:
        celery_module._freeze_heap()
        assert gc.get_freeze_count() > frozen
    finally:
        gc.unfreeze()
