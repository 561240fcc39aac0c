"""The declared beat schedules: synced by name after migrate and on schedule_interval changes, listed in
the documented GET /schedules shape, toggled by name."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from scheduling import beat, services
from settings_app.services import setting_set
from taskengine_site.errors import DomainError

DECLARED = {"queue_scheduled_jobs", "reconcile", "redeliver_callbacks", "cleanup"}


def every(name: str) -> int:
    row = PeriodicTask.objects.select_related("interval").get(name=name)
    return int(row.interval.schedule.run_every.total_seconds())


def test_migrate_has_declared_every_schedule(db):
    rows = {row.name: row for row in PeriodicTask.objects.all()}
    assert set(rows) >= DECLARED
    assert rows["queue_scheduled_jobs"].task == "scheduling.queue_jobs"
    assert rows["reconcile"].task == "jobs.tasks.reconcile"
    assert rows["cleanup"].task == "scheduling.cleanup"
    assert {rows[name].queue for name in DECLARED} == {"scheduler"}
    assert all(rows[name].enabled for name in DECLARED)
    assert every("queue_scheduled_jobs") == 60
    assert every("cleanup") == 86_400


def test_get_schedules_shape_matches_the_reference(db):
    listed = services.schedules_list()
    assert listed["result"] == "ok"
    assert listed["schedules"]["queue_scheduled_jobs"] == {
        "class": "QueueJobs",
        "every": [60, {"first_in": 5}],
        "queue": "scheduler",
        "description": "Enqueues scheduled jobs that have a run_at time in the past.",
    }
    assert set(listed["schedules"]) == DECLARED
    for entry in listed["schedules"].values():
        assert set(entry) == {"class", "every", "queue", "description"}


def test_a_new_schedule_runs_first_in_seconds_after_it_is_declared(db):
    PeriodicTask.objects.all().delete()
    before = timezone.now()
    assert set(beat.schedules_sync()) == DECLARED
    row = PeriodicTask.objects.get(name="queue_scheduled_jobs")
    first_run = row.last_run_at + timedelta(seconds=60)
    assert before + timedelta(seconds=4) <= first_run <= timezone.now() + timedelta(seconds=5)


def test_sync_is_idempotent_and_repairs_by_name(db):
    assert beat.schedules_sync() == []
    PeriodicTask.objects.filter(name="cleanup").update(task="somebody.else", queue="work")
    assert beat.schedules_sync() == ["cleanup"]
    row = PeriodicTask.objects.get(name="cleanup")
    assert (row.task, row.queue) == ("scheduling.cleanup", "scheduler")


def test_changing_schedule_interval_updates_the_queue_jobs_interval(db, committed):
    with committed():
        setting_set(name="schedule_interval", value=15)
    assert every("queue_scheduled_jobs") == 15
    assert services.schedules_list()["schedules"]["queue_scheduled_jobs"]["every"] == [15, {"first_in": 5}]
    assert every("reconcile") == 15  # its own fixed period, untouched
    assert every("cleanup") == 86_400


def test_other_settings_leave_the_schedules_alone(db, committed):
    with committed():
        setting_set(name="max_jobs", value=4)
    assert every("queue_scheduled_jobs") == 60


def test_disable_and_enable_by_name(db):
    remaining = services.schedule_set_active(name="cleanup", active=False)
    assert "cleanup" not in remaining
    assert set(remaining) == DECLARED - {"cleanup"}
    assert "cleanup" not in services.schedules_list()["schedules"]
    assert not PeriodicTask.objects.get(name="cleanup").enabled
    # A later sync (migrate, interval change) keeps the operator's choice.
    beat.schedules_sync()
    assert not PeriodicTask.objects.get(name="cleanup").enabled
    assert set(services.schedule_set_active(name="cleanup", active=True)) == DECLARED
    assert PeriodicTask.objects.get(name="cleanup").enabled


def test_toggling_is_idempotent(db):
    assert set(services.schedule_set_active(name="reconcile", active=True)) == DECLARED


def test_an_unknown_schedule_is_refused(db):
    with pytest.raises(DomainError) as excinfo:
        services.schedule_set_active(name="nope", active=False)
    assert excinfo.value.message.startswith("schedule: unknown schedule 'nope'")
    with pytest.raises(DomainError):
        services.schedule_set_active(name="", active=True)


def test_a_declared_schedule_deleted_by_hand_comes_back_when_toggled(db):
    PeriodicTask.objects.filter(name="reconcile").delete()
    assert "reconcile" in services.schedule_set_active(name="reconcile", active=True)


def test_migrate_runs_the_sync(db):
    PeriodicTask.objects.filter(name="queue_scheduled_jobs").delete()
    call_command("migrate", verbosity=0)
    assert PeriodicTask.objects.filter(name="queue_scheduled_jobs", enabled=True).exists()


@pytest.mark.django_db(transaction=True)
def test_a_partial_migrate_without_beats_tables_does_not_fail():
    call_command("migrate", "django_celery_beat", "zero", verbosity=0)
    try:
        call_command("migrate", "jobs", verbosity=0)  # post_migrate runs; beat's tables are absent
    finally:
        call_command("migrate", verbosity=0)
    assert PeriodicTask.objects.filter(name="queue_scheduled_jobs").exists()
