"""Hand-off to the callback sender (``jobs.callbacks``, DESIGN §6).

The callback module enqueues on commit itself; these wrappers only keep the engine independent of
whether callbacks are installed, and make sure a callback problem never breaks the engine's own work.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

logger = logging.getLogger(__name__)


def _callbacks() -> Any:
    try:
        return importlib.import_module("jobs.callbacks")
    except ImportError:
        return None


def task_event(task_id: int, event: str, message: str = "") -> None:
    """Announce a task ``start``, ``complete`` or ``fail`` to the job's callback URLs."""
    module = _callbacks()
    if module is None:
        return
    try:
        module.task_event(task_id, event, message)
    except Exception:
        logger.exception("could not enqueue the %s callback of task %s", event, task_id)


def job_finished(job_id: int) -> None:
    """Announce the end of job ``job_id`` (completed or failed) to its callback URLs."""
    module = _callbacks()
    if module is None:
        return
    try:
        module.job_finished(job_id)
    except Exception:
        logger.exception("could not enqueue the final callback of job %s", job_id)
