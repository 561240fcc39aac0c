"""End to end: a beat restarted (SIGTERM, or SIGKILL) neither misses nor doubles a periodic task, and a
promotion due while it is down happens once, on time.

The sweep (``queue_scheduled_jobs``) runs every 2 s here. Beat's sends of it, read from the logs of
the beats that ran one after the other, must never come closer than the interval (a double: a beat
started again sending what its predecessor had sent) nor further apart than the interval plus the time
no beat ran (a miss: a run due while beat was down not sent when it came back).
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
from django_celery_beat.models import PeriodicTask

from clients.models import Client
from jobs.models import Job
from jobs.services import job_submit
from jobs.states import JobState
from logs.models import LogEntry
from settings_app.services import setting_set
from tests.e2e.conftest import CeleryProcess, EngineProcesses, wait_until

pytestmark = pytest.mark.e2e

INTERVAL = 2.0
SENT = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+ celery\.beat "
    r"Scheduler: Sending due task queue_scheduled_jobs ",
    re.MULTILINE,
)


def sends(engine_processes: EngineProcesses, *beats: CeleryProcess) -> list[datetime]:
    return sorted(
        datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f")
        for beat in beats
        for stamp in SENT.findall(engine_processes.log(beat))
    )


def test_a_restarted_beat_neither_misses_nor_doubles(
    engine_processes: EngineProcesses, make_client: Callable[..., tuple[Client, str]]
) -> None:
    setting_set(name="schedule_interval", value=int(INTERVAL))
    client, _ = make_client()
    engine_processes.start_worker(concurrency=2)
    first = engine_processes.start_beat(name="beat1")
    wait_until(lambda: len(sends(engine_processes, first)) >= 2, timeout=15)

    # A job due while no beat runs: its promotion was armed when it was submitted.
    run_at = timezone.now() + timedelta(seconds=3)
    job, _ = job_submit(client=client, workflow="noop", parameters={}, run_at=run_at)

    engine_processes.stop(first, sig=signal.SIGTERM)
    down = 3.0
    time.sleep(down)
    second = engine_processes.start_beat(name="beat2")
    wait_until(lambda: len(sends(engine_processes, second)) >= 3, timeout=15)
    # Killed without a chance to save anything, right after a send.
    wait_until(lambda: len(sends(engine_processes, second)) >= 4, timeout=10)
    engine_processes.stop(second, sig=signal.SIGKILL)
    time.sleep(down)
    third = engine_processes.start_beat(name="beat3")
    wait_until(lambda: len(sends(engine_processes, third)) >= 2, timeout=15)

    moments = sends(engine_processes, first, second, third)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(moments)]
    # A beat takes a few seconds to start here (Django, then its first database read).
    longest_outage = down + 8.0
    assert min(gaps) >= INTERVAL - 0.5, (gaps, "a run was sent twice")
    assert max(gaps) <= INTERVAL + longest_outage, (gaps, "a run due while beat was down was missed")
    # Every send is recorded where the next beat reads it from.
    row = PeriodicTask.objects.get(name="queue_scheduled_jobs")
    assert row.total_run_count >= len(moments)

    # The promotion: once, within a second of run_at, although no beat ran then.
    wait_until(lambda: Job.objects.filter(pk=job.pk, queue_state=JobState.COMPLETED).exists(), timeout=15)
    [promoted] = LogEntry.objects.filter(job_id=job.pk, progname="scheduler")
    assert promoted.message == "run_at has passed; job queued"
    assert run_at <= promoted.created_at <= run_at + timedelta(seconds=1)
    for beat in (first, second, third):
        assert "Traceback" not in engine_processes.log(beat), engine_processes.log(beat)[-2000:]
