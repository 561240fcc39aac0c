"""End to end: Redis loses every message and a worker dies mid-step; the reconciler finishes the work
from what Postgres knows, and no task runs twice unless its worker died."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest

from clients.models import Client
from jobs.engine import reconcile
from jobs.models import Job
from jobs.services import job_submit
from jobs.states import JobState, TaskState
from settings_app.services import setting_set
from tests.e2e.conftest import EngineProcesses, empty_queues, wait_until

pytestmark = pytest.mark.e2e


def test_killed_worker_and_flushed_redis_lose_nothing(
    engine_processes: EngineProcesses, make_client: Callable[..., tuple[Client, str]]
) -> None:
    setting_set(name="max_jobs", value=1)
    client, _ = make_client()
    doomed = engine_processes.start_worker(concurrency=1, name="doomed")
    victim, _ = job_submit(client=client, workflow="sleep", parameters={"seconds": 3})
    waiting, _ = job_submit(client=client, workflow="noop5", parameters={})
    wait_until(lambda: victim.tasks.filter(state=TaskState.RUNNING).exists(), timeout=15)

    engine_processes.stop(doomed, sig=signal.SIGKILL)
    empty_queues()  # and Redis forgets everything, the killed worker's unacknowledged message too

    engine_processes.start_worker(concurrency=2, name="rescuer")
    # Nothing moves by itself: no message is left anywhere.
    assert Job.objects.get(pk=victim.pk).queue_state == JobState.STARTED
    task = victim.tasks.get()
    assert (task.state, task.attempts) == (TaskState.RUNNING, 1)

    # The periodic reconciler (beat runs it every 15 s in production) re-publishes once the heartbeat is
    # stale, then everything finishes; the second job waited for the slot.
    def sweep() -> Job | None:
        reconcile.reconcile()
        return Job.objects.filter(pk=waiting.pk, queue_state=JobState.COMPLETED).first()

    wait_until(sweep, timeout=40, interval=1.0)
    victim.refresh_from_db()
    assert (victim.queue_state, victim.failed) == (JobState.COMPLETED, False)
    task.refresh_from_db()
    assert (task.state, task.attempts) == (TaskState.COMPLETED, 2)  # the killed attempt, then one more
    assert list(waiting.tasks.values_list("attempts", flat=True)) == [1] * 5
