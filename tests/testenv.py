"""Loaded with ``-p tests.testenv`` (pyproject addopts), before pytest-django reads the settings.

Each test process (each xdist worker) gets its own Redis key prefix for the broker and the cache, so
parallel workers, and any engine running beside the tests on the same Redis, never read each other's
queues or cache entries. Processes the tests start (celery workers) inherit it through the environment.
"""

from __future__ import annotations

import os
import uuid

_worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
os.environ["TASKENGINE_BROKER_PREFIX"] = f"test-{_worker}-{uuid.uuid4().hex[:8]}:"
os.environ["TASKENGINE_KEY_PREFIX"] = os.environ["TASKENGINE_BROKER_PREFIX"]
