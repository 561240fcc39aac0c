"""The declared beat schedules, kept in django-celery-beat's tables and synced by name (DESIGN.md §3).

``schedules_sync`` runs after ``migrate`` and whenever the ``schedule_interval`` setting changes. It
creates missing schedules and brings the task, queue, interval and description of existing ones up to
date, but never changes whether a schedule is enabled: that is the operator's choice (``PUT /scheduler``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from settings_app.services import setting_get_int
from taskengine_site.errors import DomainError


@dataclass(frozen=True)
class ScheduleSpec:
    name: str
    task: str
    klass: str
    queue: str
    description: str
    every: Callable[[], int]
    first_in: int


def _fixed(seconds: int) -> Callable[[], int]:
    return lambda: seconds


SCHEDULES: tuple[ScheduleSpec, ...] = (
    ScheduleSpec(
        name="queue_scheduled_jobs",
        task="scheduling.queue_jobs",
        klass="QueueJobs",
        queue="scheduler",
        description="Enqueues scheduled jobs that have a run_at time in the past.",
        every=lambda: setting_get_int("schedule_interval"),
        first_in=5,
    ),
    ScheduleSpec(
        name="reconcile",
        task="jobs.tasks.reconcile",  # the engine's own adapter around jobs.engine.reconcile
        klass="Reconcile",
        queue="scheduler",
        description=(
            "Re-publishes tasks and dispatches that Postgres says are due but nothing is working on "
            "(a lost message, a flushed Redis, a killed worker)."
        ),
        every=_fixed(15),
        first_in=10,
    ),
    ScheduleSpec(
        name="redeliver_callbacks",
        task="scheduling.redeliver_callbacks",
        klass="RedeliverCallbacks",
        queue="scheduler",
        description=(
            "Re-sends callbacks that Postgres says are due but nothing is sending (a lost message, a "
            "flushed Redis, a killed control process) within seconds."
        ),
        every=_fixed(5),
        first_in=5,
    ),
    ScheduleSpec(
        name="cleanup",
        task="scheduling.cleanup",
        klass="Cleanup",
        queue="scheduler",
        description="Deletes terminal jobs older than cleanup_days that are not persist, with their logs.",
        every=_fixed(86_400),
        first_in=300,
    ),
)
BY_NAME: dict[str, ScheduleSpec] = {spec.name: spec for spec in SCHEDULES}


def _interval(seconds: int) -> IntervalSchedule:
    interval, _ = IntervalSchedule.objects.get_or_create(every=seconds, period=IntervalSchedule.SECONDS)
    return interval


def schedules_sync() -> list[str]:
    """Create or update every declared schedule by name; return the names of those it changed."""
    changed: list[str] = []
    now = timezone.now()
    with transaction.atomic():
        for spec in SCHEDULES:
            seconds = spec.every()
            interval = _interval(seconds)
            row = PeriodicTask.objects.filter(name=spec.name).first()
            if row is None:
                # Beat counts the first run from last_run_at: backdating it makes the first run come
                # ``first_in`` seconds from now rather than a whole interval later.
                PeriodicTask.objects.create(
                    name=spec.name,
                    task=spec.task,
                    interval=interval,
                    queue=spec.queue,
                    description=spec.description,
                    enabled=True,
                    last_run_at=now - timedelta(seconds=max(0, seconds - spec.first_in)),
                )
                changed.append(spec.name)
                continue
            wanted = {
                "task": spec.task,
                "interval_id": interval.pk,
                "queue": spec.queue,
                "description": spec.description,
                "crontab_id": None,
                "solar_id": None,
                "clocked_id": None,
            }
            if any(getattr(row, field) != value for field, value in wanted.items()):
                for field, value in wanted.items():
                    setattr(row, field, value)
                # save(), not update(): its signal tells running beat processes to reload.
                row.save()
                changed.append(spec.name)
    return changed


def on_setting_changed(name: str) -> None:
    """A new ``schedule_interval`` becomes the sweep's interval (registered with the settings' effects by
    ``SchedulingConfig.ready``)."""
    if name == "schedule_interval":
        schedules_sync()


def _every(row: PeriodicTask, spec: ScheduleSpec | None) -> list[Any]:
    if row.interval is not None:
        seconds = int(row.interval.schedule.run_every.total_seconds())
    elif row.crontab is not None:
        return [str(row.crontab)]
    else:
        return []
    return [seconds, {"first_in": spec.first_in}] if spec else [seconds]


def enabled_schedules() -> dict[str, dict[str, Any]]:
    """Every enabled schedule by name: its class, period, queue and description."""
    rendered: dict[str, dict[str, Any]] = {}
    rows = PeriodicTask.objects.filter(enabled=True).select_related("interval", "crontab").order_by("name")
    for row in rows:
        if row.name.startswith("celery."):
            continue
        spec = BY_NAME.get(row.name)
        rendered[row.name] = {
            "class": spec.klass if spec else row.task.rsplit(".", 1)[-1],
            "every": _every(row, spec),
            "queue": row.queue or (spec.queue if spec else ""),
            "description": row.description or (spec.description if spec else ""),
        }
    return rendered


def schedule_set_enabled(*, name: str, enabled: bool) -> list[str]:
    """Enable or disable one schedule by name; return the names of the enabled ones."""
    if not isinstance(name, str) or not name:
        raise DomainError("schedule: a schedule name is required")
    if name in BY_NAME and not PeriodicTask.objects.filter(name=name).exists():
        schedules_sync()
    row = PeriodicTask.objects.filter(name=name).first()
    if row is None or name.startswith("celery."):
        known = ", ".join(sorted(set(BY_NAME) | set(enabled_schedules())))
        raise DomainError(f"schedule: unknown schedule {name!r} (known: {known})")
    if row.enabled != enabled:
        row.enabled = enabled
        row.save()
    return list(enabled_schedules())
