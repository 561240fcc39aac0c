"""End to end: a beat restarted (SIGTERM, or SIGKILL) neither misses nor doubles a periodic task, and a
promotion due while it is down happens once, on time.

Two schedules, read from the logs of the beats that ran one after the other:

* the sweep (``queue_scheduled_jobs``) every 2 s, shorter than any outage here: a run due while no beat
  ran is sent when the next one starts (no two sends further apart than the interval plus the outage);
* the reconciler every 12 s, longer than an outage: a beat started again after its predecessor was
  killed must not send what that one had already sent (no two sends closer than the interval). Beat
  writes each run as soon as it has sent it; with Celery's default (every 3 minutes) the run the killed
  beat had sent is sent again as soon as the next beat starts.
"""

from __future__ import annotations

import itertools
import re
import signal
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from clients.models import Client
from jobs.models import Job
from jobs.services import job_submit
from jobs.states import JobState
from logs.models import LogEntry
from settings_app.services import setting_set
from tests.e2e.conftest import CeleryProcess, EngineProcesses, wait_until

pytestmark = pytest.mark.e2e

SWEEP, RECONCILE = 2.0, 12.0
SENT = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+ celery\.beat Scheduler: Sending due task "


def sends(engine_processes: EngineProcesses, schedule: str, *beats: CeleryProcess) -> list[datetime]:
    pattern = re.compile(SENT + re.escape(schedule) + " ", re.MULTILINE)
    return sorted(
        datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f")
        for beat in beats
        for stamp in pattern.findall(engine_processes.log(beat))
    )


def gaps(moments: list[datetime]) -> list[float]:
    return [(b - a).total_seconds() for a, b in itertools.pairwise(moments)]


def test_a_restarted_beat_neither_misses_nor_doubles(
    engine_processes: EngineProcesses, make_client: Callable[..., tuple[Client, str]]
) -> None:
    setting_set(name="schedule_interval", value=int(SWEEP))
    every_12s, _ = IntervalSchedule.objects.get_or_create(
        every=int(RECONCILE), period=IntervalSchedule.SECONDS
    )
    reconcile = PeriodicTask.objects.get(name="reconcile")
    reconcile.interval = every_12s
    reconcile.last_run_at = timezone.now() - timedelta(hours=1)  # due when the first beat starts
    reconcile.save()
    client, _ = make_client()
    engine_processes.start_worker(concurrency=2)
    first = engine_processes.start_beat(name="beat1")
    wait_until(lambda: len(sends(engine_processes, "queue_scheduled_jobs", first)) >= 2, timeout=15)
    assert len(sends(engine_processes, "reconcile", first)) == 1

    # A job due while no beat runs: its promotion was armed when it was submitted.
    run_at = timezone.now() + timedelta(seconds=3)
    job, _ = job_submit(client=client, workflow="noop", parameters={}, run_at=run_at)

    down = 3.0
    engine_processes.stop(first, sig=signal.SIGTERM)
    time.sleep(down)
    second = engine_processes.start_beat(name="beat2")
    # Killed, without a chance to save anything, a second after it sent the reconciler's next run.
    wait_until(lambda: sends(engine_processes, "reconcile", second), timeout=RECONCILE + 10)
    time.sleep(1.0)
    engine_processes.stop(second, sig=signal.SIGKILL)
    time.sleep(down)
    third = engine_processes.start_beat(name="beat3")
    wait_until(lambda: sends(engine_processes, "reconcile", third), timeout=RECONCILE + 10)
    time.sleep(1.0)
    engine_processes.stop(third, sig=signal.SIGTERM)

    beats = (first, second, third)
    reconciles = gaps(sends(engine_processes, "reconcile", *beats))
    assert len(reconciles) == 2
    assert min(reconciles) >= RECONCILE - 0.5, (reconciles, "a run was sent twice")
    swept = sends(engine_processes, "queue_scheduled_jobs", *beats)
    sweeps = gaps(swept)
    # A beat takes a few seconds to start here (Django, then its first database read).
    assert min(sweeps) >= SWEEP - 0.5, (sweeps, "a run was sent twice")
    assert max(sweeps) <= SWEEP + down + 8.0, (sweeps, "a run due while beat was down was missed")
    # Every run sent is recorded where the next beat reads it (one of the sweep's may have been on its way
    # when the second beat was killed).
    reconcile.refresh_from_db()
    assert reconcile.total_run_count == 3
    sweep = PeriodicTask.objects.get(name="queue_scheduled_jobs")
    assert sweep.total_run_count >= len(swept) - 1

    # The promotion: once, within a second of run_at, although no beat ran then.
    wait_until(lambda: Job.objects.filter(pk=job.pk, queue_state=JobState.COMPLETED).exists(), timeout=15)
    [promoted] = LogEntry.objects.filter(job_id=job.pk, progname="scheduler")
    assert promoted.message == "run_at has passed; job queued"
    assert run_at <= promoted.created_at <= run_at + timedelta(seconds=1)
    for beat in beats:
        assert "Traceback" not in engine_processes.log(beat), engine_processes.log(beat)[-2000:]
