"""A worker's graceful stop, as its pool processes see it (DESIGN §5).

A platform stops a worker with SIGTERM (every process of the dyno at once, or only the main process under
Docker or Kubernetes) and SIGKILLs it 30 s later. Celery's warm shutdown stops consuming at once and
waits for the running tasks, however long they take; this module tells each pool process how long it
has: ``TASKENGINE_SHUTDOWN_GRACE_SECONDS`` from its first notice. The runner lets a step that ends within
that time finish and hands the others back (``jobs.engine.runner``).

How a pool process gets the notice:

* the worker's main process sends each pool process ``NOTICE_SIGNAL`` when Celery announces its own
  shutdown (``worker_shutting_down``, connected in ``taskengine_site.celery``);
* a SIGTERM sent to the pool process itself (a platform signalling every process) is the same notice.
  billiard resets a pool process's SIGTERM to "exit now" after Celery's initializer, which is what
  killed running steps mid-way (``WorkerLostError``); so the initializer makes it ignored (a disposition
  billiard leaves alone, as under Celery's own ``REMAP_SIGTERM``), and the first task a process runs
  installs the notice handler, which programs the process starts then get at their default again.

At the deadline a step still running is interrupted: ``DEADLINE_SIGNAL`` (an interval timer) raises the
runner's interruption in the step, as Celery's soft time limit does, so even a step that never looks at
the clock is handed back before the platform's SIGKILL.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from types import FrameType

from django.conf import settings

logger = logging.getLogger(__name__)

# The main process's notice to its pool processes: a signal ignored by default (the kernel sends SIGURG
# only to a socket's registered owner, which no process here is), so a pool process still starting,
# before its handler is in place, is not killed by it. billiard resets neither it nor the timer's signal.
NOTICE_SIGNAL = signal.SIGURG
DEADLINE_SIGNAL = signal.SIGALRM
# The stopping worker cancels its consumer at once, but a read it had begun (a Redis BRPOP, which kombu
# issues with a 1 s timeout) still takes the next message published to its queues, and that message
# comes back only when the worker closes its connection. A message published from a stopping worker
# waits until that read has surely ended, so another worker gets it at once.
CONSUMER_LETS_GO_SECONDS = 1.5

_noticed_at: float | None = None
_on_deadline: Callable[[], None] | None = None
_pool_process = False


def grace_seconds() -> float:
    """How long a stopping worker lets running steps go on (``TASKENGINE_SHUTDOWN_GRACE_SECONDS``)."""
    return float(settings.TASKENGINE_SHUTDOWN_GRACE_SECONDS)


def requested() -> bool:
    """True once this process has been told to stop."""
    return _noticed_at is not None


def deadline() -> float | None:
    """The ``time.monotonic()`` by which running steps must have ended or been handed back."""
    return None if _noticed_at is None else _noticed_at + grace_seconds()


def begin() -> None:
    """Take the notice (idempotent): note the time and arm the deadline's timer."""
    global _noticed_at
    if _noticed_at is not None:
        return
    _noticed_at = time.monotonic()
    if threading.current_thread() is threading.main_thread():
        signal.signal(DEADLINE_SIGNAL, _deadline_reached)
        signal.setitimer(signal.ITIMER_REAL, max(0.001, grace_seconds()))


def wait_for_consumer_to_let_go() -> None:
    """In a stopping worker, before publishing a message for another worker: see
    ``CONSUMER_LETS_GO_SECONDS``. Returns at once in a process that is not stopping."""
    if _noticed_at is not None:
        time.sleep(max(0.0, _noticed_at + CONSUMER_LETS_GO_SECONDS - time.monotonic()))


def on_deadline(callback: Callable[[], None]) -> None:
    """Register what interrupts a running step when the deadline passes (the runner's, run in the main
    thread from a signal handler: it may raise into the step)."""
    global _on_deadline
    _on_deadline = callback


def reset() -> None:
    """Forget a notice (tests, and a process that is not stopping after all)."""
    global _noticed_at
    _noticed_at = None
    if threading.current_thread() is threading.main_thread():
        signal.setitimer(signal.ITIMER_REAL, 0)


def _notice(signum: int, frame: FrameType | None) -> None:
    begin()


def _deadline_reached(signum: int, frame: FrameType | None) -> None:
    if _on_deadline is not None:
        _on_deadline()


# --- wiring, called from taskengine_site.celery's signal receivers ------------------------------------


def pool_process_started() -> None:
    """In a new pool process (``worker_process_init``): listen for the main process's notice, and ignore
    SIGTERM until the process runs a task (see the module docstring)."""
    global _pool_process
    _pool_process = True
    signal.signal(NOTICE_SIGNAL, _notice)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def task_starting() -> None:
    """Before each task in a pool process: a SIGTERM is a notice from now on (one comparison per task)."""
    if _pool_process and signal.getsignal(signal.SIGTERM) is not _notice:
        signal.signal(signal.SIGTERM, _notice)


def tell_pool(pids: Iterable[int]) -> None:
    """In the worker's main process, when Celery starts its warm shutdown: notify every pool process."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
            os.kill(pid, NOTICE_SIGNAL)
