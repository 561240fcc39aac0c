"""End to end: reserved slots let an urgent job start at once, and two workers never start more jobs
than max_jobs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, connections, transaction

from clients.models import Client
from jobs.engine import dispatcher
from jobs.models import Job, WorkflowDefinition
from jobs.services import job_submit
from jobs.states import JobState
from settings_app.services import setting_set
from tests.e2e.conftest import EngineProcesses

from .conftest import wait_until

pytestmark = pytest.mark.e2e


def started_priorities() -> list[int]:
    return sorted(Job.objects.filter(queue_state=JobState.STARTED).values_list("priority", flat=True))


def test_a_priority_job_starts_at_once_beside_waiting_low_priority_jobs(
    engine_processes: EngineProcesses, make_client: Callable[..., tuple[Client, str]]
) -> None:
    setting_set(name="max_jobs", value=2)
    setting_set(name="priority_slots", value=1)
    client, _ = make_client()
    engine_processes.start_worker(concurrency=3)
    # Priority 7 is not a priority job (threshold 5): only one may hold the shared slot.
    for _ in range(3):
        job_submit(client=client, workflow="sleep", parameters={"seconds": 3}, priority=7)
    wait_until(lambda: started_priorities() == [7], timeout=15)
    # Wait for any dispatch in progress to end (its lock), then dispatch once more with every submission
    # committed: the reserved slot stays free for priority work.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [dispatcher.DISPATCH_LOCK_KEY])
        assert dispatcher._dispatch_locked() == []
    assert started_priorities() == [7]
    urgent, _ = job_submit(client=client, workflow="sleep", parameters={"seconds": 1}, priority=3)
    submitted = time.monotonic()
    wait_until(lambda: Job.objects.filter(pk=urgent.pk, queue_state=JobState.STARTED).exists(), timeout=5)
    assert time.monotonic() - submitted < 1.5
    assert started_priorities() == [3, 7]
    urgent = wait_until(lambda: Job.objects.filter(pk=urgent.pk, queue_state=JobState.COMPLETED).first())
    assert not urgent.failed
    # Throughout, at most one priority-7 job ran at a time.
    jobs = list(
        Job.objects.filter(priority=7).exclude(started_at=None).values_list("started_at", "finished_at")
    )
    assert max_overlap(jobs) == 1
    wait_until(lambda: not Job.objects.exclude(queue_state=JobState.COMPLETED).exists(), timeout=30)


def max_overlap(intervals: Any) -> int:
    """The most intervals open at one instant (an end at the same instant as a start closes first)."""
    events = []
    for start, end in intervals:
        events.append((start, 1))
        if end is not None:
            events.append((end, -1))
    events.sort(key=lambda e: (e[0], e[1]))
    open_now = peak = 0
    for _, delta in events:
        open_now += delta
        peak = max(peak, open_now)
    return peak


def test_two_workers_never_start_more_than_max_jobs(
    engine_processes: EngineProcesses, make_client: Callable[..., tuple[Client, str]]
) -> None:
    max_jobs = 3
    setting_set(name="max_jobs", value=max_jobs)
    setting_set(name="priority_slots", value=1)
    client, _ = make_client()
    WorkflowDefinition.objects.create(client=client, name="short", steps=["noop", "noop"])
    engine_processes.start_worker(concurrency=2, name="a")
    engine_processes.start_worker(concurrency=2, name="b")

    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        # Samples from a second connection while the workers run: the live count, not a reconstruction.
        try:
            while not stop.is_set():
                samples.append(Job.objects.filter(queue_state=JobState.STARTED).count())
                time.sleep(0.01)
        finally:
            connections.close_all()

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        jobs = [
            job_submit(client=client, workflow="short", parameters={"n": n}, priority=3 if n % 4 == 0 else 6)[
                0
            ]
            for n in range(300)
        ]
        wait_until(
            lambda: Job.objects.filter(queue_state=JobState.COMPLETED).count() == 300,
            timeout=240,
            interval=0.2,
        )
    finally:
        stop.set()
        sampler.join()
    rows = list(
        Job.objects.filter(pk__in=[j.pk for j in jobs]).values_list("started_at", "finished_at", "failed")
    )
    assert not any(failed for _, _, failed in rows)
    # Every start and end, as recorded by the engine: never more than max_jobs started at once.
    assert max_overlap([(start, end) for start, end, _ in rows]) <= max_jobs
    assert samples and max(samples) <= max_jobs
    # And the slots were used: the engine did run jobs side by side.
    assert max_overlap([(start, end) for start, end, _ in rows]) >= 2
